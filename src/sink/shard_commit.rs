//! Several plans in one Delta commit, each under its own transaction id: the commit step of the
//! shard-level protocol (`doc/proposals/shard-checkpoints.md`, "One batch", step 5), where each
//! shard's plans are numbered 1, 2, 3, … under the shard's id. Not yet used by the engine.
//!
//! A plan is committed only when the table records exactly the plan before it under its id. A
//! plan the table already records (another writer committed it) is dropped with its rows, and the
//! rest are committed: rows of a plan are never committed twice, and the plans of other ids in the
//! same batch are not held back by it.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTableError;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};

use super::delta::ContendedRounds;
use super::{DeltaSink, SinkError};

/// One plan's part of a commit.
#[derive(Debug, Clone)]
pub struct PlanRows {
    /// Its transaction id (the shard's).
    pub app_id: String,
    /// Its number under that id.
    pub version: i64,
    /// Its cleaned rows.
    pub rows: Vec<RecordBatch>,
}

/// What [`DeltaSink::commit_plans`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlansCommitted {
    /// The table version holding the committed plans (`None`: none was left to commit).
    pub version: Option<i64>,
    /// The transaction ids whose plans this commit holds.
    pub committed: Vec<String>,
    /// The transaction ids whose plans the table already recorded: not committed again.
    pub dropped: Vec<String>,
}

impl DeltaSink {
    /// Commits `plans` in one commit with one `txn` each, creating the table from `schema` if
    /// needed, after dropping the plans the table already records (checked on the snapshot the
    /// commit is built on, and again after a conflict with another writer's commit of one of the
    /// same ids).
    pub async fn commit_plans(
        &mut self,
        schema: &SchemaRef,
        plans: &[PlanRows],
        info: serde_json::Map<String, serde_json::Value>,
    ) -> Result<PlansCommitted, SinkError> {
        let table_schema = self.ensure_table(schema).await?;
        let mut dropped: Vec<String> = Vec::new();
        let mut contended = ContendedRounds::default();
        loop {
            self.table
                .update_state()
                .await
                .map_err(|source| self.error(source))?;
            let mut kept = Vec::with_capacity(plans.len());
            for plan in plans {
                if dropped.contains(&plan.app_id) {
                    continue;
                }
                let recorded = self.snapshot_txn(&plan.app_id).await?.unwrap_or(0);
                if recorded >= plan.version {
                    dropped.push(plan.app_id.clone());
                } else if recorded < plan.version - 1 {
                    return Err(SinkError::PlanOutOfOrder {
                        table: self.uri.clone(),
                        app_id: plan.app_id.clone(),
                        version: plan.version,
                        recorded,
                        previous: plan.version - 1,
                    });
                } else {
                    kept.push(plan);
                }
            }
            if kept.is_empty() {
                return Ok(PlansCommitted {
                    version: None,
                    committed: Vec::new(),
                    dropped,
                });
            }
            let adds = self
                .write_files(&table_schema, kept.iter().flat_map(|p| p.rows.iter()))
                .await?;
            let txns = kept
                .iter()
                .map(|p| Transaction::new(&p.app_id, p.version))
                .collect();
            let result = self.append(txns, &adds, &info).await;
            match result {
                Ok(finalized) => {
                    let version = i64::try_from(finalized.version()).unwrap_or(i64::MAX);
                    self.metrics()
                        .commit_retried(finalized.metrics.num_retries + contended.retries);
                    return Ok(PlansCommitted {
                        version: Some(version),
                        committed: kept.iter().map(|p| p.app_id.clone()).collect(),
                        dropped,
                    });
                }
                // Another writer committed one of the same ids after the snapshot: look again
                // (the files just written stay unreferenced; vacuum deletes them).
                Err(DeltaTableError::Transaction {
                    source:
                        TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
                }) => self.metrics().already_committed(),
                Err(DeltaTableError::Transaction {
                    source: TransactionError::MaxCommitAttempts(attempts),
                }) if contended.pause(attempts).await => {}
                Err(e) => return Err(self.error(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    use super::{PlanRows, PlansCommitted};
    use crate::sink::{DeltaSink, SinkError};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("ind", DataType::Int64, false)]))
    }

    fn plan(shard: &str, version: i64, values: &[i64]) -> PlanRows {
        let rows =
            RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values.to_vec()))])
                .unwrap();
        PlanRows {
            app_id: format!("kinesis-delta/p/s/{shard}"),
            version,
            rows: vec![rows],
        }
    }

    fn table_uri(dir: &tempfile::TempDir) -> String {
        url::Url::from_directory_path(dir.path().join("t"))
            .unwrap()
            .to_string()
            .trim_end_matches('/')
            .to_owned()
    }

    /// Every value in the table, sorted.
    async fn values(uri: &str) -> Vec<i64> {
        let tables = crate::query::TableSet::open_tables(
            &[("t".to_owned(), uri.to_owned())],
            &[],
            &Default::default(),
        )
        .await
        .unwrap();
        let result = tables.sql("SELECT ind FROM t ORDER BY ind").await.unwrap();
        result
            .batches
            .iter()
            .flat_map(|b| {
                let column = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                column.values().to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn plans_of_several_shards_commit_together_and_a_recorded_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let uri = table_uri(&dir);
        let mut sink = DeltaSink::open(&uri, "unused").await.unwrap();
        let first = sink
            .commit_plans(
                &schema(),
                &[plan("a", 1, &[1]), plan("b", 1, &[2])],
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(first.committed.len(), 2);
        // Another writer commits a's plan 2 first; this batch holds a2 and b2.
        let mut other = DeltaSink::open(&uri, "unused").await.unwrap();
        other
            .commit_plans(&schema(), &[plan("a", 2, &[3])], Default::default())
            .await
            .unwrap();
        let second = sink
            .commit_plans(
                &schema(),
                &[plan("a", 2, &[3]), plan("b", 2, &[4])],
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(second.committed, vec!["kinesis-delta/p/s/b".to_owned()]);
        assert_eq!(second.dropped, vec!["kinesis-delta/p/s/a".to_owned()]);
        assert_eq!(values(&uri).await, vec![1, 2, 3, 4], "a2's rows once");
        // Nothing left: nothing committed.
        let again = sink
            .commit_plans(&schema(), &[plan("b", 2, &[4])], Default::default())
            .await
            .unwrap();
        assert_eq!(
            again,
            PlansCommitted {
                version: None,
                committed: vec![],
                dropped: vec!["kinesis-delta/p/s/b".to_owned()]
            }
        );
    }

    #[tokio::test]
    async fn a_plan_whose_predecessor_is_not_recorded_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uri = table_uri(&dir);
        let mut sink = DeltaSink::open(&uri, "unused").await.unwrap();
        let refused = sink
            .commit_plans(&schema(), &[plan("a", 2, &[1])], Default::default())
            .await;
        assert!(
            matches!(refused, Err(SinkError::PlanOutOfOrder { recorded: 0, .. })),
            "{refused:?}"
        );
    }

    /// Two writers commit overlapping batches at the same moment ({a, b} and {a, c}, rounds of
    /// plans 1, 2, 3, …): a's plans land once each, whoever wins, and b's and c's all land.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_racing_on_a_shared_plan_commit_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let uri = table_uri(&dir);
        let mut setup = DeltaSink::open(&uri, "unused").await.unwrap();
        setup
            .commit_plans(&schema(), &[plan("setup", 1, &[0])], Default::default())
            .await
            .unwrap();
        let mut x = DeltaSink::open(&uri, "unused").await.unwrap();
        let mut y = DeltaSink::open(&uri, "unused").await.unwrap();
        for k in 1..=15 {
            let a = plan("a", k, &[k * 10]);
            let (schema, xs, ys) = (
                schema(),
                [a.clone(), plan("b", k, &[k * 10 + 1])],
                [a, plan("c", k, &[k * 10 + 2])],
            );
            let (rx, ry) = tokio::join!(
                x.commit_plans(&schema, &xs, Default::default()),
                y.commit_plans(&schema, &ys, Default::default()),
            );
            let (rx, ry) = (rx.unwrap(), ry.unwrap());
            let a_id = "kinesis-delta/p/s/a".to_owned();
            assert_eq!(
                usize::from(rx.committed.contains(&a_id))
                    + usize::from(ry.committed.contains(&a_id)),
                1,
                "plan {k} of a: {rx:?} {ry:?}"
            );
        }
        let mut expected: Vec<i64> = (1..=15)
            .flat_map(|k| [k * 10, k * 10 + 1, k * 10 + 2])
            .collect();
        expected.push(0);
        expected.sort_unstable();
        assert_eq!(values(&uri).await, expected);
    }
}
