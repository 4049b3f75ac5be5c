//! API errors: what went wrong, as the HTTP status and JSON body a client sees.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::source::ErrorClass;
use crate::streams::KinesisCallError;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request or a record is too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// Kinesis answered with an error.
    #[error(transparent)]
    Kinesis(#[from] KinesisCallError),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Kinesis(e) => kinesis_status(e),
        }
    }
}

fn kinesis_status(e: &KinesisCallError) -> StatusCode {
    match e.code.as_str() {
        "ResourceNotFoundException" => StatusCode::NOT_FOUND,
        "ResourceInUseException" => StatusCode::CONFLICT,
        "InvalidArgumentException" | "ValidationException" | "SerializationException" => {
            StatusCode::BAD_REQUEST
        }
        "AccessDeniedException" | "KMSAccessDeniedException" => StatusCode::FORBIDDEN,
        _ => match e.class {
            ErrorClass::Throttled => StatusCode::TOO_MANY_REQUESTS,
            ErrorClass::NotFound => StatusCode::NOT_FOUND,
            // Kinesis did not answer: the client may retry; nothing was written.
            ErrorClass::Unavailable if e.status.is_none() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        },
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Self::Kinesis(e) => json!({"message": e.message, "__type": e.code}),
            other => json!({"message": other.to_string()}),
        };
        (status, Json(body)).into_response()
    }
}
