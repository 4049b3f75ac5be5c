//! Commits per second one Delta table sustains with several writers appending to it at once, as
//! engines sharing a stream's shards through leases do: each writer commits small batches of the
//! two shards it holds, one plan each under the shard's transaction id (the engine's commit), and
//! delta-rs commits again over a concurrent commit of the same version.
//!
//! `cargo bench --bench shared_table` (`SHARED_TABLE_COMMITS`, default 60 per writer, of 40 rows)
//!
//! For 1, 2 and 4 writers on a fresh local table: the wall time for all commits, the commits per
//! second, and how many times delta-rs committed again over another writer's commit (the sink
//! itself tries again, after a pause, when delta-rs gives up after 15 such retries).

#![allow(missing_docs, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use kinesis_delta::sink::{DeltaSink, Numbering, PlanRows};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ind", DataType::Int64, true),
        Field::new("title", DataType::Utf8, true),
    ]))
}

fn rows(writer: i64, batch: i64) -> RecordBatch {
    let first = (writer * 1_000_000) + batch * 40;
    let ids: Vec<i64> = (first..first + 40).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("post {i}")),
        )),
    ];
    RecordBatch::try_new(schema(), columns).expect("rows")
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let commits: i64 = std::env::var("SHARED_TABLE_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    println!(
        "| writers | commits | wall time | commits/s | retries over another writer's commit |"
    );
    println!("|---|---|---|---|---|");
    for writers in [1_i64, 2, 4] {
        let dir = tempfile::tempdir().expect("temp dir");
        let uri = url::Url::from_directory_path(dir.path().join("t"))
            .expect("url")
            .to_string()
            .trim_end_matches('/')
            .to_owned();
        let (elapsed, retries) = runtime.block_on(async {
            // The table exists before the clock starts, as a shared table does.
            let mut first = DeltaSink::open(&uri, "bench/setup").await.expect("open");
            let setup = PlanRows {
                app_id: "bench/setup".into(),
                version: 1,
                rows: vec![rows(99, 0)],
            };
            first
                .commit_plans(
                    &schema(),
                    &[setup],
                    Numbering::Consecutive,
                    Default::default(),
                )
                .await
                .expect("create");
            let started = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let uri = uri.clone();
                    tokio::spawn(async move {
                        let mut sink = DeltaSink::open(&uri, "unused").await.expect("open");
                        let mut retries = 0;
                        for batch in 1..=commits {
                            let plans: Vec<PlanRows> = ["a", "b"]
                                .iter()
                                .map(|shard| PlanRows {
                                    app_id: format!("bench/writer-{w}/{shard}"),
                                    version: batch,
                                    rows: vec![rows(w, batch)],
                                })
                                .collect();
                            let done = sink
                                .commit_plans(
                                    &schema(),
                                    &plans,
                                    Numbering::Consecutive,
                                    Default::default(),
                                )
                                .await
                                .expect("commit");
                            assert_eq!(done.committed.len(), 2, "batch {batch} of writer {w}");
                            retries += done.retries;
                        }
                        retries
                    })
                })
                .collect();
            let mut retries = 0;
            for task in tasks {
                retries += task.await.expect("writer");
            }
            (started.elapsed(), retries)
        });
        let total = writers * commits;
        println!(
            "| {writers} | {total} | {:.2} s | {:.0} | {retries} |",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
    }
}
