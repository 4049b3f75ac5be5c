//! Table maintenance: the engine compacts its tables as it runs and when it stops; `maintain`
//! compacts, checkpoints and vacuums once; vacuum keeps what `query --as-of` reaches.

use std::collections::BTreeMap;
use std::time::Duration;

use kinesis_delta::pipeline::{self, RunMode};
use kinesis_delta::query::{AsOf, TableSet};
use kinesis_delta::sink::{DeltaSink, TableFiles};
use tokio_util::sync::CancellationToken;

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::triples;
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{create_streams, edit_file, load_pipeline, put_records, write_config};

/// The live files of the table at `uri` (none before it exists).
async fn live_files(uri: &str) -> TableFiles {
    let mut table = DeltaSink::open(uri, "test").await.unwrap();
    table.files(128 << 20).await.unwrap().unwrap_or_default()
}

fn has_checkpoint(uri: &str) -> bool {
    let dir = url::Url::parse(uri).unwrap().to_file_path().unwrap();
    dir.join("_delta_log/_last_checkpoint").exists()
}

/// Hundreds of tiny batches on a continuous engine, default maintenance settings: while it runs a
/// table never holds more than `compact_min_files` (50) small files and the one they were compacted
/// into; once it stops, a handful (fewer than 10). Every row lands once, dead letters too, and the
/// log has checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_tiny_batches_end_in_a_handful_of_files() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "upkeep", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 4).await;
    let cancel = CancellationToken::new();
    let (sender, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let engine = tokio::spawn({
        let pipeline = pipeline.clone();
        let cancel = cancel.clone();
        async move { pipeline::run(&pipeline, RunMode::Continuous, cancel, sender).await }
    });
    let pin = pipeline.streams[0].table_uri.clone();
    let dead = pipeline.streams[0].dead_letter_uri.clone();
    let mut most_files = 0;
    // 20 triples a second, one at a time: each poll cycle that finds one commits it alone. How
    // many batches that makes depends on the machine's load, so triples are put until every
    // stream has committed 150 batches.
    let mut batches: BTreeMap<String, usize> = BTreeMap::new();
    let (mut posts, mut malformed) = (0_i64, 0);
    while batches.len() < 3 || batches.values().any(|&n| n < 150) {
        assert!(posts < 2000, "150 batches a stream: {batches:?}");
        put_triples(&server, &pipeline, &triples(posts, 1)).await;
        if posts % 40 == 0 {
            put_records(
                &client,
                &pipeline.streams[0].stream,
                &[("pk".to_owned(), b"{\"index\": ".to_vec())],
            )
            .await;
            malformed += 1;
        }
        if posts % 10 == 0 {
            most_files = most_files.max(live_files(&pin).await.files);
        }
        posts += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(report) = progress.try_recv() {
            *batches.entry(report.stream).or_default() += 1;
        }
    }
    crate::support::engine::wait_for_rows(&pipeline, posts, Duration::from_secs(60)).await;
    cancel.cancel();
    engine.await.unwrap().unwrap();
    for (_, uri) in crate::end_to_end::tables(&pipeline) {
        let files = live_files(&uri).await;
        assert!(
            files.files <= 10,
            "{uri}: a handful of files once stopped: {files:?}"
        );
        assert!(files.version >= 150, "{uri}: {files:?}");
        assert!(has_checkpoint(&uri), "{uri}: the log has a checkpoint");
    }
    assert!(live_files(&dead).await.files <= 10);
    assert!(
        most_files <= 51,
        "while running, at most 50 small files and the compacted one: {most_files}"
    );
    assert_exactly_once(&pipeline, posts).await;
    let dead_letters =
        crate::support::query_counts(&[("d", &dead)], "SELECT count(*) FROM d").await;
    assert_eq!(dead_letters, [malformed]);
}

/// `maintain` on tables the engine did not compact (compaction off): each ends with one file, the
/// same rows, a checkpoint. Vacuum deletes a file no version refers to once it is older than the
/// retention, and keeps the files compaction just removed, however old: an old version still
/// reads. An unknown table is refused with the list of tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_compacts_checkpoints_and_keeps_what_time_travel_reads() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "maintain", 100_000);
    edit_file(&config, "compact_min_files = 50", "compact_min_files = 0");
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 1).await;
    for round in 0..12 {
        put_triples(&server, &pipeline, &triples(round * 5, 5)).await;
        crate::support::run_available_now(&pipeline).await;
    }
    let pin = pipeline.streams[0].table_uri.clone();
    let before = live_files(&pin).await;
    assert_eq!(before.files, 12, "one file per run: {before:?}");

    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["maintain", "--config"])
        .arg(&config)
        .arg("nosuch")
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("no table `nosuch`") && said.contains("pin_dead_letters"),
        "{said}"
    );

    // Every data file is made 8 days old, past the retention, and a crash's leftover is added:
    // vacuum deletes the leftover, and none of the files compaction is about to remove.
    let pin_dir = dir.path().join("tables/pin");
    let eight_days_ago = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    std::fs::write(pin_dir.join("part-leftover-of-a-crash.parquet"), b"PAR1").unwrap();
    for file in std::fs::read_dir(&pin_dir).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(eight_days_ago).unwrap();
        }
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["maintain", "--config"])
        .arg(&config)
        .args(["pin", "geo"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("pin: 12 files (12 small)") && said.contains("12 files compacted into 1"),
        "{said}"
    );
    assert!(
        said.contains("pin: ") && said.contains("vacuum deleted 1 files"),
        "{said}"
    );
    assert!(!pin_dir.join("part-leftover-of-a-crash.parquet").exists());
    assert!(
        said.contains("2 tables: 24 live files before, 2 after"),
        "{said}"
    );
    let after = live_files(&pin).await;
    assert_eq!(after.files, 1);
    assert!(has_checkpoint(&pin));
    // The user table was not named: left as it was.
    assert_eq!(live_files(&pipeline.streams[2].table_uri).await.files, 12);
    assert_exactly_once(&pipeline, 60).await;

    // Version 1 (the first run's commit) still reads: its file was removed, not deleted.
    let as_of = [AsOf::parse("pin=1").unwrap()];
    let tables = TableSet::open(&pipeline, &as_of).await.unwrap();
    let old = tables.sql("SELECT count(*) AS n FROM pin").await.unwrap();
    let n = old.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 5);
}

/// A vacuum retention below 7 days is refused at start, with the fix.
#[test]
fn a_vacuum_retention_below_seven_days_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "retention", 1000);
    edit_file(
        &config,
        "vacuum_retention = \"7days\"",
        "vacuum_retention = \"1h\"",
    );
    let (loaded, base) = kinesis_delta::config::PipelineConfig::load(Some(&config)).unwrap();
    let err = loaded.validate(&base).unwrap_err().to_string();
    assert!(
        err.contains("vacuum_retention") && err.contains("7days"),
        "{err}"
    );
}

/// Review finding: two compactions of one table at once (two engines starting or stopping
/// together, or an engine and `maintain`) both committed, and every compacted row was in the table
/// twice: delta-rs does not check that two compactions removed the same files. Now each compaction
/// commits with one transaction id, and the second fails instead. A batch committed during the
/// compactions lands whatever they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactions_at_once_never_duplicate_rows() {
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    let dir = tempfile::tempdir().unwrap();
    let uri = url::Url::from_directory_path(dir.path().join("t"))
        .unwrap()
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("ind", DataType::Int64, true)]));
    let mut writer = DeltaSink::open(&uri, "writer").await.unwrap();
    let rows_of = |batch_id: i64| {
        let ids = Int64Array::from_iter_values((batch_id - 1) * 10..batch_id * 10);
        RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(ids)]).unwrap()
    };
    let mut batch_id = 0;
    let mut refused = 0;
    for _round in 0..5 {
        for _ in 0..6 {
            batch_id += 1;
            let rows = rows_of(batch_id);
            writer
                .commit(batch_id, &schema, &[rows], Default::default())
                .await
                .unwrap();
        }
        let mut first = DeltaSink::open(&uri, "first").await.unwrap();
        let mut second = DeltaSink::open(&uri, "second").await.unwrap();
        // Both compactions look at the same version before either commits, and a batch is
        // committed meanwhile: the batch always lands, and one compaction at most.
        batch_id += 1;
        let rows = [rows_of(batch_id)];
        let (a, b, appended) = tokio::join!(
            first.compact(128 << 20, 2),
            second.compact(128 << 20, 2),
            writer.commit(batch_id, &schema, &rows, Default::default())
        );
        assert!(a.is_ok() || b.is_ok(), "one of them compacts: {a:?} {b:?}");
        assert!(appended.is_ok(), "{appended:?}");
        refused += usize::from(a.is_err() || b.is_err());
        let counts = crate::support::query_counts(
            &[("t", &uri)],
            "SELECT count(*), count(DISTINCT ind) FROM t",
        )
        .await;
        assert_eq!(counts, [batch_id * 10; 2], "each row once");
    }
    assert!(refused > 0, "the compactions did race: one was refused");
}
