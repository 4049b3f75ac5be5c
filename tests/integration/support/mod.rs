//! Helpers shared by the integration tests: servers, streams, configs and table reads.

pub mod data;
pub mod dynalite;
pub mod engine;
pub mod fault_proxy;
pub mod kinesis_mock;
pub mod mariadb;
pub mod promtool;
pub mod servers;

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use datafusion::prelude::SessionContext;
use kinesis_delta::config::{KinesisSettings, Pipeline, PipelineConfig};
use kinesis_delta::pipeline::{self, RunMode, StreamSummary};
use kinesis_delta::progress::BatchProgress;
use kinesis_delta::source::{KinesisClient, connect};
use tokio_util::sync::CancellationToken;

/// A client for a local endpoint.
pub async fn client(endpoint: &str) -> KinesisClient {
    connect(&KinesisSettings {
        endpoint_url: Some(endpoint.to_owned()),
        ..KinesisSettings::default()
    })
    .await
}

/// Creates a stream and waits until it is ACTIVE.
pub async fn create_stream(client: &KinesisClient, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("CreateStream");
    wait_active(client, name).await;
}

/// Creates every stream of the pipeline with `shards` shards and waits until they are ACTIVE.
pub async fn create_streams(client: &KinesisClient, pipeline: &Pipeline, shards: i32) {
    for spec in &pipeline.streams {
        create_stream(client, &spec.stream, shards).await;
    }
}

/// Waits until a stream is ACTIVE (after a create or a reshard).
pub async fn wait_active(client: &KinesisClient, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await;
        if let Ok(s) = summary
            && s.stream_description_summary()
                .is_some_and(|d| d.stream_status() == &StreamStatus::Active)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} never became ACTIVE"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts records (partition key, bytes) one PutRecord at a time (records too large together for
/// one PutRecords call), all on the shard of `hash_key` when one is given.
pub async fn put_each(
    client: &KinesisClient,
    stream: &str,
    records: &[(String, Vec<u8>)],
    hash_key: Option<u128>,
) {
    for (key, data) in records {
        client
            .put_record()
            .stream_name(stream)
            .partition_key(key)
            .set_explicit_hash_key(hash_key.map(|k| k.to_string()))
            .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
    }
}

/// Puts records (partition key, bytes) with PutRecords, retrying failed entries until all are in.
pub async fn put_records(client: &KinesisClient, stream: &str, records: &[(String, Vec<u8>)]) {
    for chunk in records.chunks(500) {
        let mut pending: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|(key, data)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data.clone()))
                    .build()
                    .unwrap()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "PutRecords kept failing on {stream}"
            );
            let Ok(out) = client
                .put_records()
                .stream_name(stream)
                .set_records(Some(pending.clone()))
                .send()
                .await
            else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            pending = pending
                .into_iter()
                .zip(out.records())
                .filter(|(_, result)| result.error_code().is_some())
                .map(|(entry, _)| entry)
                .collect();
        }
    }
}

/// Reads every record of a stream back, all shards to their current end: (partition key, bytes),
/// sorted.
pub async fn read_stream(endpoint: &str, stream: &str) -> Vec<(String, Vec<u8>)> {
    let client = client(endpoint).await;
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut records = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let out = client
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await
                .unwrap();
            for r in out.records() {
                records.push((
                    r.partition_key().unwrap_or_default().to_owned(),
                    r.data().as_ref().to_vec(),
                ));
            }
            match out.next_shard_iterator {
                Some(next) if !out.records.is_empty() => iterator = next,
                _ => break,
            }
        }
    }
    records.sort();
    records
}

/// The repository folder.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a pipeline config for a test: the shipped SQL, the given endpoint, a temp table root.
pub fn write_config(
    dir: &Path,
    endpoint: &str,
    user_id: &str,
    max_batch_records: usize,
) -> PathBuf {
    let sql = repo().join("sql");
    let mut text = std::fs::read_to_string(repo().join("kinesis-delta.toml")).unwrap();
    text = text.replace("\"sql/", &format!("\"{}/", sql.display()));
    text = text.replace(
        "table_root = \"data/tables\"",
        &format!("table_root = \"{}\"", dir.join("tables").display()),
    );
    text = text.replace(
        "user_id = \"0a40ea42f8d1\"",
        &format!("user_id = \"{user_id}\""),
    );
    text = text.replace(
        "# endpoint_url = \"http://127.0.0.1:4567\"",
        &format!("endpoint_url = \"{endpoint}\""),
    );
    text = text.replace("trigger_interval = \"2s\"", "trigger_interval = \"300ms\"");
    text = text.replace(
        "max_batch_records = 100000",
        &format!("max_batch_records = {max_batch_records}"),
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Replaces the first `from` in a file (a config, a schema or SQL file) with `to`, which must be
/// there.
pub fn edit_file(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has `{from}`", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

/// The config's pin stream without and with the raw table `pin_raw`.
const WITHOUT_RAW: &str = "table = \"pin\"\n";
const WITH_RAW: &str = "table = \"pin\"\nraw_table = \"pin_raw\"\n";

/// Gives the config's pin stream the raw table `pin_raw`.
pub fn keep_raw_table(config: &Path) {
    edit_file(config, WITHOUT_RAW, WITH_RAW);
}

/// Takes the raw table `pin_raw` from the config's pin stream again.
pub fn drop_raw_table(config: &Path) {
    edit_file(config, WITH_RAW, WITHOUT_RAW);
}

/// The shipped `sql/<file>` as a copy in `dir` that a test edits, named in the config instead.
pub fn own_copy(dir: &Path, config: &Path, file: &str) -> PathBuf {
    let copy = dir.join(file);
    let shipped = repo().join("sql").join(file);
    std::fs::copy(&shipped, &copy).unwrap();
    edit_file(
        config,
        &format!("{}\"", shipped.display()),
        &format!("{}\"", copy.display()),
    );
    copy
}

/// Sets a test config's `trigger_interval` (300 ms by default in tests).
pub fn set_trigger_interval(config: &Path, interval: &str) {
    edit_file(
        config,
        "trigger_interval = \"300ms\"",
        &format!("trigger_interval = \"{interval}\""),
    );
}

/// Loads and validates a config file.
pub fn load_pipeline(path: &Path) -> Pipeline {
    let (config, base) = PipelineConfig::load(Some(path)).unwrap();
    config.validate(&base).unwrap()
}

/// Runs the engine in-process with `--available-now` and returns the summaries and progress.
pub async fn run_available_now(pipeline: &Pipeline) -> (Vec<StreamSummary>, Vec<BatchProgress>) {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let summaries = tokio::time::timeout(
        Duration::from_secs(300),
        pipeline::run(
            pipeline,
            RunMode::AvailableNow,
            CancellationToken::new(),
            sender,
        ),
    )
    .await
    .expect("available-now run did not finish")
    .expect("available-now run failed");
    let mut reports = Vec::new();
    while let Ok(report) = receiver.try_recv() {
        reports.push(report);
    }
    (summaries, reports)
}

/// Runs the engine in-process with `--available-now`, expecting it to stop with an error.
pub async fn run_expecting_error(pipeline: &Pipeline) -> kinesis_delta::pipeline::EngineError {
    let (sender, _receiver) = tokio::sync::mpsc::unbounded_channel();
    pipeline::run(
        pipeline,
        RunMode::AvailableNow,
        CancellationToken::new(),
        sender,
    )
    .await
    .expect_err("the engine should have stopped with an error")
}

/// Runs SQL over Delta tables registered under the given names.
pub async fn query(tables: &[(&str, &str)], sql: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    for (name, uri) in tables {
        let table = deltalake::open_table(url::Url::parse(uri).unwrap())
            .await
            .expect("open table");
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table(*name, table.table_provider().await.unwrap())
            .unwrap();
    }
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// Runs a query returning one row of integer columns.
pub async fn query_counts(tables: &[(&str, &str)], sql: &str) -> Vec<i64> {
    let batches = query(tables, sql).await;
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 1, "{sql}");
    batch
        .columns()
        .iter()
        .map(|c| {
            let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).unwrap();
            c.as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0)
        })
        .collect()
}

/// Polls `check` until it returns true (true) or the timeout passes (false).
pub async fn poll<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `check` until it returns true or the deadline passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
