//! A loopback HTTP proxy in front of a real Kinesis server that injects the failures Kinesis
//! produces in production: throttling, expired iterators and the service being away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    plan: FaultPlan,
    counts: Arc<FaultCounts>,
}

/// A running proxy; it stops with the test's runtime.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// What it injected.
    pub counts: Arc<FaultCounts>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: &str, plan: FaultPlan) -> Self {
        let counts = Arc::new(FaultCounts::default());
        let state = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            plan,
            counts: Arc::clone(&counts),
        });
        let app = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, counts }
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
    if target.ends_with(".GetRecords") {
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
            let bytes = response.bytes().await.unwrap_or_default();
            (status, out, bytes).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
