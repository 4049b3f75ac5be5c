//! Each shard's committed checkpoint, read at start-up (its newest committed plan, or the
//! stream-level checkpoint it was upgraded from), and the tip markers written while idle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::StreamJob;
use crate::pipeline::EngineError;
use crate::pipeline::resume::{ShardCheckpoint, resume};
use crate::sink::{PlanOutcome, ShardPlan, ShardTip};
use crate::source::ShardPosition;

/// How often a tip marker is written again while nothing changes.
const TIP_MARK_EVERY: Duration = Duration::from_secs(1800);

impl StreamJob {
    /// Every shard the stream lists or the table has a checkpoint of.
    pub(super) async fn known_shards(&self) -> Result<BTreeSet<String>, EngineError> {
        let mut shards: BTreeSet<String> = self.source.listed_shards().into_iter().collect();
        shards.extend(self.plans.shards().await?);
        if let Some(from) = &self.upgraded_from {
            shards.extend(from.manifest.positions.keys().cloned());
        }
        Ok(shards)
    }

    /// Reads the committed plan of each of `shards`, puts them back where they stand (see
    /// [`resume`]), and notes the plans made after them as pending.
    pub(super) async fn resume_shards(
        &mut self,
        shards: &BTreeSet<String>,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let app_ids: Vec<String> = shards.iter().map(|s| self.shard_app_id(s)).collect();
        let recorded = self.table.recorded(&app_ids).await?;
        let mut checkpoints = BTreeMap::new();
        for (shard, app_id) in shards.iter().zip(&app_ids) {
            let version = recorded.get(app_id).copied().unwrap_or(0);
            let tip = self
                .plans
                .read_tip(shard)
                .await?
                .filter(|t| t.version == version)
                .map(|t| t.observed_at);
            let mut version = version;
            let checkpoint = if version > 0 {
                let plan = self.committed_plan(shard, version).await?;
                version = plan.version;
                Some(ShardCheckpoint {
                    position: plan.position,
                    planned_at: plan.planned_at,
                    tip_seen_at: tip,
                    stream_created_ms: plan.stream_created_ms,
                    shard_start: plan.shard_start,
                })
            } else {
                self.upgraded_from
                    .as_ref()
                    .and_then(|from| from.checkpoint(shard, tip))
            };
            self.committed.insert(shard.clone(), version);
            if let Some(checkpoint) = checkpoint {
                if checkpoint.position.finished {
                    self.finished.insert(shard.clone());
                }
                checkpoints.insert(shard.clone(), checkpoint);
            }
            self.pending.retain(|p| &p.shard != shard);
            if let Some(next) = self.plans.get(shard, version + 1).await? {
                self.pending.push(next);
            }
        }
        let resumed = resume(
            &mut self.source,
            &checkpoints,
            self.stream_now,
            self.on_lost_stream,
            cancel,
        )
        .await?;
        self.foreign.extend(resumed.foreign);
        for shard in &resumed.afresh {
            self.restamp(shard).await?;
        }
        // Decided after the incarnation check: a shard of a recreated stream is another shard.
        if let Some(leases) = &self.leases {
            for shard in shards.iter().filter(|s| self.finished.contains(*s)) {
                leases.finished(self.source.stream(), shard);
            }
        }
        Ok(())
    }

    /// The plan `version` of `shard`, which the table records: read again after a moment when
    /// missing (a worker far ahead may have committed 20 more and pruned it meanwhile).
    async fn committed_plan(
        &mut self,
        shard: &str,
        version: i64,
    ) -> Result<ShardPlan, EngineError> {
        let mut version = version;
        for _ in 0..3 {
            if let Some(plan) = self.plans.get(shard, version).await? {
                return Ok(plan);
            }
            version = self.table_version(shard).await?;
            self.committed.insert(shard.to_owned(), version);
        }
        Err(EngineError::MissingManifest {
            table: self.table.uri().to_owned(),
            what: format!("plan {version} of shard {shard}"),
        })
    }

    /// A shard found to be another incarnation than its checkpoint's, and read afresh (the user
    /// accepted it): an empty plan stamped with the stream as it is now is committed first, so
    /// that the old stamp is not judged again at every start.
    async fn restamp(&mut self, shard: &str) -> Result<(), EngineError> {
        self.finished.remove(shard);
        if self.pending.iter().any(|p| p.shard == shard) {
            return Ok(()); // the pending plan is committed first, and the next one is stamped anew
        }
        let plan = ShardPlan {
            shard: shard.to_owned(),
            version: self.committed.get(shard).copied().unwrap_or(0) + 1,
            range: None,
            position: ShardPosition::default(),
            stream_created_ms: self.stream_now.created_ms,
            shard_start: self.source.shard_starts().get(shard).cloned(),
            split: Some(self.split_rule.record(&self.read_nothing().decoded)),
            planned_at: Utc::now(),
            worker: self.worker.clone(),
        };
        match self.plans.create(&plan).await? {
            PlanOutcome::Created => self.pending.push(plan),
            PlanOutcome::Existing(theirs) => self.pending.push(*theirs),
            PlanOutcome::Vanished => {}
        }
        Ok(())
    }

    /// The plan the table records for `shard` now (0: none).
    pub(super) async fn table_version(&mut self, shard: &str) -> Result<i64, EngineError> {
        let app_id = self.shard_app_id(shard);
        let recorded = self.table.recorded(std::slice::from_ref(&app_id)).await?;
        Ok(recorded.get(&app_id).copied().unwrap_or(0))
    }

    /// Records the shards found at their tip after their committed plan, when that adds to what
    /// the plan or the last marker said (at most every half hour while nothing changes). The
    /// marker's moment is when the shard was found so, not when it is written (a pause in between
    /// must not make an old observation look new), and it is written only while the table still
    /// records the plan it names.
    pub(super) async fn mark_tips(&mut self) -> Result<(), EngineError> {
        for (shard, seen) in self.source.shards_at_tip() {
            let version = self.committed.get(&shard).copied().unwrap_or(0);
            let fresh = self
                .tip_marked
                .get(&shard)
                .is_some_and(|(marked, at)| *marked == version && at.elapsed() < TIP_MARK_EVERY);
            if fresh {
                continue;
            }
            if self.table_version(&shard).await? != version {
                continue; // another worker committed on: its own markers speak for it
            }
            let age = chrono::Duration::from_std(seen.elapsed()).unwrap_or_default();
            let tip = ShardTip {
                version,
                observed_at: Utc::now() - age,
            };
            self.plans.write_tip(&shard, &tip).await?;
            self.tip_marked.insert(shard, (version, Instant::now()));
        }
        Ok(())
    }
}
