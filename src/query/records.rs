//! Tables of Kinesis records as the engine kept them (a raw table, a dead-letter table), read back
//! in a DataFusion session: a raw table's rows as records, plan by plan (each one record as read,
//! an aggregate whole, gzip as is, with its shard's hash key range and the plan that committed
//! it; a plan's records in sequence order, as the engine decoded them), or its newest ones; and
//! the typed values of any column (`strings`, `integers`, `binaries`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use bytes::Bytes;

use super::{AsOf, TableSet};
use crate::pipeline::EngineError;
use crate::sequence::SequenceNumber;
use crate::source::KinesisRecord;

/// How many raw rows each plan of each shard holds: shard → plan → rows.
pub type PlanCounts = BTreeMap<String, BTreeMap<i64, u64>>;

/// The records of one plan of one shard, in sequence order.
#[derive(Debug)]
pub struct PlanRecords {
    /// The plan's number.
    pub plan: i64,
    /// Its records as read.
    pub records: Vec<KinesisRecord>,
    /// Its shard's hash key range, when the raw table has it.
    pub range: Option<(u128, u128)>,
}

/// Tables of records as read (a raw table, a dead-letter table) in a DataFusion session, each at
/// the version it was opened at.
pub struct RecordTable {
    tables: TableSet,
}

impl std::fmt::Debug for RecordTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTable").finish()
    }
}

impl RecordTable {
    /// Opens the table at `uri` as `t`, at its newest version or at `version`.
    pub async fn open(
        uri: &str,
        version: Option<i64>,
        storage: &BTreeMap<String, String>,
    ) -> Result<Self, EngineError> {
        Self::open_tables(&[("t", uri, version)], storage).await
    }

    /// Opens each `(name, uri, version)` table, at its newest version or at `version`.
    pub async fn open_tables(
        tables: &[(&str, &str, Option<i64>)],
        storage: &BTreeMap<String, String>,
    ) -> Result<Self, EngineError> {
        let named: Vec<(String, String)> = tables
            .iter()
            .map(|(name, uri, _)| ((*name).to_owned(), (*uri).to_owned()))
            .collect();
        let as_of: Vec<(String, AsOf)> = tables
            .iter()
            .filter_map(|(name, _, version)| {
                let version = u64::try_from((*version)?).ok()?;
                Some(((*name).to_owned(), AsOf::Version(version)))
            })
            .collect();
        let tables = TableSet::open_tables(&named, &as_of, storage)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(Self { tables })
    }

    /// The tables' locations, for messages.
    fn uris(&self) -> String {
        let uris: Vec<&str> = self.tables.tables.iter().map(|t| t.uri.as_str()).collect();
        uris.join(", ")
    }

    /// Runs `sql` over the tables.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        self.tables
            .sql(sql)
            .await
            .map(|result| result.batches)
            .map_err(|e| EngineError::Internal(format!("reading {}: {e}", self.uris())))
    }

    /// How many rows each plan of each shard holds (rows without a plan number under plan 0).
    pub async fn plan_counts(&self) -> Result<PlanCounts, EngineError> {
        let batches = self
            .query(
                "SELECT _shard_id, COALESCE(_plan, 0) AS plan, COUNT(*) AS n FROM t GROUP BY 1, 2",
            )
            .await?;
        let mut counts = PlanCounts::new();
        for batch in batches {
            let shards = strings(&batch, "_shard_id").map_err(EngineError::Internal)?;
            let plans = integers(&batch, "plan").map_err(EngineError::Internal)?;
            let rows = integers(&batch, "n").map_err(EngineError::Internal)?;
            for i in 0..batch.num_rows() {
                let (Some(shard), Some(plan), Some(n)) = (&shards[i], plans[i], rows[i]) else {
                    continue;
                };
                counts
                    .entry(shard.clone())
                    .or_default()
                    .insert(plan, u64::try_from(n).unwrap_or(0));
            }
        }
        Ok(counts)
    }

    /// The records of plans `from..=to` of `shard`, plan by plan, each in sequence order.
    pub async fn plans(
        &self,
        shard: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<PlanRecords>, EngineError> {
        let shard_literal = shard.replace('\'', "''");
        // Sequence numbers are decimals of varying length: shorter is smaller.
        let batches = self
            .query(&format!(
                "SELECT {COLUMNS} FROM t \
                 WHERE _shard_id = '{shard_literal}' AND _plan BETWEEN {from} AND {to} \
                 ORDER BY _plan, length(_sequence_number), _sequence_number"
            ))
            .await?;
        let mut plans: Vec<PlanRecords> = Vec::new();
        for batch in batches {
            for (plan, record, range) in records_of(&batch).map_err(EngineError::Internal)? {
                match plans.last_mut() {
                    Some(last) if last.plan == plan => last.records.push(record),
                    _ => plans.push(PlanRecords {
                        plan,
                        records: vec![record],
                        range,
                    }),
                }
            }
        }
        Ok(plans)
    }

    /// The `newest` records by arrival, oldest first, each with its shard's hash key range.
    pub async fn newest(
        &self,
        newest: usize,
    ) -> Result<Vec<(KinesisRecord, Option<(u128, u128)>)>, EngineError> {
        let batches = self
            .query(&format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM t \
                 ORDER BY _approximate_arrival DESC NULLS LAST LIMIT {newest}) \
                 ORDER BY _approximate_arrival, _shard_id, length(_sequence_number), _sequence_number"
            ))
            .await?;
        let mut records = Vec::new();
        for batch in batches {
            let read = records_of(&batch).map_err(EngineError::Internal)?;
            records.extend(read.into_iter().map(|(_, record, range)| (record, range)));
        }
        Ok(records)
    }
}

/// The columns a record is made of.
const COLUMNS: &str = "_shard_id, _sequence_number, _partition_key, _approximate_arrival, data, \
     _starting_hash_key, _ending_hash_key, _plan";

/// Each row of `batch` (of [`COLUMNS`]) as its plan, the record, and its shard's hash key range.
type RawRecord = (i64, KinesisRecord, Option<(u128, u128)>);

fn records_of(batch: &RecordBatch) -> Result<Vec<RawRecord>, String> {
    let shards = strings(batch, "_shard_id")?;
    let sequences = strings(batch, "_sequence_number")?;
    let mut keys = strings(batch, "_partition_key")?.into_iter();
    let arrivals = arrival_ms(batch)?;
    let mut data = binaries(batch, "data")?.into_iter();
    let starts = strings(batch, "_starting_hash_key")?;
    let ends = strings(batch, "_ending_hash_key")?;
    let plans = integers(batch, "_plan")?;
    let mut records = Vec::with_capacity(batch.num_rows());
    let mut shard_id: Arc<str> = Arc::from("");
    for i in 0..batch.num_rows() {
        let shard = shards[i].as_deref().unwrap_or_default();
        if *shard_id != *shard {
            shard_id = Arc::from(shard);
        }
        let plan = plans[i].unwrap_or(0);
        let sequence = sequences[i].as_deref().unwrap_or_default();
        let sequence_number = SequenceNumber::parse(sequence)
            .map_err(|e| format!("raw row of {shard}, plan {plan}: {e}"))?;
        let record = KinesisRecord {
            shard_id: Arc::clone(&shard_id),
            sequence_number,
            partition_key: keys.next().flatten().unwrap_or_default(),
            approximate_arrival_ms: arrivals[i],
            data: Bytes::from(data.next().flatten().unwrap_or_default()),
            sub_sequence: None,
        };
        let range = match (&starts[i], &ends[i]) {
            (Some(start), Some(end)) => start.parse().ok().zip(end.parse().ok()),
            _ => None,
        };
        records.push((plan, record, range));
    }
    Ok(records)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("the table has no column {name}"))
}

fn cast_to(batch: &RecordBatch, name: &str, to: &DataType) -> Result<Arc<dyn Array>, String> {
    cast(column(batch, name)?, to).map_err(|e| format!("column {name}: {e}"))
}

/// A text column's values (whichever string type the reader gave).
pub fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, String> {
    let array = cast_to(batch, name, &DataType::Utf8)?;
    Ok(array
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect())
}

/// A binary column's values.
pub fn binaries(batch: &RecordBatch, name: &str) -> Result<Vec<Option<Vec<u8>>>, String> {
    let array = cast_to(batch, name, &DataType::Binary)?;
    Ok(array
        .as_binary::<i32>()
        .iter()
        .map(|v| v.map(<[u8]>::to_vec))
        .collect())
}

/// An integer column's values.
pub fn integers(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, String> {
    let array = cast_to(batch, name, &DataType::Int64)?;
    Ok(array.as_primitive::<Int64Type>().iter().collect())
}

/// `_approximate_arrival` in milliseconds (Delta keeps it in microseconds).
fn arrival_ms(batch: &RecordBatch) -> Result<Vec<Option<i64>>, String> {
    let millis = cast_to(
        batch,
        "_approximate_arrival",
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    )?;
    let values =
        cast(&millis, &DataType::Int64).map_err(|e| format!("column _approximate_arrival: {e}"))?;
    Ok(values.as_primitive::<Int64Type>().iter().collect())
}
