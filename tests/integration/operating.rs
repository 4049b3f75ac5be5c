//! What an operator sees: log lines fit for a file or a log collector, and the metrics and
//! health checks of the admin address.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::end_to_end::put_triples;
use crate::support::data::triples;
use crate::support::engine::{engine_command, signal, wait_with_deadline};
use crate::support::kinesis_mock::free_port;
use crate::support::promtool::promtool;
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{create_streams, load_pipeline, put_each, write_config};

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

/// A running engine started with `--admin-address`, serving metrics and health checks, scraped
/// as Prometheus would; the output passes `promtool check metrics` and counts exactly what was
/// committed. Then the API's, with its requests by route and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_of_a_running_engine_and_api() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "metrics", 1000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 40)).await;
    let pin = pipeline.streams[0].stream.clone();
    put_each(
        &client,
        &pin,
        &[("k".to_owned(), b"{not json".to_vec())],
        None,
    )
    .await;

    let admin = format!("127.0.0.1:{}", free_port());
    let engine = Guard(
        engine_command(&config, false)
            .args(["--admin-address", &admin])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let ready = wait_for_status(&http, &format!("http://{admin}/readyz"), 200).await;
    for stream in &pipeline.streams {
        assert!(ready.contains(&format!("{}: ok", stream.stream)), "{ready}");
    }
    let healthz = http
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);

    let pin_records = format!("kinesis_delta_records_in_total{{stream=\"{pin}\"}} 41");
    let metrics = scrape_until(&http, &admin, &pin_records).await;
    for line in [
        format!("kinesis_delta_rows_out_total{{stream=\"{pin}\"}} 40"),
        format!("kinesis_delta_dead_letters_total{{stream=\"{pin}\"}} 1"),
        "kinesis_delta_table_live_files{table=\"pin_dead_letters\"} 1".to_owned(),
        format!(
            "kinesis_delta_batch_stage_seconds_bucket{{stream=\"{pin}\",stage=\"commit\",le=\"+Inf\"}}"
        ),
        format!(
            "kinesis_delta_shard_behind_latest_seconds{{stream=\"{pin}\",shard=\"shardId-000000000001\"}}"
        ),
        "kinesis_delta_maintenance_runs_total{table=\"pin\",operation=\"vacuum\",outcome=\"ok\"} 1"
            .to_owned(),
        "# HELP kinesis_delta_commit_conflicts_total".to_owned(),
        "# TYPE process_resident_memory_bytes gauge".to_owned(),
    ] {
        assert!(metrics.contains(&line), "missing `{line}` in:\n{metrics}");
    }
    promtool_check(&metrics, "the engine's metrics");
    signal(&engine.0, "TERM");

    // The API: not ready while its Kinesis does not answer, ready once one does.
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let lonely_admin = format!("127.0.0.1:{}", free_port());
    let _lonely = Guard(api_command(
        &config,
        &unreachable,
        free_port(),
        &lonely_admin,
    ));
    // First "starting", then the Kinesis check, which does not pass.
    let not_ready = wait_for_answer(
        &http,
        &format!("http://{lonely_admin}/readyz"),
        503,
        "kinesis: not yet",
    )
    .await;
    assert!(not_ready.contains("kinesis: not yet"), "{not_ready}");

    let (api_port, api_admin) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let _api = Guard(api_command(
        &config,
        server.endpoint(),
        api_port,
        &api_admin,
    ));
    wait_for_status(&http, &format!("http://{api_admin}/readyz"), 200).await;
    let api = format!("http://127.0.0.1:{api_port}");
    let answers = [
        http.get(format!("{api}/streams")).send().await.unwrap(),
        http.put(format!("{api}/streams/{pin}/record"))
            .body("{}")
            .send()
            .await
            .unwrap(),
        http.get(format!("{api}/no-such-route"))
            .send()
            .await
            .unwrap(),
        // A made-up method must not make a series of its own.
        http.request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("{api}/streams"),
        )
        .send()
        .await
        .unwrap(),
    ];
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert_eq!(statuses, [200, 400, 404, 405]);
    let metrics = scrape_until(&http, &api_admin, "status=\"405\"} 1").await;
    for line in [
        "kinesis_delta_api_requests_total{method=\"GET\",route=\"/streams\",status=\"200\"} 1",
        "kinesis_delta_api_requests_total{method=\"PUT\",route=\"/streams/{stream_name}/record\",status=\"400\"} 1",
        "kinesis_delta_api_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "kinesis_delta_api_request_duration_seconds_count{method=\"GET\",route=\"/streams\"} 1",
        "kinesis_delta_api_requests_total{method=\"OTHER\",route=\"/streams\",status=\"405\"} 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    promtool_check(&metrics, "the API's metrics");
}

/// Kills the child process when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kinesis-delta api` on `port` in front of `endpoint`, with its admin address.
fn api_command(config: &std::path::Path, endpoint: &str, port: u16, admin: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["api", "--config"])
        .arg(config)
        .args(["--endpoint-url", endpoint])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--admin-address", admin])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls `url` until it answers `status`; returns the body.
async fn wait_for_status(http: &reqwest::Client, url: &str, status: u16) -> String {
    wait_for_answer(http, url, status, "").await
}

/// Asks `url` until it answers `status` with a body containing `needle`, and returns the body.
async fn wait_for_answer(http: &reqwest::Client, url: &str, status: u16, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(answer) = http.get(url).send().await
            && answer.status().as_u16() == status
        {
            let body = answer.text().await.unwrap();
            if body.contains(needle) {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {status} with `{needle}`"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scrapes `/metrics` until the exposition contains `expected`.
async fn scrape_until(http: &reqwest::Client, admin: &str, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let content_type = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = answer.text().await.unwrap();
        if text.contains(expected) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never scraped `{expected}`:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `promtool check metrics` finds no problem in `text`.
fn promtool_check(text: &str, what: &str) {
    eprintln!("checking {what}");
    promtool(Path::new("."), &["check", "metrics"], text, true);
}
