//! `kinesis-delta demo` end to end, as a newcomer runs it: embedded Kinesis, streams, API,
//! emulator, engine, report; then stopped mid-run and run again, with exact counts.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::engine::table_rows;
use crate::support::{query_counts, repo, wait_until, write_config};

fn demo(config: &Path, data: &Path, posts: u64, rate: u32) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesis-delta"));
    command
        .args(["demo", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .arg("--analytics")
        .arg(repo().join("sql/analytics"))
        .args(["--posts", &posts.to_string(), "--rate", &rate.to_string()])
        .env("RUST_LOG", "warn");
    command
}

/// The records accepted per stream, from the demo's closing lines (`<stream>: N records accepted`).
fn accepted(stdout: &str) -> Vec<i64> {
    let mut counts: Vec<(String, i64)> = stdout
        .lines()
        .filter_map(|l| {
            let (stream, rest) = l.trim().split_once(": ")?;
            let n = rest.strip_suffix(" records accepted by Kinesis")?;
            Some((stream.to_owned(), n.parse().ok()?))
        })
        .collect();
    counts.sort();
    counts.into_iter().map(|(_, n)| n).collect()
}

/// The URI of the demo's table `name`.
fn table_uri(data: &Path, name: &str) -> String {
    let uri = url::Url::from_directory_path(data.join("tables").join(name)).unwrap();
    uri.as_str().trim_end_matches('/').to_owned()
}

async fn table_counts(data: &Path) -> Vec<i64> {
    let mut counts = Vec::new();
    // Sorted by stream name, as `accepted` is: geo, pin, user.
    for name in ["geo", "pin", "user"] {
        let uri = table_uri(data, name);
        counts.push(query_counts(&[("t", &uri)], "SELECT count(*) FROM t").await[0]);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_lands_every_accepted_post_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "demo", 100_000);
    let output = demo(&config, &data, 150, 300).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(accepted(&stdout), [150, 150, 150], "{stdout}");
    assert_eq!(table_counts(&data).await, [150, 150, 150]);
    assert!(data.join("report.html").exists());
    for q in ["q1", "q2", "q3a", "q3b", "q4", "q5", "q6", "q7", "q8"] {
        let csv = std::fs::read_to_string(data.join(format!("report/{q}.csv"))).unwrap();
        assert!(
            csv.lines().count() >= 2,
            "{q}.csv has a header and rows: {csv}"
        );
    }
    assert!(stdout.contains("query:"), "tells how to query: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_demo_mid_run_and_running_it_again_keeps_counts_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "restart", 100_000);

    // First run: interrupted (SIGINT, as Ctrl-C) while posting.
    let child = demo(&config, &data, 100_000, 100)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once every stream has posts in its table.
    for name in ["geo", "pin", "user"] {
        let uri = table_uri(&data, name);
        wait_until(&format!("rows in {name}"), Duration::from_secs(120), || {
            let uri = uri.clone();
            async move { table_rows(&uri).await > 0 }
        })
        .await;
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let first = child.wait_with_output().unwrap();
    assert!(first.status.success(), "a Ctrl-C'd demo exits cleanly");
    let first_out = String::from_utf8_lossy(&first.stdout);
    assert!(first_out.contains("stopped early"), "{first_out}");
    let first_accepted = accepted(&first_out);
    assert!(first_accepted.iter().all(|n| *n > 0), "{first_out}");

    // Second run resumes the same Kinesis state and tables.
    let second = demo(&config, &data, 80, 400).output().unwrap();
    let second_out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{second_out}");
    let second_accepted = accepted(&second_out);
    let expected: Vec<i64> = first_accepted
        .iter()
        .zip(&second_accepted)
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(
        table_counts(&data).await,
        expected,
        "every accepted record, once"
    );
}
