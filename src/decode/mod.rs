//! Decodes Kinesis records (JSON objects) into Arrow against the stream's declared raw schema.
//!
//! The raw schema is declared by the user in SQL (`sql/<stream>.schema.sql`, one
//! `CREATE TABLE raw (...)`), so users edit SQL, not Rust. Every decoded row also carries the
//! record's Kinesis metadata as columns ([`METADATA_COLUMNS`]). A record that is not UTF-8, not one
//! JSON object, or has a value of the wrong type becomes a dead letter: kept with its raw bytes,
//! metadata and the reason, never dropped and never fatal. So does a value arrow-json would change
//! on its way in (a fraction in an integer column: see [`check`]).

mod check;
pub mod kpl;
pub mod payload;

use std::path::Path;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::compute::{concat_batches, filter};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::ReaderBuilder;
use datafusion::prelude::SessionContext;

use self::check::IntegerColumns;
use crate::config::PayloadFormat;
use crate::source::KinesisRecord;

/// The column after the metadata of a raw row: a user record's index in its KPL aggregate
/// (NULL for a plain record). Not in the dead-letter table, whose reason names it instead.
pub const SUB_SEQUENCE_COLUMN: &str = "_sub_sequence_number";

/// The metadata columns every raw row and dead letter carries, after the declared fields.
pub const METADATA_COLUMNS: [&str; 5] = [
    "_stream",
    "_shard_id",
    "_sequence_number",
    "_partition_key",
    "_approximate_arrival",
];

/// The schema file is not usable. The user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The SQL did not run.
    #[error("{path}: {message} (the file must hold one `CREATE TABLE raw (column TYPE, ...)`)")]
    Sql {
        /// The schema file.
        path: String,
        /// DataFusion's message.
        message: String,
    },
    /// A declared column collides with a metadata column.
    #[error("{path}: column `{column}` is reserved for Kinesis metadata; rename it")]
    Reserved {
        /// The schema file.
        path: String,
        /// The column.
        column: String,
    },
}

/// Reads the raw schema declared in a `CREATE TABLE raw (...)` statement. All columns are nullable:
/// a field missing from a record is NULL.
pub async fn raw_schema_from_sql(sql: &str, path: &Path) -> Result<SchemaRef, SchemaError> {
    let err = |e: datafusion::error::DataFusionError| SchemaError::Sql {
        path: path.display().to_string(),
        message: e.strip_backtrace(),
    };
    let ctx = SessionContext::new();
    ctx.sql(sql)
        .await
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    let table = ctx.table("raw").await.map_err(err)?;
    let fields: Vec<Field> = table
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    if let Some(field) = fields
        .iter()
        .find(|f| METADATA_COLUMNS.contains(&f.name().as_str()) || f.name() == SUB_SEQUENCE_COLUMN)
    {
        return Err(SchemaError::Reserved {
            path: path.display().to_string(),
            column: field.name().clone(),
        });
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// A record that could not be decoded, with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record.
    pub record: KinesisRecord,
    /// Why it was rejected.
    pub error: String,
}

/// One batch, decoded.
#[derive(Debug)]
pub struct DecodedBatch {
    /// The good records: declared columns then metadata columns.
    pub rows: RecordBatch,
    /// The records that did not decode.
    pub dead_letters: Vec<DeadLetter>,
}

/// Decodes the records of one stream.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    stream: Arc<str>,
    row_schema: SchemaRef,
    /// The raw schema with its integer columns as text, which [`IntegerColumns`] checks.
    text_schema: SchemaRef,
    integers: IntegerColumns,
    /// What a record's data holds.
    format: PayloadFormat,
}

impl RecordDecoder {
    /// A decoder for `stream` with the declared raw schema.
    ///
    /// Text is decoded as plain strings, not the string views DataFusion declares `VARCHAR` as:
    /// arrow-json sizes a view column's buffers by its bytes of text counted as views (16 bytes
    /// each), which took 16 times the memory of the records, and the tables store plain strings
    /// anyway.
    pub fn new(stream: &str, declared: SchemaRef) -> Self {
        let raw_schema = without_views(&declared);
        let mut fields: Vec<Field> = raw_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(metadata_fields());
        fields.push(Field::new(SUB_SEQUENCE_COLUMN, DataType::Int64, true));
        Self {
            stream: Arc::from(stream),
            integers: IntegerColumns::new(&raw_schema),
            text_schema: IntegerColumns::new(&raw_schema).as_text(&raw_schema),

            row_schema: Arc::new(Schema::new(fields)),
            format: PayloadFormat::Json,
        }
    }

    /// Reads records of `format` (one JSON object each by default).
    #[must_use]
    pub fn with_format(mut self, format: PayloadFormat) -> Self {
        self.format = format;
        self
    }

    /// The schema of decoded rows (what the cleaning SQL sees as `raw`).
    pub fn row_schema(&self) -> SchemaRef {
        Arc::clone(&self.row_schema)
    }

    /// Decodes every record (each user record of a KPL aggregate as one); the bad ones become
    /// dead letters.
    pub fn decode(&self, records: &[KinesisRecord]) -> Result<DecodedBatch, ArrowError> {
        self.decode_in_range(records, None)
    }

    /// Like [`Self::decode`], for records of a shard holding the hash keys `range`: a user record
    /// of a KPL aggregate whose explicit hash key is outside it is not a row here but a dead
    /// letter that says why. After a reshard the KPL may put an aggregate on a shard that no
    /// longer holds some of its user records, and puts those again on their own shard
    /// (FLINK-29395): the table gets them once, and none is dropped unseen.
    pub fn decode_in_range(
        &self,
        records: &[KinesisRecord],
        range: Option<(u128, u128)>,
    ) -> Result<DecodedBatch, ArrowError> {
        let mut dead_letters = Vec::new();
        let expanded = expand(records, range, self.format, &mut dead_letters);
        let records = expanded.as_deref().unwrap_or(records);
        let mut good: Vec<&KinesisRecord> = Vec::with_capacity(records.len());
        for record in records {
            match looks_like_an_object(&record.data) {
                Ok(()) => good.push(record),
                Err(error) => dead_letters.push(DeadLetter {
                    record: record.clone(),
                    error,
                }),
            }
        }
        let values = match self.decode_rows(&good) {
            Ok(values) => values,
            Err(_) => {
                // Something did not decode: find which records, one by one.
                let mut kept = Vec::with_capacity(good.len());
                let mut parts = Vec::with_capacity(good.len());
                for record in good {
                    match self.decode_rows(&[record]) {
                        Ok(part) => {
                            kept.push(record);
                            parts.push(part);
                        }
                        Err(error) => dead_letters.push(DeadLetter {
                            record: record.clone(),
                            error,
                        }),
                    }
                }
                good = kept;
                concat_batches(&self.text_schema, &parts)?
            }
        };
        let mut columns: Vec<ArrayRef> = values.columns().to_vec();
        let bad_rows = self.integers.convert(&mut columns)?;
        if !bad_rows.is_empty() {
            let mut keep = vec![true; good.len()];
            for bad in bad_rows {
                keep[bad.row] = false;
                dead_letters.push(DeadLetter {
                    record: good[bad.row].clone(),
                    error: bad.reason,
                });
            }
            let mask = BooleanArray::from(keep.clone());
            columns = columns
                .iter()
                .map(|c| filter(c, &mask))
                .collect::<Result<_, _>>()?;
            let mut kept = keep.iter();
            good.retain(|_| kept.next().is_some_and(|k| *k));
        }
        columns.extend(self.metadata_columns(&good));
        columns.push(Arc::new(Int64Array::from_iter(
            good.iter()
                .map(|r| r.sub_sequence.and_then(|s| i64::try_from(s).ok())),
        )));
        let rows = RecordBatch::try_new(self.row_schema(), columns)?;
        for dead in &mut dead_letters {
            if let Some(index) = dead.record.sub_sequence {
                dead.error = format!("user record {index} of a KPL aggregate: {}", dead.error);
            }
        }
        Ok(DecodedBatch { rows, dead_letters })
    }

    /// Decodes `records` into rows of the text schema, one row per record, or says why not.
    fn decode_rows(&self, records: &[&KinesisRecord]) -> Result<RecordBatch, String> {
        let malformed = |e: ArrowError| format!("malformed JSON: {e}");
        let mut decoder = ReaderBuilder::new(Arc::clone(&self.text_schema))
            .with_batch_size(records.len() + 1)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(malformed)?;
        for (i, record) in records.iter().enumerate() {
            let read = decoder.decode(&record.data).map_err(malformed)?;
            decoder.decode(b"\n").map_err(malformed)?;
            // Each record must end exactly one row: not two objects, not half of one.
            if read != record.data.len() || decoder.len() != i + 1 || decoder.has_partial_record() {
                return Err("malformed JSON: the record is not exactly one JSON object".to_owned());
            }
        }
        Ok(decoder
            .flush()
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.text_schema))))
    }

    fn metadata_columns(&self, records: &[&KinesisRecord]) -> Vec<ArrayRef> {
        metadata_columns(&self.stream, records)
    }
}

/// The records as rows to decode: each KPL aggregate replaced by its user records, gzip undone,
/// and each record replaced by the JSON objects its format says it holds (`None`: nothing to
/// change, `records` are decoded as they are). Data that does not fit is one dead letter.
fn expand(
    records: &[KinesisRecord],
    range: Option<(u128, u128)>,
    format: PayloadFormat,
    dead_letters: &mut Vec<DeadLetter>,
) -> Option<Vec<KinesisRecord>> {
    let plain = |r: &KinesisRecord| !kpl::is_aggregated(&r.data) && !payload::is_gzip(&r.data);
    if format == PayloadFormat::Json && records.iter().all(plain) {
        return None;
    }
    let mut expanded = Vec::with_capacity(records.len());
    for record in expand_aggregates(records, range, dead_letters) {
        if format == PayloadFormat::Json && !payload::is_gzip(&record.data) {
            expanded.push(record);
            continue;
        }
        match payload::objects(&record.data, format) {
            Ok(objects) => expanded.extend(objects.into_iter().map(|data| KinesisRecord {
                data: bytes::Bytes::from(data),
                ..record.clone()
            })),
            Err(error) => dead_letters.push(DeadLetter { record, error }),
        }
    }
    Some(expanded)
}

/// The records with each KPL aggregate replaced by its user records. An aggregate that cannot be
/// read is one dead letter.
fn expand_aggregates(
    records: &[KinesisRecord],
    range: Option<(u128, u128)>,
    dead_letters: &mut Vec<DeadLetter>,
) -> Vec<KinesisRecord> {
    // Only an explicit hash key says where the producer meant a user record to go: one without
    // is the aggregate's, wherever its partition key would hash.
    let in_range = |user: &kpl::UserRecord| {
        let explicit = user
            .explicit_hash_key
            .as_deref()
            .and_then(|k| k.parse::<u128>().ok());
        match (range, explicit) {
            (Some((first, last)), Some(key)) => (first..=last).contains(&key),
            _ => true,
        }
    };
    let mut expanded = Vec::with_capacity(records.len());
    for record in records {
        if !kpl::is_aggregated(&record.data) {
            expanded.push(record.clone());
            continue;
        }
        match kpl::deaggregate(&record.data) {
            Ok(users) => {
                for user in users {
                    let outside = !in_range(&user);
                    let user_record = KinesisRecord {
                        partition_key: user.partition_key,
                        data: bytes::Bytes::from(user.data),
                        sub_sequence: Some(user.sub_sequence),
                        ..record.clone()
                    };
                    if outside {
                        // Not a row here, and not lost: the KPL puts it again on its own shard
                        // after a reshard (then this copy is the spare), or someone can.
                        dead_letters.push(DeadLetter {
                            record: user_record,
                            error: "its explicit hash key belongs to another shard (after a reshard the KPL puts such a record again on its own shard)".to_owned(),
                        });
                    } else {
                        expanded.push(user_record);
                    }
                }
            }
            Err(e) => dead_letters.push(DeadLetter {
                record: record.clone(),
                error: e.to_string(),
            }),
        }
    }
    expanded
}

/// `Ok` when `data` is UTF-8 text that starts (after white space) with `{`; the decoder checks
/// the rest. Otherwise the reason the record is a dead letter.
fn looks_like_an_object(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("record is not UTF-8: {e}"))?;
    if text.trim_start().starts_with('{') {
        Ok(())
    } else {
        Err("record is not a JSON object".to_owned())
    }
}

/// `schema` with every string or binary view (at any depth) as its plain array type.
fn without_views(schema: &Schema) -> SchemaRef {
    fn plain(field: &Field) -> Field {
        let data_type = match field.data_type() {
            DataType::Utf8View => DataType::Utf8,
            DataType::BinaryView => DataType::Binary,
            DataType::List(item) => DataType::List(Arc::new(plain(item))),
            DataType::LargeList(item) => DataType::LargeList(Arc::new(plain(item))),
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(|f| plain(f)).collect()),
            other => other.clone(),
        };
        field.clone().with_data_type(data_type)
    }
    Arc::new(Schema::new(
        schema.fields().iter().map(|f| plain(f)).collect::<Vec<_>>(),
    ))
}

/// The metadata columns of `records` read from `stream`.
fn metadata_columns(stream_name: &str, records: &[&KinesisRecord]) -> Vec<ArrayRef> {
    let n = records.len();
    let stream: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
        stream_name,
        n,
    )));
    vec![
        stream,
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.shard_id.as_ref()),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.sequence_number.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.partition_key.as_str()),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter(records.iter().map(|r| r.approximate_arrival_ms))
                .with_timezone("UTC"),
        ),
    ]
}

fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new("_stream", DataType::Utf8, false),
        Field::new("_shard_id", DataType::Utf8, false),
        Field::new("_sequence_number", DataType::Utf8, false),
        Field::new("_partition_key", DataType::Utf8, false),
        Field::new(
            "_approximate_arrival",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]
}

/// The dead-letter table's schema: the record's metadata, its raw bytes, the reason, and the
/// plan that committed it (none for a batch of an earlier version's stream-level protocol).
pub fn dead_letter_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields = metadata_fields();
        fields.push(Field::new("data", DataType::Binary, false));
        fields.push(Field::new("error", DataType::Utf8, false));
        fields.push(plan_field());
        Arc::new(Schema::new(fields))
    });
    Arc::clone(&SCHEMA)
}

/// The columns a raw table adds after the metadata and bytes: the shard's hash key range (what
/// tells, after a reshard, which user records of an aggregate are rows of that shard) and the
/// plan that committed the record (what `rebuild` selects by).
pub const RAW_TABLE_COLUMNS: [&str; 3] = ["_starting_hash_key", "_ending_hash_key", "_plan"];

/// The number of the shard's plan that committed a row: `rebuild` takes a raw row when the table
/// records its plan, and keeps a dead letter of a plan it does not record yet.
fn plan_field() -> Field {
    Field::new("_plan", DataType::Int64, true)
}

/// The schema of Kinesis records as read, before their plan is known: metadata, bytes, and the
/// shard's hash key range (decimal, NULL when the listing did not give it).
pub fn records_read_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields = metadata_fields();
        fields.push(Field::new("data", DataType::Binary, false));
        fields.push(Field::new("_starting_hash_key", DataType::Utf8, true));
        fields.push(Field::new("_ending_hash_key", DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    });
    Arc::clone(&SCHEMA)
}

/// The schema of a raw table: each Kinesis record as read (an aggregate whole, gzip as is), its
/// bytes and metadata, its shard's hash key range, and its plan.
pub fn raw_records_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields: Vec<Field> = records_read_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(plan_field());
        Arc::new(Schema::new(fields))
    });
    Arc::clone(&SCHEMA)
}

/// Turns Kinesis records of one shard, whose hash key range is `range`, into a batch of
/// [`records_read_schema`].
pub fn records_read_batch(
    stream: &str,
    records: &[KinesisRecord],
    range: Option<(u128, u128)>,
) -> Result<RecordBatch, ArrowError> {
    let records: Vec<&KinesisRecord> = records.iter().collect();
    let n = records.len();
    let mut columns = metadata_columns(stream, &records);
    columns.push(Arc::new(BinaryArray::from_iter_values(
        records.iter().map(|r| r.data.as_ref()),
    )));
    let key = |k: Option<u128>| -> ArrayRef {
        Arc::new(StringArray::from_iter(std::iter::repeat_n(
            k.map(|k| k.to_string()),
            n,
        )))
    };
    columns.push(key(range.map(|r| r.0)));
    columns.push(key(range.map(|r| r.1)));
    RecordBatch::try_new(records_read_schema(), columns)
}

/// The raw table's rows of plan `plan`: the records it took as read ([`records_read_batch`])
/// with the plan's number.
pub fn raw_records_batch(read: &RecordBatch, plan: i64) -> Result<RecordBatch, ArrowError> {
    let mut columns = read.columns().to_vec();
    columns.push(plan_column(Some(plan), read.num_rows()));
    RecordBatch::try_new(raw_records_schema(), columns)
}

fn plan_column(plan: Option<i64>, rows: usize) -> ArrayRef {
    Arc::new(Int64Array::from(vec![plan; rows]))
}

/// Turns the dead letters of plan `plan` (none for a stream-level batch) into a batch of
/// [`dead_letter_schema`].
pub fn dead_letter_batch(
    stream: &str,
    dead: &[DeadLetter],
    plan: Option<i64>,
) -> Result<RecordBatch, ArrowError> {
    let records: Vec<&KinesisRecord> = dead.iter().map(|d| &d.record).collect();
    let mut columns = metadata_columns(stream, &records);
    columns.push(Arc::new(BinaryArray::from_iter_values(
        records.iter().map(|r| r.data.as_ref()),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        dead.iter().map(|d| d.error.as_str()),
    )));
    columns.push(plan_column(plan, dead.len()));
    RecordBatch::try_new(dead_letter_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequence::SequenceNumber;
    use arrow::array::{Array, Int64Array};
    use bytes::Bytes;

    fn record(seq: u32, data: &[u8]) -> KinesisRecord {
        KinesisRecord {
            shard_id: Arc::from("shardId-000000000000"),
            sequence_number: SequenceNumber::parse(&seq.to_string()).unwrap(),
            partition_key: "pk".into(),
            approximate_arrival_ms: Some(1_700_000_000_000),
            data: Bytes::copy_from_slice(data),
            sub_sequence: None,
        }
    }

    /// The values of a BIGINT column of the decoded rows.
    fn integers(decoded: &DecodedBatch, column: usize) -> Vec<Option<i64>> {
        let column = decoded.rows.column(column);
        let values = column.as_any().downcast_ref::<Int64Array>().unwrap();
        values.iter().collect()
    }

    async fn user_decoder() -> RecordDecoder {
        let schema = raw_schema_from_sql(
            "CREATE TABLE raw (ind BIGINT, first_name VARCHAR, age BIGINT)",
            Path::new("user.schema.sql"),
        )
        .await
        .unwrap();
        RecordDecoder::new("s", schema)
    }

    /// The golden case of each payload format through the declared schema: a gzipped CloudWatch
    /// Logs envelope (3 events, a control message beside it), JSON lines, and bytes that fit no
    /// format as dead letters with the reason.
    #[tokio::test]
    async fn payload_formats_become_rows_and_what_does_not_fit_is_a_dead_letter() {
        use std::io::Write;
        let gzip = |data: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        let schema = raw_schema_from_sql(
            "CREATE TABLE raw (owner VARCHAR, log_group VARCHAR, log_stream VARCHAR, \
             subscription_filters VARCHAR[], id VARCHAR, timestamp BIGINT, message VARCHAR)",
            Path::new("logs.schema.sql"),
        )
        .await
        .unwrap();
        let logs = RecordDecoder::new("s", schema).with_format(PayloadFormat::CloudwatchLogs);
        let envelope = include_bytes!("../../tests/fixtures/payloads/cloudwatch_logs.json");
        let control = include_bytes!("../../tests/fixtures/payloads/cloudwatch_control.json");
        let decoded = logs
            .decode(&[
                record(1, &gzip(envelope)),
                record(2, &gzip(control)),
                record(3, b"\x1f\x8b not gzip"),
            ])
            .unwrap();
        assert_eq!(decoded.rows.num_rows(), 3);
        assert_eq!(
            integers(&decoded, 5),
            [
                Some(1432826855000),
                Some(1432826855000),
                Some(1432826855001)
            ]
        );
        let messages = decoded
            .rows
            .column(6)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(messages.value(2), "plain text: café, not JSON");
        let groups = decoded
            .rows
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(groups.value(0), "CloudTrail/logs");
        assert_eq!(decoded.dead_letters.len(), 1);
        assert!(decoded.dead_letters[0].error.contains("not valid gzip"));

        let lines = user_decoder().await.with_format(PayloadFormat::JsonLines);
        let decoded = lines
            .decode(&[record(1, b"{\"ind\": 1, \"age\": 20}\n\n{\"ind\": 2}\n")])
            .unwrap();
        assert_eq!(integers(&decoded, 0), [Some(1), Some(2)]);
        assert!(decoded.dead_letters.is_empty());
    }

    #[tokio::test]
    async fn bad_records_become_dead_letters_and_good_ones_stay_in_order() {
        let decoder = user_decoder().await;
        let records = vec![
            record(1, br#"{"ind": 1, "first_name": "Ann", "age": 20}"#),
            record(2, b"{\"ind\": 2, \"first_name\": \"\xff\"}"),
            record(3, br#"{"ind": 3"#),
            record(4, br#"{"ind": "three"}"#),
            record(5, br#"[1, 2]"#),
            record(6, br#"{"ind": 6} {"ind": 7}"#),
            record(7, b""),
            record(8, br#"{"ind": "8", "age": 31, "extra": true}"#),
        ];
        let decoded = decoder.decode(&records).unwrap();
        assert_eq!(integers(&decoded, 0), [Some(1), Some(8)]);
        let seqs = decoded.rows.column_by_name("_sequence_number").unwrap();
        assert_eq!(seqs.len(), 2);
        let mut dead: Vec<_> = decoded
            .dead_letters
            .iter()
            .map(|d| d.record.sequence_number.to_string())
            .collect();
        dead.sort();
        assert_eq!(dead, ["2", "3", "4", "5", "6", "7"]);
        assert!(decoded.dead_letters.iter().all(|d| !d.error.is_empty()));
        let batch = dead_letter_batch("s", &decoded.dead_letters, Some(3)).unwrap();
        assert_eq!(batch.num_rows(), 6);
        let plans = batch.column_by_name("_plan").unwrap();
        let plans = plans.as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(
            plans.iter().all(|p| p == Some(3)),
            "each row names its plan"
        );
    }

    #[tokio::test]
    async fn records_that_are_not_one_object_are_named_and_do_not_shift_rows() {
        let decoder = user_decoder().await;
        // Two halves that together would make valid JSON: each record must end its own row.
        let records = vec![
            record(1, br#"{"ind": 1}{"age": "#),
            record(2, br#"{"ind": 3}}"#),
            record(3, br#"  {"ind": 4, "age": "5"}"#),
            record(4, b"[1]"),
            record(5, b"\xff"),
            record(6, br#"{"ind": 1.5, "age": 2.5}"#),
            record(7, br#"{"i\u006ed": 7}"#),
        ];
        let decoded = decoder.decode(&records).unwrap();
        assert_eq!(integers(&decoded, 0), [Some(4), Some(7)]);
        assert_eq!(integers(&decoded, 2), [Some(5), None]);
        let seqs = decoded.rows.column_by_name("_sequence_number").unwrap();
        let seqs = seqs.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(seqs.iter().collect::<Vec<_>>(), [Some("3"), Some("7")]);
        let reason = |seq: &str| {
            decoded
                .dead_letters
                .iter()
                .find(|d| d.record.sequence_number.to_string() == seq)
                .map(|d| d.error.clone())
                .unwrap_or_default()
        };
        assert!(reason("1").contains("malformed JSON"), "{}", reason("1"));
        assert!(reason("2").contains("malformed JSON"), "{}", reason("2"));
        assert!(reason("4").contains("not a JSON object"), "{}", reason("4"));
        assert!(reason("5").contains("not UTF-8"), "{}", reason("5"));
        // One dead letter per record, however many of its values are refused.
        assert!(reason("6").contains("`ind` is BIGINT but the record holds `1.5`"));
        assert_eq!(decoded.dead_letters.len(), 5);
    }

    #[tokio::test]
    async fn text_is_decoded_as_plain_strings() {
        let declared = raw_schema_from_sql(
            "CREATE TABLE raw (ind BIGINT, first_name VARCHAR)",
            Path::new("user.schema.sql"),
        )
        .await
        .unwrap();
        // DataFusion declares VARCHAR as a string view: the decoder must not decode it as one.
        assert_eq!(declared.field(1).data_type(), &DataType::Utf8View);
        let decoder = user_decoder().await;
        let declared = decoder.row_schema();
        let first_name = declared.field_with_name("first_name").unwrap();
        assert_eq!(first_name.data_type(), &DataType::Utf8);
        let decoded = decoder
            .decode(&[record(
                1,
                br#"{"ind": 1, "first_name": "a name longer than twelve"}"#,
            )])
            .unwrap();
        assert_eq!(decoded.rows.column(1).data_type(), &DataType::Utf8);
    }

    #[tokio::test]
    async fn metadata_names_are_reserved() {
        let err = raw_schema_from_sql("CREATE TABLE raw (_stream VARCHAR)", Path::new("x.sql"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
