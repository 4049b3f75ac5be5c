//! The analysts' questions (sql/analytics) on a hand-made fixture whose answers are known (ties,
//! groups left empty, even-sized median groups, years outside the ranges, a re-sent post), and the
//! `query` command's formats, time travel and error messages.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use kinesis_delta::config::{Pipeline, StreamSpec};
use kinesis_delta::decode::{RecordDecoder, raw_schema_from_sql};
use kinesis_delta::query::TableSet;
use kinesis_delta::sequence::SequenceNumber;
use kinesis_delta::sink::DeltaSink;
use kinesis_delta::source::KinesisRecord;
use kinesis_delta::transform::Cleaning;
use serde_json::json;

use crate::support::{load_pipeline, repo, write_config};

/// (id, country, category, follower_count, poster, post time, age, joined)
type Post = (
    i64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    i64,
    &'static str,
);

const POSTS: [Post; 9] = [
    (
        1,
        "Albania",
        "art",
        "10k",
        "P1",
        "2018-05-01 10:00:00",
        20,
        "2015-03-01 00:00:00",
    ),
    (
        2,
        "Albania",
        "art",
        "5k",
        "P2",
        "2018-06-01 10:00:00",
        22,
        "2015-04-01 00:00:00",
    ),
    (
        3,
        "Albania",
        "travel",
        "20k",
        "P3",
        "2019-01-01T10:00:00",
        30,
        "2016-01-01 00:00:00",
    ),
    (
        4,
        "Albania",
        "travel",
        "20k",
        "P4",
        "2019-02-01 10:00:00",
        40,
        "2016-02-01 00:00:00",
    ),
    (
        5,
        "Brazil",
        "art",
        "1M",
        "P5",
        "2020-01-01 10:00:00",
        55,
        "2017-01-01 00:00:00",
    ),
    (
        6,
        "Brazil",
        "beauty",
        "300",
        "P6",
        "2020-02-01 10:00:00",
        17,
        "2017-02-01 00:00:00",
    ),
    (
        7,
        "Brazil",
        "beauty",
        "User Info Error",
        "P7",
        "2021-01-01 10:00:00",
        60,
        "2020-01-01 00:00:00",
    ),
    (
        8,
        "Brazil",
        "beauty",
        "2k",
        "P8",
        "2017-12-30 10:00:00",
        25,
        "2014-01-01 00:00:00",
    ),
    // Post 1 sent again: the same post, counted once.
    (
        1,
        "Albania",
        "art",
        "10k",
        "P1",
        "2018-05-01 10:00:00",
        20,
        "2015-03-01 00:00:00",
    ),
];

fn raw_rows(stream: &str, first: usize, count: usize) -> Vec<String> {
    POSTS[first..first + count]
        .iter()
        .map(|(id, country, category, fc, poster, at, age, joined)| match stream {
            "pin" => json!({"index": id, "unique_id": format!("u{id}"), "title": "t", "description": "d",
                "poster_name": poster, "follower_count": fc, "tag_list": "a,b", "is_image_or_video": "image",
                "image_src": "https://i.pinimg.com/originals/x.jpg", "downloaded": 1,
                "save_location": format!("Local save in /data/{category}"), "category": category}),
            "geo" => json!({"ind": id, "timestamp": at, "latitude": -50.0, "longitude": 10.0, "country": country}),
            _ => json!({"ind": id, "first_name": "F", "last_name": poster, "age": age, "date_joined": joined}),
        })
        .map(|v| v.to_string())
        .collect()
}

/// Cleans raw rows with the shipped SQL and commits them as batch `batch_id`, as the engine would.
async fn commit_rows(spec: &StreamSpec, rows: Vec<String>, batch_id: i64) {
    let schema = raw_schema_from_sql(&spec.schema_sql, &spec.schema_path)
        .await
        .unwrap();
    let decoder = RecordDecoder::new(&spec.stream, schema);
    let cleaning = Cleaning::new(&spec.sql, &spec.sql_path, decoder.row_schema())
        .await
        .unwrap();
    let records: Vec<KinesisRecord> = rows
        .into_iter()
        .enumerate()
        .map(|(i, data)| KinesisRecord {
            shard_id: Arc::from("shardId-000000000000"),
            sequence_number: SequenceNumber::parse(&(batch_id * 1000 + i as i64 + 1).to_string())
                .unwrap(),
            partition_key: "k".into(),
            approximate_arrival_ms: None,
            data: Bytes::from(data),
            sub_sequence: None,
        })
        .collect();
    let decoded = decoder.decode(&records).unwrap();
    assert!(decoded.dead_letters.is_empty());
    let cleaned = cleaning.apply(decoded.rows).await.unwrap();
    let mut sink = DeltaSink::open(&spec.table_uri, "fixture").await.unwrap();
    sink.commit(
        batch_id,
        &cleaning.output_schema(),
        &cleaned,
        Default::default(),
    )
    .await
    .unwrap();
}

async fn fixture(dir: &Path) -> (Pipeline, std::path::PathBuf) {
    let config = write_config(dir, "http://127.0.0.1:9", "fixture", 100_000);
    let pipeline = load_pipeline(&config);
    for spec in &pipeline.streams {
        // Two commits, so time travel has a version to go back to.
        commit_rows(spec, raw_rows(&spec.name, 0, 5), 1).await;
        commit_rows(spec, raw_rows(&spec.name, 5, 4), 2).await;
    }
    (pipeline, config)
}

#[tokio::test]
async fn every_question_answers_the_fixture_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, _) = fixture(dir.path()).await;
    let tables = TableSet::open(&pipeline, &[]).await.unwrap();
    let report = kinesis_delta::report::build(&tables, &repo().join("sql/analytics"))
        .await
        .unwrap();
    let csv_dir = dir.path().join("csv");
    kinesis_delta::report::write_csvs(&report, &csv_dir).unwrap();
    let expected: [(&str, &str); 9] = [
        (
            "q1",
            "country,category,category_count\nAlbania,art,2\nAlbania,travel,2\nBrazil,beauty,3\n",
        ),
        (
            "q2",
            "post_year,category,category_count\n2018,art,2\n2019,travel,2\n2020,art,1\n2020,beauty,1\n2021,beauty,1\n",
        ),
        (
            "q3a",
            "country,poster_name,follower_count\nAlbania,P3,20000\nAlbania,P4,20000\nBrazil,P5,1000000\n",
        ),
        ("q3b", "country,follower_count\nBrazil,1000000\n"),
        (
            "q4",
            "age_group,category,category_count\n18-24,art,2\n25-35,beauty,1\n25-35,travel,1\n36-50,travel,1\n+50,art,1\n+50,beauty,1\n",
        ),
        (
            "q5",
            "age_group,median_follower_count\n18-24,7500.0\n25-35,11000.0\n36-50,20000.0\n+50,1000000.0\n",
        ),
        (
            "q6",
            "post_year,number_users_joined\n2015,2\n2016,2\n2017,2\n2020,1\n",
        ),
        (
            "q7",
            "post_year,median_follower_count\n2015,7500.0\n2016,20000.0\n2017,500150.0\n",
        ),
        (
            "q8",
            "age_group,post_year,median_follower_count\n18-24,2015,7500.0\n25-35,2016,20000.0\n36-50,2016,20000.0\n+50,2017,1000000.0\n",
        ),
    ];
    for (id, csv) in expected {
        let got = std::fs::read_to_string(csv_dir.join(format!("{id}.csv"))).unwrap();
        assert_eq!(got, csv, "{id}");
    }
    let html = kinesis_delta::report::render_html(&report, "now");
    for id in ["q1", "q2", "q3a", "q3b", "q4", "q5", "q6", "q7", "q8"] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "{id} missing from the report"
        );
    }
    assert!(
        html.matches("<svg").count() >= 5,
        "bar charts for q2, q4-q8"
    );
    assert!(
        html.contains("pin</b>: 9 rows, version 2"),
        "table sizes and versions"
    );
}

fn query(config: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .arg("query")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_query_command_formats_time_travel_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = fixture(dir.path()).await;

    let (ok, out, err) = query(
        &config,
        &[
            "SELECT ind, category FROM pin ORDER BY ind",
            "--max-rows",
            "3",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("| ind | category |") && out.contains("6 more rows not shown"),
        "{out}"
    );
    assert!(err.contains("9 rows in"), "{err}");

    let (ok, out, _) = query(
        &config,
        &[
            "SELECT ind FROM geo ORDER BY ind LIMIT 2",
            "--format",
            "csv",
        ],
    );
    assert!(ok);
    assert_eq!(out, "ind\n1\n1\n");
    let (ok, out, _) = query(
        &config,
        &[
            "SELECT ind, country FROM geo WHERE ind = 3",
            "--format",
            "jsonl",
        ],
    );
    assert!(ok);
    assert_eq!(out.trim(), r#"{"ind":3,"country":"Albania"}"#);
    let parquet = dir.path().join("out.parquet");
    let (ok, _, err) = query(
        &config,
        &[
            "SELECT * FROM \"user\"",
            "--format",
            "parquet",
            "-o",
            parquet.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let file = std::fs::File::open(&parquet).unwrap();
    let reader = deltalake::parquet::file::reader::SerializedFileReader::new(file).unwrap();
    assert_eq!(
        deltalake::parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .num_rows(),
        9
    );

    // Time travel: version 1 holds only the first commit.
    let (ok, out, _) = query(
        &config,
        &[
            "SELECT count(*) AS n FROM pin",
            "--format",
            "csv",
            "--as-of",
            "pin=1",
        ],
    );
    assert!(ok);
    assert_eq!(out, "n\n5\n");
    let (ok, out, _) = query(
        &config,
        &[
            "SELECT count(*) AS n FROM pin",
            "--format",
            "csv",
            "--as-of",
            "pin=2099-01-01T00:00:00Z",
        ],
    );
    assert!(ok);
    assert_eq!(out, "n\n9\n");

    // Errors: one clear line each.
    for (sql, needle) in [
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELEC 1", "SELEC"),
        ("SELECT * FROM pin_dead_letters", "has no data yet"),
    ] {
        let (ok, _, err) = query(&config, &[sql]);
        assert!(!ok, "{sql} should fail");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for {sql}: {err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(needle),
            "{sql}: {err}"
        );
    }
    let (ok, _, err) = query(&config, &["SELECT 1", "--as-of", "pin=yesterday"]);
    assert!(!ok && err.contains("TABLE=VERSION"), "{err}");
}
