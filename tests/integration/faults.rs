//! Kinesis failures (throttling, expired iterators, the service away) injected by a proxy in front
//! of kinesis-mock, and malformed records that must land in the dead-letter table.

use std::sync::atomic::Ordering;

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::{records, triples};
use crate::support::fault_proxy::{FaultPlan, FaultProxy};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, load_pipeline, put_records, query, query_counts, run_available_now,
    write_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_expired_iterators_and_outages_lose_and_duplicate_nothing() {
    faults_scenario(Kind::KinesisMock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_on_the_embedded_server() {
    faults_scenario(Kind::Embedded).await;
}

async fn faults_scenario(kind: Kind) {
    let server = TestKinesis::start(kind).await;
    let proxy = FaultProxy::start(
        server.endpoint(),
        FaultPlan {
            throttle_every: 3,
            expire_every: 5,
            unavailable_every: 7,
            ..FaultPlan::NONE
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The engine talks to the proxy; the test puts records straight to the server.
    let config = write_config(dir.path(), &proxy.endpoint, "faults", 150);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 600)).await;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(summaries.iter().all(|s| s.records == 600), "{summaries:?}");
    assert_exactly_once(&pipeline, 600).await;
    let counts = &proxy.counts;
    assert!(
        counts.throttled.load(Ordering::SeqCst) > 0,
        "no throttling was injected"
    );
    assert!(
        counts.expired.load(Ordering::SeqCst) > 0,
        "no expired iterator was injected"
    );
    assert!(
        counts.unavailable.load(Ordering::SeqCst) > 0,
        "no outage was injected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_go_to_the_dead_letter_table() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "dead", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    let good = triples(0, 300);
    let mut pin = records(&good, |t| &t.pin);
    let bad: Vec<Vec<u8>> = vec![
        b"{\"index\": 1, \"title\": ".to_vec(),
        b"{\"index\": \"not a number\"}".to_vec(),
        b"\xff\xfe not utf-8".to_vec(),
        b"[\"an\", \"array\"]".to_vec(),
        b"plain text".to_vec(),
        b"{\"index\": 2} {\"index\": 3}".to_vec(),
    ];
    pin.extend(
        bad.iter()
            .enumerate()
            .map(|(i, data)| (format!("bad-{i}"), data.clone())),
    );
    put_records(&client, &pipeline.streams[0].stream, &pin).await;

    let (summaries, _) = run_available_now(&pipeline).await;
    let pin_summary = summaries.iter().find(|s| s.stream == "pin").unwrap();
    assert_eq!(pin_summary.records, 306);
    assert_eq!(pin_summary.dead_letters, 6);

    let spec = &pipeline.streams[0];
    let rows = query_counts(
        &[("pin", &spec.table_uri)],
        "SELECT count(*), count(DISTINCT ind) FROM pin",
    )
    .await;
    let dead = query_counts(
        &[("dead", &spec.dead_letter_uri)],
        "SELECT count(*), count(DISTINCT error) FROM dead",
    )
    .await;
    assert_eq!(rows, [300, 300]);
    assert_eq!(dead[0], 6, "good + dead = put");
    assert!(dead[1] >= 4, "each kind of damage is explained: {dead:?}");

    // The raw bytes are kept exactly, with their metadata.
    let batches = query(
        &[("dead", &spec.dead_letter_uri)],
        "SELECT data, _partition_key, _sequence_number, error FROM dead ORDER BY _partition_key",
    )
    .await;
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let data = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Binary).unwrap();
    let data = data
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .unwrap();
    for (i, original) in bad.iter().enumerate() {
        assert_eq!(
            data.value(i),
            original.as_slice(),
            "dead letter {i} keeps its bytes"
        );
    }
}
