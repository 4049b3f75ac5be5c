//! Upgrading a table written by the stream-level protocol of earlier versions (one batch counter
//! and one `txn` per stream, a manifest per batch).
//!
//! Before any plan, the slot after the table's stream-level checkpoint `m` gets a fence, which
//! earlier versions cannot parse: they stop there instead of planning a batch, in a rolling deploy
//! or after a rollback. A batch an earlier version planned in that slot is first finished by the
//! stream-level rules (read again exactly, committed under the stream's `txn`), and the fence
//! goes in the next one. A shard that has no plan of its own yet starts from manifest `m`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::StreamJob;
use crate::config::LostStreamPolicy;
use crate::decode::{dead_letter_batch, dead_letter_schema};
use crate::pipeline::EngineError;
use crate::pipeline::resume::{ShardCheckpoint, incarnation_changed, lost_stream};
use crate::sink::{BatchManifest, EngineCommit, Fence, TipMarker};
use crate::source::ReplayRules;

/// The stream-level checkpoint a table was written up to: the manifest of its last batch, and the
/// tip marker written after it.
#[derive(Debug)]
pub(super) struct UpgradedFrom {
    pub manifest: BatchManifest,
    tip: Option<TipMarker>,
}

impl UpgradedFrom {
    /// Where `shard` stands in it (`None`: it was not read then). `tip_seen_at` is a shard tip
    /// marker written since, at this checkpoint.
    pub fn checkpoint(
        &self,
        shard: &str,
        tip_seen_at: Option<DateTime<Utc>>,
    ) -> Option<ShardCheckpoint> {
        let position = self.manifest.positions.get(shard)?.clone();
        let earlier_tip = self
            .tip
            .as_ref()
            .filter(|t| t.shards.iter().any(|s| s == shard))
            .map(|t| t.observed_at);
        Some(ShardCheckpoint {
            position,
            planned_at: self.manifest.planned_at,
            tip_seen_at: tip_seen_at.max(earlier_tip),
            stream_created_ms: self.manifest.stream_created_ms,
            shard_start: self.manifest.shard_starts.get(shard).cloned(),
        })
    }
}

impl StreamJob {
    /// Fences the stream-level protocol off (finishing the batch it left pending, if any) and
    /// returns the stream-level checkpoint, if the table has one.
    pub(super) async fn fence_stream_level(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<UpgradedFrom>, EngineError> {
        let checkpoint = loop {
            let checkpoint = self.table.committed_batch().await?.unwrap_or(0);
            match self.manifests.fence(checkpoint + 1).await? {
                // An earlier version may have committed past the slot meanwhile (and pruned its
                // manifest): the fence would then stand where no engine looks. It goes further.
                Fence::Placed => {
                    if self.table.committed_batch().await?.unwrap_or(0) == checkpoint {
                        break checkpoint;
                    }
                    self.manifests.remove_fence(checkpoint + 1).await?;
                }
                Fence::Pending(manifest) => self.finish_stream_batch(*manifest, cancel).await?,
            }
            if cancel.is_cancelled() {
                return Ok(None);
            }
        };
        if checkpoint == 0 {
            return Ok(None);
        }
        let manifest =
            self.manifests
                .get(checkpoint)
                .await?
                .ok_or_else(|| EngineError::MissingManifest {
                    table: self.table.uri().to_owned(),
                    what: format!("batch {checkpoint}"),
                })?;
        let tip = self
            .manifests
            .read_tip()
            .await?
            .filter(|t| t.batch_id == checkpoint);
        Ok(Some(UpgradedFrom { manifest, tip }))
    }

    /// Finishes a batch an earlier version planned: its records read again exactly (or, on a
    /// recreated stream under `restart`, none) and committed under the stream's `txn` with the
    /// batch id, which an earlier version committing it too would find recorded.
    async fn finish_stream_batch(
        &mut self,
        manifest: BatchManifest,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let batch_id = manifest.batch_id;
        tracing::info!(stream = %self.name, batch_id, "finishing a batch planned by an earlier version");
        let changed = |start: Option<(&str, &str)>| {
            incarnation_changed(
                manifest.stream_created_ms,
                start,
                &self.source,
                self.stream_now.created_ms,
            )
        };
        let recreated = changed(None)
            || manifest
                .shard_starts
                .iter()
                .any(|(shard, start)| changed(Some((shard, start))));
        let mut records = Vec::new();
        let mut records_gone = recreated;
        if recreated {
            if let Some(stop) = lost_stream(
                self.source.stream(),
                manifest.stream_created_ms,
                self.stream_now.created_ms,
                self.on_lost_stream,
            ) {
                return Err(stop);
            }
        } else {
            let rules = ReplayRules {
                foreign: BTreeSet::new(),
                what_remains: self.on_lost_stream == LostStreamPolicy::Restart,
            };
            let replayed = self.source.replay(&manifest.ranges, &rules, cancel).await?;
            if cancel.is_cancelled() {
                return Ok(());
            }
            records_gone = replayed.partial || !replayed.left_out.is_empty();
            records = replayed.records;
        }
        let present: BTreeSet<_> = records
            .iter()
            .map(|r| (r.shard_id.to_string(), r.sequence_number.clone()))
            .collect();
        // One batch, decoded and cleaned whole, as the earlier version did.
        let (mut decoded, _) = self
            .decode(BTreeMap::from([(String::new(), records)]))
            .await?;
        // The batch of an earlier version is finished without raw rows (it had no raw table).
        let decoded = decoded
            .remove("")
            .unwrap_or_else(|| self.read_nothing())
            .decoded;
        self.split_rule
            .check(
                manifest.split.as_ref(),
                &format!("batch {batch_id}"),
                &decoded,
                records_gone.then_some(&present),
            )
            .map_err(EngineError::SplitChanged)?;
        let info = EngineCommit {
            stream: Some(manifest.stream.clone()),
            batch_id: Some(batch_id),
            finished_on_upgrade: Some(true),
            records_gone: Some(records_gone),
            ..EngineCommit::default()
        }
        .commit_info();
        let table_holds_batch = self
            .table
            .committed_batch()
            .await?
            .is_some_and(|done| done >= batch_id);
        if table_holds_batch {
            return Ok(());
        }
        if !decoded.dead_letters.is_empty() {
            let batch = dead_letter_batch(self.source.stream(), &decoded.dead_letters, None)
                .map_err(|e| {
                    EngineError::Internal(format!("dead letters of batch {batch_id}: {e}"))
                })?;
            self.dead_letters
                .sink
                .commit(batch_id, &dead_letter_schema(), &[batch], info.clone())
                .await?;
        }
        let cleaned = self.cleaning.apply(decoded.rows).await?;
        self.table
            .commit(batch_id, &self.output_schema, &cleaned, info)
            .await?;
        Ok(())
    }
}
