//! `preview`: a stream's schema and SQL over a sample (a JSON-lines file, or the stream's newest
//! records), printed; nothing is written.

use kinesis_delta::cli::PreviewArgs;
use kinesis_delta::preview::{Sample, preview as run_preview};
use kinesis_delta::query::render_table;

#[allow(clippy::print_stdout)]
pub async fn preview(args: PreviewArgs) -> anyhow::Result<()> {
    let pipeline = args.pipeline.pipeline()?;
    let sample = match args.file {
        Some(path) => Sample::File(path),
        None if args.raw => Sample::Raw {
            newest: args.newest,
        },
        None => Sample::Stream {
            newest: args.newest,
            since: args.since,
        },
    };
    let preview = run_preview(&pipeline, &args.stream, &sample).await?;
    let rows: usize = preview.rows.iter().map(|b| b.num_rows()).sum();
    println!(
        "{}: {} records → {rows} rows, {} dead letters (nothing written)",
        args.stream,
        preview.records,
        preview.dead_letters.len()
    );
    println!("\noutput schema:");
    for field in preview.schema.fields() {
        println!("  {} {}", field.name(), field.data_type());
    }
    println!("\nrows:");
    println!(
        "{}",
        render_table(
            &preview.schema,
            &preview.rows,
            args.max_rows,
            "raise --max-rows"
        )?
    );
    if !preview.dead_letters.is_empty() {
        println!("\ndead letters:");
        for (at, reason, excerpt) in &preview.dead_letters {
            println!("  {at}: {reason}\n    {excerpt}");
        }
    }
    Ok(())
}
