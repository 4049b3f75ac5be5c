//! Which shards this process reads, with `[leases]`: new shards get a lease, a shard taken is
//! resumed from the table (wherever its last owner left it), a shard lost is no longer read, and
//! a child held here waits until the table says each parent was read to its end, whoever read it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::StreamJob;
use crate::pipeline::EngineError;

/// How often the parents of held children are looked up in the table while they are unfinished.
const PARENTS_EVERY: Duration = Duration::from_secs(2);

impl StreamJob {
    /// Follows the lease table before a batch (nothing to do without leases).
    pub(super) async fn follow_leases(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let Some(leases) = self.leases.clone() else {
            return Ok(());
        };
        let stream = self.source.stream().to_owned();
        let new: Vec<String> = self
            .source
            .listed_shards()
            .into_iter()
            .filter(|s| !self.leased.contains(s))
            .collect();
        if !new.is_empty() {
            let mut unfinished = Vec::with_capacity(new.len());
            for shard in &new {
                if self.finished_in_table(shard).await? {
                    leases.finished(&stream, shard);
                } else {
                    unfinished.push(shard.clone());
                }
            }
            // A lease not added now is added at a later batch: nothing waits on it meanwhile.
            match leases.ensure(&stream, &unfinished).await {
                Ok(()) => self.leased.extend(new),
                Err(e) => {
                    tracing::warn!(%stream, error = %e, "cannot add the leases of new shards yet")
                }
            }
        }
        let owned = leases.owned(&stream);
        if owned != self.owned {
            let taken: BTreeSet<String> = owned.difference(&self.owned).cloned().collect();
            let lost: Vec<&String> = self.owned.difference(&owned).collect();
            tracing::info!(%stream, worker = leases.worker(), taken = ?taken, lost = ?lost, "shards held changed");
            self.owned.clone_from(&owned);
            self.source.set_owned(Some(owned));
            if !taken.is_empty() {
                self.resume_shards(&taken, cancel).await?;
            }
        }
        if self.owned.is_empty() {
            // Holding nothing (more processes than shards) is healthy: nothing to read.
            crate::telemetry::readiness().passed(&stream);
        }
        if self
            .parents_checked
            .is_none_or(|at| at.elapsed() >= PARENTS_EVERY)
        {
            self.parents_checked = Some(Instant::now());
            for parent in self.source.waiting_parents() {
                if !self.owned.contains(&parent) {
                    self.catch_up(&parent).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether the table says `shard` was read to its end.
    async fn finished_in_table(&mut self, shard: &str) -> Result<bool, EngineError> {
        let version = self.table_version(shard).await?;
        if version == 0 {
            return Ok(self
                .upgraded_from
                .as_ref()
                .and_then(|from| from.manifest.positions.get(shard))
                .is_some_and(|p| p.finished));
        }
        Ok(self
            .plans
            .get(shard, version)
            .await?
            .is_some_and(|plan| plan.position.finished))
    }
}
