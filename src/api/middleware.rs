//! Request middleware: the optional API key, and one access-log line and metric per request.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::telemetry::ApiRequest;

/// Answers 403 (as API Gateway does) unless the request's `x-api-key` is the configured key.
pub async fn require_api_key(
    State(key): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = key {
        let given = request
            .headers()
            .get("x-api-key")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !constant_time_eq(given, key.as_bytes()) {
            let body =
                serde_json::json!({"message": "Forbidden: a valid x-api-key header is required"});
            return (StatusCode::FORBIDDEN, Json(body)).into_response();
        }
    }
    next.run(request).await
}

/// Compares without returning early on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Logs one structured line per request (method, path, status, latency) and counts it in the
/// metrics by route.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    tracing::info!(
        target: "kinesis_delta::api::access",
        %method,
        path,
        status,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    ApiRequest {
        method: method.as_str(),
        route: &route,
        status,
        elapsed,
    }
    .record();
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_compare_exactly() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret2"));
        assert!(!super::constant_time_eq(b"", b"x"));
    }
}
