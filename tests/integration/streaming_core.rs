//! The streaming core: shards read ahead within one memory budget, and batches cut when the
//! shards are caught up rather than after a fixed wait.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kinesis_delta::pipeline::{self, RunMode};
use kinesis_delta::source::{BatchLimits, MemoryBudget, StartPosition, StreamSource};
use tokio_util::sync::CancellationToken;

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::{records, triples, triples_with_big_pins};
use crate::support::engine::{table_rows, wait_for_rows};
use crate::support::fault_proxy::{FaultPlan, FaultProxy};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, edit_file, load_pipeline, put_each, put_records, run_available_now,
    set_trigger_interval, wait_until, write_config,
};

/// A backlog four times the memory budget: every record lands once, and no batch holds more than
/// the budget allows (16 MiB at three times the record bytes: about 5.6 MB of records), where the
/// batch limits alone (64 MiB) would let one batch take the whole backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_memory_budget_lands_once_in_batches_the_budget_bounds() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "budget", 100_000);
    edit_file(
        &config,
        "memory_budget = \"128MiB\"",
        "memory_budget = \"16MiB\"",
    );
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    // 100 pin records of about 200 KB: 20 MB in all.
    let big = triples_with_big_pins(0, 100);
    let pin = records(&big, |t| &t.pin);
    let record_bytes = pin[0].1.len();
    // One at a time: a PutRecords call may carry at most 5 MB.
    put_each(&client, &pipeline.streams[0].stream, &pin, None).await;
    put_records(
        &client,
        &pipeline.streams[1].stream,
        &records(&big, |t| &t.geo),
    )
    .await;
    put_records(
        &client,
        &pipeline.streams[2].stream,
        &records(&big, |t| &t.user),
    )
    .await;
    let (_, reports) = run_available_now(&pipeline).await;
    let pin_batches: Vec<usize> = reports
        .iter()
        .filter(|r| r.stream == "pin")
        .map(|r| r.rows_in)
        .collect();
    assert_eq!(pin_batches.iter().sum::<usize>(), 100);
    let budget_records = (16 << 20) / 3 / record_bytes;
    assert!(
        pin_batches.iter().all(|&n| n <= budget_records),
        "records per pin batch: {pin_batches:?}; the budget holds {budget_records}"
    );
    assert_exactly_once(&pipeline, 100).await;
}

/// A running engine whose shards are caught up commits new records as soon as it reads them,
/// however long `trigger_interval` is. Before, an idle engine slept a whole trigger interval
/// between polls (here an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reaching_a_caught_up_engine_are_committed_without_waiting_for_the_trigger() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "ready", 100_000);
    set_trigger_interval(&config, "1h");
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 10)).await;
    let cancel = CancellationToken::new();
    let engine = tokio::spawn({
        let pipeline = pipeline.clone();
        let cancel = cancel.clone();
        async move {
            let (sender, _receiver) = tokio::sync::mpsc::unbounded_channel();
            pipeline::run(&pipeline, RunMode::Continuous, cancel, sender).await
        }
    });
    let pin = pipeline.streams[0].table_uri.clone();
    wait_until(
        "the waiting records are committed",
        Duration::from_secs(60),
        || {
            let pin = pin.clone();
            async move { table_rows(&pin).await == 10 }
        },
    )
    .await;
    // The engine is now idle at the tip of every shard.
    tokio::time::sleep(Duration::from_secs(2)).await;
    put_triples(&server, &pipeline, &triples(10, 20)).await;
    // Records put while idle are committed within seconds.
    wait_for_rows(&pipeline, 30, Duration::from_secs(30)).await;
    cancel.cancel();
    engine.await.unwrap().unwrap();
    assert_exactly_once(&pipeline, 30).await;
}

/// Batch limits for the tests that collect from a source directly.
const SMALL_BATCHES: BatchLimits = BatchLimits {
    max_records: 1000,
    max_bytes: 1 << 20,
    max_wait: Duration::from_millis(300),
};

/// Collects (and drops) batches until one says the source is caught up, for at most 50 batches.
/// The shards the source says are at their tip.
fn tip_shards(source: &StreamSource) -> Vec<String> {
    source.shards_at_tip().into_iter().map(|(s, _)| s).collect()
}

async fn collect_until_caught_up(source: &mut StreamSource, cancel: &CancellationToken) -> bool {
    for _ in 0..50 {
        if source
            .collect_batch(SMALL_BATCHES, cancel)
            .await
            .unwrap()
            .caught_up
        {
            return true;
        }
    }
    false
}

/// Collects batches until one holds records, for at most `batches` batches; how many it held.
async fn collect_until_records(
    source: &mut StreamSource,
    cancel: &CancellationToken,
    batches: usize,
) -> usize {
    for _ in 0..batches {
        let records = source
            .collect_batch(SMALL_BATCHES, cancel)
            .await
            .unwrap()
            .records
            .len();
        if records > 0 {
            return records;
        }
    }
    0
}

/// Review finding: a shard's "at its tip" came from its last answer handed out, while its
/// consumer already held newer records, waiting for memory. An idle engine then wrote tip markers
/// (and manifests) saying nothing lay beyond its position, for as long as the wait lasted. Now a
/// shard with records fetched but not handed out is never at its tip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_reader_waits_for_memory_is_not_at_its_tip() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let client = server.client().await;
    crate::support::create_stream(&client, "tip-budget", 1).await;
    let budget = MemoryBudget::new(16 << 20);
    let mut source = StreamSource::new(client.clone(), "tip-budget", StartPosition::TrimHorizon, 5)
        .with_budget(budget.clone());
    let cancel = CancellationToken::new();
    let at_tip = collect_until_caught_up(&mut source, &cancel).await;
    assert!(at_tip, "an empty shard reaches its tip");
    assert_eq!(tip_shards(&source), ["shardId-000000000000"]);

    let everything = budget.reserve(budget.record_bytes()).await;
    put_records(&client, "tip-budget", &[("k".into(), b"{}".to_vec())]).await;
    let mut seen_more = false;
    for _ in 0..50 {
        let batch = source.collect_batch(SMALL_BATCHES, &cancel).await.unwrap();
        assert!(batch.records.is_empty(), "no memory: nothing is handed out");
        if !batch.caught_up {
            seen_more = true;
            assert!(tip_shards(&source).is_empty());
            assert!(source.positions().values().all(|p| !p.at_tip));
            break;
        }
    }
    assert!(
        seen_more,
        "the record fetched, waiting for memory, keeps the shard off its tip"
    );
    drop(everything);
    let records = collect_until_records(&mut source, &cancel, 50).await;
    assert_eq!(records, 1, "once memory is back, the record is handed out");
}

/// Second review: a shard's "at its tip" came from the last answer handed out, and failing calls
/// never reach the batches. Through an outage of GetRecords an idle engine kept saying "caught
/// up, nothing beyond", and would have written fresh tip markers saying so every half hour. Now
/// the claim lapses when the shard's reader has not confirmed it for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_ends_the_claim_that_a_shard_is_at_its_tip() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let proxy = FaultProxy::start(server.endpoint(), FaultPlan::NONE).await;
    let server_client = server.client().await;
    crate::support::create_stream(&server_client, "tip-outage", 1).await;
    let client = crate::support::client(&proxy.endpoint).await;
    let mut source = StreamSource::new(client, "tip-outage", StartPosition::TrimHorizon, 5);
    let cancel = CancellationToken::new();
    let at_tip = collect_until_caught_up(&mut source, &cancel).await;
    assert!(at_tip && tip_shards(&source) == ["shardId-000000000000"]);

    proxy.outage.store(true, Ordering::SeqCst);
    put_records(
        &server_client,
        "tip-outage",
        &[("k".into(), b"{}".to_vec())],
    )
    .await;
    let mut lapsed = false;
    for _ in 0..100 {
        let batch = source.collect_batch(SMALL_BATCHES, &cancel).await.unwrap();
        assert!(
            batch.records.is_empty(),
            "nothing is read through the outage"
        );
        if !batch.caught_up {
            lapsed = true;
            assert!(tip_shards(&source).is_empty());
            assert!(source.positions().values().all(|p| !p.at_tip));
            break;
        }
    }
    assert!(
        lapsed,
        "the shard is not said to be at its tip through an outage"
    );
    proxy.outage.store(false, Ordering::SeqCst);
    let records = collect_until_records(&mut source, &cancel, 100).await;
    assert_eq!(records, 1, "after the outage the record is read");
}
