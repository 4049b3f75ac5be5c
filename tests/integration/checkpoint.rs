//! The stream checkpoint survives a Delta log checkpoint and log clean-up.

use deltalake::checkpoints::{cleanup_expired_logs_for, create_checkpoint};

use crate::end_to_end::{assert_exactly_once, put_triples};
use crate::support::data::triples;
use crate::support::servers::{Kind, TestKinesis, lose_server_state};
use crate::support::{create_streams, load_pipeline, run_available_now, write_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_delta_checkpoint_and_log_cleanup() {
    let server = TestKinesis::start(Kind::KinesisMock).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "ckpt", 100);
    let pipeline = load_pipeline(&config);
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    put_triples(&server, &pipeline, &triples(0, 400)).await;
    run_available_now(&pipeline).await;

    for spec in &pipeline.streams {
        let table = deltalake::open_table(url::Url::parse(&spec.table_uri).unwrap())
            .await
            .unwrap();
        let version = table.version().unwrap();
        assert!(
            version >= 4,
            "several commits expected, got version {version}"
        );
        create_checkpoint(&table, None).await.unwrap();
        let log_store = table.log_store();
        let future = chrono::Utc::now().timestamp_millis() + 60_000;
        let removed = cleanup_expired_logs_for(version, log_store.as_ref(), future, None)
            .await
            .unwrap();
        assert!(removed > 0, "log clean-up removed nothing");
        let first_commit = dir.path().join(format!(
            "tables/{}/_delta_log/00000000000000000000.json",
            spec.name
        ));
        assert!(
            !first_commit.exists(),
            "the first commit should be cleaned up"
        );
    }

    put_triples(&server, &pipeline, &triples(400, 100)).await;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(
        summaries.iter().all(|s| s.records == 100),
        "resumed from the checkpoint: {summaries:?}"
    );
    assert_exactly_once(&pipeline, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_stops_the_engine_unless_told_to_restart() {
    use kinesis_delta::config::LostStreamPolicy;
    use kinesis_delta::pipeline::EngineError;

    use crate::support::run_expecting_error;

    let dir = tempfile::tempdir().unwrap();
    let first = TestKinesis::start(Kind::Embedded).await;
    let config = write_config(dir.path(), first.endpoint(), "lost", 100_000);
    let pipeline = load_pipeline(&config);
    let client = first.client().await;
    create_streams(&client, &pipeline, 1).await;
    put_triples(&first, &pipeline, &triples(0, 100)).await;
    run_available_now(&pipeline).await;
    // The local server's state is lost: a new, empty server; the streams made again.
    let (second, mut pipeline) = lose_server_state(first, &pipeline, 1).await;
    put_triples(&second, &pipeline, &triples(100, 50)).await;

    let err = run_expecting_error(&pipeline).await;
    assert!(matches!(err, EngineError::LostStream { .. }), "{err}");
    assert!(
        err.to_string().contains("--on-lost-stream restart"),
        "{err}"
    );

    pipeline.engine.on_lost_stream = LostStreamPolicy::Restart;
    let (summaries, _) = run_available_now(&pipeline).await;
    assert!(summaries.iter().all(|s| s.records == 50), "{summaries:?}");
    assert_exactly_once(&pipeline, 150).await;
}
