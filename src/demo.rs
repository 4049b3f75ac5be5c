//! `kinesis-delta demo`: the whole seed pipeline on one machine, with no AWS account and no Docker.
//!
//! ```text
//!  embedded Kinesis (ferrokinesis, durable under <data>/kinesis)
//!     ▲ streams create          ▲ PutRecord(s)              │ GetRecords
//!     │                         │                           ▼
//!  demo ── emulator ──► REST API (127.0.0.1) ──►  ──►  engine ──► <data>/tables (Delta)
//!                                                              └─► report (HTML + CSV)
//! ```
//!
//! Every part talks to Kinesis through the AWS SDK and an endpoint URL, exactly as it would to AWS.
//! Stopping (Ctrl-C) finishes the in-flight commit; running again resumes from the checkpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiSettings};
use crate::config::Pipeline;
use crate::dataset::{Dataset, DatasetSpec};
use crate::emulator::{self, Counters, EmulatorSettings, KeyMode, Pace, PostSource, Target};
use crate::local::{LocalKinesis, LocalKinesisSettings};
use crate::pipeline::{self, RunMode, StreamSummary};
use crate::progress::BatchProgress;
use crate::query::TableSet;
use crate::source::connect;
use crate::streams;

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// The data folder (Kinesis state, tables, report).
    pub data_dir: PathBuf,
    /// Posts the emulator sends.
    pub posts: u64,
    /// Stop posting after this long.
    pub duration: Option<Duration>,
    /// Posts per second.
    pub rate: f64,
    /// Shards per stream.
    pub shards: i32,
    /// The analytics SQL folder.
    pub analytics: PathBuf,
}

/// Where everything ended up.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The emulator's exact summary.
    pub emulator: emulator::Summary,
    /// What the engine committed, per stream (continuous run and final drain together).
    pub engine: Vec<StreamSummary>,
    /// The HTML report.
    pub report_html: PathBuf,
    /// The folder of per-question CSVs.
    pub report_csv: PathBuf,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A part failed; the message names it.
    #[error("{0}")]
    Failed(String),
}

fn failed(what: &str) -> impl Fn(&dyn std::fmt::Display) -> DemoError + '_ {
    move |e| DemoError::Failed(format!("{what}: {e}"))
}

/// Runs the demo. `pipeline` is the validated config; its endpoint is replaced by the embedded one.
pub async fn run(
    mut pipeline: Pipeline,
    settings: &DemoSettings,
    progress: UnboundedSender<BatchProgress>,
    counters: Arc<Counters>,
    cancel: &CancellationToken,
) -> Result<DemoOutcome, DemoError> {
    let services = CancellationToken::new();
    let kinesis = LocalKinesis::start(
        &LocalKinesisSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: Some(settings.data_dir.join("kinesis")),
            subscription_lifetime: crate::local::SUBSCRIPTION_LIFETIME,
        },
        services.clone(),
    )
    .await
    .map_err(|e| failed("embedded Kinesis")(&e))?;
    pipeline.kinesis.endpoint_url = Some(kinesis.endpoint.clone());
    let client = connect(&pipeline.kinesis).await;

    for spec in &pipeline.streams {
        streams::create(&client, &spec.stream, settings.shards)
            .await
            .map_err(|e| failed("creating streams")(&e))?;
        streams::wait_active(&client, &spec.stream, Duration::from_secs(60))
            .await
            .map_err(|e| failed("creating streams")(&e))?;
    }
    tracing::info!(endpoint = %kinesis.endpoint, "streams ready");

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| failed("API")(&e))?;
    let api_url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| failed("API")(&e))?
    );
    let api_task = tokio::spawn(api::serve(
        listener,
        api::app(client.clone(), &ApiSettings::default()),
        services.clone(),
    ));
    tracing::info!(api = %api_url, "API listening");

    // The engine runs while the emulator posts; it stops when the posting is done (or on Ctrl-C).
    let engine_stop = cancel.child_token();
    let engine = {
        let (pipeline, stop, progress) = (pipeline.clone(), engine_stop.clone(), progress.clone());
        tokio::spawn(
            async move { pipeline::run(&pipeline, RunMode::Continuous, stop, progress).await },
        )
    };

    let stream = |name: &str| {
        pipeline
            .streams
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.stream.clone())
            .ok_or_else(|| DemoError::Failed(format!("the pipeline config has no stream `{name}`")))
    };
    let emulator_settings = EmulatorSettings {
        streams: [stream("pin")?, stream("geo")?, stream("user")?],
        pace: Pace::Rate(settings.rate),
        count: Some(settings.posts),
        duration: settings.duration,
        batch: Some(10),
        sequential: false,
        seed: 100,
        keys: KeyMode::Uuid,
        concurrency: 4,
        max_attempts: 10,
    };
    let target = Target::api(&api_url, None);
    target.check().await.map_err(|e| failed("API")(&e))?;
    let source = PostSource::Generator(Dataset::new(DatasetSpec::default()));
    let emulated = emulator::run(&source, &target, &emulator_settings, counters, cancel).await;

    engine_stop.cancel();
    let mut summaries = engine
        .await
        .map_err(|e| failed("engine")(&e))?
        .map_err(|e| failed("engine")(&e))?;
    let emulated = emulated.map_err(|e| failed("emulator")(&e))?;
    if !cancel.is_cancelled() {
        // Commit whatever was put after the continuous run's last batch.
        let drained = pipeline::run(
            &pipeline,
            RunMode::AvailableNow,
            cancel.child_token(),
            progress,
        )
        .await
        .map_err(|e| failed("engine")(&e))?;
        for (total, more) in summaries.iter_mut().zip(drained) {
            total.batches += more.batches;
            total.records += more.records;
            total.dead_letters += more.dead_letters;
            total.last_batch_id = more.last_batch_id.max(total.last_batch_id);
        }
    }
    services.cancel();
    let _ = api_task.await;
    kinesis
        .stopped()
        .await
        .map_err(|e| failed("embedded Kinesis")(&e))?;

    let tables = TableSet::open(&pipeline, &[])
        .await
        .map_err(|e| failed("report")(&e))?;
    let report = crate::report::build(&tables, &settings.analytics)
        .await
        .map_err(|e| failed("report")(&e))?;
    let report_html = settings.data_dir.join("report.html");
    let report_csv = settings.data_dir.join("report");
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    std::fs::write(
        &report_html,
        crate::report::render_html(&report, &generated),
    )
    .map_err(|e| failed("report")(&e))?;
    crate::report::write_csvs(&report, &report_csv).map_err(|e| failed("report")(&e))?;
    Ok(DemoOutcome {
        emulator: emulated,
        engine: summaries,
        report_html,
        report_csv,
    })
}
