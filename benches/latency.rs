//! Put → committed latency at a trickle, with the engine at its default settings, reading by
//! polling (GetRecords) and by enhanced fan-out (SubscribeToShard) in the same run.
//!
//! `cargo bench --bench latency` (`LATENCY_SECONDS`, default 60; `LATENCY_RATE`, default 20 puts/s)
//!
//! It starts the embedded Kinesis server in this process (in memory), creates the shipped
//! config's three streams with 4 shards each and starts two `kinesis-delta run` processes
//! (continuous, default settings, each with its own tables): the shipped config, which polls, and
//! the same with `consumer_mode = "enhanced_fan_out"`. Then it puts one pin record at a time,
//! `LATENCY_RATE` a second, each with a random partition key, and notes when each put was
//! answered. A record's latency runs from that answer to the moment the Delta commit holding it
//! was written: the commit file's modification time, matched to the record by the range of each shard plan
//! the commit records.

#![allow(missing_docs, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::primitives::Blob;
use kinesis_delta::sequence::SequenceNumber;
use tokio_util::sync::CancellationToken;

use common::{binary, cli, env_number, start_server};

const PIN_STREAM: &str = "streaming-0a40ea42f8d1-pin";

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(bench());
}

/// One answered put.
struct Put {
    shard: String,
    sequence: SequenceNumber,
    answered: SystemTime,
}

/// One commit of the pin table: when its file was written and the range it holds per shard.
struct Commit {
    written: SystemTime,
    ranges: BTreeMap<String, (SequenceNumber, SequenceNumber)>,
}

async fn bench() {
    let seconds = env_number("LATENCY_SECONDS", 60);
    let rate = env_number("LATENCY_RATE", 20).max(1);
    let cancel = CancellationToken::new();
    let (endpoint, client) = start_server(&cancel).await;
    cli(&endpoint, &["streams", "create", "--shards", "4"]);
    let tables = tempfile::tempdir().expect("temp dir");
    let fan_out_config = fan_out_config(tables.path());
    let modes = [
        ("polling", Vec::new()),
        (
            "enhanced fan-out",
            vec!["--config".to_owned(), fan_out_config.display().to_string()],
        ),
    ];
    let mut engines = Vec::new();
    for (mode, args) in &modes {
        let root = tables.path().join(mode.replace(' ', "-"));
        let mut command = vec!["run".to_owned(), "--table-root".to_owned()];
        command.push(root.display().to_string());
        command.extend(args.iter().cloned());
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let engine = binary(&endpoint, &command)
            .stdout(Stdio::null())
            .spawn()
            .expect("the engine starts");
        engines.push((*mode, root, engine));
    }

    // Let the engine open its tables and reach the tip of every shard.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let interval = Duration::from_micros(1_000_000 / rate);
    let total = seconds * rate;
    let mut puts = Vec::with_capacity(total as usize);
    let mut next = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(next).await;
        next += interval;
        let record = serde_json::json!({
            "index": i, "unique_id": uuid::Uuid::new_v4().to_string(), "title": format!("post {i}"),
            "description": "latency", "poster_name": "bench", "follower_count": "1k",
            "tag_list": "a,b", "is_image_or_video": "image", "image_src": "https://example.com/x.jpg",
            "downloaded": 1, "save_location": "Local save in /data/art", "category": "art",
        });
        let answer = client
            .put_record()
            .stream_name(PIN_STREAM)
            .partition_key(uuid::Uuid::new_v4().to_string())
            .data(Blob::new(serde_json::to_vec(&record).expect("JSON")))
            .send()
            .await
            .expect("PutRecord");
        puts.push(Put {
            shard: answer.shard_id,
            sequence: SequenceNumber::parse(&answer.sequence_number).expect("sequence number"),
            answered: SystemTime::now(),
        });
    }
    let waited = Instant::now();
    let mut commits_by_mode = Vec::new();
    for (mode, root, mut engine) in engines {
        let commits = loop {
            let commits = pin_commits(&root.join("pin/_delta_log"));
            let all_in = puts.iter().all(|p| committed_at(&commits, p).is_some());
            if all_in || waited.elapsed() > Duration::from_secs(30) {
                break commits;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let _ = engine.kill();
        let _ = engine.wait();
        commits_by_mode.push((mode, commits));
    }
    cancel.cancel();

    println!(
        "{} puts at {rate}/s over {seconds} s, put → committed:",
        puts.len()
    );
    println!("| reading by | p50 | p90 | p99 | max | commits of the pin table |");
    println!("|---|---|---|---|---|---|");
    for (mode, commits) in commits_by_mode {
        let mut latencies: Vec<Duration> = puts
            .iter()
            .filter_map(|p| committed_at(&commits, p))
            .collect();
        assert_eq!(
            latencies.len(),
            puts.len(),
            "{mode}: every put record must be committed"
        );
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {mode} | {} ms | {} ms | {} ms | {} ms | {} |",
            at(0.5).as_millis(),
            at(0.9).as_millis(),
            at(0.99).as_millis(),
            at(1.0).as_millis(),
            commits.len()
        );
    }
}

/// The shipped config reading by enhanced fan-out, written into `dir` (its SQL paths made
/// absolute, so that it can live there).
fn fan_out_config(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(repo.join("kinesis-delta.toml")).expect("config");
    let text = shipped
        .replace("\"sql/", &format!("\"{}/sql/", repo.display()))
        .replace(
            "consumer_mode = \"polling\"",
            "consumer_mode = \"enhanced_fan_out\"",
        );
    assert_ne!(text, shipped, "the shipped config changed shape");
    let path = dir.join("fan-out.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

fn committed_at(commits: &[Commit], put: &Put) -> Option<Duration> {
    commits
        .iter()
        .find(|c| {
            c.ranges
                .get(&put.shard)
                .is_some_and(|(first, last)| (first..=last).contains(&&put.sequence))
        })
        .map(|c| c.written.duration_since(put.answered).unwrap_or_default())
}

fn pin_commits(log: &Path) -> Vec<Commit> {
    let Ok(entries) = std::fs::read_dir(log) else {
        return Vec::new();
    };
    let mut commits = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let (Ok(text), Ok(meta)) = (std::fs::read_to_string(&path), entry.metadata()) else {
            continue;
        };
        let Ok(written) = meta.modified() else {
            continue;
        };
        for line in text.lines() {
            let Ok(action) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(ranges) = action
                .pointer("/commitInfo/kinesisDelta/plans")
                .and_then(|r| r.as_object())
            else {
                continue;
            };
            let ranges = ranges
                .iter()
                .filter_map(|(shard, range)| {
                    let first = SequenceNumber::parse(range.get("first")?.as_str()?).ok()?;
                    let last = SequenceNumber::parse(range.get("last")?.as_str()?).ok()?;
                    Some((shard.clone(), (first, last)))
                })
                .collect();
            commits.push(Commit { written, ranges });
        }
    }
    commits
}
