//! Several engine processes share a pipeline's shards through the lease table (dynalite on
//! loopback), SIGKILLed, paused past their leases, joined by more, while shards split and merge:
//! every record lands in its table once, and no Delta log records a shard's plan twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use kinesis_delta::config::Pipeline;
use kinesis_delta::lease::LeaseTable;

use crate::chaos::{merge, split};
use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::triples;
use crate::support::dynalite::Dynalite;
use crate::support::engine::{
    assert_log_clean, engine_command, signal, wait_for_rows, wait_with_deadline,
};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{create_streams, edit_file, load_pipeline, wait_until, write_config};

/// A lease expires after this long in these tests (heartbeats every second).
const LEASE: Duration = Duration::from_secs(3);

/// A pipeline config with a `[leases]` section on `dynamodb`.
fn lease_config(dir: &Path, kinesis: &str, dynamodb: &str, user_id: &str) -> std::path::PathBuf {
    let config = write_config(dir, kinesis, user_id, 100_000);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[leases]\ntable = \"leases\"\nendpoint_url = \"{dynamodb}\"\nduration = \"{}s\"\n",
        LEASE.as_secs()
    ));
    std::fs::write(&config, text).unwrap();
    config
}

/// How many shard leases each worker holds (free ones under "").
async fn holders(table: &LeaseTable) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for lease in table.list().await.unwrap() {
        if lease.key.starts_with("worker:") {
            continue;
        }
        *counts.entry(lease.owner.unwrap_or_default()).or_default() += 1;
    }
    counts
}

/// Waits until the leases are held by exactly `workers`, `each` apiece (an even share).
async fn wait_for_shares(table: &LeaseTable, workers: &[&str], each: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let held = holders(table).await;
        if held.len() == workers.len() && workers.iter().all(|w| held.get(*w) == Some(&each)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{workers:?} should hold {each} leases each; they hold {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The worker processes of a test, SIGKILLed if the test ends without stopping them.
#[derive(Default)]
struct Workers(BTreeMap<String, Child>);

impl Workers {
    fn spawn(&mut self, config: &Path, id: &str) {
        let child = engine_command(config, false)
            .arg("--worker-id")
            .arg(id)
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap();
        self.0.insert(id.to_owned(), child);
    }

    /// SIGKILLs one: its leases stay until they expire.
    fn kill(&mut self, id: &str) {
        let mut child = self.0.remove(id).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn get(&self, id: &str) -> &Child {
        &self.0[id]
    }

    /// Stops them as a service manager does (SIGTERM) and checks they exit cleanly.
    fn stop_all(&mut self) {
        for worker in self.0.values() {
            signal(worker, "TERM");
        }
        for (id, worker) in std::mem::take(&mut self.0) {
            let output = wait_with_deadline(worker, Duration::from_secs(60), "a stopping worker");
            assert!(output.status.success(), "worker {id} failed: {output:?}");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in self.0.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `kinesis-delta leases --json`: every shard's owner, committed plan and lag.
fn shard_status(config: &Path) -> Vec<serde_json::Value> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["leases", "--json", "--config"])
        .arg(config)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Exact rows, and each shard's plans committed once, in every table of the pipeline.
async fn assert_exact(dir: &Path, pipeline: &Pipeline, n: i64) {
    assert_exactly_once(pipeline, n).await;
    for spec in &pipeline.streams {
        for uri in [&spec.table_uri, &spec.dead_letter_uri] {
            let folder = uri.rsplit('/').next().unwrap();
            assert_log_clean(&dir.join("tables").join(folder));
        }
    }
}

/// Three workers on streams of 8 shards share them 8/8/8; a fourth joins and they rebalance to
/// 6/6/6/6; one is SIGKILLed and its shards are taken within the lease duration, and the records
/// put on them meanwhile land; every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_shards_rebalance_and_take_over_a_killed_one() {
    let dynamodb = Dynalite::start().await;
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = lease_config(dir.path(), server.endpoint(), &dynamodb.endpoint, "share");
    let pipeline = load_pipeline(&config);
    create_streams(&server.client().await, &pipeline, 8).await;
    // `leases` only reads: before any engine, every shard is free at plan 0, and the lease table
    // is not created by looking.
    let before = shard_status(&config);
    assert_eq!(before.len(), 24, "{before:?}");
    assert!(
        before
            .iter()
            .all(|s| s["owner"].is_null() && s["plan"] == 0),
        "{before:?}"
    );
    let lease_table = LeaseTable::existing(dynamodb.client(), "leases").await;
    assert!(
        lease_table.unwrap().is_none(),
        "`leases` created the lease table"
    );
    let leases = LeaseTable::open(dynamodb.client(), "leases").await.unwrap();

    let mut workers = Workers::default();
    for id in ["a", "b", "c"] {
        workers.spawn(&config, id);
    }
    put_triples(&server, &pipeline, &triples(0, 300)).await;
    wait_for_shares(&leases, &["a", "b", "c"], 8, Duration::from_secs(60)).await;
    wait_for_rows(&pipeline, 300, Duration::from_secs(90)).await;

    workers.spawn(&config, "d");
    wait_for_shares(&leases, &["a", "b", "c", "d"], 6, Duration::from_secs(60)).await;
    let shown = shard_status(&config);
    assert_eq!(shown.len(), 24, "{shown:?}");
    for worker in ["a", "b", "c", "d"] {
        let held = shown.iter().filter(|s| s["owner"] == worker).count();
        assert!(
            held <= 6,
            "`leases` shows {worker} holding {held}: {shown:?}"
        );
    }
    put_triples(&server, &pipeline, &triples(300, 300)).await;
    wait_for_rows(&pipeline, 600, Duration::from_secs(90)).await;

    workers.kill("b");
    let at_kill = Instant::now();
    put_triples(&server, &pipeline, &triples(600, 300)).await;
    wait_for_shares(&leases, &["a", "c", "d"], 8, Duration::from_secs(60)).await;
    let taken_after = at_kill.elapsed();
    wait_for_rows(&pipeline, 900, Duration::from_secs(90)).await;
    let landed_after = at_kill.elapsed();
    eprintln!(
        "killed worker: its 6 shards taken after {taken_after:?}, the records put on them landed after {landed_after:?} (lease duration {LEASE:?})"
    );
    assert!(
        taken_after < LEASE * 4,
        "the killed worker's shards were taken after {taken_after:?}"
    );

    workers.stop_all();
    assert_exact(dir.path(), &pipeline, 900).await;
    // A clean shutdown released every lease.
    assert_eq!(holders(&leases).await.keys().collect::<Vec<_>>(), [""]);
    let shown = shard_status(&config);
    assert_eq!(shown.len(), 24);
    for shard in &shown {
        assert!(shard["owner"].is_null(), "{shard}");
        assert!(shard["plan"].as_i64().unwrap() >= 1, "{shard}");
        assert_eq!(shard["millis_behind"], 0, "read to the tip: {shard}");
    }
}

/// A worker paused (SIGSTOP) past its lease, while it may hold planned batches: the other takes
/// its shards and commits on from them; resumed, the paused one must not commit any of it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_does_not_commit_what_the_new_owner_committed() {
    let dynamodb = Dynalite::start().await;
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = lease_config(dir.path(), server.endpoint(), &dynamodb.endpoint, "pause");
    let pipeline = load_pipeline(&config);
    create_streams(&server.client().await, &pipeline, 4).await;
    let leases = LeaseTable::open(dynamodb.client(), "leases").await.unwrap();

    let mut workers = Workers::default();
    workers.spawn(&config, "x");
    workers.spawn(&config, "y");
    wait_for_shares(&leases, &["x", "y"], 6, Duration::from_secs(60)).await;
    put_triples(&server, &pipeline, &triples(0, 200)).await;
    wait_for_rows(&pipeline, 200, Duration::from_secs(90)).await;
    // Records arrive, and x is paused while it reads or commits them.
    put_triples(&server, &pipeline, &triples(200, 200)).await;
    signal(workers.get("x"), "STOP");
    wait_for_shares(&leases, &["y"], 12, LEASE * 10).await;
    put_triples(&server, &pipeline, &triples(400, 100)).await;
    wait_for_rows(&pipeline, 500, Duration::from_secs(90)).await;

    signal(workers.get("x"), "CONT");
    wait_for_shares(&leases, &["x", "y"], 6, Duration::from_secs(60)).await;
    put_triples(&server, &pipeline, &triples(500, 100)).await;
    wait_for_rows(&pipeline, 600, Duration::from_secs(90)).await;
    workers.stop_all();
    assert_exact(dir.path(), &pipeline, 600).await;
}

/// Shards split and merge while leases move: two workers, a third joining after the split, one
/// SIGKILLed after the merge. Children are read only after their parents' ends are committed,
/// whichever worker read the parents; every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_and_a_merge_while_leases_move() {
    let dynamodb = Dynalite::start().await;
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = lease_config(dir.path(), server.endpoint(), &dynamodb.endpoint, "reshard");
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;

    let mut workers = Workers::default();
    workers.spawn(&config, "p");
    workers.spawn(&config, "q");
    put_triples(&server, &pipeline, &triples(0, 100)).await;
    wait_for_rows(&pipeline, 100, Duration::from_secs(90)).await;
    for spec in &pipeline.streams[..2] {
        split(&client, &spec.stream).await;
    }
    put_triples(&server, &pipeline, &triples(100, 100)).await;
    workers.spawn(&config, "r");
    wait_for_rows(&pipeline, 200, Duration::from_secs(90)).await;
    for spec in &pipeline.streams[..2] {
        merge(&client, &spec.stream).await;
    }
    put_triples(&server, &pipeline, &triples(200, 100)).await;
    workers.kill("q");
    wait_for_rows(&pipeline, 300, Duration::from_secs(120)).await;
    workers.stop_all();
    assert_exact(dir.path(), &pipeline, 300).await;
}

/// Review finding: two pipelines on one lease table. A process took the other pipeline's leases
/// (they were free, and counted toward its share) and never read them: that pipeline stalled.
/// Here the first pipeline's leases are free when the second's process starts alone. Leases are
/// scoped by pipeline now, and each pipeline's rows all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_on_one_lease_table_each_read_their_own_shards() {
    let dynamodb = Dynalite::start().await;
    let server = TestKinesis::start(Kind::Embedded).await;
    let client = server.client().await;
    let leases = LeaseTable::open(dynamodb.client(), "leases").await.unwrap();
    let mut workers = Workers::default();
    let mut pipelines = Vec::new();
    for name in ["first", "second"] {
        let dir = tempfile::tempdir().unwrap();
        let config = lease_config(dir.path(), server.endpoint(), &dynamodb.endpoint, name);
        edit_file(
            &config,
            "name = \"pinterest\"",
            &format!("name = \"{name}\""),
        );
        let pipeline = load_pipeline(&config);
        create_streams(&client, &pipeline, 2).await;
        pipelines.push((dir, config, pipeline));
    }
    // The first pipeline's process adds its leases, then stops and frees them.
    workers.spawn(&pipelines[0].1, "first");
    wait_for_shares(&leases, &["first"], 6, Duration::from_secs(60)).await;
    workers.stop_all();
    workers.spawn(&pipelines[1].1, "second");
    wait_until(
        "the second pipeline's leases held",
        Duration::from_secs(60),
        || async { holders(&leases).await.get("second") == Some(&6) },
    )
    .await;
    workers.spawn(&pipelines[0].1, "first");
    for (_, _, pipeline) in &pipelines {
        put_triples(&server, pipeline, &triples(0, 100)).await;
    }
    for (_, _, pipeline) in &pipelines {
        wait_for_rows(pipeline, 100, Duration::from_secs(90)).await;
        assert_exactly_once(pipeline, 100).await;
    }
    workers.stop_all();
}
