//! Batches planned but not committed (before a restart, or by another engine): replayed exactly,
//! or, when some of their records are gone and the user accepted that, finished with what remains.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{PlannedBatch, StreamJob};
use crate::config::LostStreamPolicy;
use crate::pipeline::EngineError;
use crate::pipeline::resume::{incarnation_changed, lost_stream};
use crate::sink::BatchManifest;
use crate::source::{BudgetLease, ReplayRules};

impl StreamJob {
    /// The pending batch `pending`, ready to commit.
    ///
    /// A batch planned on a stream that was since recreated has no records left: the policy
    /// decides, and `restart` commits it empty. Otherwise it is read exactly; under `restart` a
    /// shard whose part is gone gives what remains of it, or nothing when resuming found the shard
    /// to be of another incarnation.
    pub(super) async fn replay_pending(
        &mut self,
        pending: BatchManifest,
        started: Instant,
        cancel: &CancellationToken,
    ) -> Result<Option<PlannedBatch>, EngineError> {
        if incarnation_changed(&pending, &self.source, self.stream_created_ms) {
            if let Some(stop) = lost_stream(
                &self.source,
                &pending,
                self.stream_created_ms,
                self.on_lost_stream,
            ) {
                return Err(stop);
            }
            return self
                .abandon(pending)
                .await
                .map(Some)
                .map_err(EngineError::Internal);
        }
        let rules = ReplayRules {
            foreign: self.foreign.clone(),
            what_remains: self.on_lost_stream == LostStreamPolicy::Restart,
        };
        self.replay(pending, started, cancel, &rules).await
    }

    async fn replay(
        &mut self,
        manifest: BatchManifest,
        started: Instant,
        cancel: &CancellationToken,
        rules: &ReplayRules,
    ) -> Result<Option<PlannedBatch>, EngineError> {
        let batch_id = manifest.batch_id;
        tracing::info!(stream = %manifest.stream, batch_id, "replaying a planned batch");
        let replayed = self.source.replay(&manifest.ranges, rules, cancel).await?;
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let left_out = replayed.left_out;
        self.source
            .restore_except(&manifest.positions, |shard| left_out.contains(shard));
        for shard in &left_out {
            // Another incarnation: read anew.
            self.source.start_at_trim_horizon(shard);
        }
        let fetch = started.elapsed();
        let records_gone = replayed.partial || !left_out.is_empty();
        if records_gone {
            tracing::warn!(stream = %manifest.stream, batch_id, left_out = ?left_out, "some records of a planned batch are gone (on_lost_stream = restart): committing what remains of it");
        }
        let present: BTreeSet<_> = replayed
            .records
            .iter()
            .map(|r| (r.shard_id.to_string(), r.sequence_number.clone()))
            .collect();
        let bytes: usize = replayed.records.iter().map(|r| r.data.len()).sum();
        // Already in memory: counted, but never waited for (the stream may hold the rest itself).
        let lease = self.source.budget().take_available(bytes);
        let (decoded, decode) = self
            .decode(replayed.records, batch_id)
            .await
            .map_err(EngineError::Internal)?;
        self.split_rule
            .check(&manifest, &decoded, records_gone.then_some(&present))
            .map_err(EngineError::SplitChanged)?;
        Ok(Some(PlannedBatch {
            manifest,
            decoded,
            bytes,
            fetch,
            decode,
            millis_behind: 0,
            replayed: true,
            records_gone,
            lease,
        }))
    }

    /// A pending batch planned on another incarnation of the stream: none of its records exist
    /// any more. It is committed with no rows, so its batch id is used once, and the shards go on
    /// from where resuming put them.
    async fn abandon(&mut self, manifest: BatchManifest) -> Result<PlannedBatch, String> {
        let batch_id = manifest.batch_id;
        tracing::warn!(stream = %manifest.stream, batch_id, "a planned batch of the old stream is committed without its records, which are gone");
        let (decoded, _) = self.decode(Vec::new(), batch_id).await?;
        Ok(PlannedBatch {
            manifest,
            decoded,
            bytes: 0,
            fetch: Duration::ZERO,
            decode: Duration::ZERO,
            millis_behind: 0,
            replayed: true,
            records_gone: true,
            lease: BudgetLease::default(),
        })
    }

    /// Moves this engine's checkpoint up to a batch another engine committed, and puts the shards
    /// where that batch left them. The batch's manifest may be pruned meanwhile when the other
    /// engine runs far ahead: then the newer committed batch is taken.
    pub(super) async fn catch_up_to(&mut self, mut batch_id: i64) -> Result<(), EngineError> {
        let mut manifest = None;
        for _ in 0..3 {
            manifest = self.manifests.get(batch_id).await?;
            if manifest.is_some() {
                break;
            }
            batch_id = self.table.committed_batch().await?.unwrap_or(batch_id);
        }
        let manifest = manifest.ok_or_else(|| EngineError::MissingManifest {
            table: self.table.uri().to_owned(),
            batch_id,
        })?;
        tracing::info!(stream = %self.name, from = self.committed, to = batch_id, "another engine committed ahead of this one; continuing after its batch");
        self.table.metrics().already_committed();
        if incarnation_changed(&manifest, &self.source, self.stream_created_ms) {
            // Its positions are of the old stream (a batch given up for that): read anew.
            self.source.restore(&BTreeMap::new());
        } else {
            self.source.restore(&manifest.positions);
        }
        self.committed = batch_id;
        self.foreign.clear();
        self.summary.last_batch_id = batch_id;
        Ok(())
    }
}
