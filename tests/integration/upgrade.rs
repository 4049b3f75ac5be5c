//! Tables written by the stream-level protocol of earlier versions (one `txn` per stream, a
//! manifest per batch), taken over by the shard-level one: the fence stops earlier versions, a
//! batch they left pending is finished once, and shards without plans start from the last
//! manifest however often they restart. The earlier layout is made from a table this version
//! wrote, by rewriting its log and files as earlier versions laid them out.

use std::collections::BTreeMap;
use std::path::Path;

use kinesis_delta::config::{Pipeline, StreamSpec};
use kinesis_delta::sink::{DeltaSink, ManifestLog, SinkError};

use crate::end_to_end::{assert_exactly_once, put_triples, put_triples_at};
use crate::support::data::triples;
use crate::support::engine::{assert_log_clean, read_log, undo_last_table_commit};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{create_streams, load_pipeline, run_available_now, write_config};

/// The folder of a stream's files beside its table.
fn stream_dir(pipeline: &Pipeline, spec: &StreamSpec, table_dir: &Path) -> std::path::PathBuf {
    table_dir
        .join("_kinesis_delta")
        .join(&pipeline.name)
        .join(&spec.stream)
}

/// Rewrites a local table as the stream-level protocol left it: every commit's shard `txn`s
/// become one stream `txn` (1, 2, 3, …), manifest `m` (the last) holds each shard's committed
/// position, the shard plans after the committed ones become manifest `m + 1` (a batch planned
/// and not committed), and the shard files and log checkpoints go. Returns `m`.
fn as_stream_level(pipeline: &Pipeline, spec: &StreamSpec, table_dir: &Path) -> i64 {
    let app_id = spec.app_id(&pipeline.name);
    let log_dir = table_dir.join("_delta_log");
    let mut committed: BTreeMap<String, i64> = BTreeMap::new();
    let mut batch = 0;
    for entry in read_log(table_dir) {
        let path = log_dir.join(format!("{:020}.json", entry.version));
        let mut lines = Vec::new();
        let mut had_txn = false;
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(txn) = action.get("txn") {
                let shard = txn["appId"].as_str().unwrap().rsplit('/').next().unwrap();
                committed.insert(shard.to_owned(), txn["version"].as_i64().unwrap());
                had_txn = true;
                continue;
            }
            lines.push(line.to_owned());
        }
        if had_txn {
            batch += 1;
            let txn = serde_json::json!({"txn": {"appId": app_id, "version": batch}});
            lines.push(txn.to_string());
        }
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    for file in std::fs::read_dir(&log_dir).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.contains("checkpoint") || name.ends_with(".crc") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let dir = stream_dir(pipeline, spec, table_dir);
    let plan = |shard: &str, version: i64| -> Option<serde_json::Value> {
        let path = dir
            .join("shards")
            .join(shard)
            .join(format!("{version:020}.json"));
        std::fs::read(path)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
    };
    let mut positions = serde_json::Map::new();
    let mut starts = serde_json::Map::new();
    let mut ranges = serde_json::Map::new();
    let mut pending_positions = serde_json::Map::new();
    let mut created = serde_json::Value::Null;
    for (shard, version) in &committed {
        let done = plan(shard, *version).unwrap();
        positions.insert(shard.clone(), done["position"].clone());
        pending_positions.insert(shard.clone(), done["position"].clone());
        starts.insert(shard.clone(), done["shard_start"].clone());
        created = done["stream_created_ms"].clone();
        if let Some(next) = plan(shard, version + 1) {
            ranges.insert(shard.clone(), next["range"].clone());
            pending_positions.insert(shard.clone(), next["position"].clone());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let batches = dir.join("batches");
    std::fs::create_dir_all(&batches).unwrap();
    let manifest = |id: i64, ranges, positions| {
        serde_json::json!({
            "batch_id": id, "stream": spec.stream, "ranges": ranges, "positions": positions,
            "planned_at": chrono::Utc::now(), "stream_created_ms": created,
            "shard_starts": starts.clone(), "split": null,
        })
    };
    let write = |id: i64, value: serde_json::Value| {
        let path = batches.join(format!("{id:020}.json"));
        std::fs::write(path, value.to_string()).unwrap();
    };
    write(batch, manifest(batch, serde_json::Map::new(), positions));
    if !ranges.is_empty() {
        write(batch + 1, manifest(batch + 1, ranges, pending_positions));
    }
    batch
}

fn table_dir(dir: &Path, spec: &StreamSpec) -> std::path::PathBuf {
    dir.join("tables")
        .join(spec.table_uri.rsplit('/').next().unwrap())
}

/// An earlier version's table with nothing pending: the engine fences it and goes on from its
/// checkpoint; a shard that gets no records stays where the manifest left it through three
/// restarts; an earlier version started on it afterwards would find the fence and stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_level_table_is_fenced_and_its_shards_go_on_from_its_checkpoint() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "upgrade", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 100)).await;
    run_available_now(&pipeline).await;
    let mut checkpoints = BTreeMap::new();
    for spec in &pipeline.streams {
        let m = as_stream_level(&pipeline, spec, &table_dir(dir.path(), spec));
        checkpoints.insert(spec.stream.clone(), m);
    }

    // New records on the first shard only (the bottom of the hash key range): the second shard
    // has no plan of its own after the upgrade, through every restart.
    put_triples_at(&server, &pipeline, &triples(100, 40), 0).await;
    for _ in 0..3 {
        run_available_now(&pipeline).await;
    }
    assert_exactly_once(&pipeline, 140).await;
    for spec in &pipeline.streams {
        let table = table_dir(dir.path(), spec);
        assert_log_clean(&table);
        let m = checkpoints[&spec.stream];
        let log = read_log(&table);
        let stream_txns = log
            .iter()
            .flat_map(|e| &e.txns)
            .filter(|(app, _)| !app.contains("/shardId-"));
        assert_eq!(
            stream_txns.map(|(_, v)| *v).max(),
            Some(m),
            "no stream-level batch after the upgrade"
        );
        // An earlier version reads its next manifest slot and stops there.
        let store = DeltaSink::open(&spec.table_uri, "any")
            .await
            .unwrap()
            .object_store();
        let manifests = ManifestLog::new(store, &pipeline.name, &spec.stream);
        let fenced = manifests.get(m + 1).await;
        assert!(
            matches!(fenced, Err(SinkError::DamagedManifest { .. })),
            "{fenced:?}"
        );
    }
}

/// An earlier version stopped between planning a batch and committing it: the engine finishes
/// that batch under the stream's transaction id (so the earlier version, if it ran again, would
/// find it committed), fences the slot after it, and goes on per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_an_earlier_version_left_pending_is_finished_once() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "upgradepending", 100_000);
    let pipeline = load_pipeline(&config);
    create_streams(&server.client().await, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 100)).await;
    run_available_now(&pipeline).await;
    put_triples(&server, &pipeline, &triples(100, 50)).await;
    run_available_now(&pipeline).await;
    // The pin table as an earlier version left it when it stopped before committing batch m + 1.
    let pin = &pipeline.streams[0];
    let pin_dir = table_dir(dir.path(), pin);
    undo_last_table_commit(&pin_dir);
    let m = as_stream_level(&pipeline, pin, &pin_dir);
    let pending = stream_dir(&pipeline, pin, &pin_dir)
        .join("batches")
        .join(format!("{:020}.json", m + 1));
    assert!(pending.exists(), "batch {} is pending", m + 1);

    put_triples(&server, &pipeline, &triples(150, 20)).await;
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 170).await;
    assert_log_clean(&pin_dir);
    let finished = read_log(&pin_dir)
        .into_iter()
        .filter(|e| {
            e.txns
                .iter()
                .any(|(app, v)| !app.contains("/shardId-") && *v == m + 1)
        })
        .count();
    assert_eq!(
        finished,
        1,
        "batch {} committed once, under the stream's id",
        m + 1
    );
}
