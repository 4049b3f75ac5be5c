//! Records aggregated as the Kinesis Producer Library puts them (many user records in one Kinesis
//! record, `kinesis_delta::decode::kpl`), mixed with plain records: each user record is one row,
//! through crashes too, and an aggregate that cannot be read is one dead letter with the reason.

use kinesis_delta::config::Pipeline;
use kinesis_delta::decode::kpl;
use rand::{Rng, SeedableRng};

use crate::end_to_end::assert_exactly_once;
use crate::support::data::{PARTS, Triple, records, triples};
use crate::support::engine::{engine_command, run_then_sigkill};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, keep_raw_table, load_pipeline, put_each, put_records, query_counts,
    run_available_now, write_config,
};

/// Puts each stream's records of `batch`: the first `aggregated` of them in aggregates of 40
/// user records (keys kept), the rest one by one.
async fn put_aggregated(
    server: &TestKinesis,
    pipeline: &Pipeline,
    batch: &[Triple],
    aggregated: usize,
) {
    let client = server.client().await;
    for (spec, pick) in pipeline.streams.iter().zip(PARTS) {
        let plain = records(batch, pick);
        let (grouped, rest) = plain.split_at(aggregated);
        let mut put: Vec<(String, Vec<u8>)> = grouped
            .chunks(40)
            .map(|users| {
                let users: Vec<(String, Option<String>, Vec<u8>)> = users
                    .iter()
                    .map(|(key, data)| (key.clone(), None, data.clone()))
                    .collect();
                (users[0].0.clone(), kpl::aggregate(&users))
            })
            .collect();
        put.extend(rest.iter().cloned());
        put_records(&client, &spec.stream, &put).await;
    }
}

/// The acceptance case: 80% of the rows come in aggregates of 40, the rest plain; every row lands
/// once and nothing is a dead letter. A damaged aggregate (one flipped byte) is one dead letter
/// that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_record_of_an_aggregate_is_one_row() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "kpl", 100_000);
    let pipeline = load_pipeline(&config);
    create_streams(&server.client().await, &pipeline, 2).await;
    put_aggregated(&server, &pipeline, &triples(0, 200), 160).await;
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 200).await;
    for spec in &pipeline.streams {
        let table = spec.dead_letter_uri.rsplit('/').next().unwrap();
        assert!(
            !dir.path().join("tables").join(table).exists(),
            "no dead letters in {table}"
        );
    }

    let pin = &pipeline.streams[0];
    let users: Vec<(String, Option<String>, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("k{i}"),
                None,
                format!("{{\"index\": {}}}", 900 + i).into_bytes(),
            )
        })
        .collect();
    let mut damaged = kpl::aggregate(&users);
    damaged[8] ^= 0x01;
    let client = server.client().await;
    put_records(&client, &pin.stream, &[("k0".to_owned(), damaged)]).await;
    run_available_now(&pipeline).await;
    let dead = query_counts(
        &[("dead", &pin.dead_letter_uri)],
        "SELECT count(*), count(*) FILTER (WHERE error LIKE '%MD5%') FROM dead",
    )
    .await;
    assert_eq!(
        dead,
        [1, 1],
        "one dead letter, the whole aggregate, with the reason"
    );
    assert_exactly_once(&pipeline, 200).await;
}

/// SIGKILL at random moments while batches are made of aggregates (5 Kinesis records, 200 user
/// records, per batch): a replay yields the same user records, and none is lost or written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_aggregate_heavy_batches_loses_and_duplicates_nothing() {
    let seed: u64 = rand::rng().random();
    eprintln!("kpl crash test seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "kplcrash", 5);
    let pipeline = load_pipeline(&config);
    create_streams(&server.client().await, &pipeline, 2).await;
    let (total, chunk) = (2400, 400);
    for round in 0..6_i64 {
        put_aggregated(&server, &pipeline, &triples(round * chunk, chunk), 360).await;
        run_then_sigkill(&config, &mut rng, 2500, round).await;
    }
    let status = engine_command(&config, true).status().unwrap();
    assert!(status.success(), "the final --available-now run failed");
    assert_exactly_once(&pipeline, total).await;
}

/// FLINK-29395: after a reshard the KPL may put an aggregate on a shard that no longer holds some
/// of its user records' hash keys, and puts those user records again on their own shard. Here an
/// aggregate of 40 goes to the first shard, half of its user records with explicit hash keys of
/// the second, which gets those 20 again as plain records: each row lands once, and the 20 spare
/// copies are dead letters that say why. A rebuild from the raw table splits them the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_records_of_another_shards_hash_range_are_not_rows_twice() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "kplrange", 100_000);
    keep_raw_table(&config);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    let batch = triples(0, 40);
    let top = u128::MAX;
    for (spec, pick) in pipeline.streams.iter().zip(PARTS) {
        let plain = records(&batch, pick);
        let users: Vec<(String, Option<String>, Vec<u8>)> = plain
            .iter()
            .enumerate()
            .map(|(i, (key, data))| {
                let hash_key = if i % 2 == 0 { 0 } else { top };
                (key.clone(), Some(hash_key.to_string()), data.clone())
            })
            .collect();
        let aggregate = vec![("agg".to_owned(), kpl::aggregate(&users))];
        put_each(&client, &spec.stream, &aggregate, Some(0)).await;
        let again: Vec<(String, Vec<u8>)> = plain.iter().skip(1).step_by(2).cloned().collect();
        put_each(&client, &spec.stream, &again, Some(top)).await;
    }
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 40).await;
    // The spare copies are kept, and say why they are not rows.
    for spec in &pipeline.streams {
        let dead = query_counts(
            &[("dead", &spec.dead_letter_uri)],
            "SELECT count(*), count(*) FILTER (WHERE error LIKE '%belongs to another shard%') FROM dead",
        )
        .await;
        assert_eq!(dead, [20, 20], "{}", spec.name);
    }
    // Rebuilt from the raw table, which keeps each record's shard hash key range: the same split.
    let done = kinesis_delta::rebuild::rebuild(&pipeline, "pin", &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        (done.rows, done.dead_letters, done.dead_letter_version),
        (40, 20, None),
        "{done:?}"
    );
    assert_exactly_once(&pipeline, 40).await;
    // And so does a preview of the raw table.
    let preview =
        crate::support::engine::kinesis_delta_preview(&config, &["--raw", "--newest", "100"]);
    assert!(
        preview.contains("pin: 21 records → 40 rows, 20 dead letters"),
        "{preview}"
    );
}
