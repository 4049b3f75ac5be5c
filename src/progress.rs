//! One progress report per committed batch and table, printed by the binary as a line of text or
//! JSON (`--progress json`).

use std::fmt;

use serde::Serialize;

/// The process's peak resident memory so far (`VmHWM`), where the system tells it (Linux).
pub fn peak_memory_bytes() -> Option<u64> {
    memory_status("VmHWM:")
}

/// The process's resident memory now (`VmRSS`), where the system tells it (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    memory_status("VmRSS:")
}

/// A `/proc/self/status` line in KiB, as bytes.
fn memory_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What one committed micro-batch did.
#[derive(Debug, Clone, Serialize)]
pub struct BatchProgress {
    /// The stream's short name (`pin`).
    pub stream: String,
    /// The Delta table's URL.
    pub table: String,
    /// The batch id (its Delta `txn` version).
    pub batch_id: i64,
    /// Records read from Kinesis.
    pub rows_in: usize,
    /// Bytes of their data.
    pub bytes_in: usize,
    /// Rows the cleaning SQL produced.
    pub rows_out: usize,
    /// Records sent to the dead-letter table.
    pub dead_letters: usize,
    /// `rows_in` per second of the batch's whole processing time.
    pub rows_per_second: f64,
    /// Milliseconds reading Kinesis.
    pub fetch_ms: u64,
    /// Milliseconds decoding JSON.
    pub decode_ms: u64,
    /// Milliseconds in the cleaning SQL.
    pub sql_ms: u64,
    /// Milliseconds writing Parquet files.
    pub write_ms: u64,
    /// Milliseconds committing to the Delta log.
    pub commit_ms: u64,
    /// The largest `MillisBehindLatest` seen while reading.
    pub millis_behind_latest: i64,
    /// The table version holding the batch (`None` if another writer committed it).
    pub delta_version: Option<i64>,
    /// The batch was planned before a restart and read again exactly.
    pub replayed: bool,
    /// With leases, the shards this process reads now (short ids: `shardId-000000000003` is 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<Vec<String>>,
}

impl fmt::Display for BatchProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self
            .delta_version
            .map_or_else(|| "-".to_owned(), |v| v.to_string());
        write!(
            f,
            "{:<6} batch {:>5}  in {:>7}  out {:>7}  dead {:>5}  {:>9.0} rows/s  fetch {}ms decode {}ms sql {}ms write {}ms commit {}ms  behind {}ms  v{}{}{}",
            self.stream,
            self.batch_id,
            self.rows_in,
            self.rows_out,
            self.dead_letters,
            self.rows_per_second,
            self.fetch_ms,
            self.decode_ms,
            self.sql_ms,
            self.write_ms,
            self.commit_ms,
            self.millis_behind_latest,
            version,
            if self.replayed { "  (replayed)" } else { "" },
            self.holds
                .as_ref()
                .map(|shards| format!("  holds {}", shards.join(",")))
                .unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::BatchProgress;

    fn report(holds: Option<Vec<String>>) -> BatchProgress {
        BatchProgress {
            stream: "pin".into(),
            table: "file:///t/pin".into(),
            batch_id: 3,
            rows_in: 1000,
            bytes_in: 200_000,
            rows_out: 999,
            dead_letters: 1,
            rows_per_second: 5000.0,
            fetch_ms: 61,
            decode_ms: 9,
            sql_ms: 35,
            write_ms: 52,
            commit_ms: 14,
            millis_behind_latest: 0,
            delta_version: Some(3),
            replayed: false,
            holds,
        }
    }

    #[test]
    fn a_line_says_which_shards_the_process_holds_with_leases_only() {
        let alone = report(None).to_string();
        assert!(alone.ends_with("v3"), "{alone}");
        let shared = report(Some(vec!["0".into(), "3".into()])).to_string();
        assert!(shared.ends_with("v3  holds 0,3"), "{shared}");
        let json = serde_json::to_value(report(None)).unwrap();
        assert!(json.get("holds").is_none(), "{json}");
    }
}
