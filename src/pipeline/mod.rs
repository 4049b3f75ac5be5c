//! The engine: every stream of the pipeline runs as its own micro-batch loop.
//!
//! ```text
//!  shards ──collect──► records ──decode──► raw rows ──SQL──► clean rows ──commit──► Delta table
//!    ▲                    │                    └──────────────────────────────► dead letters
//!    └──── positions ◄────┴── a plan per shard (write-ahead) + txn(shard, plan) in the commit
//! ```
//!
//! All streams are validated (schemas, SQL, tables) before any of them reads a record. One
//! cancellation token stops them all; each finishes its in-flight commit first.

mod error;
mod leases;
mod maintenance;
pub(crate) mod resume;
mod split;
mod status;
mod stream_job;

pub use error::{EngineError, ErrorKind, SplitChange};
pub use maintenance::{TableMaintenance, maintain_table, pipeline_tables};
pub use status::{Owners, ShardStatus, shard_status};
pub use stream_job::{RAW_STARTS_AFTER, RunMode, StreamJob, StreamSummary, sql_fingerprint};

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Pipeline, StreamSpec};
use crate::decode::{RecordDecoder, raw_schema_from_sql};
use crate::progress::BatchProgress;
use crate::source::{MemoryBudget, connect_checked};
use crate::telemetry::health::{STREAM_STALLED_AFTER, readiness};
use crate::transform::Cleaning;
use leases::LeaseService;

/// A stream's decoder and cleaning SQL, from its schema file, `format` and SQL file as the config
/// has them now (the engine, `preview` and `rebuild` all clean with these).
pub async fn decoder_and_cleaning(
    spec: &StreamSpec,
) -> Result<(RecordDecoder, Cleaning), EngineError> {
    let raw_schema = raw_schema_from_sql(&spec.schema_sql, &spec.schema_path).await?;
    let decoder = RecordDecoder::new(&spec.stream, raw_schema).with_format(spec.format);
    let cleaning = Cleaning::new(&spec.sql, &spec.sql_path, decoder.row_schema()).await?;
    Ok((decoder, cleaning))
}

/// Runs every stream until `cancel` fires (continuous) or every shard is read to its current end
/// ([`RunMode::AvailableNow`]). The first failing stream stops the others.
pub async fn run(
    pipeline: &Pipeline,
    mode: RunMode,
    cancel: CancellationToken,
    progress: UnboundedSender<BatchProgress>,
) -> Result<Vec<StreamSummary>, EngineError> {
    if pipeline.leases.is_some() && mode == RunMode::AvailableNow {
        return Err(crate::config::ConfigError::Invalid(
            "`--available-now` reads every shard itself and ends when they are read, so it cannot share them: run it on a pipeline without [leases] (and no other engine), or share the shards with continuous `run`s".into(),
        )
        .into());
    }
    let client = connect_checked(&pipeline.kinesis).await?;
    let lease_service = match &pipeline.leases {
        Some(settings) => {
            Some(LeaseService::start(&pipeline.name, settings, &pipeline.kinesis).await?)
        }
        None => None,
    };
    let result = run_streams(
        pipeline,
        mode,
        &cancel,
        progress,
        client,
        lease_service.as_ref(),
    )
    .await;
    if let Some(service) = lease_service {
        // After every stream's last commit: the others take the leases at once.
        service.stop().await;
    }
    result
}

/// Starts every stream, then runs them until they end or one fails.
async fn run_streams(
    pipeline: &Pipeline,
    mode: RunMode,
    cancel: &CancellationToken,
    progress: UnboundedSender<BatchProgress>,
    client: crate::source::KinesisClient,
    leases: Option<&LeaseService>,
) -> Result<Vec<StreamSummary>, EngineError> {
    // One budget for every stream: the process's memory stays bounded however many there are.
    let budget = MemoryBudget::new(pipeline.engine.memory_budget);
    // Ready once every stream has started, and for as long as each reads or commits.
    for spec in &pipeline.streams {
        readiness().expect(&spec.stream, Some(STREAM_STALLED_AFTER));
    }
    // Started together (each lists its shards and opens its tables); none reads a record before
    // every one has started. A failure is reported for the first failing stream of the config.
    let started = futures::future::join_all(pipeline.streams.iter().map(|spec| {
        StreamJob::start(
            pipeline,
            spec,
            mode,
            client.clone(),
            budget.clone(),
            leases.map(LeaseService::shards),
            progress.clone(),
            cancel,
        )
    }))
    .await;
    let jobs = started.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut tasks = JoinSet::new();
    for job in jobs {
        let cancel = cancel.clone();
        let stream = job.stream().to_owned();
        readiness().passed(&stream);
        tasks.spawn(async move {
            let result = job.run(mode, &cancel).await;
            readiness().forget(&stream);
            result
        });
    }
    let mut summaries = Vec::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(summary)) => summaries.push(summary),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a stream failed; stopping the others after their in-flight commit");
                cancel.cancel();
                failure.get_or_insert(e);
            }
            Err(join) => {
                cancel.cancel();
                failure.get_or_insert(EngineError::Internal(format!(
                    "a stream task panicked: {join}"
                )));
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            summaries.sort_by(|a, b| a.stream.cmp(&b.stream));
            Ok(summaries)
        }
    }
}
