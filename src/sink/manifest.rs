//! A stream's files beside its table's log, under `<table>/_kinesis_delta/<pipeline>/<stream>/`:
//!
//! * `batches/<batch id>.json`, the write-ahead batch manifests of the stream-level protocol of
//!   earlier versions: what each planned batch read from each shard, made authoritative by the
//!   Delta commit carrying `txn(app_id, batch id)`. This version reads the newest committed one
//!   (the checkpoint it upgrades from), finishes a pending one, and then writes a fence in the
//!   next slot, which earlier versions cannot parse: they stop instead of planning a batch.
//! * `latest_start.json`: where `initial_position = "latest"` starts, fixed once (put-if-absent).
//! * `tip.json`: the shards last seen at their tip after the newest batch (written by earlier
//!   versions; read for shards that have no shard plan yet).
//!
//! Delta log checkpoints and log clean-up never touch them, and VACUUM skips `_`-prefixed folders.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deltalake::logstore::ObjectStoreRef;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::SinkError;
use crate::sequence::SequenceNumber;
use crate::source::{ShardPosition, ShardRange};

/// One planned batch: the records it takes and where every shard stands after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchManifest {
    /// The batch id, the Delta `txn` version of its commit.
    pub batch_id: i64,
    /// The Kinesis stream.
    pub stream: String,
    /// The records taken, per shard: `first..=last`.
    pub ranges: BTreeMap<String, ShardRange>,
    /// Every shard's position once the batch is committed.
    pub positions: BTreeMap<String, ShardPosition>,
    /// When the batch was planned.
    pub planned_at: DateTime<Utc>,
    /// When the stream was created (ms since the epoch), to notice a stream recreated under the
    /// same name, whose sequence numbers mean nothing to these positions.
    #[serde(default)]
    pub stream_created_ms: Option<i64>,
    /// Each shard's first sequence number when the batch was planned (the same purpose, and
    /// finer than a creation time).
    #[serde(default)]
    pub shard_starts: BTreeMap<String, String>,
    /// What decided which records of the batch are dead letters. `None` in manifests written
    /// before it was recorded.
    #[serde(default)]
    pub split: Option<BatchSplit>,
}

/// How a batch's records were split between the table and the dead-letter table when it was
/// planned. Every attempt at the batch must split them the same way, or a record could land in
/// neither table or in both (the dead letters may be committed before a crash, the rows after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSplit {
    /// SHA-256 of the raw schema file that decoded the batch.
    pub schema_sha256: String,
    /// SHA-256 of the cleaning SQL file (for the record: the SQL does not move records between
    /// the tables).
    pub sql_sha256: String,
    /// The dead letters' sequence numbers, per shard.
    pub dead_letters: BTreeMap<String, Vec<SequenceNumber>>,
}

/// Shards seen at their tip (nothing beyond their position) while a batch was the newest
/// committed one, and when: an idle stream commits nothing for days, so its newest manifest may
/// say a shard was behind while the engine has since read it to its end many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TipMarker {
    /// The committed batch whose positions the shards stood at.
    pub batch_id: i64,
    /// The shards Kinesis said had nothing beyond those positions.
    pub shards: Vec<String>,
    /// When.
    pub observed_at: DateTime<Utc>,
}

/// What the manifest slot after the table's stream-level checkpoint holds once fenced.
#[derive(Debug)]
pub enum Fence {
    /// The fence: no engine plans a stream-level batch there.
    Placed,
    /// A batch an earlier version planned there and may not have committed: it is finished by
    /// the stream-level rules, and the fence goes in the next slot.
    Pending(Box<BatchManifest>),
}

/// The fence's content: anything but a manifest, so that earlier versions stop on it.
#[derive(Serialize, Deserialize)]
struct FenceMark {
    fence: String,
}

/// The manifests of one stream in one table.
#[derive(Debug, Clone)]
pub struct ManifestLog {
    store: ObjectStoreRef,
    /// `_kinesis_delta/<pipeline>/<stream>`.
    base: Path,
    dir: Path,
}

impl ManifestLog {
    /// The log under a table's store (rooted at the table) for one pipeline and stream.
    pub fn new(store: ObjectStoreRef, pipeline: &str, stream: &str) -> Self {
        let base = Path::from_iter(["_kinesis_delta", pipeline, stream]);
        let dir = base.clone().join("batches");
        Self { store, base, dir }
    }

    fn path(&self, batch_id: i64) -> Path {
        self.dir.clone().join(format!("{batch_id:020}.json"))
    }

    async fn put_json(
        &self,
        path: &Path,
        value: &impl Serialize,
        if_absent: bool,
    ) -> Result<bool, SinkError> {
        put_json(&self.store, path, value, if_absent).await
    }

    async fn read_json<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, SinkError> {
        read_json(&self.store, path).await
    }

    /// Puts the fence at `batch_id` (the slot after the table's stream-level checkpoint), unless
    /// a manifest is there.
    pub async fn fence(&self, batch_id: i64) -> Result<Fence, SinkError> {
        let path = self.path(batch_id);
        let mark = FenceMark {
            fence: "checkpoints of this stream are kept per shard (shards/); kinesis-delta versions before them stop here".to_owned(),
        };
        for _ in 0..3 {
            if self.put_json(&path, &mark, true).await? {
                return Ok(Fence::Placed);
            }
            let Some(found) = self.read_json::<serde_json::Value>(&path).await? else {
                continue; // pruned meanwhile: the slot was behind; tried again
            };
            if found.get("fence").is_some() {
                return Ok(Fence::Placed);
            }
            return serde_json::from_value(found)
                .map(|m| Fence::Pending(Box::new(m)))
                .map_err(|e| SinkError::DamagedManifest {
                    path: path.to_string(),
                    message: e.to_string(),
                });
        }
        Err(SinkError::Store {
            path: path.to_string(),
            source: object_store::Error::Generic {
                store: "kinesis-delta",
                source: "reported as existing, then not found, three times".into(),
            },
        })
    }

    /// Deletes the fence at `batch_id` (placed in a slot found passed), leaving a manifest alone.
    pub async fn remove_fence(&self, batch_id: i64) -> Result<(), SinkError> {
        let path = self.path(batch_id);
        let found: Option<serde_json::Value> = self.read_json(&path).await?;
        if found.is_some_and(|f| f.get("fence").is_some()) {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(SinkError::Store {
                        path: path.to_string(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads the manifest of a batch, if there is one.
    pub async fn get(&self, batch_id: i64) -> Result<Option<BatchManifest>, SinkError> {
        self.read_json(&self.path(batch_id)).await
    }

    /// The moment from which a stream at `initial_position = "latest"` is read, fixed once for
    /// the pipeline: the first engine to start records `now_ms`, every later start (and every
    /// other engine) reads it back. So records put between two runs, or between the starts of
    /// two engines, are never skipped.
    pub async fn pin_latest_start(&self, now_ms: i64) -> Result<i64, SinkError> {
        #[derive(Serialize, Deserialize)]
        struct LatestStart {
            ms: i64,
        }
        let path = self.base.clone().join("latest_start.json");
        if self
            .put_json(&path, &LatestStart { ms: now_ms }, true)
            .await?
        {
            return Ok(now_ms);
        }
        let pinned: Option<LatestStart> = self.read_json(&path).await?;
        // Reported as existing, then not found: a store that is not consistent; retrying helps.
        pinned.map(|p| p.ms).ok_or_else(|| SinkError::Store {
            path: path.to_string(),
            source: object_store::Error::Generic {
                store: "kinesis-delta",
                source: "reported as existing, then not found".into(),
            },
        })
    }

    fn tip_path(&self) -> Path {
        self.base.clone().join("tip.json")
    }

    /// The last tip marker, if any (an unreadable one counts as none: it only ever saves a stop).
    pub async fn read_tip(&self) -> Result<Option<TipMarker>, SinkError> {
        match self.read_json(&self.tip_path()).await {
            Err(SinkError::DamagedManifest { .. }) => Ok(None),
            other => other,
        }
    }

    fn rebuild_path(&self) -> Path {
        self.base.clone().join("rebuild.json")
    }

    /// Says a rebuild is about to commit the table, then the dead letters: `false` when a mark
    /// is there already (another rebuild's). With `take_over`, the mark of a rebuild that did
    /// not end is replaced by this one's.
    pub async fn mark_rebuild(
        &self,
        mark: &RebuildMark,
        take_over: bool,
    ) -> Result<bool, SinkError> {
        self.put_json(&self.rebuild_path(), mark, !take_over).await
    }

    /// The mark of a rebuild that stopped between its two commits, if one did.
    pub async fn rebuild_mark(&self) -> Result<Option<RebuildMark>, SinkError> {
        self.read_json(&self.rebuild_path()).await
    }

    /// Removes the rebuild mark of `owner` (another rebuild's mark stays).
    pub async fn clear_rebuild_mark(&self, owner: &str) -> Result<(), SinkError> {
        if self
            .rebuild_mark()
            .await?
            .is_none_or(|mark| mark.owner != owner)
        {
            return Ok(());
        }
        let path = self.rebuild_path();
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(SinkError::Store {
                path: path.to_string(),
                source,
            }),
        }
    }
}

/// A rebuild that moves records between the table and its dead-letter table commits the two
/// tables one after the other: this mark is there from before the first commit to after the
/// second, so that one stopped in between is finished (by running it again) before the engine
/// starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildMark {
    /// When the rebuild began.
    pub started_at: DateTime<Utc>,
    /// The process that runs it: only it removes the mark.
    pub owner: String,
}

/// Writes `value` as JSON at `path`; with `if_absent`, only when nothing is there yet (then
/// `false` means another writer was first: a local create-new, or S3's conditional put).
pub(super) async fn put_json(
    store: &ObjectStoreRef,
    path: &Path,
    value: &impl Serialize,
    if_absent: bool,
) -> Result<bool, SinkError> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| SinkError::DamagedManifest {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let mode = if if_absent {
        PutMode::Create
    } else {
        PutMode::Overwrite
    };
    let options = PutOptions {
        mode,
        ..PutOptions::default()
    };
    match store.put_opts(path, PutPayload::from(body), options).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) if if_absent => Ok(false),
        Err(source) => Err(SinkError::Store {
            path: path.to_string(),
            source,
        }),
    }
}

/// Reads the JSON at `path`, if there is a file.
pub(super) async fn read_json<T: DeserializeOwned>(
    store: &ObjectStoreRef,
    path: &Path,
) -> Result<Option<T>, SinkError> {
    let bytes = match store.get(path).await {
        Ok(result) => result.bytes().await,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => Err(e),
    }
    .map_err(|source| SinkError::Store {
        path: path.to_string(),
        source,
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| SinkError::DamagedManifest {
            path: path.to_string(),
            message: e.to_string(),
        })
}
