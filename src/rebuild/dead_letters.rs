//! The dead-letter side of a rebuild. The dead letters it derives replace those the dead-letter
//! table holds of the same records: of a plan the table records, and whose record the raw table
//! holds. The others stay as they are: those of plans still pending (their rows come with the
//! engine's next commit), and those whose record the raw table lacks (it cannot derive them).

use std::collections::BTreeMap;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::{and, filter_record_batch, not};
use sha2::{Digest, Sha256};

use super::{COMMIT_PATIENCE, refused};
use crate::decode::dead_letter_schema;
use crate::pipeline::EngineError;
use crate::query::RecordTable;
use crate::query::records::{binaries, integers, strings};
use crate::sink::{CommitInfo, DeltaSink};

/// The dead-letter table's rows with `_rederived`: whether the rebuild derives the row's record
/// again (its record has a raw row; whether its plan is recorded is decided after).
const WITH_RAW_FLAG: &str = "SELECT d.*, k._shard_id IS NOT NULL AS _rederived FROM t d \
     LEFT JOIN (SELECT DISTINCT _shard_id, _sequence_number FROM raw) k \
     ON d._shard_id = k._shard_id AND d._sequence_number = k._sequence_number";

/// A stream's dead-letter table, as a rebuild sees it.
pub(super) struct DeadLetterTable<'a> {
    pub sink: DeltaSink,
    raw_uri: &'a str,
    storage: &'a BTreeMap<String, String>,
}

impl<'a> DeadLetterTable<'a> {
    pub fn new(sink: DeltaSink, raw_uri: &'a str, storage: &'a BTreeMap<String, String>) -> Self {
        Self {
            sink,
            raw_uri,
            storage,
        }
    }

    /// The table's rows at its newest version, each with whether the rebuild derives it again;
    /// `None` when there is no table yet.
    async fn rows(
        &mut self,
        recorded: &BTreeMap<String, i64>,
    ) -> Result<Option<Vec<(RecordBatch, BooleanArray)>>, EngineError> {
        let Some(version) = self.sink.load_newest().await? else {
            return Ok(None);
        };
        let tables = RecordTable::open_tables(
            &[
                ("t", self.sink.uri(), Some(version)),
                ("raw", self.raw_uri, None),
            ],
            self.storage,
        )
        .await?;
        let mut rows = Vec::new();
        for batch in tables.query(WITH_RAW_FLAG).await? {
            let rederived = rederived(&batch, recorded).map_err(EngineError::Internal)?;
            let columns: Vec<usize> = (0..batch.num_columns() - 1).collect();
            let batch = batch
                .project(&columns)
                .map_err(|e| EngineError::Internal(format!("dead letters: {e}")))?;
            rows.push((batch, rederived));
        }
        Ok(Some(rows))
    }

    /// Whether `derived` differs from the dead letters the rebuild would replace (compared by
    /// shard, sequence number and bytes).
    pub async fn split_changed(
        &mut self,
        derived: &[RecordBatch],
        recorded: &BTreeMap<String, i64>,
    ) -> Result<bool, EngineError> {
        let mut new = Vec::new();
        for batch in derived {
            new.extend(keys(batch).map_err(EngineError::Internal)?);
        }
        let mut held = Vec::new();
        for (batch, rederived) in self.rows(recorded).await?.unwrap_or_default() {
            let batch = filter_record_batch(&batch, &rederived)
                .map_err(|e| EngineError::Internal(format!("dead letters: {e}")))?;
            held.extend(keys(&batch).map_err(EngineError::Internal)?);
        }
        new.sort_unstable();
        held.sort_unstable();
        Ok(new != held)
    }

    /// Replaces the rows the rebuild derives again by `derived`, in one commit made as the next
    /// version of the one read (read again when another commit came first). Its version.
    pub async fn replace(
        &mut self,
        derived: &[RecordBatch],
        recorded: &BTreeMap<String, i64>,
        info: impl Fn(u64) -> CommitInfo,
    ) -> Result<i64, EngineError> {
        let schema = dead_letter_schema();
        let write_error = |e| EngineError::Internal(format!("writing dead letters: {e}"));
        let started = std::time::Instant::now();
        while started.elapsed() < COMMIT_PATIENCE {
            let held = match self.rows(recorded).await? {
                Some(rows) => rows,
                None => {
                    self.sink.ensure_exists(&schema).await?;
                    Vec::new()
                }
            };
            let mut replacement = self.sink.replacement(&schema).await?;
            for batch in derived {
                replacement.write(batch).await.map_err(write_error)?;
            }
            for (batch, rederived) in held {
                let kept = not(&rederived)
                    .and_then(|keep| filter_record_batch(&batch, &keep))
                    .map_err(|e| EngineError::Internal(format!("dead letters: {e}")))?;
                replacement.write(&kept).await.map_err(write_error)?;
            }
            let rows = replacement.rows();
            if let Some(version) = self.sink.replace(&mut replacement, info(rows)).await? {
                return Ok(version);
            }
        }
        Err(refused(format!(
            "other commits to {} kept coming first while the rebuild was replacing its dead letters: stop the engine and run rebuild again (the engine will not start until it has finished)",
            self.sink.uri()
        )))
    }
}

/// Which rows of a dead-letter batch (with `_rederived`) the rebuild derives again: their record
/// has a raw row, and their plan is one the table records (a row without a plan number, of an
/// earlier version's batch, counts as recorded).
fn rederived(
    batch: &RecordBatch,
    recorded: &BTreeMap<String, i64>,
) -> Result<BooleanArray, String> {
    let shards = strings(batch, "_shard_id")?;
    let plans = integers(batch, "_plan")?;
    let of_recorded: BooleanArray = shards
        .iter()
        .zip(plans)
        .map(|(shard, plan)| {
            let upto = shard
                .as_ref()
                .and_then(|s| recorded.get(s))
                .copied()
                .unwrap_or(0);
            Some(plan.is_none_or(|p| p <= upto))
        })
        .collect();
    let with_raw = batch
        .column_by_name("_rederived")
        .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
        .ok_or("no _rederived column")?;
    and(&of_recorded, with_raw).map_err(|e| e.to_string())
}

/// Each dead letter as (shard, sequence number, SHA-256 of its bytes).
fn keys(batch: &RecordBatch) -> Result<Vec<(String, String, Vec<u8>)>, String> {
    let shards = strings(batch, "_shard_id")?;
    let sequences = strings(batch, "_sequence_number")?;
    let data = binaries(batch, "data")?;
    Ok(shards
        .into_iter()
        .zip(sequences)
        .zip(data)
        .map(|((shard, sequence), data)| {
            (
                shard.unwrap_or_default(),
                sequence.unwrap_or_default(),
                Sha256::digest(data.unwrap_or_default()).to_vec(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::decode::{
        DeadLetter, dead_letter_batch, raw_records_batch, raw_records_schema, records_read_batch,
    };
    use crate::sequence::SequenceNumber;
    use crate::sink::{Numbering, PlanRows};
    use crate::source::KinesisRecord;

    const SHARD: &str = "shardId-000000000000";

    fn record(seq: u32) -> KinesisRecord {
        KinesisRecord {
            shard_id: Arc::from(SHARD),
            sequence_number: SequenceNumber::parse(&seq.to_string()).unwrap(),
            partition_key: "k".into(),
            approximate_arrival_ms: Some(1_700_000_000_000),
            data: Bytes::from(format!("record {seq}")),
            sub_sequence: None,
        }
    }

    fn dead(seqs: &[u32], plan: i64) -> RecordBatch {
        let dead: Vec<DeadLetter> = seqs
            .iter()
            .map(|s| DeadLetter {
                record: record(*s),
                error: "why".into(),
            })
            .collect();
        dead_letter_batch("s", &dead, Some(plan)).unwrap()
    }

    fn plan(version: i64, rows: RecordBatch) -> PlanRows {
        PlanRows {
            app_id: format!("kinesis-delta/p/s/{SHARD}"),
            version,
            rows: vec![rows],
        }
    }

    /// Of the dead letters the table holds, those the rebuild derives again (plan recorded, record
    /// in the raw table) are replaced; those of a pending plan, and those whose record the raw
    /// table lacks, stay.
    #[tokio::test]
    async fn only_the_dead_letters_derived_again_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let uri = |name| crate::sink::local_table_uri(dir.path(), name);
        let (raw_uri, dead_uri) = (uri("raw"), uri("dead"));
        let mut raw = DeltaSink::open(&raw_uri, "unused").await.unwrap();
        for (version, seqs) in [(1, vec![1, 2]), (2, vec![4])] {
            let read: Vec<KinesisRecord> = seqs.iter().map(|s| record(*s)).collect();
            let rows = raw_records_batch(&records_read_batch("s", &read, None).unwrap(), version);
            raw.commit_plans(
                &raw_records_schema(),
                &[plan(version, rows.unwrap())],
                Numbering::Gaps,
                Default::default(),
            )
            .await
            .unwrap();
        }
        let mut sink = DeltaSink::open(&dead_uri, "unused").await.unwrap();
        // Plan 1: record 1 (in the raw table) and record 3 (not); plan 2, pending: record 4.
        for (version, seqs) in [(1, vec![1, 3]), (2, vec![4])] {
            sink.commit_plans(
                &dead_letter_schema(),
                &[plan(version, dead(&seqs, version))],
                Numbering::Gaps,
                Default::default(),
            )
            .await
            .unwrap();
        }
        let storage = BTreeMap::new();
        let mut table = DeadLetterTable::new(sink, &raw_uri, &storage);
        let recorded = BTreeMap::from([(SHARD.to_owned(), 1)]);
        // The schema now makes record 2 a dead letter, and not record 1.
        let derived = [dead(&[2], 1)];
        assert!(table.split_changed(&derived, &recorded).await.unwrap());
        assert!(
            !table
                .split_changed(&[dead(&[1], 1)], &recorded)
                .await
                .unwrap()
        );
        table
            .replace(&derived, &recorded, |_| CommitInfo::new())
            .await
            .unwrap();
        let kept = RecordTable::open(&dead_uri, None, &storage)
            .await
            .unwrap()
            .query("SELECT _sequence_number, _plan FROM t ORDER BY _sequence_number")
            .await
            .unwrap();
        let kept = arrow::compute::concat_batches(&kept[0].schema(), &kept).unwrap();
        let seqs = strings(&kept, "_sequence_number").unwrap();
        let plans = integers(&kept, "_plan").unwrap();
        let seqs: Vec<&str> = seqs.iter().map(|s| s.as_deref().unwrap()).collect();
        assert_eq!(seqs, ["2", "3", "4"], "derived, without a raw row, pending");
        assert_eq!(plans, [Some(1), Some(1), Some(2)]);
    }
}
