//! A query over a table of many small files (one per micro-batch), over the same table once
//! compacted, and over a freshly written one: what maintenance buys readers.
//!
//! `cargo bench --bench maintenance` (`MAINTENANCE_BATCHES`, default 500, of 40 rows each)
//!
//! Each table gets the same rows. The small-file table is committed batch by batch, as the engine
//! commits at a trickle (with the checkpoints delta-rs writes every 100 versions); the compacted
//! one the same way, then compacted as the engine compacts (and checkpointed after); the fresh one
//! in a single commit, read from its log or, as every table older than 100 versions is, from a
//! checkpoint. Each
//! measured query opens the table (reads its log) and aggregates every row, as `kinesis-delta
//! query` does.

#![allow(missing_docs, clippy::print_stdout)] // criterion_group! generates undocumented functions; the setup prints what it built

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use criterion::{Criterion, criterion_group, criterion_main};
use kinesis_delta::query::TableSet;
use kinesis_delta::sink::DeltaSink;

const CATEGORIES: [&str; 4] = ["vehicles", "art", "travel", "diy-and-crafts"];
const ROWS_PER_BATCH: i64 = 40;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ind", DataType::Int64, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("follower_count", DataType::Float64, true),
        Field::new("title", DataType::Utf8, true),
    ]))
}

fn rows(batch: i64) -> RecordBatch {
    let ids: Vec<i64> = (batch * ROWS_PER_BATCH..(batch + 1) * ROWS_PER_BATCH).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| CATEGORIES[*i as usize % 4]),
        )),
        Arc::new(Float64Array::from_iter_values(
            ids.iter().map(|i| (*i % 997) as f64),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("A title for post number {i}")),
        )),
    ];
    RecordBatch::try_new(schema(), columns).expect("rows")
}

async fn table(uri: &str, batches: i64, one_commit: bool, compact: bool, checkpoint: bool) {
    let mut sink = DeltaSink::open(uri, "bench").await.expect("table");
    if one_commit {
        let all: Vec<RecordBatch> = (0..batches).map(rows).collect();
        sink.commit(1, &schema(), &all, Default::default())
            .await
            .expect("commit");
    } else {
        for batch in 0..batches {
            sink.commit(batch + 1, &schema(), &[rows(batch)], Default::default())
                .await
                .expect("commit");
        }
    }
    if compact {
        // As the engine does: compaction, then a checkpoint.
        sink.compact(128 << 20, 2).await.expect("compaction");
    }
    if checkpoint {
        sink.checkpoint().await.expect("checkpoint");
    }
    let files = sink.files(128 << 20).await.expect("files").expect("table");
    println!(
        "{uri}: {} live files, version {}",
        files.files, files.version
    );
}

async fn query(uri: &str) -> usize {
    let tables = TableSet::open_tables(&[("t".to_owned(), uri.to_owned())], &[], &BTreeMap::new())
        .await
        .expect("open");
    let result = tables
        .sql("SELECT category, count(*), avg(follower_count), max(title) FROM t GROUP BY category")
        .await
        .expect("query");
    result.rows()
}

fn bench(c: &mut Criterion) {
    let batches = std::env::var("MAINTENANCE_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let uri = |name: &str| {
        url::Url::from_directory_path(dir.path().join(name))
            .expect("url")
            .to_string()
            .trim_end_matches('/')
            .to_owned()
    };
    let (small, compacted, fresh) = (uri("small"), uri("compacted"), uri("fresh"));
    let fresh_checkpointed = uri("fresh_checkpointed");
    runtime.block_on(async {
        table(&small, batches, false, false, false).await;
        table(&compacted, batches, false, true, true).await;
        table(&fresh, batches, true, false, false).await;
        table(&fresh_checkpointed, batches, true, false, true).await;
    });
    let mut group = c.benchmark_group("query_after_micro_batches");
    group.sample_size(20);
    for (name, uri) in [
        ("small_files", &small),
        ("compacted", &compacted),
        ("fresh", &fresh),
        ("fresh_checkpointed", &fresh_checkpointed),
    ] {
        group.bench_function(name, |b| b.iter(|| runtime.block_on(query(uri))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
