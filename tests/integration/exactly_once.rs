//! The exactly-once protocol's hard cases: engines racing on a new pipeline, an engine that lags
//! far behind another, a schema changed while a batch is half committed, replay order, and two
//! writers configured onto one table. Each test runs the real binary (or the engine in-process)
//! against a real local Kinesis server, and checks rows and the Delta log exactly.

use std::path::Path;
use std::time::Duration;

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::triples;
use crate::support::engine::{
    assert_log_clean, engine_command, signal, table_rows, undo_last_table_commit, wait_for_rows,
    wait_with_deadline,
};
use crate::support::fault_proxy::{FaultPlan, FaultProxy};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, load_pipeline, put_records, query, query_counts, run_available_now,
    run_expecting_error, set_trigger_interval, wait_until, write_config,
};
use kinesis_delta::config::Pipeline;
use kinesis_delta::pipeline::{EngineError, ErrorKind};

/// Every table and dead-letter table of the pipeline records each batch once.
fn assert_logs_clean(dir: &Path, pipeline: &Pipeline) {
    for spec in &pipeline.streams {
        for uri in [&spec.table_uri, &spec.dead_letter_uri] {
            let folder = uri.rsplit('/').next().unwrap();
            assert_log_clean(&dir.join("tables").join(folder));
        }
    }
}

/// Item 1 of the hardening issue: both engines saw no table, and the second committed batch 1 on
/// a snapshot that already held it. Measured before the fix: 300 duplicate rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_started_together_on_a_new_pipeline_commit_each_batch_once() {
    for round in 0..2 {
        let server = TestKinesis::start(Kind::KinesisMock).await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), server.endpoint(), &format!("race{round}"), 300);
        set_trigger_interval(&config, "200ms");
        let pipeline = load_pipeline(&config);
        let client = server.client().await;
        create_streams(&client, &pipeline, 2).await;
        put_triples(&server, &pipeline, &triples(0, 300)).await;
        let mut a = engine_command(&config, false).spawn().unwrap();
        let mut b = engine_command(&config, false).spawn().unwrap();
        for chunk in 0..4 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            put_triples(&server, &pipeline, &triples(300 + chunk * 150, 150)).await;
        }
        wait_for_rows(&pipeline, 900, Duration::from_secs(90)).await;
        // Time for a duplicate commit to land, if one were coming.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for engine in [&mut a, &mut b] {
            assert!(engine.try_wait().unwrap().is_none(), "an engine exited");
            engine.kill().unwrap();
            engine.wait().unwrap();
        }
        assert_logs_clean(dir.path(), &pipeline);
        assert_exactly_once(&pipeline, 900).await;
    }
}

/// Item 2: an engine paused while the other commits more than 20 batches finds its next batch's
/// manifest pruned. It must not plan that batch again, and above all must not commit its dead
/// letters (which the leader commits later under its own batch id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_far_behind_another_commits_nothing_twice() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "lag", 100_000);
    set_trigger_interval(&config, "200ms");
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    let pin = pipeline.streams[0].clone();

    put_triples(&server, &pipeline, &triples(0, 50)).await;
    let mut laggard = engine_command(&config, false).spawn().unwrap();
    wait_for_rows(&pipeline, 50, Duration::from_secs(60)).await;
    signal(&laggard, "STOP");

    let mut leader = engine_command(&config, false).spawn().unwrap();
    let mut put = 50;
    for _ in 0..25 {
        put_triples(&server, &pipeline, &triples(put, 10)).await;
        put += 10;
        wait_until("the leader's batch", Duration::from_secs(30), || async {
            table_rows(&pin.table_uri).await >= put
        })
        .await;
    }
    // Both engines read the new records (dead letters among them) while the leader is paused:
    // the laggard, resumed first, plans from its old positions.
    signal(&leader, "STOP");
    let bad: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("bad-{i}"),
                format!("{{\"index\": \"bad {i}\"}}").into_bytes(),
            )
        })
        .collect();
    put_records(&client, &pin.stream, &bad).await;
    put_triples(&server, &pipeline, &triples(put, 50)).await;
    put += 50;
    signal(&laggard, "CONT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&leader, "CONT");

    wait_for_rows(&pipeline, put, Duration::from_secs(60)).await;
    wait_until("the dead letters", Duration::from_secs(30), || async {
        table_rows(&pin.dead_letter_uri).await >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for engine in [&mut laggard, &mut leader] {
        engine.kill().unwrap();
        engine.wait().unwrap();
    }
    assert_logs_clean(dir.path(), &pipeline);
    assert_exactly_once(&pipeline, put).await;
    let dead = query_counts(
        &[("dead", &pin.dead_letter_uri)],
        "SELECT count(*), count(DISTINCT _sequence_number) FROM dead",
    )
    .await;
    assert_eq!(dead, [5, 5], "each dead letter once");
}

/// Item 3: the dead letters of a batch are committed, the engine stops before the table commit,
/// and the user edits the raw schema so that those records would now decode. Finishing the batch
/// then would put them in both tables. The engine refuses and says which file to restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_edited_while_a_batch_is_half_committed_is_refused_with_the_way_out() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "split", 100_000);
    let schema = dir.path().join("pin.schema.sql");
    let shipped = crate::support::repo().join("sql/pin.schema.sql");
    std::fs::copy(&shipped, &schema).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            &shipped.display().to_string(),
            &schema.display().to_string(),
        ),
    )
    .unwrap();
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    let pin = pipeline.streams[0].clone();
    put_triples(&server, &pipeline, &triples(0, 100)).await;
    // `downloaded` is declared BIGINT: "yes" makes these four dead letters.
    let odd: Vec<(String, Vec<u8>)> = (100..104)
        .map(|i| {
            let record = format!("{{\"index\": {i}, \"downloaded\": \"yes\"}}");
            (format!("odd-{i}"), record.into_bytes())
        })
        .collect();
    put_records(&client, &pin.stream, &odd).await;
    run_available_now(&pipeline).await;
    // The odd records come last in their shards, so the last batch holds (some of) them.
    let pin_dir = dir.path().join("tables/pin");
    let pending = undo_last_table_commit(&pin_dir).txns;
    assert_eq!(table_rows(&pin.dead_letter_uri).await, 4);

    // The user declares `downloaded` VARCHAR: the four would decode now.
    let original = std::fs::read_to_string(&schema).unwrap();
    std::fs::write(
        &schema,
        original.replace("downloaded BIGINT", "downloaded VARCHAR"),
    )
    .unwrap();
    let err = run_expecting_error(&load_pipeline(&config)).await;
    assert!(matches!(err, EngineError::SplitChanged(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::User);
    let message = err.to_string();
    assert!(
        message.contains(&schema.display().to_string())
            && message.contains("Restore")
            && pending.iter().any(|(app_id, plan)| {
                let shard = app_id.rsplit('/').next().unwrap();
                message.contains(&format!("plan {plan} of shard {shard} "))
            }),
        "{message}"
    );

    // Restored as the message says: the batch completes, each record in exactly one table.
    std::fs::write(&schema, original).unwrap();
    run_available_now(&load_pipeline(&config)).await;
    assert_exactly_once(&pipeline, 100).await;
    assert_eq!(table_rows(&pin.dead_letter_uri).await, 4);
    assert_logs_clean(dir.path(), &pipeline);
}

/// The rows of a table's data files, in file order, as `ind` values.
async fn inds_in_file_order(uri: &str) -> Vec<i64> {
    let batches = query(&[("t", uri)], "SELECT ind FROM t").await;
    batches
        .iter()
        .flat_map(|b| {
            let column =
                arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64).unwrap();
            column
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

/// Item 11: a batch collected over several rounds interleaves its shards; its replay must feed the
/// cleaning SQL the same rows in the same order (an order-sensitive SQL then gives the same rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_feeds_the_sql_its_rows_in_the_first_order() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    // Seven records per GetRecords call: the batch takes many rounds over the two shards.
    let proxy = FaultProxy::start(
        server.endpoint(),
        FaultPlan {
            max_records_per_call: Some(7),
            ..FaultPlan::NONE
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &proxy.endpoint, "order", 100_000);
    // One batch, however many rounds it takes.
    set_trigger_interval(&config, "20s");
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 120)).await;
    run_available_now(&pipeline).await;
    let pin = &pipeline.streams[0];
    let first = inds_in_file_order(&pin.table_uri).await;
    assert_eq!(first.len(), 120);

    undo_last_table_commit(&dir.path().join("tables/pin"));
    let (_, reports) = run_available_now(&pipeline).await;
    assert!(
        reports.iter().any(|r| r.stream == "pin" && r.replayed),
        "the batch was replayed: {reports:?}"
    );
    assert_eq!(inds_in_file_order(&pin.table_uri).await, first);
    assert_exactly_once(&pipeline, 120).await;
}

/// Item 6: a table written by two sinks of one app id would let each skip the other's batches.
/// Such a config is refused at start-up, before anything is read or written.
#[test]
fn a_table_shared_by_two_writers_is_refused_at_start() {
    for (what, from, to) in [
        (
            "dead letters into the table",
            "table = \"pin\"\n",
            "table = \"pin\"\ndead_letter_table = \"pin\"\n",
        ),
        (
            "two streams into one table",
            "table = \"geo\"",
            "table = \"pin\"",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), "http://127.0.0.1:9", "shared", 100_000);
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(from));
        std::fs::write(&config, text.replacen(from, to, 1)).unwrap();
        let output = engine_command(&config, true)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let output = wait_with_deadline(output, Duration::from_secs(60), what);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: accepted");
        assert!(
            stderr.contains("table `pin` is both") && stderr.contains("its own table"),
            "{what}: {stderr}"
        );
        assert!(
            !dir.path().join("tables/pin/_delta_log").exists(),
            "{what}: nothing written"
        );
    }
}
