//! Stream administration, shared by `kinesis-delta streams` and the REST API: create (idempotent,
//! waits until ACTIVE), list (all pages), describe (all shards), delete.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::StreamStatus;
use serde::Serialize;

use crate::source::{ErrorClass, KinesisClient, classify};

/// A Kinesis call that failed, with what Kinesis said and how the engine classifies it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Kinesis {operation} failed: {code}: {message}")]
pub struct KinesisCallError {
    /// The API operation.
    pub operation: &'static str,
    /// Kinesis's error code (`ResourceNotFoundException`, …), or the transport failure.
    pub code: String,
    /// Kinesis's message.
    pub message: String,
    /// Throttled, not found, unavailable, …
    pub class: ErrorClass,
    /// The HTTP status Kinesis answered with, when it answered.
    pub status: Option<u16>,
}

impl KinesisCallError {
    /// Builds the error from an SDK error.
    pub fn new<E: ProvideErrorMetadata + std::error::Error + 'static>(
        operation: &'static str,
        err: &SdkError<E, HttpResponse>,
    ) -> Self {
        let class = classify(err);
        match err {
            SdkError::ServiceError(service) => Self {
                operation,
                code: service.err().code().unwrap_or("UnknownError").to_owned(),
                message: service.err().message().unwrap_or("(no message)").to_owned(),
                class,
                status: Some(service.raw().status().as_u16()),
            },
            other => Self {
                operation,
                code: "ServiceUnavailable".to_owned(),
                message: crate::source::error_summary_with_remedy(operation, other),
                class,
                status: None,
            },
        }
    }
}

/// What `create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateOutcome {
    /// The stream was created.
    Created,
    /// It existed already (not an error: creating is idempotent).
    Exists,
}

/// Creates a stream; an existing one is reported as [`CreateOutcome::Exists`].
pub async fn create(
    client: &KinesisClient,
    name: &str,
    shard_count: i32,
) -> Result<CreateOutcome, KinesisCallError> {
    match client
        .create_stream()
        .stream_name(name)
        .shard_count(shard_count)
        .send()
        .await
    {
        Ok(_) => Ok(CreateOutcome::Created),
        Err(err) if err.code() == Some("ResourceInUseException") => Ok(CreateOutcome::Exists),
        Err(err) => Err(KinesisCallError::new("CreateStream", &err)),
    }
}

/// Waits until a stream is ACTIVE.
pub async fn wait_active(
    client: &KinesisClient,
    name: &str,
    timeout: Duration,
) -> Result<(), KinesisCallError> {
    let deadline = Instant::now() + timeout;
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(|e| KinesisCallError::new("DescribeStreamSummary", &e))?;
        let status = summary
            .stream_description_summary()
            .map(|d| d.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KinesisCallError {
                operation: "DescribeStreamSummary",
                code: "Timeout".to_owned(),
                message: format!("stream {name} is still {status:?} after {timeout:?}"),
                class: ErrorClass::Unavailable,
                status: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every stream name (all pages).
pub async fn list(client: &KinesisClient) -> Result<Vec<String>, KinesisCallError> {
    let mut names = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let request = match &next_token {
            Some(token) => client.list_streams().next_token(token),
            None => client.list_streams(),
        };
        let page = request
            .send()
            .await
            .map_err(|e| KinesisCallError::new("ListStreams", &e))?;
        names.extend(page.stream_names().iter().cloned());
        next_token = page.next_token().map(str::to_owned);
        if next_token.is_none() || !page.has_more_streams() {
            return Ok(names);
        }
    }
}

/// Deletes a stream.
pub async fn delete(client: &KinesisClient, name: &str) -> Result<(), KinesisCallError> {
    client
        .delete_stream()
        .stream_name(name)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| KinesisCallError::new("DeleteStream", &e))
}

/// `DescribeStream`'s `StreamDescription`, in Kinesis's JSON shape.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamDescription {
    /// The name.
    pub stream_name: String,
    /// The ARN.
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    /// CREATING, ACTIVE, DELETING or UPDATING.
    pub stream_status: String,
    /// Retention in hours.
    pub retention_period_hours: i32,
    /// Creation time, seconds since the epoch.
    pub stream_creation_timestamp: Option<f64>,
    /// Every shard (all pages).
    pub shards: Vec<ShardDescription>,
    /// Always false: every page was read.
    pub has_more_shards: bool,
    /// NONE or KMS.
    pub encryption_type: Option<String>,
}

/// One shard of a [`StreamDescription`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShardDescription {
    /// The shard id.
    pub shard_id: String,
    /// Its parent, after a reshard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_shard_id: Option<String>,
    /// Its second parent, after a merge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjacent_parent_shard_id: Option<String>,
    /// `{StartingHashKey, EndingHashKey}`.
    pub hash_key_range: serde_json::Value,
    /// `{StartingSequenceNumber, EndingSequenceNumber?}`.
    pub sequence_number_range: serde_json::Value,
}

/// Describes a stream with all its shards.
pub async fn describe(
    client: &KinesisClient,
    name: &str,
) -> Result<StreamDescription, KinesisCallError> {
    let mut description: Option<StreamDescription> = None;
    let mut start_after: Option<String> = None;
    loop {
        let page = client
            .describe_stream()
            .stream_name(name)
            .set_exclusive_start_shard_id(start_after.clone())
            .send()
            .await
            .map_err(|e| KinesisCallError::new("DescribeStream", &e))?;
        let Some(d) = page.stream_description() else {
            return Err(KinesisCallError {
                operation: "DescribeStream",
                code: "InvalidResponse".into(),
                message: "no StreamDescription in the response".into(),
                class: ErrorClass::Unavailable,
                status: None,
            });
        };
        let shards = d.shards().iter().map(|s| ShardDescription {
            shard_id: s.shard_id().to_owned(),
            parent_shard_id: s.parent_shard_id().map(str::to_owned),
            adjacent_parent_shard_id: s.adjacent_parent_shard_id().map(str::to_owned),
            hash_key_range: s.hash_key_range().map_or(serde_json::Value::Null, |r| {
                serde_json::json!({"StartingHashKey": r.starting_hash_key(), "EndingHashKey": r.ending_hash_key()})
            }),
            sequence_number_range: s.sequence_number_range().map_or(serde_json::Value::Null, |r| {
                let mut range = serde_json::json!({"StartingSequenceNumber": r.starting_sequence_number()});
                if let Some(end) = r.ending_sequence_number() {
                    range["EndingSequenceNumber"] = end.into();
                }
                range
            }),
        });
        let entry = description.get_or_insert_with(|| StreamDescription {
            stream_name: d.stream_name().to_owned(),
            stream_arn: d.stream_arn().to_owned(),
            stream_status: d.stream_status().as_str().to_owned(),
            retention_period_hours: d.retention_period_hours(),
            stream_creation_timestamp: Some(d.stream_creation_timestamp().as_secs_f64()),
            shards: Vec::new(),
            has_more_shards: false,
            encryption_type: d.encryption_type().map(|e| e.as_str().to_owned()),
        });
        entry.shards.extend(shards);
        start_after = entry.shards.last().map(|s| s.shard_id.clone());
        if !d.has_more_shards() || start_after.is_none() {
            break;
        }
    }
    description.ok_or_else(|| KinesisCallError {
        operation: "DescribeStream",
        code: "InvalidResponse".into(),
        message: "no StreamDescription in the response".into(),
        class: ErrorClass::Unavailable,
        status: None,
    })
}
