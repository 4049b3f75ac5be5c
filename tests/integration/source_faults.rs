//! What the Kinesis side can do to a run, and what a run must do about it: no shard iterator, an
//! outage before the first record at LATEST, no credentials, no server at all, a server that is
//! always "behind", records that would be changed on their way in, and large records against the
//! batch's byte budget.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kinesis_delta::pipeline::{self, RunMode};
use tokio_util::sync::CancellationToken;

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::{stream_records, triples};
use crate::support::engine::{engine_command, table_rows, wait_with_deadline};
use crate::support::fault_proxy::{FaultPlan, FaultProxy};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, edit_file, load_pipeline, put_each, put_records, query_counts,
    run_available_now, wait_until, write_config,
};

/// Item 4: GetShardIterator answered without an iterator for an open shard. Before the fix the
/// run asked again about 5 times a second, forever, silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shard_iterator_for_an_open_shard_fails_the_run_after_a_bounded_wait() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let proxy = FaultProxy::start(
        server.endpoint(),
        FaultPlan {
            no_iterator_for_shard: Some("shardId-000000000001"),
            ..FaultPlan::NONE
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &proxy.endpoint, "noiter", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 100)).await;
    let child = engine_command(&config, true)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_with_deadline(child, Duration::from_secs(120), "the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("shardId-000000000001") && stderr.contains("without an iterator"),
        "{stderr}"
    );
    let asked = proxy.counts.no_iterator.load(Ordering::SeqCst);
    assert!(
        (10..=30).contains(&asked),
        "asked {asked} times: bounded, with backoff"
    );
}

/// Item 5: at `initial_position = "latest"`, an outage before a shard's first record renewed the
/// iterator at LATEST, skipping what was put meanwhile. Measured before the fix: all 900 lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_before_the_first_record_at_latest_loses_nothing() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let proxy = FaultProxy::start(server.endpoint(), FaultPlan::NONE).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &proxy.endpoint, "latest", 100_000);
    edit_file(
        &config,
        "initial_position = \"trim_horizon\"",
        "initial_position = \"latest\"",
    );
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    // Put before the engine starts: LATEST must not read these.
    put_triples(&server, &pipeline, &triples(1000, 20)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let cancel = CancellationToken::new();
    let (sender, _receiver) = tokio::sync::mpsc::unbounded_channel();
    let engine = {
        let (pipeline, cancel) = (pipeline.clone(), cancel.clone());
        tokio::spawn(
            async move { pipeline::run(&pipeline, RunMode::Continuous, cancel, sender).await },
        )
    };
    wait_until("the engine reading", Duration::from_secs(30), || async {
        proxy.counts.get_records.load(Ordering::SeqCst) >= 12
    })
    .await;
    proxy.outage.store(true, Ordering::SeqCst);
    put_triples(&server, &pipeline, &triples(0, 300)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.outage.store(false, Ordering::SeqCst);
    for spec in &pipeline.streams {
        wait_until(
            &format!("the records put during the outage in {}", spec.name),
            Duration::from_secs(60),
            || async { table_rows(&spec.table_uri).await >= 300 },
        )
        .await;
    }
    cancel.cancel();
    engine.await.unwrap().unwrap();
    assert!(proxy.counts.unavailable.load(Ordering::SeqCst) > 0);
    assert_exactly_once(&pipeline, 300).await;
}

/// Item 9: no credentials anywhere. Before the fix the run retried forever, printing kilobytes of
/// SDK context. The environment is emptied and instance metadata disabled, so nothing leaves the
/// machine; `AWS_ENDPOINT_URL` points at a closed loopback port in case anything tried.
#[test]
fn no_credentials_fail_at_once_in_one_line_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "nocreds", 100_000);
    edit_file(
        &config,
        "endpoint_url = \"http://127.0.0.1:9\"",
        "# no endpoint: AWS",
    );
    let child = engine_command(&config, true)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("RUST_LOG", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_with_deadline(child, Duration::from_secs(30), "a run without credentials");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no AWS credentials") && stderr.contains("AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// Item 9: `--available-now` against an endpoint where nothing answers gives up after
/// `engine.startup_timeout`.
#[test]
fn available_now_gives_up_on_an_absent_server_after_the_startup_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again when the listener drops
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        "absent",
        10,
    );
    edit_file(
        &config,
        "startup_timeout = \"60s\"",
        "startup_timeout = \"2s\"",
    );
    let child = engine_command(&config, true)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_with_deadline(child, Duration::from_secs(60), "a run with no server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("did not answer ListShards") && stderr.contains("startup_timeout"),
        "{stderr}"
    );
}

/// Item 10: a fraction in an integer column was truncated without a word. Now such a record is a
/// dead letter that says why, and its neighbours land untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fraction_in_an_integer_column_is_a_dead_letter_not_a_truncation() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "fraction", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 50)).await;
    let (pin, user) = (&pipeline.streams[0], &pipeline.streams[2]);
    let fractions: Vec<(String, Vec<u8>)> = [
        r#"{"index": 1.5, "title": "a"}"#,
        r#"{"index": "3.7", "title": "b"}"#,
        r#"{"index": 900, "downloaded": 0.5}"#,
    ]
    .iter()
    .map(|r| ("f".to_owned(), r.as_bytes().to_vec()))
    .collect();
    put_records(&client, &pin.stream, &fractions).await;
    put_records(
        &client,
        &user.stream,
        &[("f".to_owned(), br#"{"ind": 901, "age": "20.5"}"#.to_vec())],
    )
    .await;
    let (summaries, _) = run_available_now(&pipeline).await;
    let dead = |name: &str| {
        summaries
            .iter()
            .find(|s| s.stream == name)
            .unwrap()
            .dead_letters
    };
    assert_eq!((dead("pin"), dead("geo"), dead("user")), (3, 0, 1));
    assert_exactly_once(&pipeline, 50).await;
    for spec in [pin, user] {
        let explained = query_counts(
            &[("dead", &spec.dead_letter_uri)],
            "SELECT count(*) FROM dead WHERE error LIKE '%not an integer%'",
        )
        .await;
        assert_eq!(explained[0], table_rows(&spec.dead_letter_uri).await);
    }
}

/// Item 12: `--available-now` under steady load on a server whose `MillisBehindLatest` is never 0
/// (the proxy says 5 s, as Kinesis does for a consumer that trails the producers). Before the fix
/// the run waited for "0" forever. Now it ends at the records that were there when it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_now_ends_under_steady_load_at_the_records_present_at_start() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let proxy = FaultProxy::start(
        server.endpoint(),
        FaultPlan {
            millis_behind: Some(5_000),
            ..FaultPlan::NONE
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &proxy.endpoint, "steady", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 200)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, pipeline, endpoint) =
            (stop.clone(), pipeline.clone(), server.endpoint().to_owned());
        tokio::spawn(async move {
            let client = crate::support::client(&endpoint).await;
            let mut next = 10_000;
            for _ in 0..600 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                for spec in &pipeline.streams {
                    let batch = stream_records(&spec.name, &triples(next, 10));
                    put_records(&client, &spec.stream, &batch).await;
                }
                next += 10;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let child = engine_command(&config, true)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        wait_with_deadline(child, Duration::from_secs(60), "--available-now under load")
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for spec in &pipeline.streams {
        let counts = query_counts(
            &[("t", &spec.table_uri)],
            "SELECT count(*) FILTER (WHERE ind < 200), count(*), count(DISTINCT ind) FROM t",
        )
        .await;
        assert_eq!(
            counts[0], 200,
            "{}: every record present at start",
            spec.name
        );
        assert_eq!(counts[1], counts[2], "{}: none twice", spec.name);
    }
}

/// Item 13: `max_batch_bytes` bounds what one batch holds, not just when collecting stops: calls
/// are sized from the records seen. Before the fix one round took every shard's whole response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holds_about_max_batch_bytes_of_large_records() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "bytes", 100_000);
    edit_file(
        &config,
        "max_batch_bytes = 67108864",
        "max_batch_bytes = 1048576",
    );
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    // 40 pin records of about 100 KB: 4 MB in all, four times the budget.
    let mut big = triples(0, 40);
    for t in &mut big {
        t.pin["description"] = "x".repeat(100_000).into();
    }
    put_triples(&server, &pipeline, &big).await;
    let (_, reports) = run_available_now(&pipeline).await;
    let pin: Vec<usize> = reports
        .iter()
        .filter(|r| r.stream == "pin")
        .map(|r| r.rows_in)
        .collect();
    assert_eq!(pin.iter().sum::<usize>(), 40);
    // 1 MiB holds 10 such records; one more may be taken when a call needs at least one.
    assert!(
        pin.iter().all(|&n| n <= 11),
        "records per pin batch: {pin:?}"
    );
    assert_exactly_once(&pipeline, 40).await;
}

/// Review finding: `latest` with `--available-now` read the empty interval between each run's
/// own start and its own end. The start is now pinned once for the pipeline, so a second run
/// reads what was put after the first one started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_with_available_now_reads_what_came_after_the_first_start() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "latestnow", 100_000);
    edit_file(
        &config,
        "initial_position = \"trim_horizon\"",
        "initial_position = \"latest\"",
    );
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(1000, 10)).await; // before any start: never read
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(summaries.iter().all(|s| s.records == 0), "{summaries:?}");
    put_triples(&server, &pipeline, &triples(0, 30)).await;
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 30).await;
}

/// Review finding: with a small byte budget only some shards are asked per round, and a round
/// whose asked shards were empty ended `--available-now` although another shard held records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_now_with_a_small_byte_budget_reads_every_shard() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "budget", 100_000);
    edit_file(
        &config,
        "max_batch_bytes = 67108864",
        "max_batch_bytes = 1048576",
    );
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    // Every record on the last shard (the top of the hash key range).
    let batch = triples(0, 40);
    for spec in &pipeline.streams {
        let records = stream_records(&spec.name, &batch);
        put_each(&client, &spec.stream, &records, Some(u128::MAX)).await;
    }
    run_available_now(&pipeline).await;
    assert_exactly_once(&pipeline, 40).await;
}

/// Review finding: a GetRecords answer without `NextShardIterator` for a shard listed as open
/// marked it finished for good, so nothing put on it later was ever read. Now the shards are
/// listed again and the shard is read on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_next_iterator_on_an_open_shard_loses_nothing_after_it() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let proxy = FaultProxy::start(
        server.endpoint(),
        FaultPlan {
            drop_next_iterator_once: true,
            ..FaultPlan::NONE
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &proxy.endpoint, "nonext", 100_000);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 1).await;
    put_triples(&server, &pipeline, &triples(0, 50)).await;
    run_available_now(&pipeline).await;
    put_triples(&server, &pipeline, &triples(50, 50)).await;
    run_available_now(&pipeline).await;
    assert_eq!(proxy.counts.dropped_iterators.load(Ordering::SeqCst), 1);
    assert_exactly_once(&pipeline, 100).await;
}
