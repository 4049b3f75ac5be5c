//! Golden tests of the shipped cleaning SQL: for each stream of the shipped pipeline, a fixture of
//! raw records (`tests/fixtures/sql/<name>.input.jsonl`, covering the dirty values of REFERENCE.md
//! §1) must clean to exactly `<name>.expected.jsonl`, with the brief's columns, order and types.

use std::sync::Arc;

use arrow::datatypes::DataType;
use bytes::Bytes;
use kinesis_delta::decode::{RecordDecoder, raw_schema_from_sql};
use kinesis_delta::sequence::SequenceNumber;
use kinesis_delta::source::KinesisRecord;
use kinesis_delta::transform::Cleaning;
use serde_json::Value;

use crate::support::repo;

async fn clean_fixture(name: &str) -> (Vec<Value>, Vec<(String, DataType)>) {
    let sql_dir = repo().join("sql");
    let schema_path = sql_dir.join(format!("{name}.schema.sql"));
    let sql_path = sql_dir.join(format!("{name}.sql"));
    let schema = raw_schema_from_sql(
        &std::fs::read_to_string(&schema_path).unwrap(),
        &schema_path,
    )
    .await
    .unwrap();
    let decoder = RecordDecoder::new("fixture", schema);
    let cleaning = Cleaning::new(
        &std::fs::read_to_string(&sql_path).unwrap(),
        &sql_path,
        decoder.row_schema(),
    )
    .await
    .unwrap();
    let input =
        std::fs::read_to_string(repo().join(format!("tests/fixtures/sql/{name}.input.jsonl")))
            .unwrap();
    let records: Vec<KinesisRecord> = input
        .lines()
        .enumerate()
        .map(|(i, line)| KinesisRecord {
            shard_id: Arc::from("shardId-000000000000"),
            sequence_number: SequenceNumber::parse(&(i + 1).to_string()).unwrap(),
            partition_key: "k".into(),
            approximate_arrival_ms: None,
            data: Bytes::from(line.to_owned()),
            sub_sequence: None,
        })
        .collect();
    let decoded = decoder.decode(&records).unwrap();
    assert!(
        decoded.dead_letters.is_empty(),
        "{:?}",
        decoded.dead_letters
    );
    let batches = cleaning.apply(decoded.rows).await.unwrap();
    let schema = cleaning.output_schema();
    let mut buffer = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buffer);
        for batch in &batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
    }
    let rows = String::from_utf8(buffer)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let columns = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    (rows, columns)
}

fn expected(name: &str) -> Vec<Value> {
    std::fs::read_to_string(repo().join(format!("tests/fixtures/sql/{name}.expected.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn names(columns: &[(String, DataType)]) -> Vec<&str> {
    columns.iter().map(|(n, _)| n.as_str()).collect()
}

fn type_of<'a>(columns: &'a [(String, DataType)], name: &str) -> &'a DataType {
    &columns.iter().find(|(n, _)| n == name).unwrap().1
}

#[tokio::test]
async fn pin_sql_cleans_every_dirty_value() {
    let (rows, columns) = clean_fixture("pin").await;
    assert_eq!(
        names(&columns),
        [
            "ind",
            "unique_id",
            "title",
            "description",
            "follower_count",
            "poster_name",
            "tag_list",
            "is_image_or_video",
            "image_src",
            "save_location",
            "category"
        ]
    );
    assert_eq!(type_of(&columns, "ind"), &DataType::Int64);
    assert_eq!(type_of(&columns, "follower_count"), &DataType::Int64);
    assert_eq!(rows, expected("pin"));
}

#[tokio::test]
async fn geo_sql_builds_coordinates_and_parses_both_datetime_forms() {
    let (rows, columns) = clean_fixture("geo").await;
    assert_eq!(
        names(&columns),
        ["ind", "country", "coordinates", "timestamp"]
    );
    assert!(
        matches!(type_of(&columns, "coordinates"), DataType::List(f) if f.data_type() == &DataType::Float64)
    );
    assert!(matches!(
        type_of(&columns, "timestamp"),
        DataType::Timestamp(_, _)
    ));
    assert_eq!(rows, expected("geo"));
}

#[tokio::test]
async fn user_sql_joins_names_and_parses_dates() {
    let (rows, columns) = clean_fixture("user").await;
    assert_eq!(names(&columns), ["ind", "user_name", "age", "date_joined"]);
    assert_eq!(type_of(&columns, "age"), &DataType::Int64);
    assert!(matches!(
        type_of(&columns, "date_joined"),
        DataType::Timestamp(_, _)
    ));
    assert_eq!(rows, expected("user"));
}

#[test]
fn every_sql_file_has_a_golden_fixture() {
    for entry in std::fs::read_dir(repo().join("sql")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(name) = file
            .strip_suffix(".sql")
            .filter(|n| !n.ends_with(".schema"))
        {
            for suffix in ["input", "expected"] {
                let fixture = repo().join(format!("tests/fixtures/sql/{name}.{suffix}.jsonl"));
                assert!(fixture.exists(), "sql/{file} has no {}", fixture.display());
            }
        }
    }
}
