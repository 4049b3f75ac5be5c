//! A stream's raw table (`raw_table = "pin_raw"`): every Kinesis record as read, its bytes and
//! metadata, committed under the same shard plans as the cleaned rows, so each record is there
//! once however often the engine is killed, malformed records included.

use rand::{Rng, SeedableRng};

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::{PARTS, records, triples};
use crate::support::engine::{engine_command, run_then_sigkill};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, edit_file, keep_raw_table, load_pipeline, put_records, query_counts,
    run_available_now, run_expecting_error, write_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_table_holds_every_record_once_through_sigkills() {
    let seed: u64 = rand::rng().random();
    eprintln!("raw table test seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "raw", 50);
    keep_raw_table(&config);
    let pipeline = load_pipeline(&config);
    let raw_uri = pipeline.streams[0].raw_uri.clone().expect("a raw table");
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    let (rounds, per_round) = (5_i64, 300_i64);
    for round in 0..rounds {
        let batch = triples(round * per_round, per_round);
        for (spec, pick) in pipeline.streams.iter().zip(PARTS) {
            let mut puts = records(&batch, pick);
            if spec.name == "pin" {
                puts.push((
                    format!("bad-{round}"),
                    format!("not json {round}").into_bytes(),
                ));
            }
            put_records(&client, &spec.stream, &puts).await;
        }
        run_then_sigkill(&config, &mut rng, 2000, round).await;
    }
    let status = engine_command(&config, true).status().unwrap();
    assert!(status.success(), "the final --available-now run failed");
    let total = rounds * per_round;
    assert_exactly_once(&pipeline, total).await;
    let counts = query_counts(
        &[("pin_raw", &raw_uri)],
        "SELECT count(*), count(DISTINCT _shard_id || '/' || _sequence_number), \
                count(*) FILTER (WHERE starts_with(CAST(data AS VARCHAR), 'not json')) FROM pin_raw",
    )
    .await;
    assert_eq!(
        counts,
        [total + rounds, total + rounds, rounds],
        "every Kinesis record once, the malformed ones too"
    );
    let dead = query_counts(
        &[("dead", &pipeline.streams[0].dead_letter_uri)],
        "SELECT count(*) FROM dead",
    )
    .await;
    assert_eq!(dead, [rounds]);
}

/// The raw and dead-letter tables' checkpoints are the table's: a config that points `table` at
/// a new folder and keeps the raw table (as a user might, to write to a new table after a type
/// change) is refused at start-up, before the new table's plan numbers would drop its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_table_kept_for_a_new_table_is_refused_at_start() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "rawmoved", 10);
    keep_raw_table(&config);
    let pipeline = load_pipeline(&config);
    create_streams(&server.client().await, &pipeline, 1).await;
    put_triples(&server, &pipeline, &triples(0, 50)).await;
    run_available_now(&pipeline).await;
    edit_file(&config, "table = \"pin\"\n", "table = \"pin_v2\"\n");
    let moved = load_pipeline(&config);
    let error = run_expecting_error(&moved).await.to_string();
    assert!(
        error.contains("the raw_table") && error.contains("belonged to another table"),
        "{error}"
    );
    assert!(
        !dir.path().join("tables/pin_v2/_delta_log").exists(),
        "nothing was committed to the new table"
    );
}
