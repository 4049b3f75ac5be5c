//! Which leases a worker takes and gives up: a pure function of the leases it read, what it has
//! seen of their counters, and its own clock.
//!
//! * A lease is **expired** when its counter has not moved for the lease duration since this
//!   worker first saw that value: its owner stopped renewing (crashed, paused, cut off).
//! * The **live workers** are the owners of presence items (one per worker, renewed on every
//!   heartbeat like a lease) and of leases that are not expired, and this worker: a worker that
//!   holds no lease yet is counted too.
//! * Each live worker's **share** is the leases divided evenly among them, in worker-id order, the
//!   first ones getting one more when they do not divide evenly: every worker computes the same
//!   shares from the same leases.
//! * A worker above its share releases the excess; one below takes free leases and expired ones,
//!   in key order. Nobody takes a live worker's lease: balance comes from releases.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::Lease;

/// What a worker has seen of each lease's counter, and since when (its own clock).
#[derive(Debug, Clone, Default)]
pub struct LeaseView {
    seen: BTreeMap<String, (u64, Instant)>,
}

impl LeaseView {
    /// Records the counters of every item read at `now` (leases and presence items): a counter that
    /// moved restarts its item's clock. Items no longer there are forgotten.
    pub fn observe(&mut self, leases: &[Lease], now: Instant) {
        let keys: BTreeSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
        self.seen.retain(|key, _| keys.contains(key.as_str()));
        for lease in leases {
            match self.seen.get(&lease.key) {
                Some((counter, _)) if *counter == lease.counter => {}
                _ => {
                    self.seen.insert(lease.key.clone(), (lease.counter, now));
                }
            }
        }
    }

    /// The lease is owned and its counter has stood still for `duration`.
    pub fn is_expired(&self, lease: &Lease, now: Instant, duration: Duration) -> bool {
        lease.owner.is_some()
            && self.seen.get(&lease.key).is_some_and(|(counter, since)| {
                *counter == lease.counter && now.duration_since(*since) >= duration
            })
    }
}

/// One change a worker makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// Take this free or expired lease.
    Take(Lease),
    /// Give this lease of ours up.
    Release(Lease),
}

/// The live workers: owners of presence items and leases that are not expired, and `me`.
pub fn live_workers<'a>(
    presence: &'a [Lease],
    leases: &'a [Lease],
    view: &LeaseView,
    me: &'a str,
    now: Instant,
    duration: Duration,
) -> BTreeSet<&'a str> {
    let mut workers: BTreeSet<&str> = presence
        .iter()
        .chain(leases)
        .filter(|l| !view.is_expired(l, now, duration))
        .filter_map(|l| l.owner.as_deref())
        .collect();
    workers.insert(me);
    workers
}

/// The changes `me` makes to reach its share of `leases` among the live `workers` (which include
/// `me`), given its view of the leases.
pub fn plan(
    leases: &[Lease],
    workers: &BTreeSet<&str>,
    view: &LeaseView,
    me: &str,
    now: Instant,
    duration: Duration,
) -> Vec<LeaseAction> {
    let expired = |l: &Lease| view.is_expired(l, now, duration);
    let position = workers.iter().position(|w| *w == me).unwrap_or(0);
    let share = leases.len() / workers.len() + usize::from(position < leases.len() % workers.len());
    let mine: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.owner.as_deref() == Some(me))
        .collect();
    if mine.len() > share {
        return mine
            .iter()
            .rev()
            .take(mine.len() - share)
            .map(|l| LeaseAction::Release((*l).clone()))
            .collect();
    }
    leases
        .iter()
        .filter(|l| l.owner.is_none() || (l.owner.as_deref() != Some(me) && expired(l)))
        .take(share - mine.len())
        .map(|l| LeaseAction::Take(l.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::{LeaseAction, LeaseView, live_workers, plan};
    use crate::lease::Lease;

    const DURATION: Duration = Duration::from_secs(10);

    fn lease(key: usize, owner: Option<&str>, counter: u64) -> Lease {
        Lease {
            key: format!("s/shard-{key:02}"),
            owner: owner.map(str::to_owned),
            counter,
        }
    }

    #[test]
    fn a_lease_expires_when_its_counter_stands_still_for_the_duration() {
        let start = Instant::now();
        let mut view = LeaseView::default();
        let held = lease(0, Some("a"), 3);
        view.observe(std::slice::from_ref(&held), start);
        assert!(!view.is_expired(&held, start + DURATION / 2, DURATION));
        assert!(view.is_expired(&held, start + DURATION, DURATION));
        let renewed = lease(0, Some("a"), 4);
        view.observe(std::slice::from_ref(&renewed), start + DURATION);
        assert!(!view.is_expired(&renewed, start + DURATION + DURATION / 2, DURATION));
        assert!(!view.is_expired(&lease(0, None, 4), start + DURATION * 5, DURATION));
    }

    #[test]
    fn a_worker_above_its_share_releases_and_one_below_takes_only_free_or_expired_leases() {
        let now = Instant::now();
        let view = LeaseView::default();
        // a holds 6 of 8; b has just joined (its presence item only): shares 4 and 4.
        let leases: Vec<Lease> = (0..8)
            .map(|i| lease(i, (i < 6).then_some("a"), 1))
            .collect();
        let presence = [
            Lease {
                key: "worker:b".to_owned(),
                owner: Some("b".to_owned()),
                counter: 1,
            },
            Lease {
                key: "worker:a".to_owned(),
                owner: Some("a".to_owned()),
                counter: 9,
            },
        ];
        let workers = live_workers(&presence, &leases, &view, "a", now, DURATION);
        assert_eq!(workers.len(), 2);
        let a = plan(&leases, &workers, &view, "a", now, DURATION);
        assert_eq!(
            a,
            vec![
                LeaseAction::Release(leases[5].clone()),
                LeaseAction::Release(leases[4].clone())
            ]
        );
        let b = plan(&leases, &workers, &view, "b", now, DURATION);
        assert_eq!(
            b,
            vec![
                LeaseAction::Take(leases[6].clone()),
                LeaseAction::Take(leases[7].clone())
            ],
            "a's live leases are not taken"
        );
    }

    /// Workers take turns (each cycle in another order, every worker at least four times per lease
    /// duration, as heartbeats are) reading the table, renewing, and applying their plan with
    /// conditional writes, as against DynamoDB. Some stop for good half-way. In the end every lease
    /// has one live owner and the live workers' counts differ by at most one.
    fn simulate(leases: usize, workers: usize, stopped: usize, order: &[usize]) {
        let mut table: BTreeMap<String, Lease> = (0..leases)
            .map(|i| lease(i, None, 0))
            .map(|l| (l.key.clone(), l))
            .collect();
        // Each worker's presence item: owned by it, its counter moved on each of its turns.
        let mut presence: BTreeMap<usize, Lease> = BTreeMap::new();
        let names: Vec<String> = (0..workers).map(|w| format!("w{w}")).collect();
        let mut views = vec![LeaseView::default(); workers];
        let start = Instant::now();
        let rounds = order.len();
        for (round, &pick) in order.iter().enumerate() {
            let w = pick % workers;
            // Workers below `stopped` stop renewing half-way through.
            if w < stopped && round >= rounds / 2 {
                continue;
            }
            let now = start
                + DURATION / (8 * u32::try_from(workers).unwrap()) * u32::try_from(round).unwrap();
            let me = names[w].as_str();
            let own = presence.entry(w).or_insert_with(|| Lease {
                key: format!("worker:{me}"),
                owner: Some(me.to_owned()),
                counter: 0,
            });
            own.counter += 1;
            let present: Vec<Lease> = presence.values().cloned().collect();
            let read: Vec<Lease> = table.values().cloned().collect();
            views[w].observe(&[read.clone(), present.clone()].concat(), now);
            for l in read.iter().filter(|l| l.owner.as_deref() == Some(me)) {
                let current = table.get_mut(&l.key).unwrap();
                current.counter += 1;
            }
            let read: Vec<Lease> = table.values().cloned().collect();
            views[w].observe(&[read.clone(), present.clone()].concat(), now);
            let workers = live_workers(&present, &read, &views[w], me, now, DURATION);
            for action in plan(&read, &workers, &views[w], me, now, DURATION) {
                let (seen, owner) = match &action {
                    LeaseAction::Take(l) => (l, Some(me.to_owned())),
                    LeaseAction::Release(l) => (l, None),
                };
                let current = table.get_mut(&seen.key).unwrap();
                // The conditional write: only if unchanged since read.
                if current == seen {
                    current.owner = owner;
                    current.counter += 1;
                }
            }
        }
        let live: Vec<&String> = names.iter().skip(stopped).collect();
        let mut counts: BTreeMap<&str, usize> = live.iter().map(|n| (n.as_str(), 0)).collect();
        for l in table.values() {
            let owner = l.owner.as_deref().expect("every lease is owned");
            *counts.get_mut(owner).expect("owned by a live worker") += 1;
        }
        let (min, max) = (
            counts.values().min().copied().unwrap_or(0),
            counts.values().max().copied().unwrap_or(0),
        );
        assert!(max - min <= 1, "{counts:?}");
    }

    proptest! {
        #[test]
        fn workers_converge_on_even_shares_and_take_over_stopped_ones(
            leases in 1usize..24,
            workers in 1usize..5,
            stopped in 0usize..3,
            seed in proptest::collection::vec(0usize..1000, 1..20),
        ) {
            let stopped = stopped.min(workers - 1);
            // 200 cycles: after the stop, 12 lease durations to settle. In each cycle every worker
            // has one turn, the order rotated and reversed by the seed.
            let order: Vec<usize> = (0..200)
                .flat_map(|cycle| {
                    let turn = seed[cycle % seed.len()];
                    let mut cycle_order: Vec<usize> =
                        (0..workers).map(|w| (w + turn) % workers).collect();
                    if turn % 2 == 1 {
                        cycle_order.reverse();
                    }
                    cycle_order
                })
                .collect();
            simulate(leases, workers, stopped, &order);
        }
    }
}
