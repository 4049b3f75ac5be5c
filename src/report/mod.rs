//! `kinesis-delta report`: runs every analytics SQL file (`sql/analytics/q*.sql`) over the tables
//! and writes a self-contained HTML report (question, SQL, result table, a bar chart where it helps,
//! and the table versions it was computed from), plus one CSV per question on request.

mod html;

pub use html::render_html;

use std::path::{Path, PathBuf};

use crate::query::{OutputFormat, QueryError, QueryResult, TableInfo, TableSet, write_output};

/// One analytics question and its answer.
#[derive(Debug)]
pub struct Answer {
    /// `q1`, `q3a`, …
    pub id: String,
    /// The question, from the file's first comment line.
    pub title: String,
    /// The SQL as written.
    pub sql: String,
    /// The result.
    pub result: QueryResult,
}

/// A report: the answers and the tables they came from.
#[derive(Debug)]
pub struct Report {
    /// In file order (q1, q2, q3a, q3b, …).
    pub answers: Vec<Answer>,
    /// The tables read, with their versions.
    pub tables: Vec<(TableInfo, usize)>,
}

/// The folder of shared views inside the analytics folder.
const VIEWS: &str = "views";

/// The analytics files of a folder, in question order.
pub fn analytics_files(dir: &Path) -> Result<Vec<PathBuf>, QueryError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        QueryError::Output(format!(
            "cannot read the analytics folder {}: {e}",
            dir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort_by_key(|p| {
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let digits: String = stem.chars().filter(char::is_ascii_digit).collect();
        (digits.parse::<u32>().unwrap_or(u32::MAX), stem)
    });
    Ok(files)
}

/// Runs every analytics file over `tables`, after registering the views they build on (the
/// `views` folder inside `analytics`, when there is one).
pub async fn build(tables: &TableSet, analytics: &Path) -> Result<Report, QueryError> {
    let views = analytics.join(VIEWS);
    if views.is_dir() {
        tables.register_views(&views).await?;
    }
    let mut answers = Vec::new();
    for file in analytics_files(analytics)? {
        let sql = std::fs::read_to_string(&file)
            .map_err(|e| QueryError::Output(format!("cannot read {}: {e}", file.display())))?;
        let id = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        // The question is the file's leading comment, up to the first blank comment line.
        let title = sql
            .lines()
            .map_while(|l| l.trim().strip_prefix("--").map(str::trim))
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let title = if title.is_empty() { id.clone() } else { title };
        let result = tables
            .sql(&sql)
            .await
            .map_err(|e| QueryError::Sql(format!("{}: {e}", file.display())))?;
        answers.push(Answer {
            id,
            title,
            sql,
            result,
        });
    }
    let mut sizes = Vec::new();
    for table in &tables.tables {
        let rows = if table.version.is_some() {
            let result = tables
                .sql(&format!("SELECT COUNT(*) FROM \"{}\"", table.name))
                .await?;
            let batch = result.batches.first();
            batch
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .map(|a| a.value(0))
                })
                .map_or(0, |n| usize::try_from(n).unwrap_or(0))
        } else {
            0
        };
        sizes.push((table.clone(), rows));
    }
    Ok(Report {
        answers,
        tables: sizes,
    })
}

/// Writes `<id>.csv` per question into `dir` (header = the column names).
pub fn write_csvs(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, QueryError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| QueryError::Output(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for answer in &report.answers {
        let path = dir.join(format!("{}.csv", answer.id));
        let mut file = std::fs::File::create(&path)
            .map_err(|e| QueryError::Output(format!("{}: {e}", path.display())))?;
        if answer.result.rows() == 0 {
            // No rows: still a header, so every file has the question's columns.
            let header: Vec<&str> = answer
                .result
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            std::io::Write::write_all(&mut file, format!("{}\n", header.join(",")).as_bytes())
                .map_err(|e| QueryError::Output(e.to_string()))?;
        } else {
            write_output(
                OutputFormat::Csv,
                &answer.result.schema,
                &answer.result.batches,
                &mut file,
                None,
            )?;
        }
        written.push(path);
    }
    Ok(written)
}
