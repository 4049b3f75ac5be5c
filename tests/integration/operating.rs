//! What an operator sees: log lines fit for a file or a log collector.

use std::process::Stdio;
use std::time::Duration;

use crate::end_to_end::put_triples;
use crate::support::data::triples;
use crate::support::engine::{engine_command, wait_with_deadline};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{create_streams, load_pipeline, write_config};

/// Logs written to a file carry no colour codes; `--log-format json` writes one JSON object per
/// line, with its level and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_file_are_plain_text_or_json_lines() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "logs", 1000);
    let pipeline = load_pipeline(&config);
    create_streams(&server.client().await, &pipeline, 1).await;
    put_triples(&server, &pipeline, &triples(0, 5)).await;
    for format in ["text", "json"] {
        // A file, not a pipe the test would have to drain while the engine runs.
        let log_path = dir.path().join(format!("engine.{format}.log"));
        let child = engine_command(&config, true)
            .args(["--log-format", format])
            .env("RUST_LOG", "warn,kinesis_delta=info")
            .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
            .spawn()
            .unwrap();
        let output = wait_with_deadline(child, Duration::from_secs(120), "run --available-now");
        assert!(output.status.success());
        let logs = std::fs::read_to_string(&log_path).unwrap();
        assert!(!logs.is_empty(), "{format}: info lines were written");
        assert!(
            !logs.contains('\u{1b}'),
            "{format}: no colour codes in a file: {logs}"
        );
        if format == "json" {
            for line in logs.lines() {
                let event: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                assert!(event["level"].is_string(), "{line}");
                assert!(event["fields"]["message"].is_string(), "{line}");
            }
        }
    }
}
