//! One worker's side of the lease table: each heartbeat it reads the leases, renews its own,
//! and makes the changes [`plan`] asks for.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::{Lease, LeaseAction, LeaseError, LeaseTable, LeaseView, live_workers, plan};

/// The key prefix of presence items (`worker:<id>`); a lease key (`<stream>/<shardId>`) never
/// holds a colon.
const PRESENCE: &str = "worker:";

/// A worker holding leases in one lease table.
#[derive(Debug)]
pub struct LeaseWorker {
    table: LeaseTable,
    id: String,
    duration: Duration,
    view: LeaseView,
    /// Until when the leases renewed by the last successful heartbeat are surely still this
    /// worker's.
    safe_until: Option<Instant>,
    /// Leases of shards read to their end and committed so: deleted by their holder, taken by
    /// nobody, counted in nobody's share.
    finished: BTreeSet<String>,
    /// The part of the table this worker shares with its peers: lease keys under this prefix,
    /// and presence items of workers of the same scope (empty: the whole table).
    scope: String,
}

impl LeaseWorker {
    /// Worker `id` on `table`; a lease whose counter stands still for `duration` is expired.
    /// Heartbeats must come at least three times per `duration`.
    pub fn new(table: LeaseTable, id: &str, duration: Duration) -> Self {
        Self {
            table,
            id: id.to_owned(),
            duration,
            view: LeaseView::default(),
            safe_until: None,
            finished: BTreeSet::new(),
            scope: String::new(),
        }
    }

    /// Shares only the leases under `scope` (`<pipeline>/`), with the workers of that scope: other
    /// pipelines can use the same table without taking each other's shards.
    #[must_use]
    pub fn within(mut self, scope: &str) -> Self {
        self.scope = scope.to_owned();
        self
    }

    /// Whether `key` is one of this worker's scope (a lease, or a peer's presence).
    fn in_scope(&self, key: &str) -> bool {
        key.strip_prefix(PRESENCE)
            .unwrap_or(key)
            .starts_with(&self.scope)
    }

    /// Marks the leases `keys` as of finished shards, from the next heartbeat on.
    pub fn finish(&mut self, keys: impl IntoIterator<Item = String>) {
        self.finished.extend(keys);
    }

    /// A worker id no other process shares, even a replacement with the same host name:
    /// `<host>-<process id>-<random>`.
    pub fn unique_id(host: &str) -> String {
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &random[..8])
    }

    /// This machine's host name (`HOSTNAME`, else the kernel's), for worker ids.
    pub fn host_name() -> String {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    }

    /// Until when the leases this worker holds are surely its own: another worker takes a lease
    /// only after seeing its counter stand still for the lease duration, and the counter moved no
    /// earlier than the start of the last successful heartbeat. A worker that cannot renew (cut
    /// off from DynamoDB) must stop reading its shards by then. `None` before a first success.
    pub fn safe_until(&self) -> Option<Instant> {
        self.safe_until
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn presence_key(&self) -> String {
        format!("{PRESENCE}{}{}", self.scope, self.id)
    }

    /// One heartbeat: renews this worker's presence and leases, then takes or releases leases
    /// toward its share. Returns the keys it holds afterwards (a lease lost to another worker is
    /// not among them).
    pub async fn heartbeat(&mut self) -> Result<BTreeSet<String>, LeaseError> {
        let started = Instant::now();
        let mut items = self.table.list().await?;
        items.retain(|l| self.in_scope(&l.key));
        let now = Instant::now().into_std();
        self.view.observe(&items, now);
        let (mut presence, leases): (Vec<Lease>, Vec<Lease>) =
            items.into_iter().partition(|l| l.key.starts_with(PRESENCE));
        self.renew_presence(&mut presence).await?;
        let mut current = Vec::with_capacity(leases.len());
        for lease in leases {
            let own = lease.owner.as_deref() == Some(self.id.as_str());
            if self.finished.contains(&lease.key) {
                if own && self.table.remove(&lease, &self.id).await? {
                    tracing::info!(lease = %lease.key, worker = %self.id, "lease of a finished shard deleted");
                }
                continue;
            }
            if own {
                match self.table.renew(&lease, &self.id).await? {
                    Some(renewed) => current.push(renewed),
                    None => {
                        tracing::warn!(lease = %lease.key, worker = %self.id, "lease lost to another worker")
                    }
                }
            } else {
                current.push(lease);
            }
        }
        self.view
            .observe(&[current.clone(), presence.clone()].concat(), now);
        let workers = live_workers(
            &presence,
            &current,
            &self.view,
            &self.id,
            now,
            self.duration,
        );
        let mut held: BTreeSet<String> = current
            .iter()
            .filter(|l| l.owner.as_deref() == Some(self.id.as_str()))
            .map(|l| l.key.clone())
            .collect();
        self.safe_until = Some(started + self.duration);
        for action in plan(&current, &workers, &self.view, &self.id, now, self.duration) {
            match action {
                LeaseAction::Take(lease) => {
                    if let Some(taken) = self.table.take(&lease, &self.id).await? {
                        tracing::info!(lease = %taken.key, worker = %self.id, from = ?lease.owner, "lease taken");
                        held.insert(taken.key);
                    }
                }
                LeaseAction::Release(lease) => {
                    if self.table.release(&lease, &self.id).await?.is_some() {
                        tracing::info!(lease = %lease.key, worker = %self.id, "lease released for balance");
                    }
                    held.remove(&lease.key);
                }
            }
        }
        Ok(held)
    }

    /// Moves this worker's presence item (creating it on the first heartbeat), in `presence`.
    async fn renew_presence(&self, presence: &mut Vec<Lease>) -> Result<(), LeaseError> {
        let key = self.presence_key();
        let own = match presence.iter().position(|p| p.key == key) {
            Some(i) => presence.remove(i),
            None => {
                self.table.ensure(&key).await?;
                Lease {
                    key,
                    owner: None,
                    counter: 0,
                }
            }
        };
        let renewed = match own.owner {
            Some(_) => self.table.renew(&own, &self.id).await?,
            None => self.table.take(&own, &self.id).await?,
        };
        presence.extend(renewed);
        Ok(())
    }

    /// Releases every lease this worker holds and removes its presence (a clean shutdown): the
    /// others take the leases at their next heartbeat. Stop the heartbeats first, or one running
    /// meanwhile takes the leases back.
    pub async fn release_all(&self) -> Result<usize, LeaseError> {
        let mut released = 0;
        for lease in self.table.list().await? {
            if lease.owner.as_deref() != Some(self.id.as_str()) {
                continue;
            }
            if lease.key == self.presence_key() || self.finished.contains(&lease.key) {
                self.table.remove(&lease, &self.id).await?;
            } else if self.table.release(&lease, &self.id).await?.is_some() {
                released += 1;
            }
        }
        Ok(released)
    }

    /// The shard leases as they are now (for display), without the presence items.
    pub async fn leases(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut items = self.table.list().await?;
        items.retain(|l| !l.key.starts_with(PRESENCE));
        Ok(items)
    }
}
