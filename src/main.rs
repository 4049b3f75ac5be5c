//! The `kinesis-delta` binary: parses arguments, sets up logging and the shutdown signal, and calls
//! the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kinesis_delta::cli::{Cli, Command, ProgressFormat, RunArgs};
use kinesis_delta::pipeline::{self, RunMode};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels the token on Ctrl-C or SIGTERM; a second signal exits at once.
fn shutdown_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!("stopping: finishing the in-flight commit (signal again to abort)");
        token.cancel();
        wait_for_signal().await;
        std::process::exit(130);
    });
    cancel
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[allow(clippy::print_stdout)]
async fn run(args: RunArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline()?;
    let mode = if args.available_now {
        RunMode::AvailableNow
    } else {
        RunMode::Continuous
    };
    let cancel = shutdown_on_signal();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let format = args.progress;
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
    Ok(())
}
