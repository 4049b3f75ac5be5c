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
        /// The service's error code (`InvalidArgumentException`, …); empty when there was none.
        code: String,
    },
    /// No AWS credentials could be found (the user's to provide).
    #[error(
        "no AWS credentials for Kinesis ({reason}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name a profile (kinesis.profile or AWS_PROFILE), or run with an instance or container role; for a local Kinesis server set kinesis.endpoint_url (e.g. http://127.0.0.1:4567)"
    )]
    NoCredentials {
        /// The credential chain's own one-line reason.
        reason: String,
    },
    /// The first shard listing kept failing for the whole start-up timeout.
    #[error(
        "stream `{stream}`: Kinesis did not answer ListShards for {waited:?} (network, endpoint or service down); check kinesis.endpoint_url and the network, or raise engine.startup_timeout"
    )]
    Unreachable {
        /// The stream.
        stream: String,
        /// How long the engine tried.
        waited: std::time::Duration,
    },
    /// Kinesis sent a record with a sequence number that is not one (never seen; a broken proxy).
    #[error(
        "stream `{stream}` shard {shard}: Kinesis sent a record with a malformed sequence number ({message}); nothing was skipped: check what sits between the engine and Kinesis, then run again"
    )]
    BadSequenceNumber {
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        /// What was wrong with it.
        message: String,
    },
    /// What became of a checkpointed record could not be told (the server kept answering empty,
    /// or the engine was stopped meanwhile). Nothing is decided on a guess.
    #[error(
        "stream `{stream}` shard {shard}: could not tell whether the checkpointed record {sequence} is still in the shard (empty answers, or the engine was stopped); nothing was read or skipped: run again"
    )]
    CheckpointUnverified {
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        /// The checkpointed sequence number.
        sequence: String,
    },
    /// GetShardIterator kept answering without an iterator for a shard that is listed as open.
    #[error(
        "stream `{stream}` shard {shard}: Kinesis answered GetShardIterator without an iterator {attempts} times in a row, though the shard is listed as open; the shard's position is kept: check the Kinesis endpoint, then run again"
    )]
    NoIterator {
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        /// How many answers came without one.
        attempts: u32,
    },
    /// A shard's reader task ended before the shard did, without an error: a bug.
    #[error(
        "stream `{stream}` shard {shard}: the shard's reader stopped unexpectedly (a bug in kinesis-delta: please report it with the log); nothing was lost, the shard's position is kept: run again"
    )]
    ReaderStopped {
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
    },
    /// The enhanced fan-out consumer could not be registered or made ready.
    #[error("stream `{stream}`, enhanced fan-out consumer `{consumer}`: {message}")]
    FanOut {
        /// The stream.
        stream: String,
        /// The consumer's name.
        consumer: String,
        /// What went wrong, and the way out.
        message: String,
    },
    /// The records of a planned, uncommitted batch are no longer in the shard (trimmed by
    /// retention, or the server lost its state). The user's to decide: see the message.
    #[error(
        "stream `{stream}` shard {shard}: the records of a planned batch, from sequence number {sequence}, are no longer in the shard (expired by retention, or the Kinesis server lost its data), so the batch cannot be finished as planned. kinesis-delta will not skip them silently: to accept their loss, run once with `--on-lost-stream restart` (the batch is then committed without them and reading goes on), or write to a new table"
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

/// One line about a failed call: the service's code and message, or the kind of transport failure
/// (the SDK's full chain runs to kilobytes of nested context).
pub fn summary<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> String {
    match err {
        SdkError::ServiceError(s) => format!(
            "{} (HTTP {}): {}",
            s.err().code().unwrap_or("error"),
            s.raw().status().as_u16(),
            s.err().message().unwrap_or("(no message)")
        ),
        SdkError::DispatchFailure(d) if d.is_timeout() => "connection timed out".to_owned(),
        SdkError::DispatchFailure(d) if d.is_io() => "connection failed (I/O)".to_owned(),
        SdkError::DispatchFailure(_) => "the request could not be sent".to_owned(),
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::ResponseError(_) => "the response could not be read".to_owned(),
        SdkError::ConstructionFailure(_) => "the request could not be built".to_owned(),
        _ => "unknown failure".to_owned(),
    }
}

/// [`summary`], then what to do about it when the error says (the full SDK error, kilobytes of
/// nested context, is logged at debug level only).
pub fn summary_with_remedy<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    tracing::debug!(
        operation,
        error = %aws_smithy_types::error::display::DisplayErrorContext(err),
        "the AWS SDK's full error"
    );
    let transport = !matches!(err, SdkError::ServiceError(_));
    match remedy(operation, err.code(), transport) {
        Some(fix) => format!("{}; {fix}", summary(err)),
        None => summary(err),
    }
}

/// What the user can do about an error with this code (or a failure to reach the service).
pub fn remedy(operation: &str, code: Option<&str>, transport: bool) -> Option<String> {
    if transport {
        return Some(
            "check kinesis.endpoint_url and kinesis.region, and that this machine reaches the endpoint"
                .to_owned(),
        );
    }
    let fix = match code? {
        "AccessDeniedException" => format!(
            "grant the IAM action kinesis:{operation} on the stream to these credentials"
        ),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "IncompleteSignature" => "the credentials are wrong or expired: renew them (AWS_PROFILE, `aws sso login`, the instance role)".to_owned(),
        "ResourceNotFoundException" => "create the stream (`kinesis-delta streams create`) or fix the stream name in the config".to_owned(),
        "ResourceInUseException" => "the stream is being created, changed or deleted: wait until it is ACTIVE".to_owned(),
        "KMSAccessDeniedException" | "KMSDisabledException" | "KMSNotFoundException"
        | "KMSInvalidStateException" | "KMSOptInRequired" => {
            "check the stream's KMS key and that these credentials may use it (kms:Decrypt)".to_owned()
        }
        "ProvisionedThroughputExceededException" | "LimitExceededException" => {
            "add shards or lower engine.max_get_records_per_second".to_owned()
        }
        _ => return None,
    };
    Some(fix)
}

impl SourceError {
    /// Kinesis refused a position as one the shard never had (`InvalidArgumentException` on
    /// GetShardIterator or SubscribeToShard): the sequence number is not of this shard, or no longer in it.
    pub fn is_position_refused(&self) -> bool {
        // Kinesis says InvalidArgumentException; kinesis-mock and LocalStack, and Kinesis for a
        // shard deleted after retention, ResourceNotFoundException.
        matches!(self, Self::Call { operation: "GetShardIterator" | "SubscribeToShard", code, .. }
            if code == "InvalidArgumentException" || code == "ResourceNotFoundException")
    }

    /// Builds a [`SourceError::Call`] from an SDK error.
    pub fn call<E>(
        operation: &'static str,
        stream: &str,
        shard: Option<&str>,
        err: &SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = err.code().unwrap_or_default().to_owned();
        let message = summary_with_remedy(operation, err);
        Self::Call {
            operation,
            stream: stream.to_owned(),
            shard: shard.map(|s| format!(", shard {s}")).unwrap_or_default(),
            message,
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::remedy;

    #[test]
    fn each_failure_the_user_can_fix_says_how() {
        let fix = |code| remedy("GetRecords", Some(code), false).unwrap_or_default();
        assert!(fix("AccessDeniedException").contains("kinesis:GetRecords"));
        assert!(fix("ExpiredTokenException").contains("renew"));
        assert!(fix("ResourceNotFoundException").contains("streams create"));
        assert!(fix("KMSAccessDeniedException").contains("kms:Decrypt"));
        assert!(
            remedy("ListShards", None, true)
                .unwrap_or_default()
                .contains("kinesis.endpoint_url")
        );
        assert_eq!(
            remedy("GetRecords", Some("InvalidArgumentException"), false),
            None
        );
    }
}
