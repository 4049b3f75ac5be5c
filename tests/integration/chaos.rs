//! Everything at once: two engine processes on one pipeline, SIGKILLed and restarted at random,
//! a split and a merge of a shard while they run, throttling, expired iterators and 5xx injected
//! on every read, and malformed records among the good ones. At the end every record is in its
//! table exactly once, every malformed one in the dead-letter table exactly once, and no Delta log
//! records a batch twice.
//!
//! `chaos_small` runs in the suite; `chaos_large` (ignored) is the same with larger counts:
//! `cargo test --test integration chaos_large -- --ignored --nocapture`. `chaos_with_leases`
//! runs three processes sharing the shards through a lease table (dynalite) instead.

use std::process::Child;
use std::time::Duration;

use aws_sdk_kinesis::types::Shard;
use rand::{Rng, SeedableRng};

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::triples;
use crate::support::dynalite::Dynalite;
use crate::support::engine::{assert_log_clean, engine_command, table_rows, wait_with_deadline};
use crate::support::fault_proxy::{FaultPlan, FaultProxy};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, load_pipeline, put_records, query_counts, wait_active, wait_until, write_config,
};
use kinesis_delta::source::KinesisClient;

/// How big a chaos run is, and how many processes run it.
struct Scale {
    rounds: usize,
    triples_per_round: i64,
    malformed_per_round: usize,
    /// Processes sharing the shards through a lease table (0: two engines without leases).
    leased_workers: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_small() {
    chaos(Scale {
        rounds: 8,
        triples_per_round: 60,
        malformed_per_round: 2,
        leased_workers: 0,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_leases() {
    chaos(Scale {
        rounds: 8,
        triples_per_round: 60,
        malformed_per_round: 2,
        leased_workers: 3,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long soak: run it with --ignored"]
async fn chaos_large() {
    chaos(Scale {
        rounds: 40,
        triples_per_round: 500,
        malformed_per_round: 5,
        leased_workers: 0,
    })
    .await;
}

async fn open_shards(client: &KinesisClient, stream: &str) -> Vec<Shard> {
    let listed = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    listed
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none())
        })
        .cloned()
        .collect()
}

/// Splits the first open shard in the middle of its hash range.
pub async fn split(client: &KinesisClient, stream: &str) {
    let shard = open_shards(client, stream).await.remove(0);
    let range = shard.hash_key_range().unwrap();
    let start: u128 = range.starting_hash_key().parse().unwrap();
    let end: u128 = range.ending_hash_key().parse().unwrap();
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(shard.shard_id())
        .new_starting_hash_key((start / 2 + end / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_active(client, stream).await;
}

/// Merges two open shards whose hash ranges touch.
pub async fn merge(client: &KinesisClient, stream: &str) {
    let mut shards = open_shards(client, stream).await;
    let key = |s: &Shard| -> u128 {
        s.hash_key_range()
            .unwrap()
            .starting_hash_key()
            .parse()
            .unwrap()
    };
    shards.sort_by_key(key);
    let end = |s: &Shard| -> u128 {
        s.hash_key_range()
            .unwrap()
            .ending_hash_key()
            .parse()
            .unwrap()
    };
    let pair = shards
        .windows(2)
        .find(|w| end(&w[0]) + 1 == key(&w[1]))
        .expect("two adjacent open shards");
    client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(pair[0].shard_id())
        .adjacent_shard_to_merge(pair[1].shard_id())
        .send()
        .await
        .unwrap();
    wait_active(client, stream).await;
}

/// An engine process; only its errors reach the test's output (the injected faults make many
/// warnings).
fn spawn_engine(config: &std::path::Path) -> Child {
    engine_command(config, false)
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap()
}

fn kill(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

async fn chaos(scale: Scale) {
    let seed: u64 = rand::rng().random();
    eprintln!("chaos seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let proxy = FaultProxy::start(
        server.endpoint(),
        FaultPlan {
            throttle_every: 7,
            expire_every: 11,
            unavailable_every: 13,
            ..FaultPlan::NONE
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &proxy.endpoint, "chaos", 150);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    let pin = pipeline.streams[0].clone();
    // With leases the engines run a copy of the config that shares the shards; the final drain
    // (`--available-now`, which reads every shard itself) runs the plain one.
    let dynamodb = match scale.leased_workers {
        0 => None,
        _ => Some(Dynalite::start().await),
    };
    let engine_config = match &dynamodb {
        Some(dynamodb) => {
            let leased = dir.path().join("leased.toml");
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(&format!(
                "\n[leases]\ntable = \"leases\"\nendpoint_url = \"{}\"\nduration = \"3s\"\n",
                dynamodb.endpoint
            ));
            std::fs::write(&leased, text).unwrap();
            leased
        }
        None => config.clone(),
    };
    let mut engines: Vec<Child> = (0..scale.leased_workers.max(2))
        .map(|_| spawn_engine(&engine_config))
        .collect();
    let mut put = 0;
    let mut malformed = 0;
    let mut kills = 0;
    for round in 0..scale.rounds {
        put_triples(&server, &pipeline, &triples(put, scale.triples_per_round)).await;
        put += scale.triples_per_round;
        let bad: Vec<(String, Vec<u8>)> = (0..scale.malformed_per_round)
            .map(|i| {
                let data = if i % 2 == 0 {
                    format!("{{\"index\": \"bad {round} {i}\"}}").into_bytes()
                } else {
                    format!("not json {round} {i}").into_bytes()
                };
                (format!("bad-{round}-{i}"), data)
            })
            .collect();
        put_records(&client, &pin.stream, &bad).await;
        malformed += bad.len();
        if round == scale.rounds / 3 {
            for spec in &pipeline.streams[..2] {
                split(&client, &spec.stream).await;
            }
        }
        if round == 2 * scale.rounds / 3 {
            for spec in &pipeline.streams[..2] {
                merge(&client, &spec.stream).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        let victim = rng.random_range(0..engines.len());
        if rng.random_bool(0.7) {
            kill(&mut engines[victim]);
            kills += 1;
            engines[victim] = spawn_engine(&engine_config);
        }
        for engine in &mut engines {
            if let Some(status) = engine.try_wait().unwrap() {
                panic!("round {round}: an engine exited by itself with {status}");
            }
        }
    }
    if dynamodb.is_some() {
        // The sharing processes themselves land every record (the drain below then finds none).
        wait_until("every record landed", Duration::from_secs(180), || async {
            let mut all = true;
            for spec in &pipeline.streams {
                all &= table_rows(&spec.table_uri).await >= put;
            }
            all
        })
        .await;
    }
    for engine in &mut engines {
        kill(engine);
    }
    let last = engine_command(&config, true)
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let output = wait_with_deadline(last, Duration::from_secs(300), "the final --available-now");
    assert!(output.status.success(), "the final run failed");
    eprintln!(
        "chaos: {put} triples, {malformed} malformed, {kills} kills, {} throttled, {} expired, {} 5xx",
        proxy
            .counts
            .throttled
            .load(std::sync::atomic::Ordering::SeqCst),
        proxy
            .counts
            .expired
            .load(std::sync::atomic::Ordering::SeqCst),
        proxy
            .counts
            .unavailable
            .load(std::sync::atomic::Ordering::SeqCst),
    );

    assert_exactly_once(&pipeline, put).await;
    let dead = query_counts(
        &[("dead", &pin.dead_letter_uri)],
        "SELECT count(*), count(DISTINCT _sequence_number) FROM dead",
    )
    .await;
    let malformed = i64::try_from(malformed).unwrap();
    assert_eq!(dead, [malformed, malformed], "every malformed record once");
    for spec in &pipeline.streams {
        for uri in [&spec.table_uri, &spec.dead_letter_uri] {
            let folder = uri.rsplit('/').next().unwrap();
            assert_log_clean(&dir.path().join("tables").join(folder));
        }
    }
}
