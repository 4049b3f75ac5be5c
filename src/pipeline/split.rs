//! Which records of a plan are dead letters, recorded in the plan so that every attempt at it (a
//! replay after a crash, or another worker) splits them the same way.
//!
//! The dead letters are committed before the rows. If the raw schema changes between a crash after
//! the dead-letter commit and the replay, a record could otherwise land in neither table or in
//! both. The engine compares the split it decodes with the recorded one and refuses to go on when
//! they differ, saying which file to restore.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::SplitChange;
use crate::decode::DecodedBatch;
use crate::sequence::SequenceNumber;
use crate::sink::BatchSplit;

/// The files that decide a stream's split, fingerprinted once at start-up.
#[derive(Debug, Clone)]
pub(super) struct SplitRule {
    stream: String,
    schema_path: PathBuf,
    schema_sha256: String,
    sql_sha256: String,
}

impl SplitRule {
    /// The rule for a stream decoded by `schema_sql` and cleaned by `sql`.
    pub fn new(stream: &str, schema_path: PathBuf, schema_sql: &str, sql: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            schema_path,
            schema_sha256: sha256_hex(schema_sql),
            sql_sha256: sha256_hex(sql),
        }
    }

    /// The split of `decoded`, to record in a new plan.
    pub fn record(&self, decoded: &DecodedBatch) -> BatchSplit {
        BatchSplit {
            schema_sha256: self.schema_sha256.clone(),
            sql_sha256: self.sql_sha256.clone(),
            dead_letters: dead_letter_keys(decoded),
        }
    }

    /// Checks that `decoded` splits the records as `recorded` (the split of the plan `label`)
    /// says. With `present` (a plan of which only these records, by shard and sequence number,
    /// remain), the recorded dead letters among them must be exactly the dead letters now.
    pub fn check(
        &self,
        recorded: Option<&BatchSplit>,
        label: &str,
        decoded: &DecodedBatch,
        present: Option<&BTreeSet<(String, SequenceNumber)>>,
    ) -> Result<(), Box<SplitChange>> {
        let Some(recorded) = recorded else {
            return Ok(()); // a manifest from before splits were recorded
        };
        let mut expected = recorded.dead_letters.clone();
        if let Some(present) = present {
            for (shard, sequences) in &mut expected {
                sequences.retain(|s| present.contains(&(shard.clone(), s.clone())));
            }
            expected.retain(|_, sequences| !sequences.is_empty());
        }
        let now = dead_letter_keys(decoded);
        if now == expected {
            return Ok(());
        }
        let count = |m: &BTreeMap<String, Vec<SequenceNumber>>| m.values().map(Vec::len).sum();
        let schema_path = self.schema_path.display().to_string();
        let advice = if recorded.schema_sha256 == self.schema_sha256 {
            format!(
                "The schema file is unchanged, so this kinesis-delta decodes records differently from the version that planned the batch: run that version until {label} is committed, then upgrade"
            )
        } else {
            format!(
                "Restore {schema_path} as it was, run until {label} is committed (`--available-now` does it), then apply the change"
            )
        };
        Err(Box::new(SplitChange {
            stream: self.stream.clone(),
            plan: label.to_owned(),
            schema_path,
            recorded_sha256: recorded.schema_sha256.clone(),
            current_sha256: self.schema_sha256.clone(),
            recorded_dead_letters: count(&expected),
            current_dead_letters: count(&now),
            advice,
        }))
    }
}

fn dead_letter_keys(decoded: &DecodedBatch) -> BTreeMap<String, Vec<SequenceNumber>> {
    let mut keys: BTreeMap<String, Vec<SequenceNumber>> = BTreeMap::new();
    for dead in &decoded.dead_letters {
        keys.entry(dead.record.shard_id.to_string())
            .or_default()
            .push(dead.record.sequence_number.clone());
    }
    for sequences in keys.values_mut() {
        sequences.sort();
    }
    keys
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
