//! The engine's error: which step failed, whose fault it is, and whether a restart can help.

use crate::config::ConfigError;
use crate::decode::SchemaError;
use crate::lease::LeaseError;
use crate::sink::SinkError;
use crate::source::SourceError;
use crate::transform::TransformError;

/// A pending plan whose records the raw schema now splits differently (see
/// [`EngineError::SplitChanged`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "stream `{stream}`: {plan} was planned and may be partly committed with {schema_path} at sha256 {recorded_sha256}, which made {recorded_dead_letters} of its records dead letters; the file now (sha256 {current_sha256}) makes {current_dead_letters}. Finishing the batch now could put a record in neither table or in both. {advice}"
)]
pub struct SplitChange {
    /// The stream.
    pub stream: String,
    /// The pending plan (`plan 5 of shard …`, or `batch 7` of an earlier version).
    pub plan: String,
    /// The raw schema file.
    pub schema_path: String,
    /// Its fingerprint when the batch was planned.
    pub recorded_sha256: String,
    /// Its fingerprint now.
    pub current_sha256: String,
    /// Dead letters then.
    pub recorded_dead_letters: usize,
    /// Dead letters now.
    pub current_dead_letters: usize,
    /// What to do.
    pub advice: String,
}

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's: config, schema, SQL, missing stream. Fix, then restart.
    User,
    /// An outside service (Kinesis, storage) failed. Restarting later resumes safely.
    External,
    /// A bug in kinesis-delta. Please report it.
    Internal,
}

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A raw schema file is not valid.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The cleaning SQL failed.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// Kinesis failed in a way retrying cannot fix.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Delta or the object store failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The lease table could not be opened or written.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The committed checkpoint points at a plan (or an earlier version's batch manifest) that
    /// is missing.
    #[error(
        "table {table} records {what} but its file is missing from {table}/_kinesis_delta: the checkpoint cannot be read; restore the folder, or write to a new table"
    )]
    MissingManifest {
        /// The table.
        table: String,
        /// The plan or batch (`plan 5 of shard …`, `batch 7`).
        what: String,
    },
    /// The stream is not the one the checkpoints were taken on.
    #[error(
        "stream `{stream}` is not the stream the table's checkpoint was taken on (created at {current} ms, the checkpoint's at {recorded} ms, or its checkpointed records are not there): the stream was recreated, the records aged out of retention, or the Kinesis server lost its data, so its sequence numbers mean nothing to the checkpoint. Run with `--on-lost-stream restart` (or engine.on_lost_stream = \"restart\") to read the new stream from its earliest record (records of the old stream that were never committed are gone), or write to a new table"
    )]
    LostStream {
        /// The stream.
        stream: String,
        /// Its creation time in the checkpoint (ms since the epoch).
        recorded: i64,
        /// Its creation time now.
        current: i64,
    },
    /// A pending plan's records would be split differently between the table and the
    /// dead-letter table than when it was planned (the raw schema changed meanwhile).
    #[error(transparent)]
    SplitChanged(Box<SplitChange>),
    /// A bug.
    #[error("internal error (a bug in kinesis-delta, please report it): {0}")]
    Internal(String),
}

impl EngineError {
    /// Whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_)
            | Self::Schema(_)
            | Self::Transform(_)
            | Self::MissingManifest { .. }
            | Self::SplitChanged(_)
            | Self::LostStream { .. } => ErrorKind::User,
            Self::Source(
                SourceError::StreamNotFound { .. }
                | SourceError::NoCredentials { .. }
                | SourceError::RecordsGone { .. },
            ) => ErrorKind::User,
            Self::Sink(SinkError::DamagedManifest { .. }) => ErrorKind::User,
            Self::Source(SourceError::ReaderStopped { .. }) => ErrorKind::Internal,
            Self::Source(_) | Self::Sink(_) | Self::Lease(_) => ErrorKind::External,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether running again unchanged may succeed.
    pub fn retryable(&self) -> bool {
        self.kind() == ErrorKind::External
    }
}
