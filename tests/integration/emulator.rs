//! The emulator against the real API and kinesis-mock: exact counts with the seed's record bytes,
//! every source (generator, SQLite, MariaDB), direct mode (also in KPL aggregates), and failures
//! retried to exact counts.

use std::sync::Arc;

use kinesis_delta::api::{self, ApiSettings};
use kinesis_delta::dataset::{self, Dataset, DatasetSpec, Post, SqlTables};
use kinesis_delta::decode::kpl;
use kinesis_delta::emulator::{
    self, Counters, EmulatorSettings, KeyMode, Pace, PostSource, Target,
};
use tokio_util::sync::CancellationToken;

use crate::support::fault_proxy::ApiFaultProxy;
use crate::support::kinesis_mock::KinesisMock;
use crate::support::{client, create_stream, read_stream};

const STREAMS: [&str; 3] = ["emu-pin", "emu-geo", "emu-user"];

struct Setup {
    server: KinesisMock,
    api: String,
    _cancel: CancellationToken,
}

async fn setup() -> Setup {
    let server = KinesisMock::start().await;
    let kinesis = client(&server.endpoint).await;
    for stream in STREAMS {
        create_stream(&kinesis, stream, 2).await;
    }
    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(
        listener,
        api::app(kinesis, &ApiSettings::default()),
        cancel.clone(),
    ));
    Setup {
        server,
        api,
        _cancel: cancel,
    }
}

fn settings(count: u64, batch: Option<usize>, sequential: bool) -> EmulatorSettings {
    EmulatorSettings {
        streams: STREAMS.map(str::to_owned),
        pace: Pace::Max,
        count: Some(count),
        duration: None,
        batch,
        sequential,
        seed: 100,
        keys: KeyMode::Id,
        concurrency: 4,
        max_attempts: 20,
    }
}

/// Every stream holds exactly `expected` posts' rows, byte for byte as the seed sends them (the
/// JSON text of the row), keyed by the post id.
async fn assert_streams_hold(endpoint: &str, expected: &[Post]) {
    assert_user_records(endpoint, expected, false).await;
}

/// Like [`assert_streams_hold`], with `aggregated`: each Kinesis record is a KPL aggregate, whose
/// user records are the rows.
async fn assert_user_records(endpoint: &str, expected: &[Post], aggregated: bool) {
    for (table, stream) in STREAMS.iter().enumerate() {
        let mut want: Vec<(String, Vec<u8>)> = expected
            .iter()
            .map(|p| {
                let bytes = match table {
                    0 => serde_json::to_vec(&p.pin),
                    1 => serde_json::to_vec(&p.geo),
                    _ => serde_json::to_vec(&p.user),
                };
                (p.pin.index.to_string(), bytes.unwrap())
            })
            .collect();
        want.sort();
        let mut got = read_stream(endpoint, stream).await;
        if aggregated {
            got = got
                .iter()
                .flat_map(|(_, data)| kpl::deaggregate(data).unwrap())
                .map(|user| (user.partition_key, user.data))
                .collect();
            got.sort();
        }
        assert_eq!(got.len(), want.len(), "records on {stream}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.0.as_str(), String::from_utf8_lossy(&g.1)),
                (w.0.as_str(), String::from_utf8_lossy(&w.1)),
                "a record on {stream}"
            );
        }
    }
}

/// Runs the emulator to the end with `settings(count, batch, sequential)`.
async fn emulate(
    source: &PostSource,
    target: &Target,
    count: u64,
    batch: Option<usize>,
    sequential: bool,
) -> emulator::Summary {
    let settings = settings(count, batch, sequential);
    emulator::run(
        source,
        target,
        &settings,
        Arc::new(Counters::default()),
        &CancellationToken::new(),
    )
    .await
    .unwrap()
}

fn counts(summary: &emulator::Summary) -> Vec<u64> {
    STREAMS.iter().map(|s| summary.accepted[*s]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_api_one_record_per_request_and_in_batches() {
    let setup = setup().await;
    let data = Dataset::new(DatasetSpec {
        rows: 300,
        ..DatasetSpec::default()
    });
    let source = PostSource::Generator(data);
    let target = Target::api(&setup.api, None);
    target.check().await.unwrap();

    // The seed's way: random offsets (seeded), each record PUT to /record.
    let summary = emulate(&source, &target, 60, None, false).await;
    assert_eq!(
        (summary.posts, counts(&summary), summary.failed),
        (60, vec![60, 60, 60], 0)
    );
    let mut rng_posts: Vec<Post> = Vec::new();
    {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(100);
        for _ in 0..60 {
            rng_posts.push(data.post(rng.random_range(0..300)));
        }
    }
    assert_streams_hold(&setup.server.endpoint, &rng_posts).await;

    // Batches through /records, in order.
    let summary = emulate(&source, &target, 240, Some(50), true).await;
    assert_eq!(
        (summary.posts, counts(&summary), summary.failed),
        (240, vec![240, 240, 240], 0)
    );
    rng_posts.extend((0..240).map(|k| data.post(k)));
    assert_streams_hold(&setup.server.endpoint, &rng_posts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_kinesis_from_sqlite() {
    let setup = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("pinterest.db").display()
    );
    let data = Dataset::new(DatasetSpec {
        rows: 400,
        ..DatasetSpec::default()
    });
    dataset::load_sql(&data, &url).await.unwrap();
    let source = PostSource::Sql(SqlTables::open(&url).await.unwrap());
    let target = Target::Direct {
        client: client(&setup.server.endpoint).await,
        aggregate: None,
    };
    let summary = emulate(&source, &target, 400, Some(100), true).await;
    assert_eq!(
        (summary.posts, counts(&summary)),
        (400, vec![400, 400, 400])
    );
    assert_streams_hold(&setup.server.endpoint, &data.posts().collect::<Vec<_>>()).await;
}

/// `emulate --direct --kpl 20`: each PutRecords of 100 posts carries 5 Kinesis records, each a
/// KPL aggregate of 20 rows, which the engine takes apart (`kpl::…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_kinesis_in_kpl_aggregates() {
    let setup = setup().await;
    let data = Dataset::new(DatasetSpec {
        rows: 200,
        ..DatasetSpec::default()
    });
    let target = Target::Direct {
        client: client(&setup.server.endpoint).await,
        aggregate: Some(20),
    };
    let source = PostSource::Generator(data);
    let summary = emulate(&source, &target, 200, Some(100), true).await;
    assert_eq!(
        (summary.posts, counts(&summary)),
        (200, vec![200, 200, 200])
    );
    for stream in STREAMS {
        let records = read_stream(&setup.server.endpoint, stream).await;
        assert_eq!(records.len(), 10, "aggregates of 20 on {stream}");
    }
    let posts: Vec<Post> = data.posts().take(200).collect();
    assert_user_records(&setup.server.endpoint, &posts, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_json_lines_files_in_order() {
    let setup = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let data = Dataset::new(DatasetSpec {
        rows: 150,
        ..DatasetSpec::default()
    });
    dataset::write_files(&data, dir.path(), dataset::FileFormat::Jsonl).unwrap();
    let source = PostSource::Files(Arc::new(dataset::read_json_lines(dir.path()).unwrap()));
    let summary = emulate(&source, &Target::api(&setup.api, None), 150, Some(30), true).await;
    assert_eq!(
        (summary.posts, counts(&summary)),
        (150, vec![150, 150, 150])
    );
    assert_streams_hold(&setup.server.endpoint, &data.posts().collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outages_and_partial_failures_are_retried_to_exact_counts() {
    let setup = setup().await;
    let proxy = ApiFaultProxy::start(&setup.api, 4, 3).await;
    let data = Dataset::new(DatasetSpec {
        rows: 250,
        ..DatasetSpec::default()
    });
    let target = Target::api(&proxy.url, None);
    let summary = emulate(&PostSource::Generator(data), &target, 250, Some(25), true).await;
    assert_eq!(
        (summary.posts, counts(&summary), summary.failed),
        (250, vec![250, 250, 250], 0)
    );
    assert!(summary.retried > 0);
    assert!(
        proxy.unavailable.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no 503 was injected"
    );
    assert!(
        proxy
            .dropped_entries
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "no entry failure was injected"
    );
    assert_streams_hold(&setup.server.endpoint, &data.posts().collect::<Vec<_>>()).await;
}

#[tokio::test]
async fn an_unreachable_target_is_a_clear_error_at_start() {
    let err = Target::api("http://127.0.0.1:9", None)
        .check()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kinesis-delta api"), "{err}");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["emulate", "--api", "http://127.0.0.1:9", "--count", "1"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach http://127.0.0.1:9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_source_end_to_end() {
    let Some(mariadb) = crate::support::mariadb::MariaDb::start().await else {
        eprintln!(
            "SKIPPED mariadb_source_end_to_end: no MariaDB server is installed (apt-get install mariadb-server)"
        );
        return;
    };
    let setup = setup().await;
    let data = Dataset::new(DatasetSpec {
        rows: 120,
        ..DatasetSpec::default()
    });
    dataset::load_sql(&data, &mariadb.url).await.unwrap();
    let source = PostSource::Sql(SqlTables::open(&mariadb.url).await.unwrap());
    let summary = emulate(&source, &Target::api(&setup.api, None), 120, Some(40), true).await;
    assert_eq!(
        (summary.posts, counts(&summary)),
        (120, vec![120, 120, 120])
    );
    assert_streams_hold(&setup.server.endpoint, &data.posts().collect::<Vec<_>>()).await;
}
