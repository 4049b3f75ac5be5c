//! Editing the cleaning SQL of a pipeline whose tables exist: a column the SQL adds joins the
//! table in the commit of the first batch that carries it (older rows NULL), a column it drops
//! stays (NULL in new rows), and a changed type stops the engine before anything is written, with
//! the columns named. No record is lost or repeated across the changes, and `history` tells which
//! SQL cleaned each commit.

use std::path::PathBuf;

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::{records, triples};
use crate::support::engine::{kinesis_delta_history, kinesis_delta_preview, read_log};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, edit_file, load_pipeline, own_copy, put_records, query_counts,
    run_available_now, run_expecting_error, write_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_and_dropped_by_the_sql_evolve_the_table_and_a_type_change_is_refused() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "evolve", 100_000);
    let sql = own_copy(dir.path(), &config, "pin.sql");
    let pipeline = load_pipeline(&config);
    create_streams(&server.client().await, &pipeline, 2).await;
    let pin = pipeline.streams[0].table_uri.clone();
    let pin_dir = PathBuf::from(pin.trim_start_matches("file://"));
    put_triples(&server, &pipeline, &triples(0, 100)).await;
    run_available_now(&pipeline).await;

    // Add a column.
    edit_file(
        &sql,
        "  category\nFROM no_placeholders",
        "  category,\n  char_length(title) AS title_length\nFROM no_placeholders",
    );
    let pipeline = load_pipeline(&config);
    put_triples(&server, &pipeline, &triples(100, 50)).await;
    run_available_now(&pipeline).await;
    let counts = query_counts(
        &[("pin", &pin)],
        "SELECT count(*) FILTER (WHERE ind < 100 AND title_length IS NULL), \
                count(*) FILTER (WHERE ind >= 100 AND title_length = char_length(title)), \
                count(*) FILTER (WHERE ind >= 100 AND title IS NULL) FROM pin",
    )
    .await;
    assert_eq!(
        counts[0], 100,
        "rows before the change read the new column as NULL"
    );
    assert_eq!(
        counts[1] + counts[2],
        50,
        "rows after it have it (NULL only with a NULL title): {counts:?}"
    );
    // The column came in the commit of the first batch that carried it.
    let evolving: Vec<_> = read_log(&pin_dir)
        .into_iter()
        .filter(|e| e.metadata)
        .collect();
    assert_eq!(evolving.len(), 2, "the creation and the one change");
    assert!(
        evolving[1].adds > 0 && !evolving[1].txns.is_empty(),
        "the schema changed with the batch's rows: {evolving:?}"
    );

    // Drop it again (and drop `description` too): the columns stay, NULL in new rows.
    edit_file(&sql, ",\n  char_length(title) AS title_length", "");
    edit_file(&sql, "  description,\n", "");
    let pipeline = load_pipeline(&config);
    put_triples(&server, &pipeline, &triples(150, 50)).await;
    run_available_now(&pipeline).await;
    let counts = query_counts(
        &[("pin", &pin)],
        "SELECT count(*) FILTER (WHERE ind >= 150 AND title_length IS NULL AND description IS NULL), \
                count(*) FILTER (WHERE ind < 150 AND description IS NOT NULL) > 0 FROM pin",
    )
    .await;
    assert_eq!(counts, [50, 1], "dropped columns are NULL in new rows only");
    assert_exactly_once(&pipeline, 200).await;

    // A changed type: refused before anything is written, the column named.
    edit_file(
        &sql,
        "\"index\" AS ind",
        "CAST(\"index\" AS VARCHAR) AS ind",
    );
    let pipeline = load_pipeline(&config);
    put_triples(&server, &pipeline, &triples(200, 10)).await;
    let versions = read_log(&pin_dir).len();
    let error = run_expecting_error(&pipeline).await.to_string();
    assert!(
        error.contains("`ind` is Int64 in the table, Utf8 in the SQL")
            && error.contains("nothing was written")
            && error.contains("new table"),
        "{error}"
    );
    assert_eq!(read_log(&pin_dir).len(), versions, "nothing was committed");

    // Back to the table's type: the waiting records land once.
    edit_file(
        &sql,
        "CAST(\"index\" AS VARCHAR) AS ind",
        "\"index\" AS ind",
    );
    let pipeline = load_pipeline(&config);
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 210).await;

    // Lineage: every engine commit names the schema and SQL that cleaned its rows.
    let history = kinesis_delta_history(&config);
    let engine_commits: Vec<&serde_json::Value> =
        history.iter().filter(|v| v["batch_id"].is_i64()).collect();
    let rows: u64 = engine_commits
        .iter()
        .map(|v| v["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 210, "the commits' rows add up to the table's");
    let mut fingerprints: Vec<&str> = engine_commits
        .iter()
        .map(|v| v["sql"].as_str().unwrap())
        .collect();
    let newest = fingerprints[0];
    assert_eq!(
        newest,
        kinesis_delta::pipeline::sql_fingerprint(
            &pipeline.streams[0].schema_sql,
            &pipeline.streams[0].sql
        )
    );
    fingerprints.sort_unstable();
    fingerprints.dedup();
    assert_eq!(
        fingerprints.len(),
        3,
        "the shipped SQL, with the column added, with both dropped"
    );
}

/// `preview` runs the current schema and SQL over a sample (a JSON-lines file, or the stream's
/// newest records) with malformed records in it: it prints the rows, their schema and each
/// would-be dead letter with its reason, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_rows_and_would_be_dead_letters_and_writes_nothing() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "preview", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 1).await;
    let mut pins = records(&triples(0, 5), |t| &t.pin);
    pins.push(("k".into(), b"not json".to_vec()));
    pins.push(("k".into(), br#"{"index": "abc", "title": "x"}"#.to_vec()));
    put_records(&client, &pipeline.streams[0].stream, &pins).await;

    let from_stream = kinesis_delta_preview(&config, &["--newest", "4"]);
    assert!(
        from_stream.contains("pin: 4 records → 2 rows, 2 dead letters (nothing written)"),
        "{from_stream}"
    );
    assert!(
        from_stream.contains("record is not a JSON object")
            && from_stream.contains("column `index` is BIGINT but the record holds `abc`"),
        "{from_stream}"
    );
    assert!(
        from_stream.contains("  follower_count Int64"),
        "{from_stream}"
    );

    let sample = dir.path().join("sample.jsonl");
    let lines: Vec<String> = pins
        .iter()
        .skip(2)
        .map(|(_, data)| String::from_utf8(data.clone()).unwrap())
        .collect();
    std::fs::write(&sample, lines.join("\n")).unwrap();
    let from_file = kinesis_delta_preview(&config, &["--file", sample.to_str().unwrap()]);
    assert!(
        from_file.contains("pin: 5 records → 3 rows, 2 dead letters")
            && from_file.contains("line 4: record is not a JSON object")
            && from_file.contains("line 5: column `index`"),
        "{from_file}"
    );
    for table in ["pin", "pin_dead_letters"] {
        assert!(
            !dir.path().join("tables").join(table).exists(),
            "a preview writes no table: {table}"
        );
    }
}
