//! What each commit records of where its rows came from, in its `commitInfo`
//! ([`EngineCommit`], read by `kinesis-delta history`): the batch, each plan's range and counts,
//! the process, and a fingerprint of the schema and SQL that cleaned the rows.

use md5::{Digest, Md5};

use arrow::array::RecordBatch;

use super::PlanPart;
use crate::sink::{CommitInfo, EngineCommit, PlanCommit};

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

/// One plan of a batch, for the `commitInfo` of the commits that hold it.
pub(super) struct PlanLineage<'a> {
    /// Its transaction id.
    pub app_id: String,
    pub part: &'a PlanPart,
    /// Its cleaned rows.
    pub rows: usize,
}

/// Which of a stream's tables a commit goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    /// The cleaned rows.
    Cleaned,
    /// The dead letters.
    DeadLetters,
    /// The records as read.
    Raw,
}

/// One batch's cleaning, for its `commitInfo`.
pub(super) struct Lineage<'a> {
    pub stream: &'a str,
    pub worker: &'a str,
    pub batch_id: i64,
    pub sql: &'a str,
    pub records_gone: bool,
    pub plans: &'a [PlanLineage<'a>],
}

impl Lineage<'_> {
    /// The `commitInfo` of a commit to `table` holding the plans of the transaction ids `kept`
    /// (the others were recorded already: their rows are not in it, nor in its counts).
    pub fn commit_info(&self, kept: &[&str], table: Table) -> CommitInfo {
        let committed: Vec<&PlanLineage<'_>> = self
            .plans
            .iter()
            .filter(|p| kept.contains(&p.app_id.as_str()))
            .collect();
        let rows_of = |p: &PlanLineage<'_>| match table {
            Table::Cleaned => p.rows,
            Table::DeadLetters => p.part.decoded.dead_letters.len(),
            Table::Raw => p.part.raw.as_ref().map_or(0, RecordBatch::num_rows),
        };
        let plans = committed
            .iter()
            .map(|p| {
                let range = p.part.plan.range.as_ref();
                let plan = PlanCommit {
                    plan: p.part.plan.version,
                    first: range.map(|r| r.first.as_str().to_owned()),
                    last: range.map(|r| r.last.as_str().to_owned()),
                    records: Some(p.part.records as u64),
                    rows: Some(rows_of(p) as u64),
                    dead_letters: Some(p.part.decoded.dead_letters.len() as u64),
                };
                (p.part.plan.shard.clone(), plan)
            })
            .collect();
        let rows: usize = committed.iter().map(|p| rows_of(p)).sum();
        let dead_letters: usize = committed
            .iter()
            .map(|p| p.part.decoded.dead_letters.len())
            .sum();
        EngineCommit {
            stream: Some(self.stream.to_owned()),
            worker: Some(self.worker.to_owned()),
            batch_id: Some(self.batch_id),
            sql: Some(self.sql.to_owned()),
            rows: Some(rows as u64),
            dead_letters: Some(dead_letters as u64),
            plans,
            records_gone: Some(self.records_gone),
            ..EngineCommit::default()
        }
        .commit_info()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::RecordBatch;
    use arrow::datatypes::Schema;

    use super::*;
    use crate::decode::DecodedBatch;
    use crate::sink::ShardPlan;

    fn part(shard: &str) -> PlanPart {
        PlanPart {
            plan: ShardPlan {
                shard: shard.to_owned(),
                version: 3,
                range: None,
                position: Default::default(),
                stream_created_ms: None,
                shard_start: None,
                split: None,
                planned_at: chrono::Utc::now(),
                worker: "w".into(),
            },
            decoded: DecodedBatch {
                rows: RecordBatch::new_empty(Arc::new(Schema::empty())),
                dead_letters: Vec::new(),
            },
            raw: None,
            records: 0,
        }
    }

    /// A plan the table recorded already (another writer committed it) is left out of the
    /// commit's counts and plans: `history` adds up to the table's rows.
    #[test]
    fn a_commit_counts_only_the_plans_it_holds() {
        let (a, b) = (part("shardId-a"), part("shardId-b"));
        let plans = [
            PlanLineage {
                app_id: "x/shardId-a".into(),
                part: &a,
                rows: 10,
            },
            PlanLineage {
                app_id: "x/shardId-b".into(),
                part: &b,
                rows: 5,
            },
        ];
        let lineage = Lineage {
            stream: "s",
            worker: "w",
            batch_id: 1,
            sql: "f",
            records_gone: false,
            plans: &plans,
        };
        let info = lineage.commit_info(&["x/shardId-b"], Table::Cleaned);
        let engine = &info["kinesisDelta"];
        assert_eq!(engine["rows"], 5);
        assert_eq!(
            engine["plans"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["shardId-b"]
        );
    }

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
