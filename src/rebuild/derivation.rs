//! The table's rows and dead letters derived from the raw table, plan by plan, as the engine made
//! them: each plan's records decoded in sequence order with its shard's hash key range, and the
//! SQL run once per plan. The rows go to new files of the table as they are made.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::array::RecordBatch;

use super::RebuildProgress;
use crate::config::StreamSpec;
use crate::decode::{RecordDecoder, dead_letter_batch};
use crate::pipeline::{EngineError, sql_fingerprint};
use crate::query::RecordTable;
use crate::query::records::{PlanCounts, PlanRecords};
use crate::sink::{CommitInfo, DeltaSink, EngineCommit, PlanCommit, RebuildCommit, Replacement};
use crate::transform::Cleaning;

/// About how many raw records are read at once.
const RECORDS_PER_READ: u64 = 50_000;

/// What has been derived so far.
pub(super) struct Derivation {
    stream: String,
    decoder: RecordDecoder,
    cleaning: Cleaning,
    /// The rebuilt rows, written to new files of the table.
    pub rows: Replacement,
    /// The dead letters, with their plans.
    pub dead_letters: Vec<RecordBatch>,
    /// The plan of each shard derived up to.
    derived: BTreeMap<String, i64>,
    /// Raw records derived.
    pub records: u64,
    /// The process running the rebuild.
    worker: String,
    sql: String,
}

impl Derivation {
    /// With the stream's current schema file and SQL; the rows go to new files of `table`.
    pub async fn new(
        spec: &StreamSpec,
        table: &DeltaSink,
        worker: &str,
    ) -> Result<Self, EngineError> {
        let (decoder, cleaning) = crate::pipeline::decoder_and_cleaning(spec).await?;
        let rows = table.replacement(&cleaning.output_schema()).await?;
        Ok(Self {
            stream: spec.stream.clone(),
            decoder,
            cleaning,
            rows,
            dead_letters: Vec::new(),
            derived: BTreeMap::new(),
            records: 0,
            worker: worker.to_owned(),
            sql: sql_fingerprint(&spec.schema_sql, &spec.sql),
        })
    }

    /// Derives the plans `recorded` (each shard's committed plan) holds beyond those derived
    /// already, from the raw table `raw` (`t`), whose rows per plan of each shard are `counts`.
    pub async fn extend(
        &mut self,
        raw: &RecordTable,
        counts: &PlanCounts,
        recorded: &BTreeMap<String, i64>,
        progress: &mut (dyn FnMut(RebuildProgress) + Send),
    ) -> Result<(), EngineError> {
        let in_table = |shard: &str, plan: i64| plan <= recorded.get(shard).copied().unwrap_or(0);
        let total: u64 = counts
            .iter()
            .flat_map(|(shard, plans)| plans.iter().filter(|(p, _)| in_table(shard, **p)))
            .map(|(_, n)| n)
            .sum();
        let mut told = Instant::now();
        for (shard, plans) in counts {
            let after = self.derived.get(shard).copied().unwrap_or(0);
            let wanted: Vec<(i64, u64)> = plans
                .iter()
                .filter(|(p, _)| **p > after && in_table(shard, **p))
                .map(|(p, n)| (*p, *n))
                .collect();
            for chunk in chunks(&wanted) {
                let (from, to) = (chunk[0].0, chunk[chunk.len() - 1].0);
                for plan in raw.plans(shard, from, to).await? {
                    self.derive(&plan).await?;
                }
                if told.elapsed().as_secs() >= 1 {
                    progress(RebuildProgress {
                        records: self.records,
                        total,
                    });
                    told = Instant::now();
                }
            }
        }
        for (shard, plan) in recorded {
            self.derived.insert(shard.clone(), *plan);
        }
        progress(RebuildProgress {
            records: self.records,
            total,
        });
        Ok(())
    }

    /// Decodes and cleans one plan's records as the engine did.
    async fn derive(&mut self, plan: &PlanRecords) -> Result<(), EngineError> {
        let decoded = self
            .decoder
            .decode_in_range(&plan.records, plan.range)
            .map_err(|e| EngineError::Internal(format!("decoding plan {}: {e}", plan.plan)))?;
        self.records += plan.records.len() as u64;
        if decoded.rows.num_rows() > 0 {
            for batch in self.cleaning.apply(decoded.rows).await? {
                self.rows
                    .write(&batch)
                    .await
                    .map_err(|e| EngineError::Internal(format!("writing rebuilt rows: {e}")))?;
            }
        }
        if !decoded.dead_letters.is_empty() {
            let batch = dead_letter_batch(&self.stream, &decoded.dead_letters, Some(plan.plan))
                .map_err(|e| EngineError::Internal(format!("dead letters: {e}")))?;
            self.dead_letters.push(batch);
        }
        Ok(())
    }

    /// The dead letters derived.
    pub fn dead_letter_count(&self) -> u64 {
        self.dead_letters.iter().map(|b| b.num_rows() as u64).sum()
    }

    /// The `commitInfo` of a rebuild commit of `rows` rows, built on version `from` (read by
    /// `kinesis-delta history`).
    pub fn commit_info(
        &self,
        recorded: &BTreeMap<String, i64>,
        from: i64,
        rows: u64,
    ) -> CommitInfo {
        let plans = recorded
            .iter()
            .map(|(shard, plan)| {
                let plan = PlanCommit {
                    plan: *plan,
                    ..PlanCommit::default()
                };
                (shard.clone(), plan)
            })
            .collect();
        EngineCommit {
            stream: Some(self.stream.clone()),
            worker: Some(self.worker.clone()),
            rebuild: Some(RebuildCommit {
                from_version: from,
                records: self.records,
            }),
            sql: Some(self.sql.clone()),
            rows: Some(rows),
            dead_letters: Some(self.dead_letter_count()),
            plans,
            ..EngineCommit::default()
        }
        .commit_info()
    }
}

/// Consecutive runs of `plans` holding about [`RECORDS_PER_READ`] records each.
fn chunks(plans: &[(i64, u64)]) -> Vec<&[(i64, u64)]> {
    let mut chunks = Vec::new();
    let (mut start, mut records) = (0, 0);
    for (i, (_, n)) in plans.iter().enumerate() {
        records += n;
        if records >= RECORDS_PER_READ || i + 1 == plans.len() {
            chunks.push(&plans[start..=i]);
            (start, records) = (i + 1, 0);
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_read_in_runs_of_about_fifty_thousand_records() {
        let plans = [(1, 30_000), (2, 30_000), (3, 10), (4, 60_000), (5, 5)];
        let runs: Vec<Vec<i64>> = chunks(&plans)
            .iter()
            .map(|c| c.iter().map(|(p, _)| *p).collect())
            .collect();
        assert_eq!(runs, vec![vec![1, 2], vec![3, 4], vec![5]]);
        assert!(chunks(&[]).is_empty());
    }
}
