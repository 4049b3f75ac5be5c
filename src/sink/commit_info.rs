//! What the engine records in a commit's `commitInfo`, under its own key `kinesisDelta`: the
//! batch, each plan with its range and counts, the process, and the fingerprint of the schema and
//! SQL that cleaned the rows. The engine, its upgrade path and `rebuild` write it; `history` reads
//! it. The checkpoint itself is the `txn` actions plus the plan files: none of this is read back
//! to decide what to commit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CommitInfo;

/// The key of the engine's own fields in a commit's `commitInfo`.
const ENGINE_KEY: &str = "kinesisDelta";

/// The engine's fields of one commit. Absent fields are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineCommit {
    /// The Kinesis stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The process that committed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The engine's batch number (per run); for a batch an earlier version left pending, that
    /// version's stream-level batch number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<i64>,
    /// The fingerprint of the schema and SQL that cleaned the rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Rows the commit added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Records of its plans that became dead letters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<u64>,
    /// Each shard's plan it holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plans: BTreeMap<String, PlanCommit>,
    /// Some records of its plans were gone (`on_lost_stream = "restart"`): it holds what remained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_gone: Option<bool>,
    /// A batch an earlier version (the stream-level protocol) left pending, finished on upgrade.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_on_upgrade: Option<bool>,
    /// A `rebuild` replaced the table's rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildCommit>,
}

/// One shard's plan in a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanCommit {
    /// Its number under the shard's transaction id.
    #[serde(default)]
    pub plan: i64,
    /// The sequence number of its first record (none: it took no record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    /// The sequence number of its last record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// The Kinesis records it committed: under `on_lost_stream = "restart"`, those of its range
    /// that remained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Its rows in this table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Its records that became dead letters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<u64>,
}

/// What a `rebuild` commit was derived from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildCommit {
    /// The table version it replaced.
    pub from_version: i64,
    /// The raw records it derived the rows from.
    pub records: u64,
}

impl EngineCommit {
    /// A `commitInfo` holding these fields under the engine's key.
    pub fn commit_info(&self) -> CommitInfo {
        let mut info = CommitInfo::new();
        // Strings, numbers and maps of them always serialize.
        let fields = serde_json::to_value(self).unwrap_or_default();
        info.insert(ENGINE_KEY.to_owned(), fields);
        info
    }

    /// The engine's fields of a commit's `commitInfo`; `None` for a commit of another writer (a
    /// compaction, delta-rs' own), or one whose fields do not read as the engine's.
    pub fn of(info: &Value) -> Option<Self> {
        serde_json::from_value(info.get(ENGINE_KEY)?.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the engine writes reads back the same, and the JSON keeps the keys `history` and
    /// earlier versions' commits use.
    #[test]
    fn engine_fields_round_trip_under_their_own_key() {
        let commit = EngineCommit {
            stream: Some("s".into()),
            batch_id: Some(7),
            rows: Some(40),
            dead_letters: Some(2),
            plans: BTreeMap::from([(
                "shardId-000000000000".into(),
                PlanCommit {
                    plan: 3,
                    first: Some("1".into()),
                    ..PlanCommit::default()
                },
            )]),
            records_gone: Some(false),
            ..EngineCommit::default()
        };
        let info = Value::Object(commit.commit_info());
        assert_eq!(
            info,
            serde_json::json!({"kinesisDelta": {"stream": "s", "batchId": 7, "rows": 40,
                "deadLetters": 2, "recordsGone": false,
                "plans": {"shardId-000000000000": {"plan": 3, "first": "1"}}}})
        );
        assert_eq!(EngineCommit::of(&info), Some(commit));
        assert_eq!(
            EngineCommit::of(&serde_json::json!({"operation": "OPTIMIZE"})),
            None
        );
    }
}
