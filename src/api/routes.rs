//! The routes and their handlers. Bodies are parsed here, by hand, so every malformed input gets a
//! 4xx whose message says what is wrong.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ApiError, ApiState, OPENAPI};
use crate::config::valid_stream_name;
use crate::streams::{self, KinesisCallError};

/// Kinesis limits the API enforces before calling Kinesis.
const MAX_RECORD_BYTES: usize = 1024 * 1024;
const MAX_PUT_RECORDS_ENTRIES: usize = 500;
const MAX_PUT_RECORDS_BYTES: usize = 5 * 1024 * 1024;
const MAX_PARTITION_KEY_CHARS: usize = 256;
const DEFAULT_SHARD_COUNT: i32 = 5;

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/streams", get(list_streams))
        .route(
            "/streams/{stream_name}",
            get(describe_stream)
                .post(create_stream)
                .delete(delete_stream),
        )
        .route("/streams/{stream_name}/record", put(put_record))
        .route("/streams/{stream_name}/records", put(put_records))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

fn stream_name(name: &str) -> Result<&str, ApiError> {
    if valid_stream_name(name) {
        Ok(name)
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid stream name `{name}`: use 1 to 128 characters of a-z, A-Z, 0-9, `_`, `.` and `-`"
        )))
    }
}

/// The body, or a 4xx that says why it could not be read.
fn body(bytes: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    bytes.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) => ApiError::TooLarge(format!(
            "request body rejected: {rejection}; the limit is configurable (--max-body-bytes)"
        )),
        other => ApiError::BadRequest(format!("cannot read the request body: {other}")),
    })
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed request body: {e}; expected {shape}")))
}

fn partition_key(key: Option<&str>, field: &str) -> Result<String, ApiError> {
    match key {
        None => Err(ApiError::BadRequest(format!("{field} is required"))),
        Some("") => Err(ApiError::BadRequest(format!("{field} must not be empty"))),
        Some(k) if k.chars().count() > MAX_PARTITION_KEY_CHARS => Err(ApiError::BadRequest(
            format!("{field} is longer than {MAX_PARTITION_KEY_CHARS} characters"),
        )),
        Some(k) => Ok(k.to_owned()),
    }
}

async fn list_streams(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let names = streams::list(&state.client).await?;
    Ok(Json(json!({"HasMoreStreams": false, "StreamNames": names})))
}

async fn describe_stream(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let description = streams::describe(&state.client, stream_name(&name)?).await?;
    Ok(Json(json!({"StreamDescription": description})))
}

#[derive(Deserialize)]
struct CreateStreamBody {
    #[serde(rename = "ShardCount", default)]
    shard_count: Option<Value>,
}

async fn create_stream(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = stream_name(&name)?;
    let bytes = body(bytes)?;
    // As the seed's mapping template: a missing body, a missing ShardCount or '' mean 5.
    let shard_count = if bytes.iter().all(u8::is_ascii_whitespace) {
        DEFAULT_SHARD_COUNT
    } else {
        let parsed: CreateStreamBody =
            parse(&bytes, r#"{"ShardCount": <positive integer>} or no body"#)?;
        match parsed.shard_count {
            None | Some(Value::Null) => DEFAULT_SHARD_COUNT,
            Some(Value::String(s)) if s.is_empty() => DEFAULT_SHARD_COUNT,
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("ShardCount must be a positive integer, not {n}"))
                })?,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "ShardCount must be a positive integer, not {other}"
                )));
            }
        }
    };
    match state
        .client
        .create_stream()
        .stream_name(name)
        .shard_count(shard_count)
        .send()
        .await
    {
        Ok(_) => Ok(Json(json!({}))),
        Err(e) => Err(KinesisCallError::new("CreateStream", &e).into()),
    }
}

async fn delete_stream(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    streams::delete(&state.client, stream_name(&name)?).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct PutRecordBody<'a> {
    #[serde(rename = "StreamName", default)]
    _stream_name: Option<String>,
    #[serde(rename = "Data", borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(rename = "PartitionKey", default)]
    partition_key: Option<String>,
}

async fn put_record(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = stream_name(&name)?;
    let bytes = body(bytes)?;
    let parsed: PutRecordBody = parse(
        &bytes,
        r#"{"StreamName": "...", "Data": <any JSON>, "PartitionKey": "..."}"#,
    )?;
    let data = parsed
        .data
        .ok_or_else(|| ApiError::BadRequest("Data is required".into()))?;
    let key = partition_key(parsed.partition_key.as_deref(), "PartitionKey")?;
    let record = data.get().as_bytes();
    if record.len() + key.len() > MAX_RECORD_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the record is {} bytes; Kinesis accepts at most 1 MiB (data plus partition key)",
            record.len() + key.len()
        )));
    }
    let out = state
        .client
        .put_record()
        .stream_name(name)
        .partition_key(key)
        .data(Blob::new(record.to_vec()))
        .send()
        .await
        .map_err(|e| KinesisCallError::new("PutRecord", &e))?;
    let mut response = json!({"SequenceNumber": out.sequence_number(), "ShardId": out.shard_id()});
    if let Some(encryption) = out.encryption_type() {
        response["EncryptionType"] = encryption.as_str().into();
    }
    Ok(Json(response))
}

#[derive(Deserialize)]
struct PutRecordsBody<'a> {
    #[serde(borrow)]
    records: Option<Vec<PutRecordsEntry<'a>>>,
}

#[derive(Deserialize)]
struct PutRecordsEntry<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(rename = "partition-key", default)]
    partition_key: Option<String>,
}

async fn put_records(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = stream_name(&name)?;
    let bytes = body(bytes)?;
    let parsed: PutRecordsBody = parse(
        &bytes,
        r#"{"records": [{"data": <any JSON>, "partition-key": "..."}]}"#,
    )?;
    let records = parsed
        .records
        .ok_or_else(|| ApiError::BadRequest("records is required".into()))?;
    if records.is_empty() {
        return Err(ApiError::BadRequest(
            "records must hold at least one entry".into(),
        ));
    }
    if records.len() > MAX_PUT_RECORDS_ENTRIES {
        return Err(ApiError::TooLarge(format!(
            "{} records in one request; Kinesis accepts at most {MAX_PUT_RECORDS_ENTRIES}: split them over several requests",
            records.len()
        )));
    }
    let mut entries = Vec::with_capacity(records.len());
    let mut total = 0;
    for (i, entry) in records.iter().enumerate() {
        let data = entry
            .data
            .ok_or_else(|| ApiError::BadRequest(format!("records[{i}].data is required")))?;
        let key = partition_key(
            entry.partition_key.as_deref(),
            &format!("records[{i}].partition-key"),
        )?;
        let size = data.get().len() + key.len();
        if size > MAX_RECORD_BYTES {
            return Err(ApiError::TooLarge(format!(
                "records[{i}] is {size} bytes; Kinesis accepts at most 1 MiB per record"
            )));
        }
        total += size;
        entries.push(
            PutRecordsRequestEntry::builder()
                .data(Blob::new(data.get().as_bytes().to_vec()))
                .partition_key(key)
                .build()
                .map_err(|e| ApiError::BadRequest(format!("records[{i}]: {e}")))?,
        );
    }
    if total > MAX_PUT_RECORDS_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the records total {total} bytes; Kinesis accepts at most 5 MiB per request: split them"
        )));
    }
    let out = state
        .client
        .put_records()
        .stream_name(name)
        .set_records(Some(entries))
        .send()
        .await
        .map_err(|e| KinesisCallError::new("PutRecords", &e))?;
    let results: Vec<Value> = out
        .records()
        .iter()
        .map(|r| match r.error_code() {
            Some(code) => {
                json!({"ErrorCode": code, "ErrorMessage": r.error_message().unwrap_or_default()})
            }
            None => json!({"SequenceNumber": r.sequence_number(), "ShardId": r.shard_id()}),
        })
        .collect();
    Ok(Json(
        json!({"FailedRecordCount": out.failed_record_count().unwrap_or(0), "Records": results}),
    ))
}
