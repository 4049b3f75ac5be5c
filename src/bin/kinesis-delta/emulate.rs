//! `dataset` and `emulate`: the source tables and the user-posting emulator, with a live progress display.

use anyhow::Context;
use kinesis_delta::cli::{DatasetArgs, EmulateArgs};
use kinesis_delta::dataset::{self, Dataset, SqlTables};
use kinesis_delta::emulator::{self, Counters, EmulatorSettings, PostSource, Target};
use kinesis_delta::source::connect;
use tokio_util::sync::CancellationToken;

use crate::shutdown_on_signal;

#[allow(clippy::print_stdout)]
pub async fn write_dataset(args: DatasetArgs) -> anyhow::Result<()> {
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
pub async fn emulate(args: EmulateArgs) -> anyhow::Result<()> {
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
        Target::Direct {
            client: connect(&pipeline.kinesis).await,
            aggregate: args.kpl.map(usize::from),
        }
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
