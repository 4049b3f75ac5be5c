//! The user's mistakes: a cleaning SQL that fails, a bad config, a missing stream. Each stops with a
//! message that says what to fix, and loses nothing.

use std::process::Command;

use kinesis_delta::pipeline::{EngineError, ErrorKind};

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::triples;
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, load_pipeline, repo, run_available_now, run_expecting_error, write_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cleaning_sql_commits_nothing_and_its_batch_replays_once_fixed() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "sqlerr", 100_000);
    let pin_sql = dir.path().join("pin.sql");
    let text = std::fs::read_to_string(&config).unwrap();
    let shipped = repo().join("sql/pin.sql");
    std::fs::write(
        &config,
        text.replace(
            &shipped.display().to_string(),
            &pin_sql.display().to_string(),
        ),
    )
    .unwrap();
    // Plans fine (start-up check), fails on real rows: titles are not numbers.
    std::fs::write(&pin_sql, "SELECT CAST(title AS BIGINT) AS ind FROM raw").unwrap();

    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 200)).await;

    let err = run_expecting_error(&pipeline).await;
    assert!(matches!(err, EngineError::Transform(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::User);
    let message = err.to_string();
    assert!(
        message.contains(&pin_sql.display().to_string()) && message.contains("fix the SQL"),
        "{message}"
    );
    let pin_log = dir.path().join("tables/pin/_delta_log");
    assert!(
        !pin_log.exists() || std::fs::read_dir(&pin_log).unwrap().next().is_none(),
        "nothing committed to pin"
    );

    std::fs::copy(&shipped, &pin_sql).unwrap();
    let pipeline = load_pipeline(&config);
    let (summaries, reports) = run_available_now(&pipeline).await;
    let pin = summaries.iter().find(|s| s.stream == "pin").unwrap();
    assert_eq!(pin.records, 200);
    assert!(
        reports
            .iter()
            .any(|r| r.stream == "pin" && r.batch_id == 1 && r.replayed),
        "the planned batch is replayed exactly: {reports:?}"
    );
    assert_exactly_once(&pipeline, 200).await;
}

/// Runs `kinesis-delta run --available-now` as a user would; it must fail. Returns its stderr.
fn failing_run(config: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["run", "--available-now", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!output.status.success(), "the run should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_config_fails_at_start_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "badcfg", 100_000);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "max_get_records_per_second = 5",
            "max_get_records_per_second = 9",
        ),
    )
    .unwrap();
    let stderr = failing_run(&config);
    assert!(
        stderr.contains("max_get_records_per_second") && stderr.contains("1 to 5"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_named_with_the_fix() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "nostream", 100_000);
    let stderr = failing_run(&config);
    assert!(
        stderr.contains("streaming-nostream-pin") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// `--available-now` ends when every shard is read, which a process sharing the shards cannot
/// know: with `[leases]` it stops before reading anything, saying what to run instead. And
/// `--worker-id` without `[leases]` names nothing: refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_now_refuses_leases_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "leasesnow", 100_000);
    let plain = Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["run", "--available-now", "--worker-id", "w1", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success());
    assert!(
        stderr.contains("--worker-id") && stderr.contains("[leases]"),
        "{stderr}"
    );

    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[leases]\ntable = \"leases\"\nendpoint_url = \"http://127.0.0.1:9\"\n");
    std::fs::write(&config, text).unwrap();
    let err = run_expecting_error(&load_pipeline(&config)).await;
    assert!(matches!(err, EngineError::Config(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("--available-now") && message.contains("without [leases]"),
        "{message}"
    );
    assert!(
        !dir.path().join("tables/pin/_delta_log").exists(),
        "nothing was written"
    );
}
