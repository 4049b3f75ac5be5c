//! `run` and `demo`: the engine's commands and their progress lines.

use anyhow::Context;
use kinesis_delta::cli::{DemoArgs, ProgressFormat, RunArgs};
use kinesis_delta::emulator::Counters;
use kinesis_delta::pipeline::{self, RunMode};
use kinesis_delta::progress::BatchProgress;

use crate::{shutdown_on_signal, start_admin};

#[allow(clippy::print_stdout)]
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline()?;
    start_admin(&args.admin).await?;
    let mode = if args.available_now {
        RunMode::AvailableNow
    } else {
        RunMode::Continuous
    };
    let cancel = shutdown_on_signal();
    let format = args.progress;
    let (sender, printer) = print_progress(format);
    let summaries = pipeline::run(&pipeline, mode, cancel, sender)
        .await
        .context("the engine stopped")?;
    printer.await.context("progress printer")?;
    for s in &summaries {
        match format {
            ProgressFormat::Text => println!(
                "{}: {} batches, {} records ({} dead letters), last batch {}",
                s.stream, s.batches, s.records, s.dead_letters, s.last_batch_id
            ),
            ProgressFormat::Json => println!("{}", serde_json::json!({"summary": s})),
        }
    }
    if let Some(peak) = kinesis_delta::progress::peak_memory_bytes() {
        match format {
            ProgressFormat::Text => println!("peak memory: {} MiB", peak >> 20),
            ProgressFormat::Json => println!("{}", serde_json::json!({"peak_memory_bytes": peak})),
        }
    }
    Ok(())
}

/// Prints engine progress lines as they come, until every sender is dropped.
#[allow(clippy::print_stdout)]
fn print_progress(
    format: ProgressFormat,
) -> (
    tokio::sync::mpsc::UnboundedSender<BatchProgress>,
    tokio::task::JoinHandle<()>,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<BatchProgress>();
    let printer = tokio::spawn(async move {
        while let Some(report) = receiver.recv().await {
            match format {
                ProgressFormat::Text => println!("{report}"),
                ProgressFormat::Json => match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => tracing::error!(error = %e, "cannot print progress"),
                },
            }
        }
    });
    (sender, printer)
}

#[allow(clippy::print_stdout)]
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut pipeline_args = args.pipeline.clone();
    if pipeline_args.table_root.is_none() {
        pipeline_args.table_root = Some(args.data_dir.join("tables").display().to_string());
    }
    let pipeline = pipeline_args.pipeline()?;
    start_admin(&args.admin).await?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let settings = kinesis_delta::demo::DemoSettings {
        data_dir: args.data_dir.clone(),
        posts: args.posts,
        duration: args.duration,
        rate: args.rate,
        shards: args.shards,
        analytics: args.analytics.clone(),
    };
    let cancel = shutdown_on_signal();
    let counters = std::sync::Arc::new(Counters::default());
    let (sender, printer) = print_progress(args.progress);
    let outcome =
        kinesis_delta::demo::run(pipeline.clone(), &settings, sender, counters, &cancel).await?;
    printer.await?;
    println!();
    println!("posts sent: {}", outcome.emulator.posts);
    for (stream, n) in &outcome.emulator.accepted {
        println!("  {stream}: {n} records accepted by Kinesis");
    }
    for s in &outcome.engine {
        println!(
            "  {}: {} records committed in {} batches ({} dead letters)",
            s.stream, s.records, s.batches, s.dead_letters
        );
    }
    println!(
        "tables:  {}",
        pipeline.table_root.trim_start_matches("file://")
    );
    println!("report:  {}", outcome.report_html.display());
    println!("csv:     {}", outcome.report_csv.display());
    println!(
        "query:   cargo run --release -- query --table-root {} \"SELECT category, count(*) FROM pin GROUP BY category\"",
        pipeline.table_root.trim_start_matches("file://")
    );
    if cancel.is_cancelled() {
        println!("stopped early: run the same command again to resume");
    }
    Ok(())
}
