//! Query results for people (an aligned table, visibly truncated) and for tools (CSV, JSON lines,
//! Parquet).

use std::io::Write;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::QueryError;

/// How a result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned table (long results are cut at --max-rows, visibly).
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// A Parquet file (needs --output).
    Parquet,
}

/// An aligned table of at most `max_rows` rows, with a line saying how many were left out and
/// how to see them (`more`: the command's own ways, e.g. "raise --max-rows").
pub fn render_table(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_rows: usize,
    more: &str,
) -> Result<String, QueryError> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut shown = Vec::new();
    let mut left = max_rows;
    for batch in batches {
        if left == 0 {
            break;
        }
        let take = batch.num_rows().min(left);
        shown.push(batch.slice(0, take));
        left -= take;
    }
    if shown.is_empty() {
        shown.push(RecordBatch::new_empty(schema.clone()));
    }
    let mut text = arrow::util::pretty::pretty_format_batches(&shown)
        .map_err(|e| QueryError::Output(e.to_string()))?
        .to_string();
    if total > max_rows {
        text.push_str(&format!(
            "\n… {} more rows not shown ({more})",
            total - max_rows
        ));
    }
    Ok(text)
}

/// Writes CSV, JSON lines or Parquet to `out` (or to the file `path` for Parquet).
pub fn write_output(
    format: OutputFormat,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    out: &mut dyn Write,
    path: Option<&Path>,
) -> Result<(), QueryError> {
    let err = |e: &dyn std::fmt::Display| QueryError::Output(e.to_string());
    match format {
        OutputFormat::Table => Ok(()),
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for batch in batches {
                writer.write(batch).map_err(|e| err(&e))?;
            }
            Ok(())
        }
        OutputFormat::Jsonl => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            for batch in batches {
                writer.write(batch).map_err(|e| err(&e))?;
            }
            writer.finish().map_err(|e| err(&e))
        }
        OutputFormat::Parquet => {
            let path = path
                .ok_or_else(|| QueryError::Output("--format parquet needs --output FILE".into()))?;
            let file = std::fs::File::create(path)
                .map_err(|e| err(&format!("{}: {e}", path.display())))?;
            let mut writer =
                deltalake::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)
                    .map_err(|e| err(&e))?;
            for batch in batches {
                writer.write(batch).map_err(|e| err(&e))?;
            }
            writer.close().map(|_| ()).map_err(|e| err(&e))
        }
    }
}
