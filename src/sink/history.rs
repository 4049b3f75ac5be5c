//! A table's history, version by version, from the `commitInfo` of its commit files: which batch
//! each version holds, how many rows and dead letters, and the fingerprint of the schema and SQL
//! that cleaned them (`kinesis-delta history`).

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;
use serde_json::Value;

use super::{DeltaSink, EngineCommit, SinkError};

/// How many versions back [`DeltaSink::records_of_plan`] reads commit files.
pub const PLAN_SEARCH_VERSIONS: usize = 1000;

/// One version of a table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableVersion {
    /// The Delta version.
    pub version: i64,
    /// When it was committed.
    pub timestamp: Option<DateTime<Utc>>,
    /// The Delta operation (`CREATE TABLE`, `WRITE`, `OPTIMIZE`, …).
    pub operation: Option<String>,
    /// The engine's batch number (per run), for the engine's commits.
    pub batch_id: Option<i64>,
    /// Rows the commit added (the engine's commits).
    pub rows: Option<u64>,
    /// Records of the batch that became dead letters.
    pub dead_letters: Option<u64>,
    /// The fingerprint of the schema and SQL that cleaned the rows.
    pub sql: Option<String>,
    /// The process that committed it.
    pub worker: Option<String>,
    /// The shards whose plans it holds.
    pub shards: Vec<String>,
}

impl DeltaSink {
    /// The newest `limit` versions of the table whose commit files are still in its log (the log
    /// keeps them for `delta.logRetentionDuration`, 30 days by default), newest first: the list
    /// stops at the first version whose file is gone.
    pub async fn history(&self, limit: usize) -> Result<Vec<TableVersion>, SinkError> {
        let Some(newest) = self.version() else {
            return Ok(Vec::new());
        };
        let mut history = Vec::with_capacity(limit.min(1024));
        // Counting down from the loaded version: no listing of a log that may hold many files.
        for version in (0..=newest).rev().take(limit) {
            // Older commit files were cleaned up after the log retention.
            let Some(info) = self.commit_info_of(version).await? else {
                break;
            };
            history.push(describe(version, info.as_ref()));
        }
        Ok(history)
    }

    /// The Kinesis records the table's commit of plan `plan` of `shard` of `stream` held, as its
    /// `commitInfo` says. `None` when that cannot be told: the commit is not among the last
    /// [`PLAN_SEARCH_VERSIONS`] of the loaded version (or its file is gone), or it does not say
    /// (made by an earlier version).
    pub async fn records_of_plan(
        &self,
        stream: &str,
        shard: &str,
        plan: i64,
    ) -> Result<Option<u64>, SinkError> {
        let Some(newest) = self.version() else {
            return Ok(None);
        };
        for version in (0..=newest).rev().take(PLAN_SEARCH_VERSIONS) {
            let Some(info) = self.commit_info_of(version).await? else {
                break;
            };
            // A rebuild's commit lists plans it did not commit; another stream's shards have the
            // same ids.
            let Some(engine) = info
                .as_ref()
                .and_then(EngineCommit::of)
                .filter(|e| e.rebuild.is_none() && e.stream.as_deref() == Some(stream))
            else {
                continue;
            };
            match engine.plans.get(shard) {
                Some(found) if found.plan == plan => return Ok(found.records),
                // Each shard's plans are committed in order: it is further back than any commit
                // of this one.
                Some(found) if found.plan < plan => break,
                _ => {}
            }
        }
        Ok(None)
    }

    /// The `commitInfo` of version `version` (`Some(None)`: a commit without one), or `None`
    /// when its commit file is not there (not committed, or cleaned up).
    pub(super) async fn commit_info_of(
        &self,
        version: i64,
    ) -> Result<Option<Option<Value>>, SinkError> {
        let path = Path::from(format!("_delta_log/{version:020}.json"));
        let bytes = match self.object_store().get(&path).await {
            Ok(found) => found.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => {
                return Err(SinkError::Store {
                    path: format!("{}/{path}", self.uri),
                    source,
                });
            }
        };
        Ok(Some(
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find_map(|action| action.get("commitInfo").cloned()),
        ))
    }
}

/// A version as its `commitInfo` tells it (an engine commit's fields are [`EngineCommit`]'s).
fn describe(version: i64, info: Option<&Value>) -> TableVersion {
    let mut described = TableVersion {
        version,
        ..TableVersion::default()
    };
    let Some(info) = info else {
        return described;
    };
    described.timestamp = info
        .get("timestamp")
        .and_then(Value::as_i64)
        .and_then(DateTime::from_timestamp_millis);
    described.operation = info
        .get("operation")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(engine) = EngineCommit::of(info) {
        if engine.rebuild.is_some() {
            described.operation = Some("REBUILD".to_owned());
        }
        described.batch_id = engine.batch_id;
        described.rows = engine.rows;
        described.dead_letters = engine.dead_letters;
        described.sql = engine.sql;
        described.worker = engine.worker;
        described.shards = engine.plans.into_keys().collect();
    }
    described
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_commit_is_described_from_its_commit_info() {
        let info = serde_json::json!({
            "timestamp": 1_700_000_000_000_i64,
            "operation": "WRITE",
            "kinesisDelta": {"batchId": 7, "rows": 40, "deadLetters": 2, "sql": "0123456789ab",
                "worker": "w", "plans": {"shardId-000000000000": {"plan": 3},
                "shardId-000000000001": {"plan": 1}}}
        });
        let version = describe(3, Some(&info));
        assert_eq!(version.version, 3);
        assert_eq!(version.operation.as_deref(), Some("WRITE"));
        assert_eq!(
            (version.batch_id, version.rows, version.dead_letters),
            (Some(7), Some(40), Some(2))
        );
        assert_eq!(version.sql.as_deref(), Some("0123456789ab"));
        assert_eq!(version.shards.len(), 2);
        let other = describe(4, Some(&serde_json::json!({"operation": "OPTIMIZE"})));
        assert_eq!(other.batch_id, None);
        assert!(describe(5, None).operation.is_none());
    }

    /// A plan's records are read from the commit of its stream that recorded it, counting down
    /// from the newest version; a rebuild's commit, which lists plans it did not commit, is passed
    /// over; a plan whose commit is not found is not told.
    #[tokio::test]
    async fn the_records_a_plan_held_are_read_from_its_commit() {
        use std::sync::Arc;

        use arrow::array::{Int64Array, RecordBatch};
        use arrow::datatypes::{DataType, Field, Schema};

        use crate::sink::{Numbering, PlanCommit, PlanRows, RebuildCommit};

        let dir = tempfile::tempdir().unwrap();
        let uri = crate::sink::local_table_uri(dir.path(), "t");
        let mut table = DeltaSink::open(&uri, "unused").await.unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("ind", DataType::Int64, false)]));
        let (a, b) = ("shardId-a", "shardId-b");
        let listing = |shard: &str, plan: i64, records: Option<u64>| {
            let plan = PlanCommit {
                plan,
                records,
                ..PlanCommit::default()
            };
            std::collections::BTreeMap::from([(shard.to_owned(), plan)])
        };
        // Plan 1 of `a` with two rows, plan 2 with none, then a commit labelled a rebuild.
        for (plan, values, rebuild) in [
            (1, vec![1, 2], false),
            (2, vec![], false),
            (3, vec![3], true),
        ] {
            let rows = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(values))],
            )
            .unwrap();
            let commit = if rebuild {
                EngineCommit {
                    stream: Some("s".into()),
                    rebuild: Some(RebuildCommit::default()),
                    plans: listing(a, 2, None),
                    ..EngineCommit::default()
                }
            } else {
                EngineCommit {
                    stream: Some("s".into()),
                    plans: listing(a, plan, Some(rows.num_rows() as u64)),
                    ..EngineCommit::default()
                }
            };
            let id = if rebuild { b } else { a };
            let plans = [PlanRows {
                app_id: format!("kinesis-delta/p/s/{id}"),
                version: if rebuild { 1 } else { plan },
                rows: vec![rows],
            }];
            table
                .commit_plans(
                    &schema,
                    &plans,
                    Numbering::Consecutive,
                    commit.commit_info(),
                )
                .await
                .unwrap();
        }
        table.load_newest().await.unwrap();
        let records_of = |shard, plan| table.records_of_plan("s", shard, plan);
        assert_eq!(records_of(a, 2).await.unwrap(), Some(0));
        assert_eq!(records_of(a, 1).await.unwrap(), Some(2));
        assert_eq!(records_of(a, 3).await.unwrap(), None);
        assert_eq!(records_of(b, 1).await.unwrap(), None);
        // Another stream's shard of the same id is not this one.
        let other = table.records_of_plan("other", a, 2).await.unwrap();
        assert_eq!(other, None);
    }
}
