//! Every metric the process exports: its name, type and help text in one table ([`CATALOG`]),
//! and the handles the engine and the API record through.
//!
//! Names follow Prometheus' conventions (checked by `promtool check metrics` in the tests):
//! `kinesis_delta_` first, base units (seconds, bytes) in the name, `_total` on counters.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::progress::BatchProgress;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Described {
    /// Its name in the exposition.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its `# HELP` text.
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, help: &'static str) -> Described {
    Described { name, kind, help }
}

const RECORDS_IN: &str = "kinesis_delta_records_in_total";
const BYTES_IN: &str = "kinesis_delta_bytes_in_total";
const ROWS_OUT: &str = "kinesis_delta_rows_out_total";
const DEAD_LETTERS: &str = "kinesis_delta_dead_letters_total";
const BATCHES: &str = "kinesis_delta_batches_total";
const BATCHES_REPLAYED: &str = "kinesis_delta_batches_replayed_total";
const STAGE_SECONDS: &str = "kinesis_delta_batch_stage_seconds";
const LAST_COMMIT: &str = "kinesis_delta_last_commit_timestamp_seconds";
const BEHIND_LATEST: &str = "kinesis_delta_shard_behind_latest_seconds";
const ITERATOR_AGE: &str = "kinesis_delta_shard_iterator_age_seconds";
const LAST_READ: &str = "kinesis_delta_shard_last_read_timestamp_seconds";
const THROTTLES: &str = "kinesis_delta_kinesis_throttles_total";
const RETRIES: &str = "kinesis_delta_kinesis_retries_total";
const TABLE_VERSION: &str = "kinesis_delta_table_version";
const LIVE_FILES: &str = "kinesis_delta_table_live_files";
const COMMIT_CONFLICTS: &str = "kinesis_delta_commit_conflicts_total";
const MAINTENANCE_RUNS: &str = "kinesis_delta_maintenance_runs_total";
const API_REQUESTS: &str = "kinesis_delta_api_requests_total";
const API_SECONDS: &str = "kinesis_delta_api_request_duration_seconds";
/// The standard process metric (as the Prometheus client libraries name it), read at each scrape.
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";

/// Every metric, for the `# HELP` and `# TYPE` lines.
pub const CATALOG: &[Described] = &[
    metric(
        RECORDS_IN,
        Kind::Counter,
        "Kinesis records committed (rows plus dead letters), per stream.",
    ),
    metric(
        BYTES_IN,
        Kind::Counter,
        "Bytes of Kinesis record data committed, per stream.",
    ),
    metric(
        ROWS_OUT,
        Kind::Counter,
        "Rows the cleaning SQL produced and the engine committed to the table, per stream.",
    ),
    metric(
        DEAD_LETTERS,
        Kind::Counter,
        "Records committed to the dead-letter table, per stream.",
    ),
    metric(
        BATCHES,
        Kind::Counter,
        "Micro-batches committed, per stream.",
    ),
    metric(
        BATCHES_REPLAYED,
        Kind::Counter,
        "Micro-batches planned before a restart and read again exactly, per stream.",
    ),
    metric(
        STAGE_SECONDS,
        Kind::Histogram,
        "Time a committed batch spent in each stage (fetch, decode, sql, write, commit).",
    ),
    metric(
        LAST_COMMIT,
        Kind::Gauge,
        "Unix time of the stream's last committed batch (the process start before the first).",
    ),
    metric(
        BEHIND_LATEST,
        Kind::Gauge,
        "MillisBehindLatest of the shard's last GetRecords answer, in seconds.",
    ),
    metric(
        ITERATOR_AGE,
        Kind::Gauge,
        "Age of the last record the shard's last GetRecords answer held (0 at the tip).",
    ),
    metric(
        LAST_READ,
        Kind::Gauge,
        "Unix time of the shard's last GetRecords answer: a stalled engine stops moving it.",
    ),
    metric(
        THROTTLES,
        Kind::Counter,
        "Kinesis calls answered with a throttling error, per stream and operation.",
    ),
    metric(
        RETRIES,
        Kind::Counter,
        "Kinesis calls retried after an error other than throttling, per stream and operation.",
    ),
    metric(
        TABLE_VERSION,
        Kind::Gauge,
        "The Delta table version the engine last opened or committed (-1 before the table exists).",
    ),
    metric(
        LIVE_FILES,
        Kind::Gauge,
        "Data files in the Delta table version the engine last opened, committed or compacted.",
    ),
    metric(
        COMMIT_CONFLICTS,
        Kind::Counter,
        "Delta commits that met another writer's commit: retried, or found the batch already committed.",
    ),
    metric(
        MAINTENANCE_RUNS,
        Kind::Counter,
        "Table maintenance runs (compact, checkpoint, vacuum) by outcome.",
    ),
    metric(
        API_REQUESTS,
        Kind::Counter,
        "REST API requests by method, route and status.",
    ),
    metric(
        API_SECONDS,
        Kind::Histogram,
        "REST API request latency by method and route.",
    ),
    metric(
        RESIDENT_MEMORY,
        Kind::Gauge,
        "Resident memory of the process.",
    ),
];

/// The histogram buckets, in seconds: 1 ms to 2 minutes.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Gives every metric of the catalog its help text (once a recorder is installed).
pub fn describe_all() {
    for m in CATALOG {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The metrics of one stream, recorded once per committed batch.
#[derive(Debug, Clone)]
pub struct StreamMetrics {
    records_in: Counter,
    bytes_in: Counter,
    rows_out: Counter,
    dead_letters: Counter,
    batches: Counter,
    replayed: Counter,
    /// fetch, decode, sql, write, commit.
    stages: [Histogram; 5],
    last_commit: Gauge,
}

impl StreamMetrics {
    /// The handles of the Kinesis stream `stream`.
    pub fn new(stream: &str) -> Self {
        let name = || stream.to_owned();
        let stage = |name: &'static str| histogram!(STAGE_SECONDS, "stream" => stream.to_owned(), "stage" => name);
        Self {
            records_in: counter!(RECORDS_IN, "stream" => name()),
            bytes_in: counter!(BYTES_IN, "stream" => name()),
            rows_out: counter!(ROWS_OUT, "stream" => name()),
            dead_letters: counter!(DEAD_LETTERS, "stream" => name()),
            batches: counter!(BATCHES, "stream" => name()),
            replayed: counter!(BATCHES_REPLAYED, "stream" => name()),
            stages: ["fetch", "decode", "sql", "write", "commit"].map(stage),
            last_commit: {
                // Never 0 (1970): "since the last commit" counts from the start until a commit.
                let gauge = gauge!(LAST_COMMIT, "stream" => name());
                gauge.set(unix_now());
                gauge
            },
        }
    }

    /// Records one committed batch.
    pub fn batch_committed(&self, batch: &BatchProgress) {
        self.records_in.increment(batch.rows_in as u64);
        self.bytes_in.increment(batch.bytes_in as u64);
        self.rows_out.increment(batch.rows_out as u64);
        self.dead_letters.increment(batch.dead_letters as u64);
        self.batches.increment(1);
        if batch.replayed {
            self.replayed.increment(1);
        }
        let stages = [
            batch.fetch_ms,
            batch.decode_ms,
            batch.sql_ms,
            batch.write_ms,
            batch.commit_ms,
        ];
        for (histogram, ms) in self.stages.iter().zip(stages) {
            histogram.record(ms as f64 / 1000.0);
        }
        self.last_commit.set(unix_now());
    }
}

/// Now, in seconds since the epoch.
fn unix_now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

/// The metrics of one shard's reader.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    behind_latest: Gauge,
    iterator_age: Gauge,
    last_read: Gauge,
    get_records_throttled: Counter,
    get_records_retried: Counter,
    get_iterator_retried: Counter,
    subscribe_throttled: Counter,
    subscribe_retried: Counter,
}

impl ShardMetrics {
    /// The handles of shard `shard` of the Kinesis stream `stream`.
    pub fn new(stream: &str, shard: &str) -> Self {
        let shard_gauge = |name: &'static str| gauge!(name, "stream" => stream.to_owned(), "shard" => shard.to_owned());
        let call = |name: &'static str, operation: &'static str| counter!(name, "stream" => stream.to_owned(), "operation" => operation);
        Self {
            behind_latest: shard_gauge(BEHIND_LATEST),
            iterator_age: shard_gauge(ITERATOR_AGE),
            last_read: shard_gauge(LAST_READ),
            get_records_throttled: call(THROTTLES, "GetRecords"),
            get_records_retried: call(RETRIES, "GetRecords"),
            get_iterator_retried: call(RETRIES, "GetShardIterator"),
            subscribe_throttled: call(THROTTLES, "SubscribeToShard"),
            subscribe_retried: call(RETRIES, "SubscribeToShard"),
        }
    }

    /// A GetRecords answer: how far behind the tip it was, and when its last record arrived.
    /// The iterator age drops to 0 only at the tip (an empty answer behind it says nothing).
    pub fn answered(&self, millis_behind: Option<i64>, last_arrival_ms: Option<i64>) {
        self.last_read.set(unix_now());
        if let Some(ms) = millis_behind {
            self.behind_latest.set(ms as f64 / 1000.0);
        }
        match last_arrival_ms {
            Some(at) => {
                let now = chrono::Utc::now().timestamp_millis();
                let age = Duration::from_millis(u64::try_from(now - at).unwrap_or(0));
                self.iterator_age.set(age.as_secs_f64());
            }
            None if millis_behind == Some(0) => self.iterator_age.set(0.0),
            None => {}
        }
    }

    /// The shard is read to its end: nothing of it is behind any more (its series would
    /// otherwise keep their last values for good).
    pub fn finished(&self) {
        self.behind_latest.set(0.0);
        self.iterator_age.set(0.0);
    }

    /// A GetRecords call was throttled.
    pub fn throttled(&self) {
        self.get_records_throttled.increment(1);
    }

    /// A GetRecords call failed and is retried.
    pub fn retried(&self) {
        self.get_records_retried.increment(1);
    }

    /// A GetShardIterator call failed and is retried.
    pub fn iterator_retried(&self) {
        self.get_iterator_retried.increment(1);
    }

    /// A SubscribeToShard call was throttled.
    pub fn subscribe_throttled(&self) {
        self.subscribe_throttled.increment(1);
    }

    /// A subscription failed (the call, or the stream of events) and is opened again.
    pub fn subscribe_retried(&self) {
        self.subscribe_retried.increment(1);
    }
}

/// The metrics of one Delta table the engine writes.
#[derive(Debug, Clone)]
pub struct TableMetrics {
    table: String,
    version: Gauge,
    live_files: Gauge,
    conflicts_retried: Counter,
    conflicts_already_committed: Counter,
}

impl TableMetrics {
    /// The handles of the table named `table` (its folder: `pin`, `pin_dead_letters`).
    pub fn new(table: &str) -> Self {
        let conflict = |resolution: &'static str| counter!(COMMIT_CONFLICTS, "table" => table.to_owned(), "resolution" => resolution);
        // Every outcome's series exists from the start, so that `increase()` sees the first one.
        for operation in ["compact", "checkpoint", "vacuum"] {
            for outcome in ["ok", "failed"] {
                counter!(MAINTENANCE_RUNS, "table" => table.to_owned(), "operation" => operation, "outcome" => outcome)
                    .increment(0);
            }
        }
        Self {
            table: table.to_owned(),
            version: gauge!(TABLE_VERSION, "table" => table.to_owned()),
            live_files: gauge!(LIVE_FILES, "table" => table.to_owned()),
            conflicts_retried: conflict("retried"),
            conflicts_already_committed: conflict("already_committed"),
        }
    }

    /// A version the engine opened or committed (-1: no table yet), and how many data files it
    /// holds.
    pub fn committed(&self, version: i64, live_files: usize) {
        self.version.set(version as f64);
        self.live_files.set(live_files as f64);
    }

    /// A commit that delta-rs retried `retries` times over other writers' commits.
    pub fn commit_retried(&self, retries: u64) {
        self.conflicts_retried.increment(retries);
    }

    /// A commit given up because another writer had committed the batch.
    pub fn already_committed(&self) {
        self.conflicts_already_committed.increment(1);
    }

    /// A maintenance run: `operation` is `compact`, `checkpoint` or `vacuum`.
    pub fn maintenance(&self, operation: &'static str, succeeded: bool) {
        let outcome = if succeeded { "ok" } else { "failed" };
        counter!(MAINTENANCE_RUNS, "table" => self.table.clone(), "operation" => operation, "outcome" => outcome)
            .increment(1);
    }
}

/// One answered API request.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    /// The HTTP method (any other than the standard ones is recorded as `OTHER`: clients must
    /// not be able to make series at will).
    pub method: &'a str,
    /// The route's template (`/streams/{stream_name}/record`), or `unmatched`: never the path
    /// itself, whose stream names would make a series per name.
    pub route: &'a str,
    /// The response status.
    pub status: u16,
    /// How long the answer took.
    pub elapsed: Duration,
}

impl ApiRequest<'_> {
    /// Records the request.
    pub fn record(&self) {
        const KNOWN: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"];
        let method = KNOWN
            .iter()
            .find(|m| **m == self.method)
            .copied()
            .unwrap_or("OTHER");
        counter!(API_REQUESTS, "method" => method, "route" => self.route.to_owned(), "status" => self.status.to_string())
            .increment(1);
        histogram!(API_SECONDS, "method" => method, "route" => self.route.to_owned())
            .record(self.elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::{CATALOG, Kind};

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let mut names: Vec<_> = CATALOG.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len(), "a name is in the catalog twice");
        for m in CATALOG {
            assert!(
                m.name.starts_with("kinesis_delta_") || m.name.starts_with("process_"),
                "{}",
                m.name
            );
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                m.name
            );
            assert!(m.help.ends_with('.'), "{}: help is a sentence", m.name);
        }
    }
}
