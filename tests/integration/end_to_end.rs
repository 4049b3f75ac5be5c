//! The whole engine against kinesis-mock: three multi-shard streams, `--available-now` twice.

use std::collections::BTreeMap;

use arrow::array::{Array, Int64Array};
use kinesis_delta::config::Pipeline;
use kinesis_delta::source::KinesisClient;

use crate::support::data::{PARTS, Triple, expected_follower_count, records, triples};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, load_pipeline, put_each, put_records, query, query_counts, run_available_now,
    write_config,
};

/// Puts the triples on the pipeline's three streams.
pub async fn put_triples(server: &TestKinesis, pipeline: &Pipeline, batch: &[Triple]) {
    put_triples_with(&server.client().await, pipeline, batch).await;
}

/// [`put_triples`] with a client of one's own.
pub async fn put_triples_with(client: &KinesisClient, pipeline: &Pipeline, batch: &[Triple]) {
    for (spec, part) in pipeline.streams.iter().zip(PARTS) {
        put_records(client, &spec.stream, &records(batch, part)).await;
    }
}

/// Puts each triple's records one by one on the shard holding `hash_key` of each stream.
pub async fn put_triples_at(
    server: &TestKinesis,
    pipeline: &Pipeline,
    batch: &[Triple],
    hash_key: u128,
) {
    let client = server.client().await;
    for (spec, part) in pipeline.streams.iter().zip(PARTS) {
        put_each(&client, &spec.stream, &records(batch, part), Some(hash_key)).await;
    }
}

/// The three tables of a pipeline, for `query`.
pub fn tables(pipeline: &Pipeline) -> Vec<(&'static str, String)> {
    vec![
        ("pin", pipeline.streams[0].table_uri.clone()),
        ("geo", pipeline.streams[1].table_uri.clone()),
        ("user", pipeline.streams[2].table_uri.clone()),
    ]
}

/// Asserts each table holds exactly the ids `0..n`, once each.
pub async fn assert_exactly_once(pipeline: &Pipeline, n: i64) {
    for (name, uri) in tables(pipeline) {
        let counts = query_counts(
            &[(name, &uri)],
            &format!("SELECT count(*), count(DISTINCT ind), min(ind), max(ind) FROM \"{name}\""),
        )
        .await;
        assert_eq!(
            counts,
            [n, n, 0, n - 1],
            "table {name}: count, distinct ids, min, max"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_now_lands_every_record_once_then_only_new_ones() {
    available_now_scenario(Kind::KinesisMock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_now_on_the_embedded_server() {
    available_now_scenario(Kind::Embedded).await;
}

async fn available_now_scenario(kind: Kind) {
    let server = TestKinesis::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "e2e", 1000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 3).await;

    let first = triples(0, 2000);
    put_triples(&server, &pipeline, &first).await;
    let (summaries, reports) = run_available_now(&pipeline).await;
    assert!(
        summaries
            .iter()
            .all(|s| s.records == 2000 && s.dead_letters == 0),
        "{summaries:?}"
    );
    assert!(
        reports.iter().any(|r| r.batch_id > 1),
        "batches are cut at 1000 records: {reports:?}"
    );
    assert!(reports.iter().all(|r| r.delta_version.is_some()));
    assert_exactly_once(&pipeline, 2000).await;

    // Every pin row is cleaned as the brief says (follower counts checked against an oracle).
    let uri = pipeline.streams[0].table_uri.clone();
    let batches = query(&[("pin", &uri)], "SELECT ind, follower_count FROM pin").await;
    let raw: BTreeMap<i64, Option<i64>> = first
        .iter()
        .map(|t| {
            (
                t.ind,
                expected_follower_count(t.pin["follower_count"].as_str().unwrap()),
            )
        })
        .collect();
    for batch in &batches {
        let ind = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let followers = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        for i in 0..batch.num_rows() {
            let got = (!followers.is_null(i)).then(|| followers.value(i));
            assert_eq!(
                got,
                raw[&ind.value(i)],
                "follower_count of ind {}",
                ind.value(i)
            );
        }
    }
    let geo = pipeline.streams[1].table_uri.clone();
    let parsed = query_counts(&[("geo", &geo)], "SELECT count(\"timestamp\") FROM geo").await;
    assert_eq!(parsed, [2000], "both datetime forms parse");

    // More records: only they are added.
    put_triples(&server, &pipeline, &triples(2000, 500)).await;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(summaries.iter().all(|s| s.records == 500), "{summaries:?}");
    assert_exactly_once(&pipeline, 2500).await;

    // Nothing new: nothing committed.
    let (summaries, reports) = run_available_now(&pipeline).await;
    assert!(
        reports.is_empty() && summaries.iter().all(|s| s.batches == 0),
        "{summaries:?}"
    );
}
