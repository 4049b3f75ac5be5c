//! The write-ahead plans of the shard-level protocol (`doc/DESIGN.md`), one file per shard and
//! plan number: `<table>/_kinesis_delta/<pipeline>/<stream>/shards/<shard>/<k>.json`. Created
//! put-if-absent, so each `(shard, k)` has exactly one plan, whoever planned it. Beside them,
//! `tip.json` says when the shard was last found with nothing beyond its committed plan.

use chrono::{DateTime, Utc};
use deltalake::logstore::ObjectStoreRef;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::SinkError;
use super::manifest::{BatchSplit, put_json, read_json};
use crate::source::{ShardPosition, ShardRange};

/// Plans kept behind a shard's newest committed one. The engine reads only the newest committed
/// one and the one after it; `rebuild` reads all of them (which of them took records).
pub const KEEP_COMMITTED: i64 = 20;

/// One shard's plan number `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// The shard.
    pub shard: String,
    /// Its number among the shard's plans (the version of the shard's `txn`).
    pub version: i64,
    /// The records it takes; `None` for a plan that only records a change of the shard's state
    /// (found closed and read to its end).
    pub range: Option<ShardRange>,
    /// Where the shard stands once the plan is committed.
    pub position: ShardPosition,
    /// The stream's creation time (ms since the epoch) and the shard's first sequence number:
    /// the incarnation the plan was made on.
    pub stream_created_ms: Option<i64>,
    /// The shard's first sequence number when it was planned.
    pub shard_start: Option<String>,
    /// Which of its records are dead letters, and what decided it.
    pub split: Option<BatchSplit>,
    /// When it was planned.
    pub planned_at: DateTime<Utc>,
    /// The worker that planned it (for people reading it).
    pub worker: String,
}

/// A shard found with nothing beyond its committed plan `version` (0: beyond the stream-level
/// checkpoint it was upgraded from), and when: an idle shard commits nothing for days, so its
/// plan may say it was behind while it has since been read to its end many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTip {
    /// The committed plan the shard stood at.
    pub version: i64,
    /// When Kinesis said nothing lay beyond it.
    pub observed_at: DateTime<Utc>,
}

/// What happened when a plan was written.
#[derive(Debug)]
pub enum PlanOutcome {
    /// Ours is now the shard's plan of that number.
    Created,
    /// A plan of that number existed already (an earlier run, or another worker): it wins.
    Existing(Box<ShardPlan>),
    /// One existed but was deleted before it could be read: it was committed, with 20 more.
    Vanished,
}

/// The plans of one stream's shards in one table.
#[derive(Debug, Clone)]
pub struct ShardPlanLog {
    store: ObjectStoreRef,
    dir: Path,
}

impl ShardPlanLog {
    /// The plans under a table's store (rooted at the table) for one pipeline and stream.
    pub fn new(store: ObjectStoreRef, pipeline: &str, stream: &str) -> Self {
        let dir = Path::from_iter(["_kinesis_delta", pipeline, stream, "shards"]);
        Self { store, dir }
    }

    fn path(&self, shard: &str, version: i64) -> Path {
        self.dir
            .clone()
            .join(shard)
            .join(format!("{version:020}.json"))
    }

    /// Writes the plan unless the shard has one of that number.
    pub async fn create(&self, plan: &ShardPlan) -> Result<PlanOutcome, SinkError> {
        let path = self.path(&plan.shard, plan.version);
        if put_json(&self.store, &path, plan, true).await? {
            return Ok(PlanOutcome::Created);
        }
        Ok(match self.get(&plan.shard, plan.version).await? {
            Some(existing) => PlanOutcome::Existing(Box::new(existing)),
            None => PlanOutcome::Vanished,
        })
    }

    /// The shard's plan of that number, if there is one.
    pub async fn get(&self, shard: &str, version: i64) -> Result<Option<ShardPlan>, SinkError> {
        read_json(&self.store, &self.path(shard, version)).await
    }

    /// Every shard that has plans (a listing: used when resuming).
    pub async fn shards(&self) -> Result<Vec<String>, SinkError> {
        let listing = match self.store.list_with_delimiter(Some(&self.dir)).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(source) => {
                return Err(SinkError::Store {
                    path: self.dir.to_string(),
                    source,
                });
            }
        };
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    fn tip_path(&self, shard: &str) -> Path {
        self.dir.clone().join(shard).join("tip.json")
    }

    /// Records that `shard` is at its tip (overwrites: every worker that observes it observes
    /// the same truth).
    pub async fn write_tip(&self, shard: &str, tip: &ShardTip) -> Result<(), SinkError> {
        put_json(&self.store, &self.tip_path(shard), tip, false)
            .await
            .map(|_| ())
    }

    /// The shard's last tip marker, if any (an unreadable one counts as none: it only ever saves
    /// a stop). Its moment is the earlier of what it says and when the store received it: a
    /// writer whose clock ran fast cannot make an observation look newer than it was.
    pub async fn read_tip(&self, shard: &str) -> Result<Option<ShardTip>, SinkError> {
        let path = self.tip_path(shard);
        let store_error = |source| SinkError::Store {
            path: path.to_string(),
            source,
        };
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(e)),
        };
        let received = got.meta.last_modified;
        let bytes = got.bytes().await.map_err(store_error)?;
        Ok(serde_json::from_slice::<ShardTip>(&bytes)
            .ok()
            .map(|tip| ShardTip {
                observed_at: tip.observed_at.min(received),
                ..tip
            }))
    }

    /// Deletes the shard's plans well behind `committed` (best effort).
    pub async fn prune(&self, shard: &str, committed: i64) {
        let old = committed - KEEP_COMMITTED;
        if old < 1 {
            return;
        }
        match self.store.delete(&self.path(shard, old)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::debug!(error = %e, "could not prune an old shard plan"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{PlanOutcome, ShardPlan, ShardPlanLog};
    use crate::sequence::SequenceNumber;
    use crate::source::{ShardPosition, ShardRange};

    fn plan(shard: &str, version: i64, first: u64, last: u64, worker: &str) -> ShardPlan {
        let seq = |n: u64| SequenceNumber::parse(&format!("{n}")).unwrap();
        ShardPlan {
            shard: shard.to_owned(),
            version,
            range: Some(ShardRange {
                first: seq(first),
                last: seq(last),
            }),
            position: ShardPosition {
                last: Some(seq(last)),
                finished: false,
                at_tip: false,
            },
            stream_created_ms: Some(1),
            shard_start: Some("1".to_owned()),
            split: None,
            planned_at: chrono::Utc::now(),
            worker: worker.to_owned(),
        }
    }

    #[tokio::test]
    async fn each_shard_and_number_has_one_plan_whoever_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: deltalake::logstore::ObjectStoreRef =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let log = ShardPlanLog::new(store, "p", "s");
        let ours = plan("shardId-000000000001", 1, 10, 20, "x");
        assert!(matches!(
            log.create(&ours).await.unwrap(),
            PlanOutcome::Created
        ));
        // Another worker plans the same shard and number differently: the first plan wins.
        let theirs = plan("shardId-000000000001", 1, 10, 30, "y");
        match log.create(&theirs).await.unwrap() {
            PlanOutcome::Existing(existing) => assert_eq!(*existing, ours),
            other => panic!("{other:?}"),
        }
        // Other shards and numbers are independent.
        let other_shard = plan("shardId-000000000002", 1, 5, 6, "y");
        assert!(matches!(
            log.create(&other_shard).await.unwrap(),
            PlanOutcome::Created
        ));
        assert_eq!(log.get("shardId-000000000001", 2).await.unwrap(), None);
        // Pruned 20 behind the committed plan.
        log.prune("shardId-000000000001", 21).await;
        assert_eq!(log.get("shardId-000000000001", 1).await.unwrap(), None);
        assert_eq!(
            log.get("shardId-000000000002", 1).await.unwrap(),
            Some(other_shard)
        );
        // A tip marker is read no newer than the store received it (a writer's fast clock).
        let ahead = chrono::Utc::now() + chrono::Duration::hours(2);
        let tip = super::ShardTip {
            version: 1,
            observed_at: ahead,
        };
        log.write_tip("shardId-000000000002", &tip).await.unwrap();
        let read = log.read_tip("shardId-000000000002").await.unwrap().unwrap();
        assert_eq!(read.version, 1);
        assert!(read.observed_at <= chrono::Utc::now(), "{read:?}");
        let mut shards = log.shards().await.unwrap();
        shards.sort();
        assert_eq!(shards, ["shardId-000000000001", "shardId-000000000002"]);
    }
}
