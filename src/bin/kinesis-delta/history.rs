//! `history`: a table's versions with the batch, rows, dead letters and SQL fingerprint of each,
//! as a table or `--json`.

use anyhow::Context;
use kinesis_delta::cli::HistoryArgs;
use kinesis_delta::pipeline::sql_fingerprint;
use kinesis_delta::sink::DeltaSink;

#[allow(clippy::print_stdout)]
pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let spec = pipeline.stream(&args.stream)?;
    let uri = if args.dead_letters {
        spec.dead_letter_uri.as_str()
    } else if args.raw {
        spec.raw_table("history --raw")?
    } else {
        spec.table_uri.as_str()
    };
    let table = DeltaSink::open_with(uri, &spec.app_id(&pipeline.name), &pipeline.storage)
        .await
        .with_context(|| format!("opening {uri}"))?;
    let versions = table.history(args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(());
    }
    println!(
        "{uri}: the schema and SQL in the config now are {}",
        sql_fingerprint(&spec.schema_sql, &spec.sql)
    );
    println!(
        "{:>8}  {:<24} {:<14} {:>6} {:>8} {:>6}  {:<12}  worker",
        "version", "committed", "operation", "batch", "rows", "dead", "sql"
    );
    let dash = || "-".to_owned();
    for v in &versions {
        println!(
            "{:>8}  {:<24} {:<14} {:>6} {:>8} {:>6}  {:<12}  {}",
            v.version,
            v.timestamp
                .map_or_else(dash, |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
            v.operation.clone().unwrap_or_else(dash),
            v.batch_id.map_or_else(dash, |b| b.to_string()),
            v.rows.map_or_else(dash, |r| r.to_string()),
            v.dead_letters.map_or_else(dash, |d| d.to_string()),
            v.sql.clone().unwrap_or_else(dash),
            v.worker.clone().unwrap_or_else(dash),
        );
    }
    if let Some(oldest) = versions.last()
        && oldest.version > 0
        && versions.len() < args.limit
    {
        println!(
            "(versions before {} are gone from the log: its commit files are kept for the log retention)",
            oldest.version
        );
    }
    Ok(())
}
