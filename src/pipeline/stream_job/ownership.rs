//! Which shards this process reads, with `[leases]`: new shards get a lease, a shard taken is
//! resumed from the table (wherever its last owner left it), a shard lost is no longer read, and
//! a child held here waits until the table says each parent was read to its end, whoever read it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::StreamJob;
use crate::pipeline::EngineError;
use crate::pipeline::leases::ShardLeases;
use crate::pipeline::resume::incarnation_changed;

/// How often the parents of held children are looked up in the table while they are unfinished.
const PARENTS_EVERY: Duration = Duration::from_secs(2);

impl StreamJob {
    /// Follows the lease table before a batch (nothing to do without leases). A failure to reach
    /// the table or Kinesis here is logged and tried again at the next batch: a shard is read only
    /// once its checkpoint was read.
    pub(super) async fn follow_leases(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let Some(leases) = self.leases.clone() else {
            return Ok(());
        };
        let stream = self.source.stream().to_owned();
        self.add_leases(&leases).await?;
        let held = leases.held(&stream);
        if held != self.owned {
            let taken: BTreeSet<String> = held.difference(&self.owned).cloned().collect();
            let lost: Vec<&String> = self.owned.difference(&held).collect();
            tracing::info!(%stream, worker = leases.worker(), taken = ?taken, lost = ?lost, "shards held changed");
            self.owned.retain(|s| held.contains(s));
            // A shard made by a reshard since this process last listed the shards: resuming
            // judges a checkpoint against the listing, so it must be current.
            if taken.iter().any(|s| !self.source.is_listed(s)) {
                self.source.refresh_shards(cancel).await?;
            }
            match self.resume_shards(&taken, cancel).await {
                Ok(()) => self.owned.extend(taken),
                Err(e) if e.retryable() => {
                    tracing::warn!(%stream, error = %e, "cannot resume the shards taken yet; trying again");
                }
                Err(e) => return Err(e),
            }
        }
        // While the leases may have lapsed (DynamoDB slow or away), nothing is read; what is held
        // is kept, and read on from where it stands once a renewal succeeds again.
        let safe = leases.safe();
        let reading = if safe {
            self.owned.clone()
        } else {
            BTreeSet::new()
        };
        self.source.set_owned(Some(reading));
        if safe && self.owned.is_empty() {
            // Holding nothing (more processes than shards) is healthy: nothing to read.
            crate::telemetry::readiness().passed(&stream);
        }
        self.check_parents(&stream).await
    }

    /// New shards in the listing get a lease, unless the table says they ended.
    async fn add_leases(&mut self, leases: &ShardLeases) -> Result<(), EngineError> {
        let stream = self.source.stream().to_owned();
        let new: Vec<String> = self
            .source
            .listed_shards()
            .into_iter()
            .filter(|s| !self.leased.contains(s))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut unfinished = Vec::with_capacity(new.len());
        for shard in &new {
            match self.finished_in_table(shard).await {
                Ok(true) => leases.finished(&stream, shard),
                Ok(false) => unfinished.push(shard.clone()),
                Err(e) if e.retryable() => {
                    tracing::warn!(%stream, error = %e, "cannot read the table yet; trying again");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        // A lease not added now is added at a later batch: nothing waits on it meanwhile.
        match leases.ensure(&stream, &unfinished).await {
            Ok(()) => self.leased.extend(new),
            Err(e) => {
                tracing::warn!(%stream, error = %e, "cannot add the leases of new shards yet")
            }
        }
        Ok(())
    }

    /// A held child waits until each listed parent is finished: here, or in the table (another
    /// process read it), looked up every [`PARENTS_EVERY`].
    async fn check_parents(&mut self, stream: &str) -> Result<(), EngineError> {
        if self
            .parents_checked
            .is_some_and(|at| at.elapsed() < PARENTS_EVERY)
        {
            return Ok(());
        }
        self.parents_checked = Some(Instant::now());
        for parent in self.source.waiting_parents() {
            if self.owned.contains(&parent) {
                continue;
            }
            match self.catch_up(&parent).await {
                Ok(()) => {}
                Err(e) if e.retryable() => {
                    tracing::warn!(%stream, error = %e, "cannot read a parent's checkpoint yet");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the table says `shard` was read to its end, on the stream as it is now (a shard of
    /// a recreated stream with the same id is another shard).
    async fn finished_in_table(&mut self, shard: &str) -> Result<bool, EngineError> {
        let version = self.table_version(shard).await?;
        let (finished, created_ms, start) = if version == 0 {
            let Some(from) = &self.upgraded_from else {
                return Ok(false);
            };
            let finished = from
                .manifest
                .positions
                .get(shard)
                .is_some_and(|p| p.finished);
            let start = from.manifest.shard_starts.get(shard).cloned();
            (finished, from.manifest.stream_created_ms, start)
        } else {
            match self.plans.get(shard, version).await? {
                Some(plan) => (
                    plan.position.finished,
                    plan.stream_created_ms,
                    plan.shard_start,
                ),
                None => return Ok(false),
            }
        };
        let start = start.as_deref().map(|s| (shard, s));
        Ok(finished
            && !incarnation_changed(created_ms, start, &self.source, self.stream_now.created_ms))
    }
}
