//! kinesis-delta: land AWS Kinesis streams in Delta Lake tables, cleaned with SQL, exactly once.
//!
//! The data flow, one micro-batch at a time and per stream (see [`pipeline`]):
//!
//! ```text
//!  Kinesis shards ─► source ─► decode ─► transform ─► sink ─► Delta table (+ dead letters)
//!   (GetRecords)    records    Arrow     SQL file     one commit: data files + txn(batch id)
//! ```
//!
//! * [`source`]: shard discovery, ordered reading, retries; [`sequence`]: sequence numbers.
//! * [`decode`]: JSON records → Arrow against the schema the user declares in SQL.
//! * [`transform`]: the user's cleaning SQL, run by DataFusion.
//! * [`sink`]: Delta commits and the write-ahead batch manifests (the exactly-once protocol,
//!   `doc/DESIGN.md`).
//! * [`config`] and [`cli`]: the pipeline file and the flags that override it.
//! * [`streams`] and [`api`]: stream administration and the REST API in front of Kinesis.
//! * [`local`]: the embedded Kinesis-compatible server of local mode.
//! * [`telemetry`]: metrics and health checks for operators.
//! * [`lease`]: shard leases in DynamoDB, for engines that share a pipeline's shards.
//! * [`preview`] and [`rebuild`]: a stream's current SQL over a sample, and its table derived
//!   again from its raw table.

/// jemalloc instead of the system allocator, for every binary built on this library (the engine,
/// the benches, the tests): a backlog drained about 20% faster, and with the settings in
/// `.cargo/config.toml` the process' peak memory fell by a quarter (README, Performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod api;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod decode;
pub mod demo;
pub mod emulator;
pub mod lease;
pub mod local;
pub mod pipeline;
pub mod preview;
pub mod progress;
pub mod query;
pub mod rebuild;
pub mod report;
pub mod sequence;
pub mod sink;
pub mod source;
pub mod streams;
pub mod telemetry;
pub mod transform;
