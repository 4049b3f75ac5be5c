//! What an operator watches: Prometheus metrics and health checks, served on the admin address
//! (`--admin-address`, off by default) of `run`, `api` and `demo`.
//!
//! ```text
//!  engine, API ──metrics facade──► Prometheus recorder ──► GET /metrics
//!  streams, Kinesis check ──progress──► readiness ──────► GET /readyz   (GET /healthz: alive)
//! ```
//!
//! The code records with the `metrics` facade through the handles of [`catalog`], one set per
//! stream, shard and table. Without an admin address no recorder is installed and recording costs
//! nothing; [`admin::start`] installs it and serves the three endpoints.

pub mod admin;
pub mod catalog;
pub mod health;

pub use admin::{AdminServer, start};
pub use catalog::{ApiRequest, ShardMetrics, StreamMetrics, TableMetrics};
pub use health::{Readiness, readiness};
