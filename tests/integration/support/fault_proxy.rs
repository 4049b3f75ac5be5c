//! A loopback HTTP proxy in front of a real Kinesis server that injects the failures Kinesis
//! produces in production: throttling, expired iterators, the service being away, answers without a
//! shard iterator, and a real `MillisBehindLatest`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// Which GetRecords calls fail, by call number (1-based): the first rule that matches wins.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    /// Every n-th call is throttled (`ProvisionedThroughputExceededException`); 0 = never.
    pub throttle_every: u64,
    /// Every n-th call gets `ExpiredIteratorException`; 0 = never.
    pub expire_every: u64,
    /// Every n-th call gets a 503 with no body (the service away); 0 = never.
    pub unavailable_every: u64,
    /// GetShardIterator for this shard is answered 200 `{}`: no iterator.
    pub no_iterator_for_shard: Option<&'static str>,
    /// Every GetRecords answer says it is this far behind the tip (`MillisBehindLatest`), as
    /// Kinesis does for a consumer under steady load; `None` leaves the server's value.
    pub millis_behind: Option<i64>,
    /// GetRecords asks for at most this many records (the request's `Limit` is lowered), so a
    /// batch is collected over several rounds.
    pub max_records_per_call: Option<i64>,
    /// The first n GetShardIterator calls at `AT_SEQUENCE_NUMBER` are refused with
    /// `AccessDeniedException` (a transient permission or token failure).
    pub refuse_at_sequence: u64,
    /// The first GetRecords answer with records loses its `NextShardIterator`, as if the shard
    /// had closed (a broken proxy or server).
    pub drop_next_iterator_once: bool,
}

impl FaultPlan {
    /// No faults on GetRecords.
    pub const NONE: Self = Self {
        throttle_every: 0,
        expire_every: 0,
        unavailable_every: 0,
        no_iterator_for_shard: None,
        millis_behind: None,
        max_records_per_call: None,
        refuse_at_sequence: 0,
        drop_next_iterator_once: false,
    };
}

/// Counts of what the proxy did.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// GetRecords calls seen.
    pub get_records: AtomicU64,
    /// Throttling errors injected.
    pub throttled: AtomicU64,
    /// Expired-iterator errors injected.
    pub expired: AtomicU64,
    /// 503s injected.
    pub unavailable: AtomicU64,
    /// GetShardIterator answers without an iterator.
    pub no_iterator: AtomicU64,
    /// GetShardIterator calls refused.
    pub refused: AtomicU64,
    /// GetRecords answers whose next iterator was dropped.
    pub dropped_iterators: AtomicU64,
}

struct ProxyState {
    throttle_puts: bool,
    upstream: String,
    http: reqwest::Client,
    plan: FaultPlan,
    counts: Arc<FaultCounts>,
    outage: Arc<AtomicBool>,
    trimmed: Arc<Mutex<Vec<Trim>>>,
    hidden: Arc<Mutex<Vec<(String, String)>>>,
}

/// A shard whose records up to `through` are gone, as if aged out of retention.
#[derive(Debug, Clone)]
pub struct Trim {
    /// The stream.
    pub stream: String,
    /// The shard.
    pub shard: String,
    /// The last trimmed sequence number.
    pub through: String,
}

/// `a <= b` for Kinesis sequence numbers (decimal strings without leading zeros).
fn sequence_le(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

/// What a trim does to a GetShardIterator request.
enum Trimmed {
    /// TRIM_HORIZON starts after the trim point.
    Rewrite(Bytes),
    /// A position at or before the trim point is refused, as Kinesis refuses an expired one.
    Refuse,
}

/// Applies the trims to a GetShardIterator request, so that trimmed records are never reached.
fn apply_trims(body: &Bytes, trims: &[Trim]) -> Option<Trimmed> {
    let mut request: serde_json::Value = serde_json::from_slice(body).ok()?;
    let trim = trims.iter().find(|t| {
        request["StreamName"] == t.stream.as_str() && request["ShardId"] == t.shard.as_str()
    })?;
    match request["ShardIteratorType"].as_str()? {
        "TRIM_HORIZON" => {
            request["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER".into();
            request["StartingSequenceNumber"] = trim.through.clone().into();
            Some(Trimmed::Rewrite(Bytes::from(request.to_string())))
        }
        "AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER"
            if sequence_le(request["StartingSequenceNumber"].as_str()?, &trim.through) =>
        {
            Some(Trimmed::Refuse)
        }
        _ => None,
    }
}

/// A running proxy; it stops with the test's runtime.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// What it injected.
    pub counts: Arc<FaultCounts>,
    /// While true, every GetRecords call is answered 503 (an outage of the test's choosing).
    pub outage: Arc<AtomicBool>,
    /// Shards whose oldest records are gone, as if aged out of retention.
    pub trimmed: Arc<Mutex<Vec<Trim>>>,
    /// (stream, shard) left out of ListShards and unknown to GetShardIterator, as a closed shard
    /// is once all its records aged out.
    pub hidden: Arc<Mutex<Vec<(String, String)>>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: &str, plan: FaultPlan) -> Self {
        Self::start_with(upstream, plan, false).await
    }

    /// Starts a proxy that also throttles every PutRecord when `throttle_puts`.
    pub async fn start_with(upstream: &str, plan: FaultPlan, throttle_puts: bool) -> Self {
        let counts = Arc::new(FaultCounts::default());
        let outage = Arc::new(AtomicBool::new(false));
        let trimmed = Arc::new(Mutex::new(Vec::new()));
        let hidden = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(ProxyState {
            throttle_puts,
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            plan,
            counts: Arc::clone(&counts),
            outage: Arc::clone(&outage),
            trimmed: Arc::clone(&trimmed),
            hidden: Arc::clone(&hidden),
        });
        let app = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            endpoint,
            counts,
            outage,
            trimmed,
            hidden,
        }
    }
}

fn kinesis_error(kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"__type": kind, "message": message}).to_string();
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        body,
    )
        .into_response()
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target.ends_with(".PutRecord") && state.throttle_puts {
        state.counts.throttled.fetch_add(1, Ordering::SeqCst);
        return kinesis_error(
            "ProvisionedThroughputExceededException",
            "Rate exceeded for shard",
        );
    }
    if target.ends_with(".GetShardIterator")
        && let Some(shard) = state.plan.no_iterator_for_shard
        && serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|request| request["ShardId"] == shard)
    {
        state.counts.no_iterator.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::OK,
            [("content-type", "application/x-amz-json-1.1")],
            "{}",
        )
            .into_response();
    }
    if target.ends_with(".GetShardIterator")
        && serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|request| request["ShardIteratorType"] == "AT_SEQUENCE_NUMBER")
        && state.counts.refused.load(Ordering::SeqCst) < state.plan.refuse_at_sequence
    {
        state.counts.refused.fetch_add(1, Ordering::SeqCst);
        return kinesis_error("AccessDeniedException", "User is not authorized (injected)");
    }
    if target.ends_with(".GetRecords") {
        if state.outage.load(Ordering::SeqCst) {
            state.counts.unavailable.fetch_add(1, Ordering::SeqCst);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let n = state.counts.get_records.fetch_add(1, Ordering::SeqCst) + 1;
        let hits = |every: u64| every > 0 && n % every == 0;
        if hits(state.plan.throttle_every) {
            state.counts.throttled.fetch_add(1, Ordering::SeqCst);
            return kinesis_error(
                "ProvisionedThroughputExceededException",
                "Rate exceeded for shard",
            );
        }
        if hits(state.plan.expire_every) {
            state.counts.expired.fetch_add(1, Ordering::SeqCst);
            return kinesis_error("ExpiredIteratorException", "Iterator expired");
        }
        if hits(state.plan.unavailable_every) {
            state.counts.unavailable.fetch_add(1, Ordering::SeqCst);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let request_json = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let hidden = state.hidden.lock().unwrap().clone();
    let is_hidden = |shard: &serde_json::Value| {
        hidden.iter().any(|(stream, id)| {
            request_json["StreamName"] == stream.as_str() && shard == id.as_str()
        })
    };
    if target.ends_with(".GetShardIterator") && is_hidden(&request_json["ShardId"]) {
        return kinesis_error("ResourceNotFoundException", "Shard not found (hidden)");
    }
    let mut body = body;
    if target.ends_with(".GetShardIterator") {
        let trims = state.trimmed.lock().unwrap().clone();
        match apply_trims(&body, &trims) {
            Some(Trimmed::Rewrite(rewritten)) => body = rewritten,
            Some(Trimmed::Refuse) => {
                return kinesis_error(
                    "InvalidArgumentException",
                    "StartingSequenceNumber is no longer in the shard (trimmed by retention)",
                );
            }
            None => {}
        }
    }
    if let Some(cap) = state.plan.max_records_per_call
        && target.ends_with(".GetRecords")
        && let Ok(mut request) = serde_json::from_slice::<serde_json::Value>(&body)
    {
        let asked = request["Limit"].as_i64().unwrap_or(10_000);
        request["Limit"] = asked.min(cap).into();
        body = Bytes::from(request.to_string());
    }
    let mut request = state.http.post(&state.upstream).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut out = HeaderMap::new();
            for (name, value) in response.headers() {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    out.insert(name.clone(), value.clone());
                }
            }
            let mut bytes = response.bytes().await.unwrap_or_default();
            if target.ends_with(".ListShards")
                && status == StatusCode::OK
                && let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes)
                && let Some(shards) = answer["Shards"].as_array_mut()
            {
                shards.retain(|s| !is_hidden(&s["ShardId"]));
                bytes = Bytes::from(answer.to_string());
            }
            if target.ends_with(".GetRecords")
                && status == StatusCode::OK
                && let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                if let Some(millis) = state.plan.millis_behind {
                    answer["MillisBehindLatest"] = millis.into();
                }
                let has_records = answer["Records"].as_array().is_some_and(|r| !r.is_empty());
                if state.plan.drop_next_iterator_once
                    && has_records
                    && state
                        .counts
                        .dropped_iterators
                        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    answer.as_object_mut().unwrap().remove("NextShardIterator");
                }
                bytes = Bytes::from(answer.to_string());
            }
            (status, out, bytes).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// A proxy in front of the REST API that fails whole requests (503) and single entries of
/// `/records` batches, the way an overloaded API Gateway and Kinesis do. Dropped entries are never
/// forwarded, so a client that retries exactly the failed ones ends with exact counts.
pub struct ApiFaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Requests answered 503.
    pub unavailable: Arc<AtomicU64>,
    /// Entries reported failed.
    pub dropped_entries: Arc<AtomicU64>,
}

struct ApiProxyState {
    upstream: String,
    http: reqwest::Client,
    unavailable_every: u64,
    drop_entry_every: u64,
    requests: AtomicU64,
    entries: AtomicU64,
    unavailable: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl ApiFaultProxy {
    /// Starts a proxy to the API at `upstream`.
    pub async fn start(upstream: &str, unavailable_every: u64, drop_entry_every: u64) -> Self {
        let unavailable = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let state = Arc::new(ApiProxyState {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            unavailable_every,
            drop_entry_every,
            requests: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            unavailable: Arc::clone(&unavailable),
            dropped: Arc::clone(&dropped),
        });
        let app = Router::new().fallback(forward_api).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            unavailable,
            dropped_entries: dropped,
        }
    }
}

async fn forward_api(
    State(state): State<Arc<ApiProxyState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let is_put = method == axum::http::Method::PUT;
    if is_put && state.unavailable_every > 0 && n % state.unavailable_every == 0 {
        state.unavailable.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"message\": \"Service Unavailable\"}",
        )
            .into_response();
    }
    let url = format!("{}{}", state.upstream, uri.path());
    let mut dropped_at: Vec<usize> = Vec::new();
    let mut body = body;
    if is_put && uri.path().ends_with("/records") && state.drop_entry_every > 0 {
        // Raw entries: what is forwarded keeps each record's JSON text byte for byte.
        #[derive(serde::Deserialize)]
        struct Batch {
            records: Vec<Box<serde_json::value::RawValue>>,
        }
        let parsed: Batch = serde_json::from_slice(&body).unwrap();
        let mut kept = Vec::new();
        for (i, record) in parsed.records.into_iter().enumerate() {
            let m = state.entries.fetch_add(1, Ordering::SeqCst) + 1;
            if m % state.drop_entry_every == 0 {
                dropped_at.push(i);
            } else {
                kept.push(record.get().to_owned());
            }
        }
        if kept.is_empty() {
            state
                .dropped
                .fetch_add(dropped_at.len() as u64, Ordering::SeqCst);
            let results: Vec<serde_json::Value> = dropped_at
                .iter()
                .map(|_| serde_json::json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}))
                .collect();
            let body = serde_json::json!({"FailedRecordCount": results.len(), "Records": results});
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
        body = Bytes::from(format!("{{\"records\":[{}]}}", kept.join(",")));
    }
    let response = state
        .http
        .request(
            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
            &url,
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let Ok(response) = response else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let mut json: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if !dropped_at.is_empty() && status == StatusCode::OK {
        // Splice a failure back in at each dropped position.
        let mut results = json["Records"].as_array().cloned().unwrap_or_default();
        for &i in &dropped_at {
            results.insert(
                i,
                serde_json::json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}),
            );
        }
        let failed = results
            .iter()
            .filter(|r| r.get("ErrorCode").is_some())
            .count();
        json = serde_json::json!({"FailedRecordCount": failed, "Records": results});
        state
            .dropped
            .fetch_add(dropped_at.len() as u64, Ordering::SeqCst);
    }
    (status, axum::Json(json)).into_response()
}
