//! Several plans in one Delta commit, each under its own transaction id: the commit step of the
//! shard-level protocol (`doc/DESIGN.md`), where each shard's plans are numbered 1, 2, 3, … under
//! the shard's id.
//!
//! In the table, a plan is committed only when the table records exactly the plan before it under
//! its id. A plan the table already records (another writer committed it) is dropped with its
//! rows, and the rest are committed: rows of a plan are never committed twice, and the plans of
//! other ids in the same batch are not held back by it. The dead-letter table records only the
//! plans that had dead letters, so there the numbers have gaps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTableError;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};

use super::delta::{ContendedRounds, built_on_a_stale_version};
use super::{DeltaSink, SinkError};

/// The transaction id of one shard's plans: the stream's id (`kinesis-delta/<pipeline>/<stream>`),
/// then the shard.
pub fn shard_app_id(stream_app_id: &str, shard: &str) -> String {
    format!("{stream_app_id}/{shard}")
}

/// The shard whose transaction id `id` is, among the shards of the stream `stream_app_id`.
pub fn shard_of<'a>(stream_app_id: &str, id: &'a str) -> Option<&'a str> {
    id.strip_prefix(stream_app_id)?.strip_prefix('/')
}

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

/// What a commit records in its `commitInfo`, besides delta-rs' own fields.
pub type CommitInfo = serde_json::Map<String, serde_json::Value>;

/// How a table numbers the plans of one transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// Every plan, in order: plan `k` follows exactly `k - 1` (the cleaned table).
    Consecutive,
    /// Some plans only (the dead-letter table holds the plans that had dead letters).
    Gaps,
}

/// What [`DeltaSink::commit_plans`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlansCommitted {
    /// The table version holding the committed plans (`None`: none was left to commit).
    pub version: Option<i64>,
    /// The transaction ids whose plans this commit holds.
    pub committed: Vec<String>,
    /// The transaction ids whose plans the table already recorded: not committed again.
    pub dropped: Vec<String>,
    /// Time spent writing Parquet files.
    pub write: Duration,
    /// Time spent committing to the log.
    pub commit: Duration,
    /// Times delta-rs committed again over other writers' commits of the same version.
    pub retries: u64,
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
        numbering: Numbering,
        info: CommitInfo,
    ) -> Result<PlansCommitted, SinkError> {
        self.commit_plans_with(schema, plans, numbering, &|_| info.clone())
            .await
    }

    /// [`Self::commit_plans`], with the commit's `commitInfo` made from the transaction ids of
    /// the plans it holds (those the table did not record yet), once they are known.
    pub async fn commit_plans_with(
        &mut self,
        schema: &SchemaRef,
        plans: &[PlanRows],
        numbering: Numbering,
        info: &(dyn Fn(&[&str]) -> CommitInfo + Sync),
    ) -> Result<PlansCommitted, SinkError> {
        self.ensure_table(schema).await?;
        let mut dropped: Vec<String> = Vec::new();
        let mut contended = ContendedRounds::default();
        let (mut write, mut commit) = (Duration::ZERO, Duration::ZERO);
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
                } else if numbering == Numbering::Consecutive && recorded < plan.version - 1 {
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
                    dropped,
                    write,
                    commit,
                    ..PlansCommitted::default()
                });
            }
            // On the snapshot the commit is built on: a column another writer added since is
            // NULL in these rows; one the SQL adds is added by this commit.
            let (target, adds_columns) = self.write_schema(schema)?;
            let started = Instant::now();
            let adds = self
                .write_files(
                    &target,
                    adds_columns,
                    kept.iter().flat_map(|p| p.rows.iter()),
                )
                .await?;
            write += started.elapsed();
            let started = Instant::now();
            let txns = kept
                .iter()
                .map(|p| Transaction::new(&p.app_id, p.version))
                .collect();
            let result = self
                .append(
                    txns,
                    &adds,
                    &info(&kept.iter().map(|p| p.app_id.as_str()).collect::<Vec<_>>()),
                    adds_columns.then_some(&target),
                )
                .await;
            commit += started.elapsed();
            match result {
                Ok(finalized) => {
                    let version = i64::try_from(finalized.version()).unwrap_or(i64::MAX);
                    let retries = finalized.metrics.num_retries + contended.retries;
                    self.metrics().commit_retried(retries);
                    self.metrics()
                        .committed(version, finalized.snapshot.log_data().num_files());
                    return Ok(PlansCommitted {
                        version: Some(version),
                        committed: kept.iter().map(|p| p.app_id.clone()).collect(),
                        dropped,
                        write,
                        commit,
                        retries,
                    });
                }
                // Another writer committed one of the same ids after the snapshot: look again
                // (the files just written stay unreferenced; vacuum deletes them).
                Err(DeltaTableError::Transaction {
                    source:
                        TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
                }) => self.metrics().already_committed(),
                // Written again against the new version, its plans checked on it.
                Err(e) if built_on_a_stale_version(&e) => {}
                Err(DeltaTableError::Transaction {
                    source: TransactionError::MaxCommitAttempts(attempts),
                }) if contended.pause(attempts).await => {}
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    /// The plan each of `app_ids` has committed, read from the table's newest version (0: none).
    pub async fn recorded(
        &mut self,
        app_ids: &[String],
    ) -> Result<BTreeMap<String, i64>, SinkError> {
        self.refresh().await?;
        self.loaded_recorded(app_ids).await
    }

    /// The plan each of `app_ids` has committed in the version loaded last (0: none), without
    /// loading a newer one.
    pub async fn loaded_recorded(
        &self,
        app_ids: &[String],
    ) -> Result<BTreeMap<String, i64>, SinkError> {
        let mut recorded = BTreeMap::new();
        for app_id in app_ids {
            let version = if self.exists() {
                self.snapshot_txn(app_id).await?.unwrap_or(0)
            } else {
                0
            };
            recorded.insert(app_id.clone(), version);
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    use super::{Numbering, PlanRows};
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
        crate::sink::local_table_uri(dir.path(), "t")
    }

    /// Every value in the table, sorted.
    /// One writer's SQL adds a column while another still runs the old SQL: the column joins the
    /// table with the first's plan, the second's rows have it NULL (written against the schema of
    /// the version its commit is built on, not the one it last wrote), and a compaction of old and
    /// new files keeps every value.
    #[tokio::test]
    async fn a_column_one_writer_adds_is_null_in_the_other_writers_rows_and_survives_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let uri = table_uri(&dir);
        let mut old = DeltaSink::open(&uri, "unused").await.unwrap();
        for (version, value) in [(1, 1), (2, 2)] {
            old.commit_plans(
                &schema(),
                &[plan("a", version, &[value])],
                Numbering::Consecutive,
                Default::default(),
            )
            .await
            .unwrap();
        }
        let wider = Arc::new(Schema::new(vec![
            Field::new("ind", DataType::Int64, false),
            Field::new("extra", DataType::Int64, true),
        ]));
        let rows = RecordBatch::try_new(
            Arc::clone(&wider),
            vec![
                Arc::new(Int64Array::from(vec![3])),
                Arc::new(Int64Array::from(vec![30])),
            ],
        )
        .unwrap();
        let mut new = DeltaSink::open(&uri, "unused").await.unwrap();
        new.commit_plans(
            &wider,
            &[PlanRows {
                app_id: "kinesis-delta/p/s/b".into(),
                version: 1,
                rows: vec![rows],
            }],
            Numbering::Consecutive,
            Default::default(),
        )
        .await
        .unwrap();
        old.commit_plans(
            &schema(),
            &[plan("a", 3, &[4])],
            Numbering::Consecutive,
            Default::default(),
        )
        .await
        .unwrap();
        let extra = |uri: String| async move {
            let tables = crate::query::TableSet::open_tables(
                &[("t".to_owned(), uri)],
                &[],
                &Default::default(),
            )
            .await
            .unwrap();
            let result = tables
                .sql("SELECT ind, coalesce(extra, -1) FROM t ORDER BY ind")
                .await
                .unwrap();
            result
                .batches
                .iter()
                .flat_map(|b| {
                    let ind = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    let extra = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                    ind.values()
                        .iter()
                        .zip(extra.values().iter())
                        .map(|(i, e)| (*i, *e))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let expected = vec![(1, -1), (2, -1), (3, 30), (4, -1)];
        assert_eq!(extra(uri.clone()).await, expected);
        let compacted = old.compact(1 << 30, 2).await.unwrap();
        assert!(compacted.is_some(), "the four small files are compacted");
        assert_eq!(extra(uri).await, expected, "the same rows after compaction");
    }

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
                Numbering::Consecutive,
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(first.committed.len(), 2);
        // Another writer commits a's plan 2 first; this batch holds a2 and b2.
        let mut other = DeltaSink::open(&uri, "unused").await.unwrap();
        other
            .commit_plans(
                &schema(),
                &[plan("a", 2, &[3])],
                Numbering::Consecutive,
                Default::default(),
            )
            .await
            .unwrap();
        let second = sink
            .commit_plans(
                &schema(),
                &[plan("a", 2, &[3]), plan("b", 2, &[4])],
                Numbering::Consecutive,
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(second.committed, vec!["kinesis-delta/p/s/b".to_owned()]);
        assert_eq!(second.dropped, vec!["kinesis-delta/p/s/a".to_owned()]);
        assert_eq!(values(&uri).await, vec![1, 2, 3, 4], "a2's rows once");
        // Nothing left: nothing committed.
        let again = sink
            .commit_plans(
                &schema(),
                &[plan("b", 2, &[4])],
                Numbering::Consecutive,
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(again.version, None);
        assert!(again.committed.is_empty());
        assert_eq!(again.dropped, vec!["kinesis-delta/p/s/b".to_owned()]);
    }

    #[tokio::test]
    async fn a_plan_whose_predecessor_is_not_recorded_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uri = table_uri(&dir);
        let mut sink = DeltaSink::open(&uri, "unused").await.unwrap();
        let refused = sink
            .commit_plans(
                &schema(),
                &[plan("a", 2, &[1])],
                Numbering::Consecutive,
                Default::default(),
            )
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
            .commit_plans(
                &schema(),
                &[plan("setup", 1, &[0])],
                Numbering::Consecutive,
                Default::default(),
            )
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
                x.commit_plans(&schema, &xs, Numbering::Consecutive, Default::default()),
                y.commit_plans(&schema, &ys, Numbering::Consecutive, Default::default()),
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

    /// Nested types as the SQL makes them (a list in a struct, a list of structs, a map) read back
    /// from Delta with other names for list items: a restarted engine, and its next plan, find
    /// the same types, not a type change.
    #[tokio::test]
    async fn nested_lists_keep_their_type_through_the_table() {
        let rows = datafusion::prelude::SessionContext::new()
            .sql(
                "SELECT CAST(1 AS BIGINT) AS ind, named_struct('tags', make_array('a', 'b')) AS s, \
                 make_array(named_struct('x', 1)) AS l, map(['k'], [1]) AS m",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let schema = rows[0].schema();
        let dir = tempfile::tempdir().unwrap();
        let uri = table_uri(&dir);
        let plan = |version| PlanRows {
            app_id: "kinesis-delta/p/s/a".into(),
            version,
            rows: rows.clone(),
        };
        let mut first = DeltaSink::open(&uri, "unused").await.unwrap();
        first
            .commit_plans(
                &schema,
                &[plan(1)],
                Numbering::Consecutive,
                Default::default(),
            )
            .await
            .unwrap();
        let mut restarted = DeltaSink::open(&uri, "unused").await.unwrap();
        restarted.check_schema(&schema).unwrap();
        let second = restarted
            .commit_plans(
                &schema,
                &[plan(2)],
                Numbering::Consecutive,
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(second.committed, ["kinesis-delta/p/s/a"]);
        let tables =
            crate::query::TableSet::open_tables(&[("t".to_owned(), uri)], &[], &Default::default())
                .await
                .unwrap();
        let read = tables
            .sql("SELECT count(*) FROM t WHERE s.tags[2] = 'b' AND get_field(l[1], 'x') = 1")
            .await
            .unwrap();
        let counted = read.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(counted, 2, "both plans' nested values");
    }

    /// A map's values get Delta's types as a column's do: an unsigned value is stored as LONG,
    /// and one too large for it is refused, never wrapped.
    #[tokio::test]
    async fn a_maps_values_are_stored_as_a_columns_are() {
        let rows = |sql: &'static str| async move {
            datafusion::prelude::SessionContext::new()
                .sql(sql)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap()
        };
        let commit = |rows: Vec<RecordBatch>, name: &'static str| {
            let dir = tempfile::tempdir().unwrap();
            async move {
                let uri = crate::sink::local_table_uri(dir.path(), name);
                let mut table = DeltaSink::open(&uri, "unused").await.unwrap();
                let plan = PlanRows {
                    app_id: "kinesis-delta/p/s/a".into(),
                    version: 1,
                    rows: rows.clone(),
                };
                let done = table
                    .commit_plans(
                        &rows[0].schema(),
                        &[plan],
                        Numbering::Consecutive,
                        Default::default(),
                    )
                    .await
                    .map(|_| ());
                (done, uri, dir)
            }
        };
        let too_large =
            rows("SELECT map(['big'], [arrow_cast(18446744073709551615, 'UInt64')]) AS m").await;
        let (refused, _, _) = commit(too_large, "large").await;
        let refused = refused.unwrap_err().to_string();
        assert!(
            refused.contains("Can't cast value 18446744073709551615"),
            "{refused}"
        );
        let fits = rows("SELECT map(['small'], [arrow_cast(7, 'UInt64')]) AS m").await;
        let (done, uri, _dir) = commit(fits, "fits").await;
        done.unwrap();
        let tables =
            crate::query::TableSet::open_tables(&[("t".to_owned(), uri)], &[], &Default::default())
                .await
                .unwrap();
        let read = tables
            .sql("SELECT arrow_typeof(m['small']), m['small'] = 7 FROM t")
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&read.batches)
            .unwrap()
            .to_string();
        assert!(text.contains("Int64") && text.contains("true"), "{text}");
    }
}
