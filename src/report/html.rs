//! The report as one self-contained HTML page: inline CSS and SVG, no scripts, opens offline.

use std::fmt::Write;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::{Answer, Report};

/// Questions whose answer reads better as bars: (label columns, value column).
fn chart_of(id: &str) -> Option<(&'static [&'static str], &'static str)> {
    match id {
        "q2" => Some((&["post_year", "category"], "category_count")),
        "q4" => Some((&["age_group", "category"], "category_count")),
        "q5" => Some((&["age_group"], "median_follower_count")),
        "q6" => Some((&["post_year"], "number_users_joined")),
        "q7" => Some((&["post_year"], "median_follower_count")),
        "q8" => Some((&["age_group", "post_year"], "median_follower_count")),
        _ => None,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every cell of a result as text, row by row.
fn cells(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows
}

fn numeric(column: &dyn Array, row: usize) -> Option<f64> {
    if column.is_null(row) {
        return None;
    }
    let cast = arrow::compute::cast(&column.slice(row, 1), &DataType::Float64).ok()?;
    cast.as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .map(|a| a.value(0))
}

/// A horizontal bar chart in SVG.
fn bar_chart(answer: &Answer, labels: &[&str], value: &str) -> Option<String> {
    let schema = &answer.result.schema;
    let label_idx: Vec<usize> = labels
        .iter()
        .map(|l| schema.index_of(l).ok())
        .collect::<Option<_>>()?;
    let value_idx = schema.index_of(value).ok()?;
    let rows = cells(&answer.result.batches);
    let mut bars = Vec::new();
    let mut row_base = 0;
    for batch in &answer.result.batches {
        for row in 0..batch.num_rows() {
            let label = label_idx
                .iter()
                .map(|&i| rows[row_base + row][i].clone())
                .collect::<Vec<_>>()
                .join(" · ");
            if let Some(v) = numeric(batch.column(value_idx).as_ref(), row) {
                bars.push((label, v));
            }
        }
        row_base += batch.num_rows();
    }
    if bars.is_empty() {
        return None;
    }
    let max = bars
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let (label_w, bar_w, row_h) = (230.0, 420.0, 26.0);
    let height = row_h * bars.len() as f64 + 30.0;
    let mut svg = format!(
        r#"<svg class="chart" role="img" aria-label="{}" viewBox="0 0 {} {height}" width="{}" height="{height}">"#,
        escape(value),
        label_w + bar_w + 110.0,
        label_w + bar_w + 110.0
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 10.0 + i as f64 * row_h;
        let w = (v / max * bar_w).max(1.0);
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" class="label">{}</text><rect x="{label_w}" y="{}" width="{w:.1}" height="{}" rx="3" class="bar"/><text x="{}" y="{}" class="value">{}</text>"#,
            label_w - 8.0,
            y + 17.0,
            escape(label),
            y + 3.0,
            row_h - 8.0,
            label_w + w + 6.0,
            y + 17.0,
            format_number(*v)
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn table(answer: &Answer) -> String {
    let mut html = String::from(r#"<div class="scroll"><table><thead><tr>"#);
    for field in answer.result.schema.fields() {
        let _ = write!(html, "<th>{}</th>", escape(field.name()));
    }
    html.push_str("</tr></thead><tbody>");
    let rows = cells(&answer.result.batches);
    if rows.is_empty() {
        let _ = write!(
            html,
            r#"<tr><td colspan="{}" class="empty">no rows</td></tr>"#,
            answer.result.schema.fields().len()
        );
    }
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{}</td>", escape(&cell));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    html
}

/// The whole page.
pub fn render_html(report: &Report, generated_at: &str) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1>Pinterest pipeline: the analysts' questions</h1><p class=\"meta\">Computed {} from:</p><ul class=\"tables\">",
        escape(generated_at)
    );
    for (table, rows) in &report.tables {
        let version = table
            .version
            .map_or_else(|| "not created yet".to_owned(), |v| format!("version {v}"));
        let _ = write!(
            body,
            "<li><b>{}</b>: {rows} rows, {version} <span class=\"uri\">{}</span></li>",
            escape(&table.name),
            escape(&table.uri)
        );
    }
    body.push_str("</ul><nav>");
    for answer in &report.answers {
        let _ = write!(body, r##"<a href="#{0}">{0}</a> "##, escape(&answer.id));
    }
    body.push_str("</nav></header>");
    for answer in &report.answers {
        let _ = write!(
            body,
            r#"<section id="{}"><h2>{}</h2>"#,
            escape(&answer.id),
            escape(&answer.title)
        );
        if let Some(svg) =
            chart_of(&answer.id).and_then(|(labels, value)| bar_chart(answer, labels, value))
        {
            body.push_str(&svg);
        }
        body.push_str(&table(answer));
        let _ = write!(
            body,
            "<p class=\"meta\">{} rows in {:.0} ms</p><details><summary>SQL</summary><pre>{}</pre></details></section>",
            answer.result.rows(),
            answer.result.elapsed.as_secs_f64() * 1000.0,
            escape(&answer.sql)
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Pinterest pipeline report</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #1d1d1f; padding: 0 1rem; }}
h1 {{ font-size: 1.6rem; margin-bottom: .2rem; }} h2 {{ font-size: 1.15rem; margin-top: 2.2rem; border-bottom: 2px solid #e60023; padding-bottom: .2rem; }}
.meta {{ color: #666; font-size: .85rem; }} .uri {{ color: #888; font-size: .8rem; }}
nav a {{ margin-right: .6rem; color: #e60023; }}
table {{ border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }}
th, td {{ border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }} th {{ background: #f6f6f6; }}
td.empty {{ color: #999; font-style: italic; }}
.scroll {{ max-height: 24rem; overflow-y: auto; display: inline-block; border-bottom: 1px solid #eee; }}
thead th {{ position: sticky; top: 0; }}
.chart .bar {{ fill: #e60023; }} .chart .label {{ font-size: 12px; fill: #333; }} .chart .value {{ font-size: 12px; fill: #555; }}
pre {{ background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .8rem; }}
</style></head><body>{body}</body></html>
"#
    )
}
