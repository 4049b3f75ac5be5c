//! Each shard's committed checkpoint, read at start-up (its newest committed plan, or the
//! stream-level checkpoint it was upgraded from), and the tip markers written while idle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::StreamJob;
use super::upgrade::UpgradedFrom;
use crate::pipeline::EngineError;
use crate::pipeline::resume::{ShardCheckpoint, resume};
use crate::sink::ShardTip;

/// How often a tip marker is written again while nothing changes.
const TIP_MARK_EVERY: Duration = Duration::from_secs(1800);

impl StreamJob {
    /// Reads every shard's committed plan, puts the shards back where they stand (see
    /// [`resume`]), and notes the plans made after them as pending.
    pub(super) async fn resume_shards(
        &mut self,
        upgraded_from: Option<UpgradedFrom>,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let mut shards: BTreeSet<String> = self.source.listed_shards().into_iter().collect();
        shards.extend(self.plans.shards().await?);
        if let Some(from) = &upgraded_from {
            shards.extend(from.manifest.positions.keys().cloned());
        }
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
            let checkpoint = if version > 0 {
                let plan = self.plans.get(shard, version).await?.ok_or_else(|| {
                    EngineError::MissingManifest {
                        table: self.table.uri().to_owned(),
                        what: format!("plan {version} of shard {shard}"),
                    }
                })?;
                Some(ShardCheckpoint {
                    position: plan.position,
                    planned_at: plan.planned_at,
                    tip_seen_at: tip,
                    stream_created_ms: plan.stream_created_ms,
                    shard_start: plan.shard_start,
                })
            } else {
                upgraded_from
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
            if let Some(next) = self.plans.get(shard, version + 1).await? {
                self.pending.push(next);
            }
        }
        self.foreign = resume(
            &mut self.source,
            &checkpoints,
            self.stream_now,
            self.on_lost_stream,
            cancel,
        )
        .await?;
        Ok(())
    }

    /// Records the shards found at their tip after their committed plan, when that adds to what
    /// the plan or the last marker said (at most every half hour while nothing changes).
    pub(super) async fn mark_tips(&mut self) -> Result<(), EngineError> {
        for shard in self.source.shards_at_tip() {
            let version = self.committed.get(&shard).copied().unwrap_or(0);
            let fresh = self
                .tip_marked
                .get(&shard)
                .is_some_and(|(marked, at)| *marked == version && at.elapsed() < TIP_MARK_EVERY);
            if fresh {
                continue;
            }
            let tip = ShardTip {
                version,
                observed_at: Utc::now(),
            };
            self.plans.write_tip(&shard, &tip).await?;
            self.tip_marked.insert(shard, (version, Instant::now()));
        }
        Ok(())
    }
}
