//! Enhanced fan-out: the shard's records pushed by SubscribeToShard instead of asked for with
//! GetRecords. Each event of the subscription is one answer, and the position is kept exactly as
//! for GetRecords, so the batches, their plans and the replays (which use GetRecords) do not know
//! which way a record came.
//!
//! - A subscription starts just after the reader's position (its last record read), or at the
//!   shard's start when nothing was read.
//! - Kinesis ends every subscription after 5 minutes (or sooner, on a fault): the reader
//!   subscribes again at once from the last event's continuation sequence number, at that number.
//!   Kinesis names either the next record or the last one sent; a record at or before the position
//!   is never taken twice, so neither reading skips or repeats one.
//! - An event with the shard's children, and nothing after it, is the end of a closed shard.
//! - SubscribeToShard is allowed once a second per shard and consumer; an earlier subscription
//!   still open (`ResourceInUseException`) is waited out with backoff.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ShardIteratorType, StartingPosition, SubscribeToShardEvent, SubscribeToShardEventStream,
};
use aws_smithy_types::event_stream::RawMessage;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CallBudget, FetchOutcome, ShardReader};
use crate::sequence::SequenceNumber;
use crate::source::KinesisClient;
use crate::source::error::{ErrorClass, SourceError, classify, remedy};
use crate::source::fan_out::FanOutConsumer;

/// Subscribing is allowed once a second per shard and consumer.
const SUBSCRIBES_PER_SECOND: u32 = 1;

/// A subscription silent for this long is taken for a dead connection (Kinesis sends an event at
/// least every few seconds, empty if need be) and replaced.
const EVENT_SILENCE: Duration = Duration::from_secs(60);

/// A shard's open subscription, and where the next one continues.
#[derive(Default)]
pub(super) struct Subscription {
    events: Option<EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>>,
    /// The consumer ARN it was opened with.
    consumer_arn: String,
    /// The last event's continuation sequence number.
    continuation: Option<String>,
}

impl Clone for Subscription {
    /// A fork subscribes anew, from its own position.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("open", &self.events.is_some())
            .field("consumer_arn", &self.consumer_arn)
            .field("continuation", &self.continuation)
            .finish()
    }
}

impl ShardReader {
    /// Reads the shard by enhanced fan-out with `consumer` from now on.
    pub fn subscribe_with(&mut self, consumer: Arc<FanOutConsumer>) {
        self.fan_out = Some(consumer);
        self.calls = Arc::new(Mutex::new(CallBudget::new(SUBSCRIBES_PER_SECOND)));
        self.subscription = Subscription::default();
    }

    /// The subscription's next event as an answer, subscribing first when none is open.
    pub(super) async fn fetch_pushed(
        &mut self,
        consumer: &FanOutConsumer,
        client: &KinesisClient,
        cancel: &CancellationToken,
    ) -> Result<FetchOutcome, SourceError> {
        loop {
            if cancel.is_cancelled() {
                return Ok(FetchOutcome::default());
            }
            let Some(events) = self.subscription.events.as_mut() else {
                self.subscribe(consumer, client, cancel).await?;
                continue;
            };
            let received = tokio::select! {
                received = tokio::time::timeout(EVENT_SILENCE, events.recv()) => received,
                () = cancel.cancelled() => return Ok(FetchOutcome::default()),
            };
            match received {
                Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)))) => {
                    self.backoff.reset();
                    return self.accept_event(event);
                }
                Ok(Ok(Some(other))) => {
                    tracing::warn!(stream = %self.stream, shard = %self.shard_id, event = ?other, "an event of a kind this version does not know; skipped");
                }
                Ok(Ok(None)) => {
                    tracing::debug!(stream = %self.stream, shard = %self.shard_id, "the subscription ended (Kinesis ends each after 5 minutes); subscribing again");
                    self.subscription.events = None;
                }
                Ok(Err(err)) => {
                    self.subscription_failed(&err, consumer, client, cancel)
                        .await?
                }
                Err(_) => {
                    self.metrics.subscribe_retried();
                    tracing::warn!(stream = %self.stream, shard = %self.shard_id, silent_for = ?EVENT_SILENCE, "no event from the shard's subscription; subscribing again");
                    self.subscription.events = None;
                }
            }
        }
    }

    /// An error the subscription sent: KMS and access errors stop the run, as they would with
    /// GetRecords; "not found" registers the consumer again if it is gone; the rest are retried.
    async fn subscription_failed(
        &mut self,
        err: &SdkError<SubscribeToShardEventStreamError, RawMessage>,
        consumer: &FanOutConsumer,
        client: &KinesisClient,
        cancel: &CancellationToken,
    ) -> Result<(), SourceError> {
        self.subscription.events = None;
        let code = err.code().unwrap_or_default().to_owned();
        let summary = if code.is_empty() {
            aws_smithy_types::error::display::DisplayErrorContext(err).to_string()
        } else {
            format!("{code}: {}", err.message().unwrap_or("(no message)"))
        };
        let fatal = code == "AccessDeniedException"
            || (code.starts_with("KMS") && code != "KMSThrottlingException");
        let gone = code == "ResourceNotFoundException";
        if gone
            && consumer
                .ensure(client, &self.subscription.consumer_arn, cancel)
                .await?
        {
            return Ok(());
        }
        if fatal || gone {
            let message = match remedy("SubscribeToShard", Some(&code), false) {
                Some(fix) => format!("{summary}; {fix}"),
                None => summary,
            };
            return Err(SourceError::Call {
                operation: "SubscribeToShard",
                stream: self.stream.clone(),
                shard: format!(", shard {}", self.shard_id),
                message,
                code,
            });
        }
        self.metrics.subscribe_retried();
        if code == "ResourceInUseException" {
            // Some servers say so inside the stream: a subscription they still think open.
            tracing::debug!(stream = %self.stream, shard = %self.shard_id, error = %summary, "the shard is subscribed elsewhere still; waiting");
        } else {
            tracing::warn!(stream = %self.stream, shard = %self.shard_id, error = %summary, "the shard's subscription failed; subscribing again from the last record read");
        }
        self.pause(cancel).await;
        Ok(())
    }

    /// One event as an answer.
    fn accept_event(&mut self, event: SubscribeToShardEvent) -> Result<FetchOutcome, SourceError> {
        let SubscribeToShardEvent {
            records,
            continuation_sequence_number: continuation,
            millis_behind_latest,
            child_shards,
            ..
        } = event;
        // The last event of a closed shard names its children and continues nowhere (some
        // servers keep naming the children, and end with an event holding no records at
        // `MillisBehindLatest` 0: one behind the tip still has records to send).
        let ends = child_shards.is_some_and(|c| !c.is_empty())
            && (continuation.is_empty() || (records.is_empty() && millis_behind_latest == 0));
        let sent_nothing = records.is_empty();
        let after = self.last_read.clone();
        let new = records
            .into_iter()
            .filter(|r| {
                let Some(after) = &after else { return true };
                // A malformed number is kept, for `take_records` to refuse it.
                SequenceNumber::parse(&r.sequence_number).map_or(true, |s| &s > after)
            })
            .collect();
        let millis_behind = Some(millis_behind_latest);
        let records = self.take_records(new, millis_behind)?;
        // At its tip only when the event itself was empty: records it sent again (at or before
        // the position) say nothing of what lies beyond.
        self.at_tip &= sent_nothing;
        if self.at_run_end || ends {
            self.subscription = Subscription::default();
        } else if !continuation.is_empty() {
            self.subscription.continuation = Some(continuation);
        }
        if ends && !self.at_run_end {
            tracing::info!(stream = %self.stream, shard = %self.shard_id, "the shard's subscription named its children: it is read to its end");
            self.finished = true;
            self.metrics.finished();
        }
        Ok(FetchOutcome {
            records,
            millis_behind,
            finished: self.finished,
            at_run_end: self.at_run_end,
            relist: false,
            // An event holds what the shard had; none is cut short by a limit.
            full: false,
        })
    }

    /// Opens a subscription at the reader's position, within the call budget. A failure worth
    /// retrying leaves none open, after a pause.
    async fn subscribe(
        &mut self,
        consumer: &FanOutConsumer,
        client: &KinesisClient,
        cancel: &CancellationToken,
    ) -> Result<(), SourceError> {
        tokio::select! {
            () = tokio::time::sleep_until(self.next_call()) => {}
            () = cancel.cancelled() => return Ok(()),
        }
        if let Ok(mut calls) = self.calls.lock() {
            calls.spend(Instant::now());
        }
        // A continuation is always of the current reading: the one a refusal named is dropped.
        let (kind, sequence, timestamp) = match &self.subscription.continuation {
            Some(continuation) => (
                ShardIteratorType::AtSequenceNumber,
                Some(continuation.clone()),
                None,
            ),
            _ => self.position(),
        };
        let position = StartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(sequence)
            .set_timestamp(timestamp)
            .build()
            .map_err(|e| SourceError::Call {
                operation: "SubscribeToShard",
                stream: self.stream.clone(),
                shard: format!(", shard {}", self.shard_id),
                message: e.to_string(),
                code: String::new(),
            })?;
        let consumer_arn = consumer.arn();
        let response = client
            .subscribe_to_shard()
            .consumer_arn(&consumer_arn)
            .shard_id(self.shard_id.as_ref())
            .starting_position(position)
            .send()
            .await;
        let err = match response {
            Ok(output) => {
                self.subscription.events = Some(output.event_stream);
                self.subscription.consumer_arn = consumer_arn;
                return Ok(());
            }
            Err(err) => err,
        };
        match classify(&err) {
            ErrorClass::Throttled => {
                self.metrics.subscribe_throttled();
                tracing::debug!(stream = %self.stream, shard = %self.shard_id, "SubscribeToShard throttled; backing off");
            }
            ErrorClass::Unavailable | ErrorClass::IteratorExpired => {
                self.metrics.subscribe_retried();
                tracing::warn!(stream = %self.stream, shard = %self.shard_id, error = %crate::source::error::summary(&err), "SubscribeToShard failed; retrying");
            }
            // A subscription to the shard opened less than 5 s ago (by this consumer, or another
            // process a moment before it stopped), or the consumer is not ACTIVE yet.
            ErrorClass::Fatal if err.code() == Some("ResourceInUseException") => {
                self.metrics.subscribe_retried();
                tracing::debug!(stream = %self.stream, shard = %self.shard_id, "the shard is subscribed elsewhere still; waiting");
            }
            ErrorClass::NotFound if consumer.ensure(client, &consumer_arn, cancel).await? => {}
            ErrorClass::NotFound | ErrorClass::Fatal => {
                let error =
                    SourceError::call("SubscribeToShard", &self.stream, Some(&self.shard_id), &err);
                if !error.is_position_refused() {
                    return Err(error);
                }
                if self.subscription.continuation.take().is_some() {
                    tracing::warn!(stream = %self.stream, shard = %self.shard_id, "Kinesis refused the subscription's continuation; subscribing after the last record read");
                    return Ok(());
                }
                match &self.last_read {
                    Some(last) if self.continue_after_expiry && self.skip_through.is_none() => {
                        tracing::warn!(stream = %self.stream, shard = %self.shard_id, sequence = %last, "the position is no longer in the shard (expired): going on from its oldest record (on_lost_stream = restart)");
                        self.skip_through = Some(last.clone());
                        return Ok(());
                    }
                    _ => return Err(error),
                }
            }
        }
        self.pause(cancel).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::{ChildShard, HashKeyRange, Record};

    use super::*;
    use crate::source::reader::StartPosition;

    fn record(sequence: &str) -> Record {
        Record::builder()
            .sequence_number(sequence)
            .partition_key("k")
            .data(Blob::new(b"{}".to_vec()))
            .build()
            .unwrap()
    }

    fn event(sequences: &[&str], continuation: &str, children: bool) -> SubscribeToShardEvent {
        let mut event = SubscribeToShardEvent::builder()
            .set_records(Some(sequences.iter().map(|s| record(s)).collect()))
            .continuation_sequence_number(continuation)
            .millis_behind_latest(0);
        if children {
            let range = HashKeyRange::builder()
                .starting_hash_key("0")
                .ending_hash_key("1")
                .build()
                .unwrap();
            let child = ChildShard::builder()
                .shard_id("shardId-000000000002")
                .parent_shards("shardId-000000000000")
                .hash_key_range(range)
                .build()
                .unwrap();
            event = event.child_shards(child);
        }
        event.build().unwrap()
    }

    fn reader_after(sequence: &str) -> ShardReader {
        let last = SequenceNumber::parse(sequence).unwrap();
        ShardReader::new("s", "shardId-0", StartPosition::TrimHorizon, Some(last), 5)
    }

    fn sequences(outcome: &FetchOutcome) -> Vec<&str> {
        outcome
            .records
            .iter()
            .map(|r| r.sequence_number.as_str())
            .collect()
    }

    /// A renewed subscription that starts at the last record sent (a server whose continuation
    /// names it) gives that record again: it is not taken twice.
    #[test]
    fn records_at_or_before_the_position_are_not_taken_again() {
        let mut reader = reader_after("200");
        let outcome = reader
            .accept_event(event(&["100", "200", "201", "300"], "300", false))
            .unwrap();
        assert_eq!(sequences(&outcome), ["201", "300"]);
        assert_eq!(reader.last_read().unwrap().as_str(), "300");
        assert_eq!(reader.subscription.continuation.as_deref(), Some("300"));
        assert!(!outcome.finished);
        // An event sending only records read before, at MillisBehindLatest 0, is not the tip:
        // it says nothing of what lies beyond them.
        let again = reader.accept_event(event(&["300"], "300", false)).unwrap();
        assert!(again.records.is_empty() && !reader.is_at_tip());
        reader.accept_event(event(&[], "300", false)).unwrap();
        assert!(
            reader.is_at_tip(),
            "an empty event at MillisBehindLatest 0 is"
        );
    }

    /// The end of a closed shard: an event naming the children without a continuation (Kinesis),
    /// or naming them and holding no records (some local servers name them on every event once the
    /// shard closed, with the last records too).
    #[test]
    fn an_event_naming_the_children_ends_the_shard_only_with_nothing_after_it() {
        let mut reader = reader_after("1");
        let last_records = reader.accept_event(event(&["2", "3"], "4", true)).unwrap();
        assert_eq!(sequences(&last_records), ["2", "3"]);
        assert!(!last_records.finished, "records and a continuation follow");
        let mut behind = event(&[], "4", true);
        behind.millis_behind_latest = 500;
        let not_yet = reader.accept_event(behind).unwrap();
        assert!(
            !not_yet.finished,
            "behind the tip: records are still to come"
        );
        let end = reader.accept_event(event(&[], "4", true)).unwrap();
        assert!(end.finished && reader.is_finished());

        let mut reader = reader_after("1");
        let end = reader.accept_event(event(&["2"], "", true)).unwrap();
        assert_eq!(sequences(&end), ["2"]);
        assert!(
            end.finished,
            "no continuation: the shard ended with these records"
        );
    }
}
