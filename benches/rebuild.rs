//! How fast `kinesis-delta rebuild` derives a table again from its raw table, against how fast
//! the engine landed the same records from Kinesis.
//!
//! `cargo bench --bench rebuild` (`REBUILD_POSTS`, default 100000; `REBUILD_ROUNDS`, default 3)
//!
//! It starts the embedded Kinesis server in this process, creates the shipped config's streams
//! with 4 shards each, posts `REBUILD_POSTS` generated posts with the emulator, and lands them
//! with `run --available-now` and the shipped config plus `raw_table = "pin_raw"` on the pin
//! stream. Then, `REBUILD_ROUNDS` times, `rebuild pin`: every pin record read back from the raw
//! table, decoded, cleaned by the SQL plan by plan, and committed as one version. It prints the
//! pin records a second of each rebuild and the median.

#![allow(missing_docs, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use common::{cli, env_number, start_server};

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let posts = env_number("REBUILD_POSTS", 100_000);
    let rounds = env_number("REBUILD_ROUNDS", 3);
    let cancel = CancellationToken::new();
    let (endpoint, _client) = start_server(&cancel).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_with_raw_table(dir.path());
    let config = config.to_str().expect("a UTF-8 path");
    let count = posts.to_string();
    cli(&endpoint, &["streams", "create", "--shards", "4"]);
    cli(
        &endpoint,
        &[
            "emulate", "--direct", "--batch", "500", "--rate", "max", "--count", &count,
        ],
    );
    let started = Instant::now();
    cli(&endpoint, &["run", "--available-now", "--config", config]);
    println!(
        "engine --available-now: {posts} posts (3 records each) landed in {:.1} s, pin_raw kept",
        started.elapsed().as_secs_f64()
    );
    let mut rates = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        let out = cli(&endpoint, &["rebuild", "pin", "--config", config]);
        let took = started.elapsed().as_secs_f64();
        let rate = posts as f64 / took;
        println!(
            "round {round}: rebuild pin: {posts} records in {took:.2} s = {rate:.0} records/s ({})",
            out.lines().next().unwrap_or_default()
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.0} records/s", rates[rates.len() / 2]);
    cancel.cancel();
}

/// The shipped config with its SQL named by absolute path, tables under `dir`, and the pin
/// stream keeping `pin_raw`.
fn config_with_raw_table(dir: &Path) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("kinesis-delta.toml")).expect("shipped config");
    let text = text
        .replace("\"sql/", &format!("\"{}/sql/", repo.display()))
        .replace(
            "table_root = \"data/tables\"",
            &format!("table_root = \"{}\"", dir.join("tables").display()),
        )
        .replacen(
            "table = \"pin\"\n",
            "table = \"pin\"\nraw_table = \"pin_raw\"\n",
            1,
        );
    let path = dir.join("kinesis-delta.toml");
    std::fs::write(&path, text).expect("config written");
    path
}
