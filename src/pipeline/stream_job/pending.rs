//! Batches planned but not committed (before a restart, or by another engine): replayed exactly,
//! or, when some of their records are gone and the user accepted that, finished with what remains.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{PlannedBatch, StreamJob};
use crate::config::LostStreamPolicy;
use crate::pipeline::EngineError;
use crate::pipeline::resume::{Foreign, incarnation_changed, lost_stream};
use crate::sink::BatchManifest;
use crate::source::SourceError;

/// How a pending batch is read again.
enum Replay {
    /// Exactly its ranges; a record missing is an error.
    Exact,
    /// What remains of its ranges, leaving out shards of another incarnation.
    Remaining { foreign: BTreeSet<String> },
}

impl StreamJob {
    /// The pending batch `pending`, ready to commit.
    pub(super) async fn replay_pending(
        &mut self,
        pending: BatchManifest,
        started: Instant,
        cancel: &CancellationToken,
    ) -> Result<Option<PlannedBatch>, EngineError> {
        let foreign = if incarnation_changed(&pending, &self.source, self.stream_created_ms) {
            Foreign::All
        } else {
            self.foreign.clone()
        };
        if foreign != Foreign::None
            && let Some(stop) = lost_stream(
                &self.source,
                &pending,
                self.stream_created_ms,
                self.on_lost_stream,
            )
        {
            return Err(stop);
        }
        match foreign {
            Foreign::All => self
                .abandon(pending)
                .map(Some)
                .map_err(EngineError::Internal),
            Foreign::Shards(foreign) => {
                self.replay(pending, started, cancel, Replay::Remaining { foreign })
                    .await
            }
            Foreign::None => {
                match self
                    .replay(pending.clone(), started, cancel, Replay::Exact)
                    .await
                {
                    Err(EngineError::Source(SourceError::RecordsGone { .. }))
                        if self.on_lost_stream == LostStreamPolicy::Restart =>
                    {
                        let foreign = BTreeSet::new();
                        self.replay(pending, started, cancel, Replay::Remaining { foreign })
                            .await
                    }
                    other => other,
                }
            }
        }
    }

    async fn replay(
        &mut self,
        manifest: BatchManifest,
        started: Instant,
        cancel: &CancellationToken,
        how: Replay,
    ) -> Result<Option<PlannedBatch>, EngineError> {
        let batch_id = manifest.batch_id;
        let (ranges, positions, remaining) = match &how {
            Replay::Exact => {
                tracing::info!(stream = %manifest.stream, batch_id, "replaying a planned batch exactly");
                (manifest.ranges.clone(), manifest.positions.clone(), false)
            }
            Replay::Remaining { foreign } => {
                tracing::warn!(stream = %manifest.stream, batch_id, other_incarnation = ?foreign, "some records of a planned batch are gone (on_lost_stream = restart): committing what remains of it");
                let keep = |shard: &String| !foreign.contains(shard);
                let ranges: BTreeMap<_, _> = manifest
                    .ranges
                    .iter()
                    .filter(|(shard, _)| keep(shard))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                // Shards of another incarnation stay where resuming put them (their oldest record).
                let positions: BTreeMap<_, _> = manifest
                    .positions
                    .iter()
                    .filter(|(shard, _)| keep(shard))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (ranges, positions, true)
            }
        };
        let records = self.source.replay(&ranges, remaining, cancel).await?;
        if cancel.is_cancelled() {
            return Ok(None);
        }
        self.source.restore_except(&positions, |shard| match &how {
            Replay::Exact => false,
            Replay::Remaining { foreign } => foreign.contains(shard),
        });
        let fetch = started.elapsed();
        let present: BTreeSet<(String, String)> = records
            .iter()
            .map(|r| (r.shard_id.to_string(), r.sequence_number.to_string()))
            .collect();
        let (rows_in, decoded, decode) = self
            .decode(records, batch_id)
            .map_err(EngineError::Internal)?;
        let checked = if remaining {
            self.split_rule
                .check_remaining(&manifest, &decoded, &present)
        } else {
            self.split_rule.check(&manifest, &decoded)
        };
        checked.map_err(EngineError::SplitChanged)?;
        Ok(Some(PlannedBatch {
            manifest,
            rows_in,
            decoded,
            fetch,
            decode,
            millis_behind: 0,
            replayed: true,
            records_gone: remaining,
        }))
    }

    /// A pending batch planned on another incarnation of the stream: none of its records exist
    /// any more. It is committed with no rows, so its batch id is used once, and the shards go on
    /// from where resuming put them.
    fn abandon(&mut self, manifest: BatchManifest) -> Result<PlannedBatch, String> {
        let batch_id = manifest.batch_id;
        tracing::warn!(stream = %manifest.stream, batch_id, "a planned batch of the old stream is committed without its records, which are gone");
        let (_, decoded, _) = self.decode(Vec::new(), batch_id)?;
        Ok(PlannedBatch {
            manifest,
            rows_in: 0,
            decoded,
            fetch: Duration::ZERO,
            decode: Duration::ZERO,
            millis_behind: 0,
            replayed: true,
            records_gone: true,
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
        if incarnation_changed(&manifest, &self.source, self.stream_created_ms) {
            // Its positions are of the old stream (a batch given up for that): read anew.
            self.source.restore(&BTreeMap::new());
        } else {
            self.source.restore(&manifest.positions);
        }
        self.committed = batch_id;
        self.foreign = Foreign::None;
        self.summary.last_batch_id = batch_id;
        Ok(())
    }
}
