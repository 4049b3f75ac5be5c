//! `maintain`: compaction, checkpoint and vacuum of the tables, once, with a line per table.

use kinesis_delta::cli::MaintainArgs;
use kinesis_delta::pipeline::{TableMaintenance, maintain_table, pipeline_tables};
use kinesis_delta::sink::TableFiles;

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn maintain(args: MaintainArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let tables = pipeline_tables(&pipeline, &args.tables)?;
    let (mut files_before, mut files_after) = (0, 0);
    for (name, uri) in &tables {
        eprintln!("{name}: maintaining…");
        let report = maintain_table(&pipeline, name, uri).await?;
        files_before += report.before.map_or(0, |f| f.files);
        files_after += report.after.map_or(0, |f| f.files);
        println!("{}", describe(&report));
    }
    println!(
        "{} tables: {files_before} live files before, {files_after} after",
        tables.len()
    );
    Ok(())
}

/// One line: files, bytes and versions before → after, then what was done.
fn describe(report: &TableMaintenance) -> String {
    let (Some(before), Some(after)) = (report.before, report.after) else {
        return format!("{}: no table yet; nothing to do", report.table);
    };
    let files = |f: TableFiles| {
        format!(
            "{} files ({} small), {}",
            f.files,
            f.small_files,
            mib(f.bytes)
        )
    };
    let compaction = report.compaction.map_or_else(
        || "nothing to compact".to_owned(),
        |c| format!("{} files compacted into {}", c.files_removed, c.files_added),
    );
    let vacuum = report.vacuumed.map_or_else(
        || "vacuum off".to_owned(),
        |n| format!("vacuum deleted {n} files"),
    );
    format!(
        "{}: {} → {}; version {} → {}; {compaction}; checkpoint written, {} expired log files deleted; {vacuum}",
        report.table,
        files(before),
        files(after),
        before.version,
        after.version,
        report.expired_logs,
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
