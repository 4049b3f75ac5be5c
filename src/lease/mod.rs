//! Shard leases: which engine process reads which shard, kept in a DynamoDB table as the KCL keeps
//! its own.
//!
//! ```text
//!  worker ──every heartbeat──► list leases ─► observe counters ─► renew its own
//!                                   │                                  │
//!                                   └──► plan (pure): take free or expired, release the excess
//!                                              │
//!                                              └──► conditional writes: one owner per lease
//! ```
//!
//! * One item per shard (`leaseKey` = `<stream>/<shardId>`), with its owner and a counter that
//!   every change (take, renew, release) increments. Every write is conditional on the counter
//!   (and owner) the worker last saw, so two workers never both win a change.
//! * A lease expires when its counter has not moved for the lease duration, as measured by the
//!   observer's own clock: no clocks are compared between machines.
//! * Each worker aims at an even share of the leases; one above it releases the excess, one
//!   below takes free and expired leases ([`policy`]).
//!
//! A lease only decides who reads; correctness never depends on it: two owners of one shard for a
//! moment still commit each record once, because the Delta commit decides.

pub mod policy;
mod table;
mod worker;

pub use policy::{LeaseAction, LeaseView, live_workers, plan};
pub use table::{Lease, LeaseError, LeaseTable};
pub use worker::LeaseWorker;
