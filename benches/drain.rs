//! The engine's drain of a backlog against a bare GetRecords drain of the same streams, on the
//! same server, in the same run.
//!
//! `cargo bench --bench drain` (`DRAIN_POSTS`, default 100000; `DRAIN_ROUNDS`, default 3;
//! `DRAIN_KPL`, default 0: with N, the posts are put in KPL aggregates of N, and the bare drain
//! counts Kinesis records, the engine rows; `KINESIS_DELTA_WORKER_THREADS` reaches the engine)
//!
//! It starts the embedded Kinesis server in this process (in memory), creates the shipped
//! config's three streams with 4 shards each and posts `DRAIN_POSTS` generated posts with the
//! emulator (three records each). Then, `DRAIN_ROUNDS` times:
//!
//! * a bare drain: one task per shard, GetShardIterator at TRIM_HORIZON, then GetRecords of up
//!   to 10,000 records at most 5 times a second (Kinesis' limit, as the engine's default), until
//!   an empty answer at `MillisBehindLatest` 0. Records are counted and dropped;
//! * the engine: `kinesis-delta run --available-now` into fresh tables, default settings. Its
//!   peak resident memory is the one it reports; its first commit is the oldest commit file of
//!   the three tables, timed from the moment the process was started.
//!
//! It prints each round and the engine's throughput as a share of the bare drain's.

#![allow(missing_docs, clippy::print_stdout)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::types::ShardIteratorType;
use kinesis_delta::source::KinesisClient;
use tokio_util::sync::CancellationToken;

use common::{cli, env_number, start_server};

const SHARDS: &str = "4";
const STREAMS: [&str; 3] = [
    "streaming-0a40ea42f8d1-pin",
    "streaming-0a40ea42f8d1-geo",
    "streaming-0a40ea42f8d1-user",
];

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let posts = env_number("DRAIN_POSTS", 100_000);
    let rounds = env_number("DRAIN_ROUNDS", 3);
    let cancel = CancellationToken::new();
    let (endpoint, client) = start_server(&cancel).await;
    cli(&endpoint, &["streams", "create", "--shards", SHARDS]);
    let started = Instant::now();
    let count = posts.to_string();
    let kpl = env_number("DRAIN_KPL", 0).to_string();
    let mut emulate = vec![
        "emulate", "--direct", "--batch", "500", "--rate", "max", "--count", &count,
    ];
    if kpl != "0" {
        emulate.extend(["--kpl", &kpl]);
    }
    cli(&endpoint, &emulate);
    println!(
        "loaded {posts} posts ({} records) in {:.1} s",
        posts * 3,
        started.elapsed().as_secs_f64()
    );
    let mut bare_rates = Vec::new();
    let mut engine_rates = Vec::new();
    for round in 1..=rounds {
        let (records, took) = bare_drain(&client).await;
        let bare = records as f64 / took.as_secs_f64();
        println!(
            "round {round}: bare GetRecords drain: {records} records in {:.2} s = {:.0} records/s",
            took.as_secs_f64(),
            bare
        );
        let run = engine_drain(&endpoint);
        let rate = run.records as f64 / run.took.as_secs_f64();
        println!(
            "round {round}: engine --available-now: {} records in {:.2} s = {:.0} records/s ({:.0}% of the bare drain), peak RSS {} MiB, first commit {} ms after start",
            run.records,
            run.took.as_secs_f64(),
            rate,
            100.0 * rate / bare,
            run.peak_memory >> 20,
            run.first_commit.as_millis()
        );
        bare_rates.push(bare);
        engine_rates.push(rate);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (bare, engine) = (median(bare_rates), median(engine_rates));
    println!(
        "median: bare {bare:.0} records/s, engine {engine:.0} records/s: {:.0}%",
        100.0 * engine / bare
    );
    cancel.cancel();
}

/// Reads every shard of every stream to its end; returns the records read and the time taken.
async fn bare_drain(client: &KinesisClient) -> (u64, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for stream in STREAMS {
        let shards = client
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .expect("ListShards")
            .shards
            .unwrap_or_default();
        for shard in shards {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                drain_shard(&client, stream, &shard.shard_id).await
            }));
        }
    }
    let mut records = 0;
    for task in tasks {
        records += task.await.expect("shard drain");
    }
    (records, started.elapsed())
}

async fn drain_shard(client: &KinesisClient, stream: &str, shard: &str) -> u64 {
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("GetShardIterator")
        .shard_iterator;
    let mut records = 0u64;
    let mut next_call = tokio::time::Instant::now();
    while let Some(current) = iterator {
        tokio::time::sleep_until(next_call).await;
        next_call = tokio::time::Instant::now() + Duration::from_millis(200);
        let answer = client
            .get_records()
            .shard_iterator(current)
            .limit(10_000)
            .send()
            .await
            .expect("GetRecords");
        records += answer.records.len() as u64;
        if answer.records.is_empty() && answer.millis_behind_latest == Some(0) {
            break;
        }
        iterator = answer.next_shard_iterator;
    }
    records
}

struct EngineRun {
    records: u64,
    took: Duration,
    peak_memory: u64,
    first_commit: Duration,
}

fn engine_drain(endpoint: &str) -> EngineRun {
    let tables = tempfile::tempdir().expect("temp dir");
    let root = tables.path().display().to_string();
    let started = Instant::now();
    let started_at = SystemTime::now();
    let stdout = cli(
        endpoint,
        &[
            "run",
            "--available-now",
            "--progress",
            "json",
            "--table-root",
            &root,
        ],
    );
    let took = started.elapsed();
    let first_commit = ["pin", "geo", "user"]
        .iter()
        .filter_map(|table| std::fs::read_dir(tables.path().join(table).join("_delta_log")).ok())
        .flatten()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "json"))
        .filter_map(|entry| entry.metadata().ok()?.modified().ok())
        .min()
        .and_then(|first| first.duration_since(started_at).ok())
        .unwrap_or_default();
    let mut run = EngineRun {
        records: 0,
        took,
        peak_memory: 0,
        first_commit,
    };
    for line in stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        if let Some(records) = value.pointer("/summary/records").and_then(|v| v.as_u64()) {
            run.records += records;
        }
        if let Some(peak) = value.get("peak_memory_bytes").and_then(|v| v.as_u64()) {
            run.peak_memory = peak;
        }
    }
    run
}
