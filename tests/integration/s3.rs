//! The same engine writing its tables to S3: a real S3-compatible server written by others (moto's
//! server, from PyPI), started by the test on a loopback port. Tables committed, resumed, read back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::end_to_end::put_triples;
use crate::support::data::triples;
use crate::support::kinesis_mock::free_port;
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, keep_raw_table, load_pipeline, run_available_now, write_config,
};

struct MotoS3 {
    child: Child,
    endpoint: String,
}

impl MotoS3 {
    async fn start() -> Option<Self> {
        let importable = Command::new("python3")
            .args(["-c", "import moto.server"])
            .status()
            .ok()?;
        if !importable.success() {
            return None;
        }
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.get(&server.endpoint).send().await.is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Some(server)
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_on_s3_are_committed_resumed_and_read_back() {
    let Some(s3) = MotoS3::start().await else {
        eprintln!(
            "SKIPPED tables_on_s3_…: moto is not installed (python3 -m pip install 'moto[server]')"
        );
        return;
    };
    let bucket = "kinesis-delta-tables";
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", s3.endpoint))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );

    let kinesis = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), kinesis.endpoint(), "s3", 100);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        &format!("table_root = \"{}\"", dir.path().join("tables").display()),
        &format!("table_root = \"s3://{bucket}/pinterest\""),
    );
    let storage = format!(
        "\n[storage]\nAWS_ENDPOINT_URL = \"{}\"\nAWS_ALLOW_HTTP = \"true\"\nAWS_REGION = \"us-east-1\"\nAWS_ACCESS_KEY_ID = \"test\"\nAWS_SECRET_ACCESS_KEY = \"test\"\n",
        s3.endpoint
    );
    std::fs::write(&config, text + &storage).unwrap();
    keep_raw_table(&config);
    let pipeline = load_pipeline(&config);
    assert!(
        pipeline.streams[0].table_uri.starts_with("s3://"),
        "{}",
        pipeline.streams[0].table_uri
    );

    let client = kinesis.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&kinesis, &pipeline, &triples(0, 300)).await;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(
        summaries.iter().all(|s| s.records == 300 && s.batches >= 3),
        "{summaries:?}"
    );
    put_triples(&kinesis, &pipeline, &triples(300, 100)).await;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(
        summaries.iter().all(|s| s.records == 100),
        "resumed from the manifests on S3: {summaries:?}"
    );

    // Read back through the query layer (the same storage options).
    let text = pin_counts(&pipeline).await;
    assert!(text.contains("| 400 | 400 |"), "{text}");
    let listing = reqwest::get(format!(
        "{}/{bucket}?list-type=2&prefix=pinterest/pin/_kinesis_delta",
        s3.endpoint
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        listing.contains("batches/"),
        "the manifests live on S3: {listing}"
    );

    // The pin table rebuilt from its raw table on S3: the same rows, in one new version.
    let done = kinesis_delta::rebuild::rebuild(&pipeline, "pin", &mut |_| {})
        .await
        .unwrap();
    assert_eq!((done.records, done.rows), (400, 400), "{done:?}");
    let text = pin_counts(&pipeline).await;
    assert!(text.contains("| 400 | 400 |"), "{text}");
}

/// The pin table's rows and distinct ids, read through the query layer, as a printed table.
async fn pin_counts(pipeline: &kinesis_delta::config::Pipeline) -> String {
    let tables = kinesis_delta::query::TableSet::open(pipeline, &[])
        .await
        .unwrap();
    let result = tables
        .sql("SELECT count(*) AS n, count(DISTINCT ind) AS ids FROM pin")
        .await
        .unwrap();
    arrow::util::pretty::pretty_format_batches(&result.batches)
        .unwrap()
        .to_string()
}
