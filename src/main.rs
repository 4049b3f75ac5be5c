//! The `kinesis-delta` binary: parses arguments, sets up logging and the shutdown signal, and calls
//! the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kinesis_delta::api::{self, ApiSettings};
use kinesis_delta::cli::{
    ApiArgs, Cli, Command, DatasetArgs, EmulateArgs, KinesisArgs, ProgressFormat, RunArgs,
    StreamsAction, StreamsArgs,
};
use kinesis_delta::cli::{DemoArgs, QueryArgs, ReportArgs};
use kinesis_delta::dataset::{self, Dataset, SqlTables};
use kinesis_delta::emulator::{self, Counters, EmulatorSettings, PostSource, Target};
use kinesis_delta::local::{LocalKinesis, LocalKinesisSettings};
use kinesis_delta::pipeline::{self, RunMode};
use kinesis_delta::query::{AsOf, OutputFormat, TableSet};
use kinesis_delta::source::connect;
use kinesis_delta::streams;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(cli.log_filter())
                .unwrap_or_else(|_| "info".into()),
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
            Command::Dataset(args) => write_dataset(args).await,
            Command::Emulate(args) => emulate(args).await,
            Command::Query(args) => query(args).await,
            Command::Report(args) => report(args).await,
            Command::Demo(args) => demo(args).await,
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

#[allow(clippy::print_stdout)]
async fn write_dataset(args: DatasetArgs) -> anyhow::Result<()> {
    let data = Dataset::new(args.generator.spec());
    if let Some(dir) = &args.out {
        for path in dataset::write_files(&data, dir, args.format)? {
            println!("wrote {}", path.display());
        }
        return Ok(());
    }
    // SQLite creates the file, not its folder.
    let sqlite_file = args
        .database
        .strip_prefix("sqlite://")
        .map(|p| p.split('?').next().unwrap_or(p));
    if let Some(parent) = sqlite_file
        .and_then(|path| std::path::Path::new(path).parent())
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let rows = dataset::load_sql(&data, &args.database).await?;
    println!("loaded {rows} rows into each of pinterest_data, geolocation_data, user_data");
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn emulate(args: EmulateArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let stream = |name: &str| {
        pipeline.streams.iter().find(|s| s.name == name).map(|s| s.stream.clone()).with_context(|| {
            format!("the pipeline config has no stream named `{name}` (the emulator posts to pin, geo and user)")
        })
    };
    let settings = EmulatorSettings {
        streams: [stream("pin")?, stream("geo")?, stream("user")?],
        pace: args.pace()?,
        count: args.count,
        duration: args.duration,
        batch: args.batch.map(usize::from),
        sequential: args.sequential,
        seed: args.generator.seed,
        keys: args.keys()?,
        concurrency: args.concurrency,
        max_attempts: 10,
    };
    let source = if let Some(dir) = &args.from_files {
        PostSource::Files(std::sync::Arc::new(dataset::read_json_lines(dir)?))
    } else if let Some(url) = &args.from_database {
        PostSource::Sql(SqlTables::open(url).await?)
    } else {
        PostSource::Generator(Dataset::new(args.generator.spec()))
    };
    let target = if args.direct {
        Target::Direct(connect(&pipeline.kinesis).await)
    } else {
        Target::api(&args.api, args.api_key.clone())
    };
    target.check().await?;
    let counters = std::sync::Arc::new(Counters::default());
    let cancel = shutdown_on_signal();
    let done = CancellationToken::new();
    let progress = tokio::spawn(show_progress(
        std::sync::Arc::clone(&counters),
        args.count,
        done.clone(),
    ));
    let result = emulator::run(
        &source,
        &target,
        &settings,
        std::sync::Arc::clone(&counters),
        &cancel,
    )
    .await;
    done.cancel();
    let _ = progress.await;
    let summary = result?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("posts sent: {}", summary.posts);
        for (stream, accepted) in &summary.accepted {
            println!("  {stream}: {accepted} records accepted");
        }
        println!("retried: {}, failed: {}", summary.retried, summary.failed);
        println!(
            "{:.1} s: {:.0} posts/s; {} requests, {:.0} requests/s, round trip p50 {:.2} ms, p99 {:.2} ms",
            summary.seconds,
            summary.posts as f64 / summary.seconds.max(1e-9),
            summary.latency.requests,
            summary.latency.requests as f64 / summary.seconds.max(1e-9),
            summary.latency.p50_ms,
            summary.latency.p99_ms
        );
    }
    if summary.failed > 0 {
        anyhow::bail!(
            "{} records were not accepted (see the errors above)",
            summary.failed
        );
    }
    Ok(())
}

/// A progress bar with the live rate on a terminal; a plain line every 5 s otherwise.
async fn show_progress(
    counters: std::sync::Arc<Counters>,
    count: Option<u64>,
    cancel: CancellationToken,
) {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering;
    let accepted = |c: &Counters| {
        c.accepted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    if std::io::stderr().is_terminal() {
        let bar = count.map_or_else(
            indicatif::ProgressBar::new_spinner,
            indicatif::ProgressBar::new,
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} posts [{elapsed_precise}] {per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        while !cancel.is_cancelled() {
            bar.set_position(counters.posts.load(Ordering::Relaxed));
            bar.set_message(format!(
                "records accepted {}, retried {}, failed {}",
                accepted(&counters),
                counters.retried.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed)
            ));
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                () = cancel.cancelled() => {}
            }
        }
        bar.finish_and_clear();
    } else {
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                () = cancel.cancelled() => return,
            }
            let posts = counters.posts.load(Ordering::Relaxed);
            eprintln!(
                "{posts} posts ({:.0}/s), {} records accepted, {} retried, {} failed",
                posts as f64 / started.elapsed().as_secs_f64(),
                accepted(&counters),
                counters.retried.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed)
            );
        }
    }
}

#[allow(clippy::print_stdout)]
async fn query(args: QueryArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let pipeline = args.pipeline.pipeline()?;
    let as_of = args
        .as_of
        .iter()
        .map(|a| AsOf::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let tables = TableSet::open(&pipeline, &as_of).await?;
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => Some(sql.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
        ),
        (None, None) if std::io::stdin().is_terminal() => None,
        (None, None) => {
            let mut sql = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut sql)?;
            Some(sql)
        }
    };
    match sql {
        Some(sql) => print_result(&tables, &sql, &args).await,
        None => repl(&tables, &args).await,
    }
}

#[allow(clippy::print_stdout)]
async fn print_result(tables: &TableSet, sql: &str, args: &QueryArgs) -> anyhow::Result<()> {
    let result = tables.sql(sql).await?;
    match (args.format, &args.output) {
        (OutputFormat::Table, None) => println!(
            "{}",
            kinesis_delta::query::render_table(&result.schema, &result.batches, args.max_rows)?
        ),
        (OutputFormat::Table, Some(path)) => std::fs::write(
            path,
            kinesis_delta::query::render_table(&result.schema, &result.batches, usize::MAX)?,
        )?,
        (format, Some(path)) if format != OutputFormat::Parquet => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            kinesis_delta::query::write_output(
                format,
                &result.schema,
                &result.batches,
                &mut file,
                None,
            )?;
        }
        (format, path) => {
            let mut stdout = std::io::stdout().lock();
            kinesis_delta::query::write_output(
                format,
                &result.schema,
                &result.batches,
                &mut stdout,
                path.as_deref(),
            )?;
        }
    }
    eprintln!(
        "{} rows in {:.1} ms",
        result.rows(),
        result.elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// An interactive prompt: statements end with `;` and may span lines; history is kept.
#[allow(clippy::print_stdout)]
async fn repl(tables: &TableSet, args: &QueryArgs) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::temp_dir().join("kinesis-delta-query-history");
    let _ = editor.load_history(&history);
    println!(
        "Tables: {}",
        tables
            .tables
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("End statements with `;`. Ctrl-D quits.");
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "sql> "
        } else {
            "...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                statement.push_str(&line);
                statement.push('\n');
                if line.trim_end().ends_with(';') {
                    let _ = editor.add_history_entry(statement.trim());
                    if let Err(e) = print_result(tables, &statement, args).await {
                        eprintln!("error: {e:#}");
                    }
                    statement.clear();
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => statement.clear(),
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let tables = TableSet::open(&pipeline, &[]).await?;
    let report = kinesis_delta::report::build(&tables, &args.analytics).await?;
    let html = kinesis_delta::report::render_html(
        &report,
        &chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
    );
    if let Some(parent) = args.html.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.html, html)
        .with_context(|| format!("cannot write {}", args.html.display()))?;
    println!("report: {}", args.html.display());
    if let Some(dir) = &args.csv {
        for path in kinesis_delta::report::write_csvs(&report, dir)? {
            println!("csv: {}", path.display());
        }
    }
    Ok(())
}

/// Prints engine progress lines as they come.
#[allow(clippy::print_stdout)]
fn print_progress(
    format: ProgressFormat,
) -> (
    tokio::sync::mpsc::UnboundedSender<kinesis_delta::progress::BatchProgress>,
    tokio::task::JoinHandle<()>,
) {
    let (sender, mut receiver) =
        tokio::sync::mpsc::unbounded_channel::<kinesis_delta::progress::BatchProgress>();
    let printer = tokio::spawn(async move {
        while let Some(report) = receiver.recv().await {
            match format {
                ProgressFormat::Text => println!("{report}"),
                ProgressFormat::Json => {
                    println!("{}", serde_json::to_string(&report).unwrap_or_default())
                }
            }
        }
    });
    (sender, printer)
}

#[allow(clippy::print_stdout)]
async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut pipeline_args = args.pipeline.clone();
    if pipeline_args.table_root.is_none() {
        pipeline_args.table_root = Some(args.data_dir.join("tables").display().to_string());
    }
    let pipeline = pipeline_args.pipeline()?;
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
