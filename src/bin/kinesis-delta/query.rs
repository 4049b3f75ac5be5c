//! `query` and `report`: SQL over the tables, the interactive prompt, and the analysts' report.

use anyhow::Context;
use kinesis_delta::cli::{QueryArgs, ReportArgs};
use kinesis_delta::query::{AsOf, OutputFormat, TableSet};

#[allow(clippy::print_stdout)]
pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let pipeline = args.pipeline.pipeline()?;
    let as_of = args
        .as_of
        .iter()
        .map(|a| AsOf::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let tables = TableSet::open(&pipeline, &as_of).await?;
    if args.views.is_dir() {
        tables.register_views(&args.views).await?;
    }
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
            kinesis_delta::query::render_table(
                &result.schema,
                &result.batches,
                args.max_rows,
                "raise --max-rows, or use --format csv"
            )?
        ),
        (OutputFormat::Table, Some(path)) => std::fs::write(
            path,
            kinesis_delta::query::render_table(&result.schema, &result.batches, usize::MAX, "")?,
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
pub async fn report(args: ReportArgs) -> anyhow::Result<()> {
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
