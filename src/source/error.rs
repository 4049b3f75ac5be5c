//! Source errors, classified by whose fault they are and whether a retry can help.

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// What the engine does about a failed Kinesis call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttled (`ProvisionedThroughputExceededException`, `LimitExceededException`, KMS
    /// throttling): back off and retry.
    Throttled,
    /// The shard iterator is too old (or was refused): get a new one after the last record read.
    IteratorExpired,
    /// The service is away or failed on its side (network, timeout, 5xx): retry, never skip.
    Unavailable,
    /// The stream or shard does not exist: the user's to fix.
    NotFound,
    /// Anything else (access denied, invalid argument): the user's to fix; retrying will not help.
    Fatal,
}

/// Classifies an AWS SDK error.
pub fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> ErrorClass {
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            ErrorClass::Unavailable
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let status = service.raw().status().as_u16();
            match code {
                "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "KMSThrottlingException"
                | "ThrottlingException" => ErrorClass::Throttled,
                "ExpiredIteratorException" => ErrorClass::IteratorExpired,
                "ResourceNotFoundException" => ErrorClass::NotFound,
                "InternalFailureException" | "ServiceUnavailable" | "InternalFailure" => {
                    ErrorClass::Unavailable
                }
                _ if status >= 500 => ErrorClass::Unavailable,
                _ => ErrorClass::Fatal,
            }
        }
        _ => ErrorClass::Fatal,
    }
}

/// A Kinesis failure the engine cannot get past by retrying.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The stream does not exist (user).
    #[error(
        "Kinesis stream `{stream}` does not exist: create it (`kinesis-delta streams create`) or fix the stream name in the config"
    )]
    StreamNotFound {
        /// The stream.
        stream: String,
    },
    /// A call failed for a reason retrying cannot fix (user or outside service).
    #[error("Kinesis {operation} on stream `{stream}`{shard} failed: {message}")]
    Call {
        /// The API operation.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// `, shard X` when a shard was involved.
        shard: String,
        /// The service's message, with the error code.
        message: String,
    },
    /// A checkpointed record is no longer in the shard (trimmed by retention, or the server lost its state).
    #[error(
        "stream `{stream}` shard {shard}: the checkpointed records from sequence number {sequence} are no longer in the shard (expired by retention, or the Kinesis server lost its data); refusing to skip them silently"
    )]
    RecordsGone {
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        /// The first sequence number the batch needed.
        sequence: String,
    },
}

impl SourceError {
    /// Builds a [`SourceError::Call`] from an SDK error.
    pub fn call<E, R>(
        operation: &'static str,
        stream: &str,
        shard: Option<&str>,
        err: &SdkError<E, R>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = match err {
            SdkError::ServiceError(s) => format!(
                "{}: {}",
                s.err().code().unwrap_or("error"),
                s.err().message().unwrap_or("(no message)")
            ),
            other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
        };
        Self::Call {
            operation,
            stream: stream.to_owned(),
            shard: shard.map(|s| format!(", shard {s}")).unwrap_or_default(),
            message,
        }
    }
}
