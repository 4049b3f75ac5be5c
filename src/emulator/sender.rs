//! Sends records to a target and retries only what failed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Counters, EmulatorError};
use crate::source::{Backoff, ErrorClass, KinesisClient};
use crate::streams::KinesisCallError;

/// Where records go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The REST API (`kinesis-delta api`, or the original API Gateway).
    Api {
        /// Base URL, e.g. `http://127.0.0.1:8080`.
        url: String,
        /// Sent as `x-api-key` when set.
        api_key: Option<String>,
        /// A keep-alive HTTP client.
        http: reqwest::Client,
    },
    /// Kinesis itself, with PutRecords; with `aggregate`, that many records go in one Kinesis
    /// record in the KPL's aggregation format.
    Direct {
        /// The Kinesis client.
        client: KinesisClient,
        /// User records per KPL aggregate (`None`: one Kinesis record each).
        aggregate: Option<usize>,
    },
}

/// One record to send.
#[derive(Debug)]
pub struct Entry {
    /// Partition key.
    pub key: String,
    /// The row's JSON text.
    pub data: Box<RawValue>,
}

/// `PUT /streams/{name}/record`, as the seed's emulator sends it.
#[derive(serde::Serialize)]
struct RecordBody<'a> {
    #[serde(rename = "StreamName")]
    stream_name: &'a str,
    #[serde(rename = "Data")]
    data: &'a RawValue,
    #[serde(rename = "PartitionKey")]
    partition_key: &'a str,
}

/// `PUT /streams/{name}/records`.
#[derive(serde::Serialize)]
struct RecordsBody<'a> {
    records: Vec<RecordsEntry<'a>>,
}

#[derive(serde::Serialize)]
struct RecordsEntry<'a> {
    data: &'a RawValue,
    #[serde(rename = "partition-key")]
    partition_key: &'a str,
}

/// How a request failed.
enum Failure {
    /// Worth retrying (throttled, 5xx, network).
    Retry(String),
    /// Not worth retrying (a 4xx: the request itself is wrong).
    Fatal(String),
}

impl Target {
    /// An API target with a keep-alive client.
    pub fn api(url: &str, api_key: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self::Api {
            url: url.trim_end_matches('/').to_owned(),
            api_key,
            http,
        }
    }

    /// Checks that the target answers before anything is sent.
    pub async fn check(&self) -> Result<(), EmulatorError> {
        match self {
            Self::Api { url, api_key, http } => {
                let mut request = http.get(format!("{url}/streams"));
                if let Some(key) = api_key {
                    request = request.header("x-api-key", key);
                }
                let unreachable = |message: String| EmulatorError::Unreachable {
                    target: url.clone(),
                    message,
                };
                let response = request.send().await.map_err(|e| {
                    unreachable(format!("{e}; is the API running (`kinesis-delta api`)?"))
                })?;
                match response.status().as_u16() {
                    200 => Ok(()),
                    403 => Err(unreachable(
                        "the API refused the key: pass the right one with --api-key".into(),
                    )),
                    status => Err(unreachable(format!(
                        "GET /streams answered {status}: {}",
                        response.text().await.unwrap_or_default()
                    ))),
                }
            }
            Self::Direct { client, .. } => {
                client.list_streams().send().await.map(|_| ()).map_err(|e| {
                    EmulatorError::Unreachable {
                        target: "Kinesis".into(),
                        message: KinesisCallError::new("ListStreams", &e).to_string(),
                    }
                })
            }
        }
    }

    /// One request; `Ok` holds, per entry, `None` when accepted or the error when not.
    async fn put(
        &self,
        stream: &str,
        entries: &[Entry],
        single: bool,
    ) -> Result<Vec<Option<String>>, Failure> {
        match self {
            Self::Api { url, api_key, http } => {
                // Typed bodies keep each row's JSON text exactly as it was made (a `Value` would
                // reorder its keys).
                let (path, body) = if single && entries.len() == 1 {
                    let e = &entries[0];
                    let body = RecordBody {
                        stream_name: stream,
                        data: &e.data,
                        partition_key: &e.key,
                    };
                    ("record", serde_json::to_vec(&body))
                } else {
                    let records = entries
                        .iter()
                        .map(|e| RecordsEntry {
                            data: &e.data,
                            partition_key: &e.key,
                        })
                        .collect();
                    ("records", serde_json::to_vec(&RecordsBody { records }))
                };
                let body = body.map_err(|e| Failure::Fatal(e.to_string()))?;
                let mut request = http
                    .put(format!("{url}/streams/{stream}/{path}"))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                if let Some(key) = api_key {
                    request = request.header("x-api-key", key);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| Failure::Retry(e.to_string()))?;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match status {
                    200 if path == "record" => Ok(vec![None]),
                    200 => {
                        let results = body["Records"].as_array().cloned().unwrap_or_default();
                        if results.len() != entries.len() {
                            return Err(Failure::Retry(format!(
                                "{} results for {} records",
                                results.len(),
                                entries.len()
                            )));
                        }
                        Ok(results
                            .iter()
                            .map(|r| r["ErrorCode"].as_str().map(str::to_owned))
                            .collect())
                    }
                    408 | 429 | 500..=599 => Err(Failure::Retry(format!("{status}: {body}"))),
                    _ => Err(Failure::Fatal(format!("{status}: {body}"))),
                }
            }
            Self::Direct { client, aggregate } => {
                // Each Kinesis record and the entries it carries (one, or an aggregate's).
                let per_record = aggregate.unwrap_or(1).max(1);
                let records = entries
                    .chunks(per_record)
                    .map(|group| {
                        let data = if aggregate.is_some() {
                            let users: Vec<(String, Option<String>, Vec<u8>)> = group
                                .iter()
                                .map(|e| (e.key.clone(), None, e.data.get().as_bytes().to_vec()))
                                .collect();
                            crate::decode::kpl::aggregate(&users)
                        } else {
                            group[0].data.get().as_bytes().to_vec()
                        };
                        PutRecordsRequestEntry::builder()
                            .partition_key(&group[0].key)
                            .data(Blob::new(data))
                            .build()
                            .map_err(|err| Failure::Fatal(err.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match client
                    .put_records()
                    .stream_name(stream)
                    .set_records(Some(records))
                    .send()
                    .await
                {
                    // An aggregate's result is each of its entries' result.
                    Ok(out) => Ok(out
                        .records()
                        .iter()
                        .zip(entries.chunks(per_record))
                        .flat_map(|(r, group)| {
                            std::iter::repeat_n(r.error_code().map(str::to_owned), group.len())
                        })
                        .collect()),
                    Err(e) => {
                        let err = KinesisCallError::new("PutRecords", &e);
                        match err.class {
                            ErrorClass::Throttled | ErrorClass::Unavailable => {
                                Err(Failure::Retry(err.to_string()))
                            }
                            _ => Err(Failure::Fatal(err.to_string())),
                        }
                    }
                }
            }
        }
    }
}

/// Sends `entries` to `stream`, retrying only the entries that failed, up to `max_attempts`.
pub async fn send_all(
    target: &Target,
    stream: &str,
    mut entries: Vec<Entry>,
    single: bool,
    max_attempts: u32,
    counters: &Arc<Counters>,
    table: usize,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut attempt = 0;
    // Records go one per request on the `/record` route.
    let chunk = if single { 1 } else { 500 };
    while !entries.is_empty() {
        attempt += 1;
        let mut failed = Vec::new();
        let mut retry_reason = None;
        let mut rest = entries.into_iter().peekable();
        while rest.peek().is_some() {
            let part: Vec<Entry> = rest.by_ref().take(chunk).collect();
            let sent_at = std::time::Instant::now();
            let outcome = target.put(stream, &part, single).await;
            counters.record_latency(sent_at.elapsed());
            match outcome {
                Ok(results) => {
                    for (entry, error) in part.into_iter().zip(results) {
                        match error {
                            None => {
                                counters.accepted[table].fetch_add(1, Ordering::Relaxed);
                            }
                            Some(code) => {
                                retry_reason = Some(code);
                                failed.push(entry);
                            }
                        }
                    }
                }
                Err(Failure::Retry(reason)) => {
                    retry_reason = Some(reason);
                    failed.extend(part);
                }
                Err(Failure::Fatal(reason)) => {
                    tracing::error!(stream, records = part.len(), %reason, "records refused; not retried");
                    counters
                        .failed
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                }
            }
        }
        entries = failed;
        if entries.is_empty() {
            break;
        }
        if attempt >= max_attempts {
            tracing::error!(stream, records = entries.len(), reason = ?retry_reason, "giving up after {max_attempts} attempts");
            counters
                .failed
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            break;
        }
        tracing::debug!(stream, records = entries.len(), reason = ?retry_reason, "retrying failed records");
        counters
            .retried
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let delay = backoff.next_delay(&mut rand::rng());
        tokio::time::sleep(delay).await;
    }
}
