//! The Kinesis source: shard discovery, ordered per-shard reading and the records it yields.
//!
//! ```text
//!   ListShards ──► ShardMap (parents before children)
//!                      │ readable shards
//!                      ▼
//!   ShardConsumer, one task per shard: ShardReader::fetch (GetShardIterator / GetRecords,
//!                      │ ≤ N calls/s, backoff, iterator renewal; or SubscribeToShard events
//!                      │ with enhanced fan-out), waits on the MemoryBudget
//!                      │ KinesisRecord … (a small buffer per shard)
//!                      ▼
//!   StreamSource::collect_batch ──► the records of one micro-batch + the range read per shard
//! ```

mod backoff;
mod budget;
mod client;
mod collect;
mod consumer;
mod error;
mod fan_out;
mod reader;
mod replay;
mod shards;
mod stream;

pub use backoff::Backoff;
pub use budget::{BudgetLease, DEFAULT_MEMORY_BUDGET, MemoryBudget};
pub use client::{KinesisClient, connect, connect_checked, connect_dynamodb};
pub use error::{
    ErrorClass, SourceError, classify, summary as error_summary,
    summary_with_remedy as error_summary_with_remedy,
};
pub use fan_out::FanOutConsumer;
pub use reader::{FetchOutcome, ShardReader, StartPosition};
pub use replay::{CheckpointState, ReplayRules, Replayed};
pub use shards::{ShardInfo, list_shards, readable_shards};
pub use stream::{BatchLimits, CollectedBatch, ShardPosition, ShardRange, StreamSource};

use std::sync::Arc;

use bytes::Bytes;

use crate::sequence::SequenceNumber;

/// One record as read from a shard.
#[derive(Debug, Clone)]
pub struct KinesisRecord {
    /// The shard it was read from.
    pub shard_id: Arc<str>,
    /// Its sequence number within the shard.
    pub sequence_number: SequenceNumber,
    /// The partition key it was put with.
    pub partition_key: String,
    /// When Kinesis accepted it, in milliseconds since the epoch.
    pub approximate_arrival_ms: Option<i64>,
    /// The record's bytes.
    pub data: Bytes,
    /// For a user record taken out of a KPL aggregate: its index in the aggregate (the Kinesis
    /// record is the aggregate; `None` for a plain record).
    pub sub_sequence: Option<u64>,
}
