//! The Delta sink: one table per stream (plus its dead-letter table), where every micro-batch is
//! one commit holding the batch's data files and one transaction id per shard it read, each
//! shard's range in a write-ahead plan (`shard_plans`, `shard_commit`). `manifest` keeps the
//! stream-level checkpoints of earlier versions, read once to upgrade. The protocol is in
//! `doc/DESIGN.md`.

mod commit_info;
mod delta;
mod evolve;
mod history;
mod maintenance;
mod manifest;
mod replace;
mod schema;
mod shard_commit;
mod shard_plans;

pub use commit_info::{EngineCommit, PlanCommit, RebuildCommit};
pub use delta::{CommitOutcome, DeltaSink};
pub use history::TableVersion;
pub use maintenance::{Compaction, TableFiles};
pub use manifest::{BatchManifest, BatchSplit, Fence, ManifestLog, RebuildMark, TipMarker};
pub use replace::Replacement;
pub use schema::delta_compatible;
pub use shard_commit::{CommitInfo, Numbering, PlanRows, PlansCommitted, shard_app_id, shard_of};
pub use shard_plans::{KEEP_COMMITTED, PlanOutcome, ShardPlan, ShardPlanLog, ShardTip};

/// A Delta or object-store failure. Outside the user's hands unless the message says otherwise;
/// the engine stops without advancing any checkpoint, and a restart resumes safely.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// delta-rs failed (storage, log, schema).
    #[error("Delta table {table}: {source}")]
    Delta {
        /// The table's URL.
        table: String,
        /// delta-rs's error.
        source: deltalake::DeltaTableError,
    },
    /// The object store holding the manifests failed.
    #[error("batch manifest {path}: {source}")]
    Store {
        /// The manifest's path.
        path: String,
        /// object_store's error.
        source: object_store::Error,
    },
    /// A manifest file could not be parsed: someone edited or truncated it.
    #[error(
        "batch manifest {path} is damaged ({message}); restore it or remove the table to start over"
    )]
    DamagedManifest {
        /// The manifest's path.
        path: String,
        /// serde's message.
        message: String,
    },
    /// The cleaning SQL changed the type of columns the table has: Delta cannot store that in
    /// place (new and dropped columns are fine: see `evolve`).
    #[error(
        "Delta table {table}: the cleaning SQL changed column types ({columns}), which a Delta table cannot store in place; nothing was written. Either keep the table's type (CAST the column back to it in the SQL); or, when the stream has kept a `raw_table` since its first batch, run `kinesis-delta rebuild <stream>` to derive the table again from it with the new SQL (one new table version; the engine goes on where it was); or write to a new table (`table = \"…_v2\"` in the config, with a new `dead_letter_table` and `raw_table` if you set them: the new tables start from the oldest records Kinesis still holds, and the old ones stay as they are)"
    )]
    SchemaTypeChanged {
        /// The table's URL.
        table: String,
        /// Each changed column, with its two types.
        columns: String,
    },
    /// The rows could not be converted to the table's types.
    #[error("Delta table {table}: cannot convert the cleaned rows: {source}")]
    Arrow {
        /// The table's URL.
        table: String,
        /// arrow's error.
        source: arrow::error::ArrowError,
    },
    /// A plan whose predecessor the table does not record (a bug: plans are committed in order).
    #[error(
        "Delta table {table}: plan {version} of {app_id} comes after {recorded}, not after {previous}; this is a bug, please report it"
    )]
    PlanOutOfOrder {
        /// The table's URL.
        table: String,
        /// The plan's transaction id.
        app_id: String,
        /// The plan's version.
        version: i64,
        /// The version the table records.
        recorded: i64,
        /// The version the plan comes after.
        previous: i64,
    },
}

/// The URL of the local table folder `name` under `dir`, without a trailing slash (unit tests).
#[cfg(test)]
pub(crate) fn local_table_uri(dir: &std::path::Path, name: &str) -> String {
    url::Url::from_directory_path(dir.join(name))
        .unwrap()
        .to_string()
        .trim_end_matches('/')
        .to_owned()
}
