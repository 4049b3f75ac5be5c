//! Running the engine binary as a user would, and reading what it left in a table's log.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kinesis_delta::config::Pipeline;

use super::{query_counts, wait_until};

/// `kinesis-delta run --config <config>` (with `--available-now` when asked), quiet on stdout.
pub fn engine_command(config: &Path, available_now: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesis-delta"));
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if available_now {
        command.arg("--available-now");
    }
    command
}

/// Runs the engine (continuous) for a random 300 ms up to `up_to_ms`, then SIGKILLs it; panics if
/// it exited by itself before (round `round`, for the message).
pub async fn run_then_sigkill(config: &Path, rng: &mut impl rand::Rng, up_to_ms: u64, round: i64) {
    let mut child = engine_command(config, false).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(rng.random_range(300..up_to_ms))).await;
    if let Some(status) = child.try_wait().unwrap() {
        panic!("round {round}: the engine exited by itself with {status}");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Waits for a child to exit within `timeout`; kills it and panics when it does not.
pub fn wait_with_deadline(mut child: Child, timeout: Duration, what: &str) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{what}: still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Sends a signal (`STOP`, `CONT`, `TERM`, …) to a process.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Rows in the table at `uri`, 0 while it does not exist yet.
pub async fn table_rows(uri: &str) -> i64 {
    if deltalake::open_table(url::Url::parse(uri).unwrap())
        .await
        .is_err()
    {
        return 0;
    }
    query_counts(&[("t", uri)], "SELECT count(*) FROM t").await[0]
}

/// Waits until every table of the pipeline holds at least `n` rows. A test that stops an engine
/// must wait for all of them: a stop does not read on, and the streams are put one after another.
pub async fn wait_for_rows(pipeline: &Pipeline, n: i64, timeout: Duration) {
    for spec in &pipeline.streams {
        wait_until(&format!("{n} rows in {}", spec.name), timeout, || async {
            table_rows(&spec.table_uri).await >= n
        })
        .await;
    }
}

/// One commit of a Delta log: its version, its `txn` actions and whether it has a `metaData`.
#[derive(Debug)]
pub struct LogEntry {
    /// The table version.
    pub version: u64,
    /// `(appId, version)` of every `txn` action.
    pub txns: Vec<(String, i64)>,
    /// The commit carries a `metaData` action.
    pub metadata: bool,
    /// Its `add` actions (data files).
    pub adds: usize,
}

/// Reads every commit file of a local table's `_delta_log`.
pub fn read_log(table_dir: &Path) -> Vec<LogEntry> {
    let mut entries = Vec::new();
    for file in std::fs::read_dir(table_dir.join("_delta_log")).unwrap() {
        let path = file.unwrap().path();
        let Some(version) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let mut entry = LogEntry {
            version,
            txns: Vec::new(),
            metadata: false,
            adds: 0,
        };
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(txn) = action.get("txn") {
                entry.txns.push((
                    txn["appId"].as_str().unwrap().to_owned(),
                    txn["version"].as_i64().unwrap(),
                ));
            }
            entry.metadata |= action.get("metaData").is_some();
            entry.adds += usize::from(action.get("add").is_some());
        }
        entries.push(entry);
    }
    entries.sort_by_key(|e| e.version);
    entries
}

/// Asserts a table's log never records a batch twice and has its metadata in version 0 only.
pub fn assert_log_clean(table_dir: &Path) {
    if !table_dir.join("_delta_log").exists() {
        return;
    }
    let log = read_log(table_dir);
    let mut seen: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for entry in &log {
        for txn in &entry.txns {
            if let Some(first) = seen.insert(txn.clone(), entry.version) {
                panic!(
                    "{}: txn {txn:?} is in versions {first} and {}",
                    table_dir.display(),
                    entry.version
                );
            }
        }
        assert!(
            !entry.metadata || entry.version == 0,
            "{}: a metaData action in version {}",
            table_dir.display(),
            entry.version
        );
    }
}

/// Leaves a local table as a crash between a batch's dead-letter commit and its table commit
/// does: the newest batch commit is removed, with the maintenance commits (compaction) that came
/// after it (their data files stay, unreferenced). Returns the batch commit.
pub fn undo_last_table_commit(table_dir: &Path) -> LogEntry {
    let last = read_log(table_dir)
        .into_iter()
        .rev()
        .find(|e| !e.txns.is_empty())
        .unwrap();
    truncate_log(table_dir, last.version);
    last
}

/// Removes commit `from` and every later one, and the checkpoints of removed versions: the log as
/// it was before version `from` was committed.
pub fn truncate_log(table_dir: &Path, from: u64) {
    let log_dir = table_dir.join("_delta_log");
    for file in std::fs::read_dir(&log_dir).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let version = name.split('.').next().and_then(|v| v.parse::<u64>().ok());
        if version.is_some_and(|v| v >= from) {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let pointer = log_dir.join("_last_checkpoint");
    if let Ok(text) = std::fs::read_to_string(&pointer) {
        let checkpoint: serde_json::Value = serde_json::from_str(&text).unwrap();
        if checkpoint["version"].as_u64().is_some_and(|v| v >= from) {
            std::fs::remove_file(&pointer).unwrap();
        }
    }
}

/// `kinesis-delta history pin --json`, every version.
pub fn kinesis_delta_history(config: &Path) -> Vec<serde_json::Value> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["history", "pin", "--json", "--limit", "1000", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `kinesis-delta preview pin <args>`'s output.
pub fn kinesis_delta_preview(config: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["preview", "pin", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}
