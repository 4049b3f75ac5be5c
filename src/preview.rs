//! `kinesis-delta preview`: a stream's current schema file and cleaning SQL run over a sample,
//! with nothing written anywhere. The edit → see → run loop: the rows the SQL makes, its output
//! schema, and the records that would become dead letters, with their reasons.
//!
//! The sample is a JSON-lines file (each line one record's bytes), the newest records of the
//! stream itself (read from a moment back, nothing checkpointed), or the newest of its raw table.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Pipeline, StreamSpec};
use crate::decode::{DecodedBatch, RecordDecoder};
use crate::pipeline::{EngineError, decoder_and_cleaning};
use crate::query::RecordTable;
use crate::sequence::SequenceNumber;
use crate::source::{KinesisRecord, ShardReader, StartPosition, connect_checked, list_shards};

/// GetRecords calls a second per shard: less than Kinesis' 5, which a running engine shares.
const PREVIEW_CALLS_PER_SECOND: u32 = 2;

/// The most records read from one shard for a sample.
const MAX_READ_PER_SHARD: usize = 100_000;

/// Where the sample comes from.
#[derive(Debug, Clone)]
pub enum Sample {
    /// A JSON-lines file: each non-empty line is one record's bytes.
    File(PathBuf),
    /// The newest `newest` records of the stream's raw table.
    Raw {
        /// How many records at most.
        newest: usize,
    },
    /// The newest `newest` records of the stream, put within `since`.
    Stream {
        /// How many records at most.
        newest: usize,
        /// How far back to look.
        since: Duration,
    },
}

/// What the SQL made of the sample.
#[derive(Debug)]
pub struct Preview {
    /// Records in the sample.
    pub records: usize,
    /// The cleaned rows' schema.
    pub schema: SchemaRef,
    /// The cleaned rows.
    pub rows: Vec<RecordBatch>,
    /// The records that would be dead letters: where each is (a line, or a shard and sequence
    /// number), why, and its first bytes.
    pub dead_letters: Vec<(String, String, String)>,
}

/// Runs `stream`'s schema and SQL (as the config has them now) over `sample`.
pub async fn preview(
    pipeline: &Pipeline,
    stream: &str,
    sample: &Sample,
) -> Result<Preview, EngineError> {
    let spec = pipeline.stream(stream)?;
    let (decoder, cleaning) = decoder_and_cleaning(spec).await?;
    // Each record with its shard's hash key range, when known (a raw table keeps it).
    let records: Vec<(KinesisRecord, Option<(u128, u128)>)> = match sample {
        Sample::File(path) => without_ranges(file_records(path)?),
        Sample::Stream { newest, since } => {
            without_ranges(stream_records(pipeline, spec, *newest, *since).await?)
        }
        Sample::Raw { newest } => {
            let uri = spec.raw_table("preview --raw")?;
            RecordTable::open(uri, None, &pipeline.storage)
                .await?
                .newest(*newest)
                .await?
        }
    };
    let decoded = decode_sample(&decoder, &records)
        .map_err(|e| EngineError::Internal(format!("decoding the sample: {e}")))?;
    let rows = if decoded.rows.num_rows() > 0 {
        cleaning.apply(decoded.rows).await?
    } else {
        Vec::new()
    };
    let from_file = matches!(sample, Sample::File(_));
    let dead_letters = decoded
        .dead_letters
        .iter()
        .map(|dead| {
            let record = &dead.record;
            let at = if from_file {
                format!("line {}", record.sequence_number)
            } else {
                format!("{} {}", record.shard_id, record.sequence_number)
            };
            let text = String::from_utf8_lossy(&record.data);
            let excerpt: String = text.chars().take(80).collect();
            (at, dead.error.clone(), excerpt)
        })
        .collect();
    Ok(Preview {
        records: records.len(),
        schema: cleaning.output_schema(),
        rows,
        dead_letters,
    })
}

fn without_ranges(records: Vec<KinesisRecord>) -> Vec<(KinesisRecord, Option<(u128, u128)>)> {
    records.into_iter().map(|r| (r, None)).collect()
}

/// Decodes the sample as the engine decodes a plan: each run of records of one shard with that
/// shard's hash key range (a KPL user record of another shard's range is a dead letter).
fn decode_sample(
    decoder: &RecordDecoder,
    records: &[(KinesisRecord, Option<(u128, u128)>)],
) -> Result<DecodedBatch, arrow::error::ArrowError> {
    let mut rows = Vec::new();
    let mut dead_letters = Vec::new();
    for run in records.chunk_by(|a, b| a.0.shard_id == b.0.shard_id && a.1 == b.1) {
        let plain: Vec<KinesisRecord> = run.iter().map(|(r, _)| r.clone()).collect();
        let decoded = decoder.decode_in_range(&plain, run[0].1)?;
        rows.push(decoded.rows);
        dead_letters.extend(decoded.dead_letters);
    }
    Ok(DecodedBatch {
        rows: arrow::compute::concat_batches(&decoder.row_schema(), &rows)?,
        dead_letters,
    })
}

/// Each non-empty line of a file as a record, numbered by its line.
fn file_records(path: &Path) -> Result<Vec<KinesisRecord>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Invalid(format!("cannot read the sample {}: {e}", path.display()))
    })?;
    let shard: Arc<str> = Arc::from("file");
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .filter_map(|(i, line)| {
            Some(KinesisRecord {
                shard_id: Arc::clone(&shard),
                sequence_number: SequenceNumber::parse(&(i + 1).to_string()).ok()?,
                partition_key: String::new(),
                approximate_arrival_ms: None,
                data: Bytes::from(line.to_owned()),
                sub_sequence: None,
            })
        })
        .collect())
}

/// The newest `newest` records of the stream put within `since` and before now, read shard by
/// shard from that moment (at most [`MAX_READ_PER_SHARD`] each, at 2 calls a second), oldest
/// first.
async fn stream_records(
    pipeline: &Pipeline,
    spec: &StreamSpec,
    newest: usize,
    since: Duration,
) -> Result<Vec<KinesisRecord>, EngineError> {
    let client = connect_checked(&pipeline.kinesis).await?;
    let shards = list_shards(&client, &spec.stream)
        .await?
        .unwrap_or_default();
    let start = chrono::Utc::now()
        - chrono::Duration::from_std(since).unwrap_or_else(|_| chrono::Duration::hours(1));
    let cancel = CancellationToken::new();
    // Records put from now on are not waited for: a busy shard's reading ends too.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut kept: Vec<KinesisRecord> = Vec::new();
    for shard in shards {
        let mut reader = ShardReader::new(
            &spec.stream,
            &shard.shard_id,
            StartPosition::AtTimestamp(start),
            None,
            PREVIEW_CALLS_PER_SECOND,
        );
        reader.set_closed(shard.closed);
        reader.end_after(Some(now_ms));
        let mut last: VecDeque<KinesisRecord> = VecDeque::with_capacity(newest);
        let mut read = 0;
        loop {
            let outcome = reader.fetch(&client, 10_000, &cancel).await?;
            read += outcome.records.len();
            for record in outcome.records.iter().cloned() {
                if last.len() == newest {
                    last.pop_front();
                }
                last.push_back(record);
            }
            if outcome.caught_up() || outcome.relist || read >= MAX_READ_PER_SHARD {
                break;
            }
        }
        if read >= MAX_READ_PER_SHARD {
            tracing::warn!(shard = %shard.shard_id, read, "stopped reading the shard for the sample: shorten --since for its newest records");
        }
        kept.extend(last);
    }
    kept.sort_by_key(|r| r.approximate_arrival_ms);
    let skip = kept.len().saturating_sub(newest);
    Ok(kept.split_off(skip))
}
