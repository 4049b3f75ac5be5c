//! Resharding while the engine runs: a parent is read to its end before its children.

use std::time::Duration;

use kinesis_delta::pipeline::{self, RunMode};
use tokio_util::sync::CancellationToken;

use crate::support::data::{records, triples};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, load_pipeline, put_records, query_counts, wait_active, wait_until, write_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitting_a_shard_mid_stream_loses_and_duplicates_nothing() {
    split_scenario(Kind::KinesisMock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitting_a_shard_on_the_embedded_server() {
    split_scenario(Kind::Embedded).await;
}

async fn split_scenario(kind: Kind) {
    let server = TestKinesis::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "reshard", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 1).await;
    let pin = pipeline.streams[0].clone();
    put_records(&client, &pin.stream, &records(&triples(0, 400), |t| &t.pin)).await;

    let cancel = CancellationToken::new();
    let (sender, _receiver) = tokio::sync::mpsc::unbounded_channel();
    let engine = {
        let (pipeline, cancel) = (pipeline.clone(), cancel.clone());
        tokio::spawn(
            async move { pipeline::run(&pipeline, RunMode::Continuous, cancel, sender).await },
        )
    };
    let count = || {
        let uri = pin.table_uri.clone();
        async move {
            if deltalake::open_table(url::Url::parse(&uri).unwrap())
                .await
                .is_err()
            {
                return 0;
            }
            query_counts(&[("pin", &uri)], "SELECT count(*) FROM pin").await[0]
        }
    };
    wait_until("the first 400 rows", Duration::from_secs(60), || async {
        count().await >= 400
    })
    .await;

    // Split the only shard in two, then put more records: they land in the children only.
    let shards = client
        .list_shards()
        .stream_name(&pin.stream)
        .send()
        .await
        .unwrap();
    let parent = &shards.shards()[0];
    let range = parent.hash_key_range().unwrap();
    let start: u128 = range.starting_hash_key().parse().unwrap();
    let end: u128 = range.ending_hash_key().parse().unwrap();
    client
        .split_shard()
        .stream_name(&pin.stream)
        .shard_to_split(parent.shard_id())
        .new_starting_hash_key((start / 2 + end / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_active(&client, &pin.stream).await;
    put_records(
        &client,
        &pin.stream,
        &records(&triples(400, 400), |t| &t.pin),
    )
    .await;
    let listed = client
        .list_shards()
        .stream_name(&pin.stream)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.shards().len(), 3, "the parent and two children");

    wait_until("all 800 rows", Duration::from_secs(90), || async {
        count().await >= 800
    })
    .await;
    cancel.cancel();
    engine.await.unwrap().unwrap();
    let counts = query_counts(
        &[("pin", &pin.table_uri)],
        "SELECT count(*), count(DISTINCT ind) FROM pin",
    )
    .await;
    assert_eq!(counts, [800, 800]);
}
