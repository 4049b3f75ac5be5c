//! Enhanced fan-out (`kinesis.consumer_mode = "enhanced_fan_out"`) against the embedded server's
//! SubscribeToShard: the consumer is registered once and reused (and registered again when someone
//! deregisters it), subscriptions that the server ends are renewed without a gap or a repeat, a
//! split shard's subscription ends with its children, and `deregister_consumer` removes the
//! consumer when the run ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kinesis_delta::config::Pipeline;
use kinesis_delta::source::KinesisClient;

use crate::chaos::split;
use crate::end_to_end::{assert_exactly_once, put_triples_with};
use crate::support::data::{PARTS, records, triples, triples_with_big_pins};
use crate::support::engine::{
    engine_command, signal, table_rows, wait_for_rows, wait_with_deadline,
};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, edit_file, load_pipeline, put_each, put_records, wait_until, write_config,
};

/// The embedded server ends each subscription after this long, so that a run of a few seconds
/// needs many.
const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(2);

/// The test config reading by enhanced fan-out, and its pipeline.
fn fan_out_config(dir: &Path, server: &TestKinesis, user_id: &str) -> (PathBuf, Pipeline) {
    let config = write_config(dir, server.endpoint(), user_id, 100_000);
    edit_file(
        &config,
        "consumer_mode = \"polling\"",
        "consumer_mode = \"enhanced_fan_out\"",
    );
    let pipeline = load_pipeline(&config);
    (config, pipeline)
}

/// Each stream's consumers, as (name, ARN).
async fn consumers(client: &KinesisClient, pipeline: &Pipeline) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for spec in &pipeline.streams {
        let summary = client
            .describe_stream_summary()
            .stream_name(&spec.stream)
            .send()
            .await
            .unwrap();
        let arn = summary.stream_description_summary.unwrap().stream_arn;
        let listed = client
            .list_stream_consumers()
            .stream_arn(arn)
            .send()
            .await
            .unwrap();
        for consumer in listed.consumers() {
            found.push((
                consumer.consumer_name().to_owned(),
                consumer.consumer_arn().to_owned(),
            ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_fan_out_lands_every_record_once_through_renewals_a_split_and_sigkill() {
    let server = TestKinesis::embedded(SUBSCRIPTION_LIFETIME).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, pipeline) = fan_out_config(dir.path(), &server, "efo");
    let client = server.client().await;
    create_streams(&client, &pipeline, 4).await;
    put_triples_with(&client, &pipeline, &triples(0, 300)).await;

    let engine = engine_command(&config, false).spawn().unwrap();
    let pin = pipeline.streams[0].table_uri.clone();
    wait_until("the first 300 pins", Duration::from_secs(60), || async {
        table_rows(&pin).await >= 300
    })
    .await;
    let registered = consumers(&client, &pipeline).await;
    assert_eq!(
        registered.len(),
        3,
        "one consumer per stream: {registered:?}"
    );
    assert!(
        registered
            .iter()
            .all(|(name, _)| name == "kinesis-delta-pinterest"),
        "named after the pipeline: {registered:?}"
    );

    // Records put over several subscription lifetimes: each renewal must go on exactly where the
    // last one stopped. The engine is killed in the middle and started again.
    for wave in 0..6_i64 {
        put_triples_with(&client, &pipeline, &triples(300 + wave * 50, 50)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let mut engine = engine;
    engine.kill().unwrap(); // SIGKILL
    engine.wait().unwrap();
    let engine = engine_command(&config, false).spawn().unwrap();
    for wave in 6..10_i64 {
        put_triples_with(&client, &pipeline, &triples(300 + wave * 50, 50)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    wait_until("the first 800 pins", Duration::from_secs(60), || async {
        table_rows(&pin).await >= 800
    })
    .await;
    assert_eq!(
        consumers(&client, &pipeline).await,
        registered,
        "the restarted engine reused the consumers"
    );

    // Someone deregisters the consumers while the engine runs: it registers them again.
    for (_, arn) in &registered {
        client
            .deregister_stream_consumer()
            .consumer_arn(arn)
            .send()
            .await
            .unwrap();
    }
    wait_until(
        "the consumers registered again",
        Duration::from_secs(30),
        || async {
            let again = consumers(&client, &pipeline).await;
            again.len() == 3 && again.iter().all(|c| !registered.contains(c))
        },
    )
    .await;
    put_triples_with(&client, &pipeline, &triples(800, 100)).await;
    wait_until("900 pins", Duration::from_secs(60), || async {
        table_rows(&pin).await >= 900
    })
    .await;

    // A split: the parent's subscription ends with its children, which are subscribed in turn.
    split(&client, &pipeline.streams[0].stream).await;
    put_triples_with(&client, &pipeline, &triples(900, 100)).await;
    wait_for_rows(&pipeline, 1000, Duration::from_secs(90)).await;
    signal(&engine, "TERM");
    let stopped = wait_with_deadline(engine, Duration::from_secs(60), "the engine after SIGTERM");
    assert!(stopped.status.success(), "{stopped:?}");
    assert_exactly_once(&pipeline, 1000).await;

    // On request, the consumer is deregistered when the run ends.
    edit_file(
        &config,
        "consumer_mode = \"enhanced_fan_out\"\n",
        "consumer_mode = \"enhanced_fan_out\"\nderegister_consumer = true\n",
    );
    put_triples_with(&client, &pipeline, &triples(1000, 20)).await;
    let status = engine_command(&config, true).status().unwrap();
    assert!(status.success(), "the --available-now run failed");
    assert_exactly_once(&pipeline, 1020).await;
    wait_until(
        "the consumers deregistered",
        Duration::from_secs(10),
        || async { consumers(&client, &pipeline).await.is_empty() },
    )
    .await;
}

/// The same mode against kinesis-mock's SubscribeToShard (a server of another make, which ends
/// a subscription only after 5 minutes): bounded runs drain it exactly, before and after a split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_fan_out_on_kinesis_mock() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, pipeline) = fan_out_config(dir.path(), &server, "efomock");
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    for (from, count) in [(0, 200), (200, 100)] {
        if from > 0 {
            // kinesis-mock never names a closed shard's children in an event: the end of the
            // parent is confirmed with GetRecords, and its children are read after it.
            split(&client, &pipeline.streams[0].stream).await;
        }
        put_triples_with(&client, &pipeline, &triples(from, count)).await;
        let run = engine_command(&config, true).spawn().unwrap();
        let output = wait_with_deadline(run, Duration::from_secs(120), "the --available-now run");
        assert!(output.status.success(), "{output:?}");
    }
    assert_exactly_once(&pipeline, 300).await;
    assert_eq!(consumers(&client, &pipeline).await.len(), 3);
}

/// A subscription's event is not sized by any call: here one holds about 10 MB of records
/// (3 times that against the budget), more than the whole 16 MiB memory budget. It takes the
/// whole budget once the rest is given back, and every record lands once. Before, the consumer
/// held the share it had guessed and waited for the rest, which the budget could never give: the
/// run hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_the_memory_budget_goes_through() {
    let server = TestKinesis::embedded(SUBSCRIPTION_LIFETIME).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = fan_out_config(dir.path(), &server, "efobig");
    edit_file(
        &config,
        "memory_budget = \"128MiB\"",
        "memory_budget = \"16MiB\"",
    );
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 1).await;
    // 50 pin records of about 200 KB, in the stream before the engine subscribes.
    let big = triples_with_big_pins(0, 50);
    let pins = records(&big, |t| &t.pin);
    put_each(&client, &pipeline.streams[0].stream, &pins, None).await;
    for (spec, part) in pipeline.streams.iter().zip(PARTS).skip(1) {
        put_records(&client, &spec.stream, &records(&big, part)).await;
    }
    let run = engine_command(&config, true).spawn().unwrap();
    let output = wait_with_deadline(run, Duration::from_secs(120), "the --available-now run");
    assert!(output.status.success(), "{output:?}");
    assert_exactly_once(&pipeline, 50).await;
}
