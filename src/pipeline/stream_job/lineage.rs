//! What each commit records of where its rows came from, in its `commitInfo` (read by
//! `kinesis-delta history`): the batch, each plan's range and counts, the process, and a
//! fingerprint of the schema and SQL that cleaned the rows. The checkpoint itself is the `txn`
//! actions plus the plans; none of this is read back by the engine.

use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

use super::PlanPart;

/// A short fingerprint of a stream's schema file and cleaning SQL, as written: any edit to either
/// gives another (whitespace included).
pub fn sql_fingerprint(schema_sql: &str, sql: &str) -> String {
    let mut hash = Md5::new();
    hash.update(schema_sql.as_bytes());
    hash.update([0]);
    hash.update(sql.as_bytes());
    let digest = hash.finalize();
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// One batch's cleaning, for its `commitInfo`.
pub(super) struct Lineage<'a> {
    pub stream: &'a str,
    pub worker: &'a str,
    pub batch_id: i64,
    pub sql: &'a str,
    pub records_gone: bool,
}

impl Lineage<'_> {
    /// The `commitInfo` of a commit of `parts`, whose cleaned rows number `rows[i]` for part `i`.
    pub fn commit_info(&self, parts: &[PlanPart], rows: &[usize]) -> Map<String, Value> {
        let plans: Map<String, Value> = parts
            .iter()
            .zip(rows)
            .map(|(part, rows)| {
                let range = part.plan.range.as_ref();
                (
                    part.plan.shard.clone(),
                    json!({
                        "plan": part.plan.version,
                        "first": range.map(|r| r.first.as_str()),
                        "last": range.map(|r| r.last.as_str()),
                        "rows": rows,
                        "deadLetters": part.decoded.dead_letters.len(),
                    }),
                )
            })
            .collect();
        let total_rows: usize = rows.iter().sum();
        let dead_letters: usize = parts.iter().map(|p| p.decoded.dead_letters.len()).sum();
        let mut info = Map::new();
        info.insert(
            "kinesisDelta".to_owned(),
            json!({
                "stream": self.stream,
                "worker": self.worker,
                "batchId": self.batch_id,
                "sql": self.sql,
                "rows": total_rows,
                "deadLetters": dead_letters,
                "plans": Value::Object(plans),
                "recordsGone": self.records_gone,
            }),
        );
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_edit_of_the_schema_or_the_sql_changes_the_fingerprint() {
        let base = sql_fingerprint("CREATE TABLE raw (a INT)", "SELECT a FROM raw");
        assert_eq!(base.len(), 12);
        assert_eq!(
            base,
            sql_fingerprint("CREATE TABLE raw (a INT)", "SELECT a FROM raw")
        );
        for (schema, sql) in [
            ("CREATE TABLE raw (a BIGINT)", "SELECT a FROM raw"),
            ("CREATE TABLE raw (a INT)", "SELECT a  FROM raw"),
            // The boundary between the two files counts.
            ("CREATE TABLE raw (a INT)S", "ELECT a FROM raw"),
        ] {
            assert_ne!(sql_fingerprint(schema, sql), base, "{schema} / {sql}");
        }
    }
}
