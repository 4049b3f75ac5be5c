//! Enhanced fan-out's stream consumer: registered once per stream under the pipeline's consumer
//! name, reused by every process and every start, deregistered only on request.
//!
//! A registered consumer gets its own 2 MiB/s per shard, pushed by SubscribeToShard
//! (`reader::subscribe`), instead of sharing GetRecords' 2 MiB/s and 5 calls/s with every other
//! reader of the stream. Kinesis bills it per consumer-shard hour while it is registered.

use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ConsumerStatus;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{ErrorClass, SourceError, classify};
use super::{Backoff, KinesisClient};

/// How long a consumer may take to become ACTIVE (Kinesis takes seconds).
const ACTIVE_WITHIN: Duration = Duration::from_secs(120);

/// How often its status is asked while it is being created or deleted.
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// A stream consumer registered for enhanced fan-out.
#[derive(Debug)]
pub struct FanOutConsumer {
    stream: String,
    stream_arn: String,
    name: String,
    /// The consumer's ARN: it changes when the consumer is registered again (after someone
    /// deregistered it).
    arn: Mutex<String>,
    /// Held while one shard's reader checks that the consumer still exists.
    ensuring: tokio::sync::Mutex<()>,
}

impl FanOutConsumer {
    /// Registers `name` as a consumer of `stream`, or reuses the one registered under that
    /// name, and waits until it is ACTIVE.
    pub async fn register(
        client: &KinesisClient,
        stream: &str,
        name: &str,
        cancel: &CancellationToken,
    ) -> Result<Self, SourceError> {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| match classify(&e) {
                ErrorClass::NotFound => SourceError::StreamNotFound {
                    stream: stream.to_owned(),
                },
                _ => SourceError::call("DescribeStreamSummary", stream, None, &e),
            })?;
        let stream_arn = summary
            .stream_description_summary
            .map(|s| s.stream_arn)
            .unwrap_or_default();
        let consumer = Self {
            stream: stream.to_owned(),
            stream_arn,
            name: name.to_owned(),
            arn: Mutex::new(String::new()),
            ensuring: tokio::sync::Mutex::new(()),
        };
        let arn = consumer.active_arn(client, cancel).await?;
        tracing::info!(stream, consumer = name, %arn, "enhanced fan-out consumer is active");
        consumer.set_arn(arn);
        Ok(consumer)
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consumer's ARN, for SubscribeToShard.
    pub fn arn(&self) -> String {
        self.arn.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn set_arn(&self, arn: String) {
        if let Ok(mut current) = self.arn.lock() {
            *current = arn;
        }
    }

    /// After SubscribeToShard said "not found": registers the consumer again if it is gone (another
    /// process deregistered it). Returns whether it was gone; `false` means the shard or the
    /// position was what Kinesis did not find.
    ///
    /// `used` is the ARN the refused call named: when another shard's reader registered the
    /// consumer again meanwhile, the ARN already differs and nothing is asked. One shard's reader
    /// asks at a time.
    pub(crate) async fn ensure(
        &self,
        client: &KinesisClient,
        used: &str,
        cancel: &CancellationToken,
    ) -> Result<bool, SourceError> {
        let _one_at_a_time = self.ensuring.lock().await;
        if self.arn() != used {
            return Ok(true);
        }
        let arn = match self.active_arn(client, cancel).await {
            Ok(arn) => arn,
            // Stopping: the caller sees the cancellation before it would subscribe again.
            Err(_) if cancel.is_cancelled() => return Ok(true),
            Err(e) => return Err(e),
        };
        let gone = arn != used;
        if gone {
            tracing::warn!(stream = %self.stream, consumer = %self.name, %arn, "the enhanced fan-out consumer was deregistered elsewhere; registered it again");
            self.set_arn(arn);
        }
        Ok(gone)
    }

    /// Deregisters the consumer (`kinesis.deregister_consumer`). One that is already gone is fine.
    pub async fn deregister(&self, client: &KinesisClient) -> Result<(), SourceError> {
        let result = client
            .deregister_stream_consumer()
            .consumer_arn(self.arn())
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::info!(stream = %self.stream, consumer = %self.name, "enhanced fan-out consumer deregistered");
                Ok(())
            }
            Err(e) if classify(&e) == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(SourceError::call(
                "DeregisterStreamConsumer",
                &self.stream,
                None,
                &e,
            )),
        }
    }

    /// Registers the consumer if there is none under its name, then waits until it is ACTIVE.
    async fn active_arn(
        &self,
        client: &KinesisClient,
        cancel: &CancellationToken,
    ) -> Result<String, SourceError> {
        let deadline = Instant::now() + ACTIVE_WITHIN;
        let mut backoff = Backoff::new(STATUS_EVERY, Duration::from_secs(5));
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline && !cancel.is_cancelled() {
            let described = client
                .describe_stream_consumer()
                .stream_arn(&self.stream_arn)
                .consumer_name(&self.name)
                .send()
                .await;
            let wait = match described {
                Ok(output) => {
                    let Some(consumer) = output.consumer_description else {
                        return Err(self.failed("DescribeStreamConsumer gave no description"));
                    };
                    match consumer.consumer_status {
                        ConsumerStatus::Active => return Ok(consumer.consumer_arn),
                        status => {
                            last = format!("it is {status}");
                            STATUS_EVERY
                        }
                    }
                }
                Err(e) if classify(&e) == ErrorClass::NotFound => {
                    match client
                        .register_stream_consumer()
                        .stream_arn(&self.stream_arn)
                        .consumer_name(&self.name)
                        .send()
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(stream = %self.stream, consumer = %self.name, "registered the enhanced fan-out consumer");
                            STATUS_EVERY
                        }
                        // Another process registered it meanwhile, or the stream is being
                        // changed (a reshard): asked again after a pause.
                        Err(e) if e.code() == Some("ResourceInUseException") => STATUS_EVERY,
                        // LimitExceeded is both the call rate and the 20 consumers a stream
                        // holds: retried, and named if it lasts.
                        Err(e) => {
                            last = self.retryable("RegisterStreamConsumer", &e, true)?;
                            backoff.next_delay(&mut rand::rng())
                        }
                    }
                }
                Err(e) => {
                    last = self.retryable("DescribeStreamConsumer", &e, false)?;
                    backoff.next_delay(&mut rand::rng())
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => {}
            }
        }
        Err(self.failed(&format!(
            "not ACTIVE within {}s ({last}); a stream holds at most 20 consumers: `aws kinesis list-stream-consumers` shows them, or switch to kinesis.consumer_mode = \"polling\"",
            ACTIVE_WITHIN.as_secs()
        )))
    }

    /// A failed call's summary when retrying may help; otherwise the error that stops the run
    /// (and, with `not_found_is_fatal`, "not found" too: the stream is gone).
    fn retryable<E>(
        &self,
        operation: &'static str,
        err: &SdkError<E, HttpResponse>,
        not_found_is_fatal: bool,
    ) -> Result<String, SourceError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match classify(err) {
            ErrorClass::Fatal => Err(SourceError::call(operation, &self.stream, None, err)),
            ErrorClass::NotFound if not_found_is_fatal => {
                Err(SourceError::call(operation, &self.stream, None, err))
            }
            _ => Ok(super::error::summary(err)),
        }
    }

    fn failed(&self, message: &str) -> SourceError {
        SourceError::FanOut {
            stream: self.stream.clone(),
            consumer: self.name.clone(),
            message: message.to_owned(),
        }
    }
}
