//! The `kinesis-delta` binary: parses arguments, sets up logging and the shutdown signal, and calls
//! the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kinesis_delta::api::{self, ApiSettings};
use kinesis_delta::cli::{
    ApiArgs, Cli, Command, KinesisArgs, ProgressFormat, RunArgs, StreamsAction, StreamsArgs,
};
use kinesis_delta::local::{LocalKinesis, LocalKinesisSettings};
use kinesis_delta::pipeline::{self, RunMode};
use kinesis_delta::source::connect;
use kinesis_delta::streams;
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
            Command::Streams(args) => streams_command(args).await,
            Command::Api(args) => serve_api(args).await,
            Command::Kinesis(args) => serve_kinesis(args).await,
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
        tracing::warn!("stopping: finishing in-flight work (signal again to abort)");
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
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
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

#[allow(clippy::print_stdout)]
async fn streams_command(args: StreamsArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let client = connect(&pipeline.kinesis).await;
    let configured = || {
        pipeline
            .streams
            .iter()
            .map(|s| s.stream.clone())
            .collect::<Vec<_>>()
    };
    let or_configured = |names: Vec<String>| {
        if names.is_empty() {
            configured()
        } else {
            names
        }
    };
    match args.action {
        StreamsAction::Create { names, shards } => {
            let mut results = Vec::new();
            for name in or_configured(names) {
                let outcome = streams::create(&client, &name, shards).await?;
                streams::wait_active(&client, &name, std::time::Duration::from_secs(120)).await?;
                if !args.json {
                    let what = match outcome {
                        streams::CreateOutcome::Created => {
                            format!("created with {shards} shards, ACTIVE")
                        }
                        streams::CreateOutcome::Exists => "exists already, ACTIVE".to_owned(),
                    };
                    println!("{name}: {what}");
                }
                results.push(serde_json::json!({"stream": name, "outcome": outcome}));
            }
            if args.json {
                println!("{}", serde_json::Value::Array(results));
            }
        }
        StreamsAction::List => {
            let names = streams::list(&client).await?;
            if args.json {
                println!("{}", serde_json::json!(names));
            } else {
                names.iter().for_each(|n| println!("{n}"));
            }
        }
        StreamsAction::Describe { name } => {
            let d = streams::describe(&client, &name).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!(
                    "{} ({}), {} shards, retention {} h",
                    d.stream_name,
                    d.stream_status,
                    d.shards.len(),
                    d.retention_period_hours
                );
                for shard in &d.shards {
                    let parent = shard
                        .parent_shard_id
                        .as_deref()
                        .map(|p| format!(" (child of {p})"))
                        .unwrap_or_default();
                    println!("  {}{parent}", shard.shard_id);
                }
            }
        }
        StreamsAction::Delete { names } => {
            for name in or_configured(names) {
                streams::delete(&client, &name).await?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"stream": name, "outcome": "deleting"})
                    );
                } else {
                    println!("{name}: deleting");
                }
            }
        }
    }
    Ok(())
}

async fn serve_api(args: ApiArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let client = connect(&pipeline.kinesis).await;
    let settings = ApiSettings {
        api_key: args.api_key,
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (choose another with --bind)",
                args.bind
            )
        })?;
    tracing::info!(address = %args.bind, "API listening");
    api::serve(listener, api::app(client, &settings), shutdown_on_signal())
        .await
        .context("API server")
}

async fn serve_kinesis(args: KinesisArgs) -> anyhow::Result<()> {
    let settings = LocalKinesisSettings {
        bind: args.bind,
        state_dir: (!args.in_memory).then_some(args.state_dir),
    };
    let cancel = shutdown_on_signal();
    let server = LocalKinesis::start(&settings, cancel)
        .await
        .with_context(|| {
            format!(
                "cannot start the embedded Kinesis on {} (choose another with --bind)",
                args.bind
            )
        })?;
    eprintln!("Kinesis endpoint: {} (Ctrl-C to stop)", server.endpoint);
    server.stopped().await.context("embedded Kinesis")
}
