//! The shard lease table against a DynamoDB-compatible server (dynalite): conditional writes
//! decide every change of ownership, and workers share the leases, rebalance when one joins, and
//! take over the leases of one that stops, within the lease duration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinesis_delta::lease::{LeaseTable, LeaseWorker};
use tokio_util::sync::CancellationToken;

use crate::support::dynalite::Dynalite;

fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("streaming-test-pin/shardId-{i:012}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_decide_every_change_of_ownership() {
    let server = Dynalite::start().await;
    // Two processes creating the table at once both open it.
    let (a, b) = tokio::join!(
        LeaseTable::open(server.client(), "leases"),
        LeaseTable::open(server.client(), "leases")
    );
    let (table, other) = (a.unwrap(), b.unwrap());
    let key = &keys(1)[0];
    assert!(table.ensure(key).await.unwrap(), "added");
    assert!(!other.ensure(key).await.unwrap(), "added once");
    let free = table.list().await.unwrap().remove(0);
    assert_eq!((free.owner.as_deref(), free.counter), (None, 0));

    // Two workers take the free lease at once: exactly one wins.
    let (x, y) = tokio::join!(table.take(&free, "x"), other.take(&free, "y"));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        usize::from(x.is_some()) + usize::from(y.is_some()),
        1,
        "{x:?} {y:?}"
    );
    let (winner, loser) = if x.is_some() { ("x", "y") } else { ("y", "x") };
    let held = x.or(y).unwrap();
    assert_eq!((held.owner.as_deref(), held.counter), (Some(winner), 1));

    // The loser cannot renew or release it; the winner's renewal moves the counter, and a change
    // based on the old counter then fails, even the winner's own.
    assert_eq!(table.renew(&held, loser).await.unwrap(), None);
    assert_eq!(table.release(&held, loser).await.unwrap(), None);
    let renewed = table.renew(&held, winner).await.unwrap().unwrap();
    assert_eq!(renewed.counter, 2);
    assert_eq!(
        table.renew(&held, winner).await.unwrap(),
        None,
        "stale counter"
    );
    assert_eq!(
        table.take(&held, loser).await.unwrap(),
        None,
        "stale counter"
    );

    // Released, it is free for the other.
    let released = table.release(&renewed, winner).await.unwrap().unwrap();
    assert_eq!(released.owner, None);
    let taken = other.take(&released, loser).await.unwrap().unwrap();
    assert_eq!(taken.owner.as_deref(), Some(loser));
}

/// The workers' heartbeats, each on its own task every `duration / 4`, with what each holds.
struct Workers {
    held: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    stops: BTreeMap<String, CancellationToken>,
    tasks: BTreeMap<String, tokio::task::JoinHandle<LeaseWorker>>,
    table: LeaseTable,
    duration: Duration,
}

impl Workers {
    fn start(&mut self, id: &str) {
        let stop = CancellationToken::new();
        let mut worker = LeaseWorker::new(self.table.clone(), id, self.duration);
        let (held, every, token) = (Arc::clone(&self.held), self.duration / 4, stop.clone());
        let task = tokio::spawn(async move {
            while !token.is_cancelled() {
                let keys = worker.heartbeat().await.unwrap();
                held.lock().unwrap().insert(worker.id().to_owned(), keys);
                tokio::time::sleep(every).await;
            }
            worker
        });
        self.stops.insert(id.to_owned(), stop);
        self.tasks.insert(id.to_owned(), task);
    }

    /// Stops a worker's heartbeats (as SIGKILL or SIGSTOP would); returns it.
    async fn stop(&mut self, id: &str) -> LeaseWorker {
        self.stops.remove(id).unwrap().cancel();
        self.held.lock().unwrap().remove(id);
        self.tasks.remove(id).unwrap().await.unwrap()
    }

    /// Waits until the table's leases are held by exactly the running workers, each as many as
    /// `shares` says, and every worker's own view agrees. Returns how long it took.
    async fn wait_for(&self, shares: &[usize]) -> Duration {
        let started = Instant::now();
        let deadline = started + self.duration * 20;
        loop {
            let leases = self.table.list().await.unwrap();
            let mut owned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for lease in leases.iter().filter(|l| !l.key.starts_with("worker:")) {
                if let Some(owner) = &lease.owner {
                    owned
                        .entry(owner.clone())
                        .or_default()
                        .insert(lease.key.clone());
                }
            }
            let mut counts: Vec<usize> = owned.values().map(BTreeSet::len).collect();
            counts.sort_unstable();
            let held = self.held.lock().unwrap().clone();
            let running: BTreeSet<&String> = self.stops.keys().collect();
            if counts == shares
                && owned.keys().all(|o| running.contains(o))
                && owned.iter().all(|(w, k)| held.get(w) == Some(k))
            {
                return started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "leases never settled on {shares:?}: {owned:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_rebalance_and_take_over_a_stopped_worker() {
    let server = Dynalite::start().await;
    let table = LeaseTable::open(server.client(), "leases").await.unwrap();
    for key in keys(8) {
        table.ensure(&key).await.unwrap();
    }
    let duration = Duration::from_secs(2);
    let mut workers = Workers {
        held: Arc::default(),
        stops: BTreeMap::new(),
        tasks: BTreeMap::new(),
        table: table.clone(),
        duration,
    };
    for id in ["w1", "w2", "w3"] {
        workers.start(id);
    }
    workers.wait_for(&[2, 3, 3]).await;

    // A fourth joins: the others release what is above their new share, and it takes them.
    workers.start("w4");
    workers.wait_for(&[2, 2, 2, 2]).await;

    // One stops without a word: its leases are taken once they expire, which is a lease duration
    // after its last renewal at the earliest (the counter moved no earlier than that heartbeat's
    // start, from which `safe_until` counts).
    let gone = workers.stop("w2").await;
    let last_renewal = gone.safe_until().unwrap().into_std() - duration;
    workers.wait_for(&[2, 3, 3]).await;
    let unread = last_renewal.elapsed();
    assert!(
        unread >= duration && unread < duration * 3,
        "a stopped worker's leases were taken {unread:?} after its last renewal (lease duration {duration:?})"
    );
    eprintln!("leases of a stopped worker taken {unread:?} after its last renewal ({duration:?})");

    // One shuts down cleanly: its leases are free at once, well within the lease duration.
    let leaving = workers.stop("w3").await;
    let released_at = Instant::now();
    assert!(leaving.release_all().await.unwrap() > 0);
    workers.wait_for(&[4, 4]).await;
    assert!(
        released_at.elapsed() < duration,
        "released leases were taken after {:?}",
        released_at.elapsed()
    );
}

/// A worker cut off from DynamoDB knows until when its leases are surely its own, and that time
/// does not move while it cannot renew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_dynamodb_knows_when_to_stop_reading() {
    let server = Dynalite::start().await;
    let table = LeaseTable::open(server.client(), "leases").await.unwrap();
    for key in keys(2) {
        table.ensure(&key).await.unwrap();
    }
    let duration = Duration::from_secs(1);
    let id = LeaseWorker::unique_id("host");
    assert_ne!(
        id,
        LeaseWorker::unique_id("host"),
        "ids are unique per process start"
    );
    let mut worker = LeaseWorker::new(table, &id, duration);
    assert_eq!(worker.safe_until(), None);
    let before = tokio::time::Instant::now();
    assert_eq!(worker.heartbeat().await.unwrap().len(), 2);
    let after = tokio::time::Instant::now();
    let safe = worker.safe_until().unwrap();
    assert!(
        safe >= before + duration && safe <= after + duration,
        "the lease duration from the heartbeat's start"
    );

    drop(server);
    assert!(worker.heartbeat().await.is_err(), "DynamoDB is gone");
    assert_eq!(
        worker.safe_until(),
        Some(safe),
        "a failed heartbeat renews nothing"
    );
}
