//! The REST API of the seed (API Gateway proxying Kinesis), as a real service.
//!
//! | route | Kinesis action |
//! |---|---|
//! | `GET /streams` | ListStreams (all pages) |
//! | `GET /streams/{stream-name}` | DescribeStream |
//! | `POST /streams/{stream-name}` | CreateStream (`{"ShardCount": n}`, default 5) |
//! | `DELETE /streams/{stream-name}` | DeleteStream |
//! | `PUT /streams/{stream-name}/record` | PutRecord (`{"StreamName", "Data", "PartitionKey"}`) |
//! | `PUT /streams/{stream-name}/records` | PutRecords (`{"records": [{"data", "partition-key"}]}`) |
//! | `GET /openapi.json` | this API's OpenAPI 3 document |
//!
//! Responses are Kinesis's response bodies, as API Gateway returns them. Bad input is a 4xx with
//! `{"message": …}`; a Kinesis error maps to a fitting status with its type kept (`__type`).

mod error;
mod middleware;
mod routes;

pub use error::ApiError;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::source::KinesisClient;
use crate::telemetry::readiness;

/// The OpenAPI 3 document of this API (`doc/openapi.json`), served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../../doc/openapi.json");

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// When set, every request must carry `x-api-key: <this>` or gets 403.
    pub api_key: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a request may take before it is answered 408.
    pub request_timeout: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            api_key: None,
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    client: KinesisClient,
}

/// The API's router, ready to serve (or to test with `oneshot`).
pub fn app(client: KinesisClient, settings: &ApiSettings) -> Router {
    let api_key: Option<Arc<str>> = settings.api_key.as_deref().map(Arc::from);
    routes::router()
        .with_state(ApiState { client })
        .layer(axum::middleware::from_fn_with_state(
            api_key,
            middleware::require_api_key,
        ))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(axum::middleware::from_fn(middleware::access_log))
}

/// The readiness check of the API (`/readyz` on the admin address): Kinesis answered once.
pub const KINESIS_CHECK: &str = "kinesis";

/// Asks Kinesis for one stream name until it answers (every 5 s, logging why not), then marks the
/// API ready. Runs beside the server: the API answers meanwhile, with Kinesis' errors.
pub async fn check_kinesis(client: KinesisClient, cancel: CancellationToken) {
    readiness().expect(KINESIS_CHECK, None);
    loop {
        match client.list_streams().limit(1).send().await {
            Ok(_) => {
                readiness().passed(KINESIS_CHECK);
                return;
            }
            Err(e) => tracing::warn!(
                error = %crate::source::error_summary(&e),
                "Kinesis does not answer; the API is not ready (asking again in 5 s)"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Serves `app` on `listener` until `cancel` fires; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { cancel.cancelled().await })
    .await
}
