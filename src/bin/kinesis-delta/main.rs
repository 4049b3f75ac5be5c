//! The `kinesis-delta` binary: parses arguments, sets up logging and the shutdown signal, and hands
//! each subcommand to its module here, which calls the library and prints for people.

mod emulate;
mod engine;
mod history;
mod leases;
mod maintain;
mod preview;
mod query;
mod rebuild;
mod servers;
mod streams;

use std::process::ExitCode;

use clap::Parser;
use kinesis_delta::cli::{AdminArgs, Cli, Command, LogFormat};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads {
        builder.worker_threads(threads.into());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => engine::run(args).await,
            Command::Streams(args) => streams::streams_command(args).await,
            Command::Api(args) => servers::serve_api(args).await,
            Command::Kinesis(args) => servers::serve_kinesis(args).await,
            Command::Dataset(args) => emulate::write_dataset(args).await,
            Command::Emulate(args) => emulate::emulate(args).await,
            Command::Query(args) => query::query(args).await,
            Command::Maintain(args) => maintain::maintain(args).await,
            Command::Leases(args) => leases::leases(args).await,
            Command::History(args) => history::history(args).await,
            Command::Preview(args) => preview::preview(args).await,
            Command::Rebuild(args) => rebuild::rebuild(args).await,
            Command::Report(args) => query::report(args).await,
            Command::Demo(args) => engine::demo(args).await,
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

/// Log lines go to stderr, in the format asked for; colour codes only on a terminal.
fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_new(cli.log_filter()).unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Starts the admin server (metrics, health checks) when an address is given.
pub async fn start_admin(args: &AdminArgs) -> anyhow::Result<()> {
    if let Some(address) = args.admin_address {
        kinesis_delta::telemetry::start(address).await?;
    }
    Ok(())
}

/// Cancels the token on Ctrl-C or SIGTERM (and stops answering ready); a second signal exits at
/// once.
pub fn shutdown_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!("stopping: finishing in-flight work (signal again to abort)");
        kinesis_delta::telemetry::readiness().stopping();
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
