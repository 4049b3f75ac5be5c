//! `rebuild`: a stream's table derived again from its raw table, with progress on stderr and
//! what was done on stdout.

use kinesis_delta::cli::RebuildArgs;
use kinesis_delta::rebuild::{RebuildProgress, rebuild as run_rebuild};

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let stream = &args.stream;
    let mut progress = |p: RebuildProgress| {
        let percent = (p.records * 100).checked_div(p.total).unwrap_or(100);
        eprintln!(
            "rebuild {stream}: {} of {} raw records ({percent}%)",
            p.records, p.total
        );
    };
    let done = run_rebuild(&pipeline, stream, &mut progress).await?;
    let dead_letters = match done.dead_letter_version {
        Some(version) => format!("the dead-letter table replaced as version {version}"),
        None => "the dead letters unchanged".to_owned(),
    };
    println!(
        "{stream}: {} raw records → {} rows and {} dead letters, committed as table version {} ({dead_letters}); the checkpoints stay at {} shard plans.",
        done.records,
        done.rows,
        done.dead_letters,
        done.table_version,
        done.plans.len()
    );
    if done.attempts > 1 {
        println!(
            "Engines committed {} times meanwhile: their batches are rebuilt too.",
            done.attempts - 1
        );
    }
    println!(
        "An engine started before the SQL was edited keeps cleaning with the SQL it started with: restart it."
    );
    Ok(())
}
