//! One micro-batch of generated pin records on one core, stage by stage and whole:
//! decode (JSON → Arrow) → cleaning SQL (sql/pin.sql) → Parquet write + Delta commit on local disk.
//! Throughput is reported in records (and bytes for decode).
//!
//! `cargo bench --bench micro_batch`

#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kinesis_delta::decode::{RecordDecoder, raw_schema_from_sql};
use kinesis_delta::sequence::SequenceNumber;
use kinesis_delta::sink::DeltaSink;
use kinesis_delta::source::KinesisRecord;
use kinesis_delta::transform::Cleaning;
use serde_json::json;

const RECORDS: usize = 20_000;
const CATEGORIES: [&str; 4] = ["vehicles", "art", "travel", "diy-and-crafts"];

/// Pin records shaped like the emulator's, with the usual share of placeholders.
fn pin_records(n: usize) -> Vec<KinesisRecord> {
    let shard: Arc<str> = Arc::from("shardId-000000000000");
    (0..n)
        .map(|i| {
            let category = CATEGORIES[i % CATEGORIES.len()];
            let story = i % 20 == 0;
            let followers = match i % 100 {
                0..=73 => format!("{}k", i % 999 + 1),
                74..=90 => format!("{}", i % 1000),
                91..=97 => format!("{}M", i % 9 + 1),
                _ => "User Info Error".to_owned(),
            };
            let value = json!({
                "index": i, "unique_id": format!("c4bd2577-a7bb-4409-bb7a-{i:012}"),
                "title": if story { "No Title Data Available".to_owned() } else { format!("Nissan GT-R number {i}") },
                "description": if story { "No description available Story format".to_owned() }
                               else { format!("A long enough description of post {i}, with some words in it…\u{a0}") },
                "poster_name": "Ray Uyemura", "follower_count": followers,
                "tag_list": "Lowrider,Old Vintage Cars,Antique Cars", "is_image_or_video": "image",
                "image_src": "https://i.pinimg.com/originals/0d/29/9f/0d299f3df020395aa7ce8387f40fbeed.jpg",
                "downloaded": 1, "save_location": format!("Local save in /data/{category}"), "category": category,
            });
            KinesisRecord {
                shard_id: Arc::clone(&shard),
                sequence_number: SequenceNumber::parse(&format!("4959033827149025660855969253836157109592157598913658{i:04}")).unwrap(),
                partition_key: format!("{}", i % 97),
                approximate_arrival_ms: Some(1_700_000_000_000 + i as i64),
                data: Bytes::from(serde_json::to_vec(&value).unwrap()),
                sub_sequence: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema_sql = std::fs::read_to_string(root.join("sql/pin.schema.sql")).unwrap();
    let sql = std::fs::read_to_string(root.join("sql/pin.sql")).unwrap();
    let raw = runtime
        .block_on(raw_schema_from_sql(
            &schema_sql,
            Path::new("pin.schema.sql"),
        ))
        .unwrap();
    let decoder = RecordDecoder::new("streaming-bench-pin", raw);
    let cleaning = runtime
        .block_on(Cleaning::new(
            &sql,
            Path::new("pin.sql"),
            decoder.row_schema(),
        ))
        .unwrap();
    let output_schema = cleaning.output_schema();
    let records = pin_records(RECORDS);
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    let decoded = decoder.decode(&records).unwrap();
    let cleaned = runtime
        .block_on(cleaning.apply(decoded.rows.clone()))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let uri = url::Url::from_directory_path(dir.path().join("pin"))
        .unwrap()
        .to_string();
    let mut sink = runtime
        .block_on(DeltaSink::open(uri.trim_end_matches('/'), "bench"))
        .unwrap();
    let mut batch_id = 0;

    let mut group = c.benchmark_group("micro_batch_pin");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("decode", |b| b.iter(|| decoder.decode(&records).unwrap()));
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("decode_records", |b| {
        b.iter(|| decoder.decode(&records).unwrap())
    });
    group.bench_function("sql", |b| {
        b.iter_batched(
            || decoded.rows.clone(),
            |rows| runtime.block_on(cleaning.apply(rows)).unwrap(),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("write_commit", |b| {
        b.iter(|| {
            batch_id += 1;
            runtime
                .block_on(sink.commit(batch_id, &output_schema, &cleaned, Default::default()))
                .unwrap()
        })
    });
    group.bench_function("whole_batch", |b| {
        b.iter(|| {
            batch_id += 1;
            let decoded = decoder.decode(&records).unwrap();
            let rows = runtime.block_on(cleaning.apply(decoded.rows)).unwrap();
            runtime
                .block_on(sink.commit(batch_id, &output_schema, &rows, Default::default()))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
