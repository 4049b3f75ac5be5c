//! Records a checkpoint or a planned batch refers to that are gone: aged out of retention (a
//! proxy hides them as Kinesis does after retention), or lost with a local server's state.

use std::path::Path;

use kinesis_delta::config::LostStreamPolicy;
use kinesis_delta::pipeline::{EngineError, ErrorKind};

use crate::end_to_end::{assert_exactly_once, put_triples, put_triples_at};
use crate::support::data::{records, triples};
use crate::support::engine::{read_log, truncate_log, undo_last_table_commit};
use crate::support::fault_proxy::{FaultPlan, FaultProxy, Trim};
use crate::support::servers::{Kind, TestKinesis, lose_server_state};
use crate::support::{
    create_streams, load_pipeline, put_each, put_records, query_counts, run_available_now,
    run_expecting_error, set_trigger_interval, write_config,
};

/// kinesis-mock behind the retention proxy; a config (`user`, batches of at most `max_batch`
/// records, and with `whole_runs` a 1-minute trigger, so that a batch is cut by the limit or when
/// the shards are caught up, never by the clock) reading through it; the streams made with
/// `shards` shards; and posts `0..first` landed. The server, the proxy, the tables' folder, a
/// client and the pipeline.
async fn landed_behind_a_proxy(
    user: &str,
    max_batch: usize,
    whole_runs: bool,
    shards: i32,
    first: i64,
) -> (
    TestKinesis,
    FaultProxy,
    tempfile::TempDir,
    kinesis_delta::source::KinesisClient,
    kinesis_delta::config::Pipeline,
) {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let proxy = FaultProxy::start(server.endpoint(), FaultPlan::NONE).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &proxy.endpoint, user, max_batch);
    if whole_runs {
        set_trigger_interval(&config, "1m");
    }
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, shards).await;
    put_triples(&server, &pipeline, &triples(0, first)).await;
    run_available_now(&pipeline).await;
    (server, proxy, dir, client, pipeline)
}

/// The first shard of a stream made by the tests.
const SHARD_0: &str = "shardId-000000000000";
/// The second.
const SHARD_1: &str = "shardId-000000000001";

/// The folder of a shard's plans in a local table of one stream.
fn shard_dir(table_dir: &Path, shard: &str) -> std::path::PathBuf {
    let only_entry = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    };
    let stream = only_entry(&only_entry(&table_dir.join("_kinesis_delta")));
    stream.join("shards").join(shard)
}

/// The file of a shard's newest plan in a local table.
fn newest_plan_path(table_dir: &Path, shard: &str) -> std::path::PathBuf {
    let mut plans: Vec<_> = std::fs::read_dir(shard_dir(table_dir, shard))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "tip.json"))
        .collect();
    plans.sort();
    plans.pop().unwrap()
}

/// A shard's newest plan in a local table: its JSON.
fn newest_plan(table_dir: &Path, shard: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(newest_plan_path(table_dir, shard)).unwrap()).unwrap()
}

/// Item 7: one shard's checkpointed record and everything before it aged out (the shard sat idle
/// longer than retention), the other shard is intact. Before the fix this stopped the engine as a
/// "lost stream", and `restart` then re-read the intact shard from its start, duplicating it.
/// Now the shard is decided on its own: it goes on from its oldest record, which comes after the
/// checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_aged_out_resumes_its_shard_alone_without_duplicates() {
    let (server, proxy, dir, _client, pipeline) =
        landed_behind_a_proxy("aged", 100_000, false, 2, 100).await;

    // Shard 0 of every stream: all of it, up to its checkpoint, ages out.
    for spec in &pipeline.streams {
        let folder = spec.table_uri.rsplit('/').next().unwrap();
        let plan = newest_plan(&dir.path().join("tables").join(folder), SHARD_0);
        let last = plan["position"]["last"].as_str().unwrap().to_owned();
        proxy.trimmed.lock().unwrap().push(Trim {
            stream: spec.stream.clone(),
            shard: SHARD_0.into(),
            through: last,
        });
    }
    put_triples(&server, &pipeline, &triples(100, 50)).await;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(summaries.iter().all(|s| s.records == 50), "{summaries:?}");
    assert_exactly_once(&pipeline, 150).await;
}

/// Item 8: a planned batch is pending (its table commit never happened) when the local server
/// loses its data. Before the fix every start failed, classed retryable, whatever the policy.
/// Now the user decides: `stop` (the default) explains; `restart` commits the batch empty, its
/// records being gone, and reads the new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_batch_whose_records_are_gone_is_the_users_to_decide() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestKinesis::start(Kind::Embedded).await;
    let config = write_config(dir.path(), first.endpoint(), "gone", 100_000);
    let pipeline = load_pipeline(&config);
    let client = first.client().await;
    create_streams(&client, &pipeline, 1).await;
    put_triples(&first, &pipeline, &triples(0, 100)).await;
    run_available_now(&pipeline).await;
    put_triples(&first, &pipeline, &triples(100, 20)).await;
    run_available_now(&pipeline).await;
    // As if the engine stopped before the pin table's commit of batch 2.
    let pin_dir = dir.path().join("tables/pin");
    undo_last_table_commit(&pin_dir);
    // The local server's state is lost: a new, empty server; the streams made again.
    let (second, mut pipeline) = lose_server_state(first, &pipeline, 1).await;
    put_triples(&second, &pipeline, &triples(120, 50)).await;

    let err = run_expecting_error(&pipeline).await;
    assert!(matches!(err, EngineError::LostStream { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::User);
    assert!(!err.retryable());
    assert!(
        err.to_string().contains("--on-lost-stream restart"),
        "{err}"
    );

    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    run_available_now(&pipeline).await;
    let pin = &pipeline.streams[0];
    let counts = query_counts(
        &[("pin", &pin.table_uri)],
        "SELECT count(*), count(DISTINCT ind), count(*) FILTER (WHERE ind BETWEEN 100 AND 119) FROM pin",
    )
    .await;
    assert_eq!(
        counts,
        [150, 150, 0],
        "batch 2's records are gone, the rest once"
    );
    for spec in &pipeline.streams[1..] {
        let counts = query_counts(
            &[("t", &spec.table_uri)],
            "SELECT count(*), count(DISTINCT ind) FROM t",
        )
        .await;
        assert_eq!(counts, [170, 170], "{}", spec.name);
    }
    let abandoned = read_log(&pin_dir)
        .iter()
        .filter(|entry| entry.txns.iter().any(|(_, batch)| *batch == 2))
        .count();
    assert_eq!(abandoned, 1, "batch 2 committed once, empty");
}

/// Item 8 on a stream of the same incarnation: the first record of a pending batch aged out
/// before the batch was committed (a proxy trims it as retention would). `stop` explains;
/// `restart` commits the batch empty and reads on from the last committed position, so only the
/// trimmed record is missing and nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_batch_partly_aged_out_loses_only_what_is_gone() {
    // Each run's records form one batch: cut when the shard is caught up, never by the clock.
    let (server, proxy, dir, client, mut pipeline) =
        landed_behind_a_proxy("trimmed", 100_000, true, 1, 100).await;
    put_triples(&server, &pipeline, &triples(100, 20)).await;
    // Batch 2 has dead letters too: they are committed before the rows, so they stay committed.
    let malformed: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("bad-{i}"), format!("not json {i}").into_bytes()))
        .collect();
    put_records(&client, &pipeline.streams[0].stream, &malformed).await;
    run_available_now(&pipeline).await;
    let pin_dir = dir.path().join("tables/pin");
    undo_last_table_commit(&pin_dir);
    let pending = newest_plan(&pin_dir, SHARD_0);
    let first = pending["range"]["first"].as_str().unwrap().to_owned();
    proxy.trimmed.lock().unwrap().push(Trim {
        stream: pipeline.streams[0].stream.clone(),
        shard: SHARD_0.into(),
        through: first,
    });

    // The trim took batch 1's checkpointed record too. Batch 1 was cut when its answer came back
    // short at `MillisBehindLatest = 0`, not after an empty one: nothing recorded that no record
    // lay beyond it, so the aged-out checkpoint may be the first stop, before the pending batch.
    let err = run_expecting_error(&pipeline).await;
    assert!(
        matches!(
            err,
            EngineError::Source(kinesis_delta::source::SourceError::RecordsGone { .. })
                | EngineError::LostStream { .. }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::User);
    assert!(
        err.to_string().contains("--on-lost-stream restart"),
        "{err}"
    );

    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    run_available_now(&pipeline).await;
    let pin = &pipeline.streams[0];
    let counts = query_counts(
        &[("pin", &pin.table_uri)],
        "SELECT count(*), count(DISTINCT ind), count(*) FILTER (WHERE ind = 100) FROM pin",
    )
    .await;
    assert_eq!(counts, [119, 119, 0], "only the trimmed record is missing");
    // The split is checked over what remains: the committed dead letters are not written again.
    let dead = query_counts(
        &[("dead", &pin.dead_letter_uri)],
        "SELECT count(*), count(DISTINCT _sequence_number) FROM dead",
    )
    .await;
    assert_eq!(dead, [3, 3], "each dead letter once");
    // What remained was committed within batch 2 itself: a later run, under the default
    // policy, finds every position valid and nothing to add.
    pipeline.engine.on_lost_stream = LostStreamPolicy::Stop;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(summaries.iter().all(|s| s.records == 0), "{summaries:?}");
    for spec in &pipeline.streams[1..] {
        let counts = query_counts(
            &[("t", &spec.table_uri)],
            "SELECT count(*), count(DISTINCT ind), min(ind), max(ind) FROM t",
        )
        .await;
        assert_eq!(counts, [120, 120, 0, 119], "{}", spec.name);
    }
}

/// Rewrites the `planned_at` of the first shard's newest plan, as if the engine had been down
/// since. The shard's tip marker (seen at its tip since) is aged alike.
fn age_newest_plan(table_dir: &Path, days: i64) {
    let then = chrono::Utc::now() - chrono::Duration::days(days);
    let mut plan = newest_plan(table_dir, SHARD_0);
    plan["planned_at"] = then.to_rfc3339().into();
    std::fs::write(newest_plan_path(table_dir, SHARD_0), plan.to_string()).unwrap();
    let tip = shard_dir(table_dir, SHARD_0).join("tip.json");
    let mut marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tip).unwrap()).unwrap();
    marker["observed_at"] = then.to_rfc3339().into();
    std::fs::write(&tip, marker.to_string()).unwrap();
}

/// Review finding: a checkpoint that aged out after the engine was down longer than the stream's
/// retention may have taken uncommitted records with it. That is not the idle-shard case: the
/// policy decides (stop by default), and `restart` reads what remains, each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_aged_out_after_downtime_longer_than_retention_is_the_users_to_decide() {
    let (server, proxy, dir, _client, mut pipeline) =
        landed_behind_a_proxy("downtime", 100_000, false, 2, 100).await;
    let pin = pipeline.streams[0].clone();
    let pin_dir = dir.path().join("tables/pin");
    let last = newest_plan(&pin_dir, SHARD_0)["position"]["last"]
        .as_str()
        .unwrap()
        .to_owned();
    proxy.trimmed.lock().unwrap().push(Trim {
        stream: pin.stream.clone(),
        shard: SHARD_0.into(),
        through: last,
    });
    // Three days down: retention (24 h) may have taken records put after the checkpoint.
    age_newest_plan(&pin_dir, 3);
    put_triples(&server, &pipeline, &triples(100, 50)).await;

    let err = run_expecting_error(&pipeline).await;
    assert!(matches!(err, EngineError::LostStream { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::User);

    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 150).await;
}

/// Review finding: a transient refusal (`AccessDeniedException`) of the position check at start-up
/// was read as "the record is not there", so `restart` re-read the whole shard. It is an error now;
/// the next run resumes exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_position_check_stops_the_run_and_never_rereads() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let proxy = FaultProxy::start(
        server.endpoint(),
        FaultPlan {
            refuse_at_sequence: 1_000,
            ..FaultPlan::NONE
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The first run goes straight to the server; the second through the refusing proxy.
    let config = write_config(dir.path(), server.endpoint(), "refused", 100_000);
    let mut pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 100)).await;
    run_available_now(&pipeline).await;
    put_triples(&server, &pipeline, &triples(100, 50)).await;

    pipeline.kinesis.endpoint_url = Some(proxy.endpoint.clone());
    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    let err = run_expecting_error(&pipeline).await;
    assert!(err.to_string().contains("AccessDenied"), "{err}");
    assert!(
        proxy
            .counts
            .refused
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );

    pipeline.kinesis.endpoint_url = Some(server.endpoint().to_owned());
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 150).await;
}

/// Second review: after `restart` read a recreated stream, a batch planned on the *new* stream and
/// left pending was committed empty (its manifest's positions then skipped its records for good).
/// A pending batch is judged by its own manifest: planned on the stream as it is, it is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_pending_on_the_new_stream_after_a_restart_is_replayed_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestKinesis::start(Kind::Embedded).await;
    let config = write_config(dir.path(), first.endpoint(), "newpending", 100_000);
    let pipeline = load_pipeline(&config);
    let client = first.client().await;
    create_streams(&client, &pipeline, 1).await;
    put_triples(&first, &pipeline, &triples(0, 100)).await;
    run_available_now(&pipeline).await;
    // The local server's state is lost: a new, empty server; the streams made again.
    let (second, mut pipeline) = lose_server_state(first, &pipeline, 1).await;
    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    put_triples(&second, &pipeline, &triples(100, 50)).await;
    run_available_now(&pipeline).await;
    // As if that run stopped before the pin table's commit of the new stream's batch.
    let pin_dir = dir.path().join("tables/pin");
    let pending = undo_last_table_commit(&pin_dir).txns[0].1;

    run_available_now(&pipeline).await;
    let log = read_log(&pin_dir);
    let batch = log
        .iter()
        .find(|e| e.txns.iter().any(|(_, b)| *b == pending))
        .unwrap();
    assert!(
        batch.adds > 0,
        "the pending batch was committed with its rows: {batch:?}"
    );
    assert_exactly_once(&pipeline, 150).await;
}

/// Second review: a response cut by its Limit inside a burst says `MillisBehindLatest = 0` while
/// records follow, so it must not mark the shard "at its tip". Here batch 1 took 10 of a burst of
/// 50 and the engine stopped; the checkpoint and the rest of the burst then aged out. Nothing
/// proves the rest was committed: the policy decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_inside_a_burst_that_aged_out_is_the_users_to_decide() {
    // Batches of 10, cut by the limit, never by the clock.
    let (_server, proxy, dir, _client, mut pipeline) =
        landed_behind_a_proxy("burst", 10, true, 1, 50).await;
    let pin = pipeline.streams[0].clone();
    let pin_dir = dir.path().join("tables/pin");
    let burst_end = newest_plan(&pin_dir, SHARD_0)["position"]["last"]
        .as_str()
        .unwrap()
        .to_owned();
    // Back to the state after batch 1: later commits and plans removed.
    let batch_2 = read_log(&pin_dir)
        .into_iter()
        .find(|entry| entry.txns.iter().any(|(_, batch)| *batch > 1))
        .unwrap();
    truncate_log(&pin_dir, batch_2.version);
    let plans = shard_dir(&pin_dir, SHARD_0);
    for plan in 2..=5 {
        let _ = std::fs::remove_file(plans.join(format!("{plan:020}.json")));
    }
    proxy.trimmed.lock().unwrap().push(Trim {
        stream: pin.stream.clone(),
        shard: SHARD_0.into(),
        through: burst_end,
    });

    let err = run_expecting_error(&pipeline).await;
    assert!(matches!(err, EngineError::LostStream { .. }), "{err}");

    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    run_available_now(&pipeline).await;
    let counts = query_counts(
        &[("pin", &pin.table_uri)],
        "SELECT count(*), count(DISTINCT ind) FROM pin",
    )
    .await;
    assert_eq!(
        counts,
        [10, 10],
        "batch 1 once; the rest of the burst expired"
    );
}

/// A shard gone from the listing (a closed shard whose records all aged out) while its position
/// is unfinished: if Kinesis said nothing lay beyond that position recently enough, nothing can
/// have been lost and the run goes on; after downtime longer than retention, the policy decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_gone_from_the_listing_follows_the_same_rule() {
    let (_server, proxy, dir, client, pipeline) =
        landed_behind_a_proxy("unlisted", 100_000, false, 2, 100).await;
    let pin = pipeline.streams[0].clone();
    proxy
        .hidden
        .lock()
        .unwrap()
        .push((pin.stream.clone(), SHARD_0.into()));
    // New pin records only on the other shard (the top of the hash key range).
    let records = records(&triples(100, 20), |t| &t.pin);
    put_each(&client, &pin.stream, &records, Some(u128::MAX)).await;
    // Three days later (the checkpoint and its tip marker aged alike), the gap is not safe.
    let pin_dir = dir.path().join("tables/pin");
    let plan = newest_plan_path(&pin_dir, SHARD_0);
    let tip = shard_dir(&pin_dir, SHARD_0).join("tip.json");
    let saved = (std::fs::read(&plan).unwrap(), std::fs::read(&tip).unwrap());
    age_newest_plan(&pin_dir, 3);
    let err = run_expecting_error(&pipeline).await;
    assert!(matches!(err, EngineError::LostStream { .. }), "{err}");

    // Right after the run (Kinesis said nothing lay beyond the position), it is: the run goes on.
    std::fs::write(&plan, saved.0).unwrap();
    std::fs::write(&tip, saved.1).unwrap();
    let (summaries, _) = run_available_now(&pipeline).await;
    let pin_summary = summaries.iter().find(|s| s.stream == "pin").unwrap();
    assert_eq!(pin_summary.records, 20, "{summaries:?}");
    let counts = query_counts(
        &[("pin", &pin.table_uri)],
        "SELECT count(*), count(DISTINCT ind) FROM pin",
    )
    .await;
    assert_eq!(counts, [120, 120]);
}

/// Second review: after `restart` finished a batch with what remained, its positions point at a
/// record that expired, and Kinesis refuses to go on after it. Under `restart` the shard goes on
/// from its oldest record (skipping what was consumed); a later run under `stop` finds nothing
/// to decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_goes_on_after_a_position_that_expired() {
    // Each run's records form one batch: cut when the shard is caught up, never by the clock.
    let (server, proxy, dir, _client, mut pipeline) =
        landed_behind_a_proxy("expired", 100_000, true, 1, 100).await;
    put_triples(&server, &pipeline, &triples(100, 20)).await;
    run_available_now(&pipeline).await;
    let pin_dir = dir.path().join("tables/pin");
    undo_last_table_commit(&pin_dir);
    // All of the pending batch 2 expires; then new records arrive.
    let pending = newest_plan(&pin_dir, SHARD_0);
    let through = pending["range"]["last"].as_str().unwrap().to_owned();
    proxy.trimmed.lock().unwrap().push(Trim {
        stream: pipeline.streams[0].stream.clone(),
        shard: SHARD_0.into(),
        through,
    });
    put_triples(&server, &pipeline, &triples(120, 10)).await;

    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    run_available_now(&pipeline).await;
    pipeline.engine.on_lost_stream = LostStreamPolicy::Stop;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(summaries.iter().all(|s| s.records == 0), "{summaries:?}");
    let pin = &pipeline.streams[0];
    let counts = query_counts(
        &[("pin", &pin.table_uri)],
        "SELECT count(*), count(DISTINCT ind), count(*) FILTER (WHERE ind BETWEEN 100 AND 119) FROM pin",
    )
    .await;
    assert_eq!(counts, [110, 110, 0], "batch 2 expired; the rest once");
}

/// Review finding of the shard-level checkpoints: a shard's committed plan made on another
/// incarnation (here its stamp is made old, and its records are gone as they would be) sent
/// every shard back to its start, duplicating the others under `restart`; and since an idle
/// shard keeps its old plan, every later start stopped under `stop`. Now that shard alone is read
/// afresh, and an empty plan records the stream as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_an_old_incarnation_is_decided_alone_and_once() {
    let (server, proxy, dir, _client, mut pipeline) =
        landed_behind_a_proxy("stamp", 100_000, false, 2, 100).await;
    for spec in &pipeline.streams {
        let table = dir
            .path()
            .join("tables")
            .join(spec.table_uri.rsplit('/').next().unwrap());
        let path = newest_plan_path(&table, SHARD_1);
        let mut plan = newest_plan(&table, SHARD_1);
        plan["stream_created_ms"] = 1.into();
        proxy.trimmed.lock().unwrap().push(Trim {
            stream: spec.stream.clone(),
            shard: SHARD_1.into(),
            through: plan["position"]["last"].as_str().unwrap().to_owned(),
        });
        std::fs::write(path, plan.to_string()).unwrap();
    }
    // New records on the first shard only.
    put_triples_at(&server, &pipeline, &triples(100, 50), 0).await;

    let err = run_expecting_error(&pipeline).await;
    assert!(matches!(err, EngineError::LostStream { .. }), "{err}");
    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 150).await;
    // Later starts, even under `stop`, find nothing to decide and nothing to read again.
    pipeline.engine.on_lost_stream = LostStreamPolicy::Stop;
    for _ in 0..2 {
        let (summaries, _) = run_available_now(&pipeline).await;
        assert!(summaries.iter().all(|s| s.records == 0), "{summaries:?}");
    }
    assert_exactly_once(&pipeline, 150).await;
}

/// Review finding of the shard-level checkpoints: a pending plan of a shard that has left the
/// listing (a closed shard whose records all aged out) was read "for what remains" from the
/// shard's start, which Kinesis refuses for a shard it no longer has: every start under `restart`
/// failed on it. Nothing remains of such a shard: the plan is committed empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_plan_of_a_shard_gone_from_the_listing_gives_nothing_under_restart() {
    let (_server, proxy, dir, client, mut pipeline) =
        landed_behind_a_proxy("gonepending", 100_000, false, 2, 100).await;
    let pin = pipeline.streams[0].clone();
    put_each(
        &client,
        &pin.stream,
        &records(&triples(100, 20), |t| &t.pin),
        Some(0),
    )
    .await;
    run_available_now(&pipeline).await;
    // As if the engine stopped before committing the plan of those 20, and the shard then aged
    // out of the stream with all its records.
    let pin_dir = dir.path().join("tables/pin");
    undo_last_table_commit(&pin_dir);
    // Those of the 20 in earlier batches stay committed.
    let committed = query_counts(
        &[("pin", &pin.table_uri)],
        "SELECT count(*) FILTER (WHERE ind >= 100) FROM pin",
    )
    .await[0];
    let pending = newest_plan(&pin_dir, SHARD_0);
    proxy.trimmed.lock().unwrap().push(Trim {
        stream: pin.stream.clone(),
        shard: SHARD_0.into(),
        through: pending["range"]["last"].as_str().unwrap().to_owned(),
    });
    proxy
        .hidden
        .lock()
        .unwrap()
        .push((pin.stream.clone(), SHARD_0.into()));

    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    run_available_now(&pipeline).await;
    let counts = query_counts(
        &[("pin", &pin.table_uri)],
        "SELECT count(*), count(DISTINCT ind), count(*) FILTER (WHERE ind >= 100) FROM pin",
    )
    .await;
    assert_eq!(
        counts,
        [100 + committed, 100 + committed, committed],
        "the pending plan's records are gone, the rest once"
    );
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(summaries.iter().all(|s| s.records == 0), "{summaries:?}");
}
