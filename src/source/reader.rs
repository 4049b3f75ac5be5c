//! Reads one shard: keeps its iterator and position, paces GetRecords calls, and survives
//! throttling, expired iterators and the service being away without skipping a record. With
//! enhanced fan-out the same position is read from a subscription instead (`subscribe`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{ErrorClass, SourceError, classify};
use super::fan_out::FanOutConsumer;
use super::{Backoff, KinesisClient, KinesisRecord};
use crate::sequence::SequenceNumber;
use crate::telemetry::{ShardMetrics, readiness};

mod subscribe;

use subscribe::Subscription;

/// Where a shard with nothing read yet starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record in the shard.
    TrimHorizon,
    /// Records put at or after this time.
    AtTimestamp(DateTime<Utc>),
    /// The record with this sequence number, and those after it (replaying a planned batch).
    AtSequence(SequenceNumber),
}

/// The result of one GetRecords call.
#[derive(Debug, Default)]
pub struct FetchOutcome {
    /// The records, in shard order.
    pub records: Vec<KinesisRecord>,
    /// `MillisBehindLatest` of the response.
    pub millis_behind: Option<i64>,
    /// The shard is closed and every record of it has been read.
    pub finished: bool,
    /// The shard reached a record put after the run's end time ([`ShardReader::end_after`]):
    /// that record and the ones after it were not taken.
    pub at_run_end: bool,
    /// The shard looks closed but the listing says open (no next iterator, or no iterator): list
    /// the shards again before trusting either.
    pub relist: bool,
    /// The answer held as many records as were asked for: more may be waiting.
    pub full: bool,
}

impl FetchOutcome {
    /// Nothing more to read at the moment. An empty response without `MillisBehindLatest` says
    /// nothing about what is left, so it is not "caught up".
    pub fn caught_up(&self) -> bool {
        self.finished
            || self.at_run_end
            || (self.records.is_empty() && self.millis_behind == Some(0))
    }

    /// Nothing more is likely waiting: caught up, or fewer records than asked for at
    /// `MillisBehindLatest` 0. Enough to cut a batch at once (latency); only [`Self::caught_up`]
    /// says a shard was read to its end or is at its tip.
    pub fn ready(&self) -> bool {
        self.caught_up() || (!self.full && self.millis_behind == Some(0))
    }
}

/// How many times in a row an open shard may be given no iterator before the reader gives up.
const NO_ITERATOR_LIMIT: u32 = 10;

/// What a GetShardIterator call gave.
enum NewIterator {
    /// An iterator.
    Got(String),
    /// A failure worth retrying after a pause.
    Retry,
    /// A success without an iterator: the position is at or past the end of a closed shard.
    None,
}

/// Kinesis' per-shard read limit, as a bucket of calls: `per_second` a second on average, up to
/// `per_second` at once. A new reader can ask again right after a small first answer instead of
/// waiting out a fixed interval.
#[derive(Debug, Clone)]
struct CallBudget {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl CallBudget {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            per_second,
            tokens: per_second,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.per_second);
        self.refilled = self.refilled.max(now);
    }

    /// When the next call may be made, seen at `now`.
    fn next_call(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let missing = (1.0 - self.tokens).max(0.0);
        self.refilled + Duration::from_secs_f64(missing / self.per_second)
    }

    /// Spends one call, made at `now`.
    fn spend(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

/// One shard's reading state.
#[derive(Debug, Clone)]
pub struct ShardReader {
    stream: String,
    shard_id: Arc<str>,
    start: StartPosition,
    last_read: Option<SequenceNumber>,
    iterator: Option<String>,
    finished: bool,
    closed: bool,
    no_iterator: u32,
    end_after_ms: Option<i64>,
    at_run_end: bool,
    at_tip: bool,
    /// The user accepted losing expired records (`on_lost_stream = "restart"`): a position
    /// Kinesis refuses as expired is continued from the shard's oldest record.
    continue_after_expiry: bool,
    /// Reading from the oldest record after such a refusal: records up to here were consumed.
    skip_through: Option<SequenceNumber>,
    /// Shared with the reader's forks: a shard's consumers, one after another, spend one budget.
    calls: Arc<Mutex<CallBudget>>,
    /// With enhanced fan-out, the consumer the shard is subscribed with (`None`: GetRecords).
    fan_out: Option<Arc<FanOutConsumer>>,
    /// The open subscription (never shared with a fork, which subscribes from its own position).
    subscription: Subscription,
    backoff: Backoff,
    metrics: ShardMetrics,
}

impl ShardReader {
    /// A reader that resumes after `last_read`, or begins at `start` when nothing was read yet.
    pub fn new(
        stream: &str,
        shard_id: &str,
        start: StartPosition,
        last_read: Option<SequenceNumber>,
        calls_per_second: u32,
    ) -> Self {
        Self {
            stream: stream.to_owned(),
            shard_id: Arc::from(shard_id),
            start,
            last_read,
            iterator: None,
            finished: false,
            closed: false,
            no_iterator: 0,
            end_after_ms: None,
            at_run_end: false,
            at_tip: false,
            continue_after_expiry: false,
            skip_through: None,
            calls: Arc::new(Mutex::new(CallBudget::new(calls_per_second))),
            fan_out: None,
            subscription: Subscription::default(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            metrics: ShardMetrics::new(stream, shard_id),
        }
    }

    /// The shard id.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The last sequence number read (and handed out).
    pub fn last_read(&self) -> Option<&SequenceNumber> {
        self.last_read.as_ref()
    }

    /// The shard is closed and read to its end.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The last answer was empty at `MillisBehindLatest = 0` and not cut at the run's end: nothing
    /// lay beyond what was read.
    /// Recorded in manifests, it tells later whether records after the position could have
    /// existed back then.
    pub fn is_at_tip(&self) -> bool {
        self.at_tip
    }

    /// The last fetch found nothing more to read at the moment ([`FetchOutcome::caught_up`]).
    pub fn is_caught_up(&self) -> bool {
        self.finished || self.at_run_end || self.at_tip
    }

    /// The shard reached the run's end time (see [`Self::end_after`]).
    pub fn is_at_run_end(&self) -> bool {
        self.at_run_end
    }

    /// Records whether the shard is listed as closed: for a closed shard, a GetShardIterator answer
    /// without an iterator means its end (as the KCL reads it); for an open one it is a fault.
    pub fn set_closed(&mut self, closed: bool) {
        self.closed = closed;
    }

    /// Takes no record that arrived after `end_ms` (ms since the epoch, Kinesis'
    /// `ApproximateArrivalTimestamp`): a bounded run ends at the records that were there when it
    /// started, however fast new ones arrive.
    pub fn end_after(&mut self, end_ms: Option<i64>) {
        self.end_after_ms = end_ms;
    }

    /// Moves the position back to just after `sequence` (records past it were not taken), or to the
    /// start when `None`, and marks the shard unfinished.
    pub fn rewind_to(&mut self, sequence: Option<SequenceNumber>) {
        self.last_read = sequence;
        self.iterator = None;
        self.finished = false;
        self.at_run_end = false;
        self.at_tip = false;
        self.skip_through = None;
        self.subscription = Subscription::default();
    }

    /// With `true`, a position Kinesis refuses as no longer in the shard (expired while the engine
    /// ran far behind, or after a batch finished with what remained) is continued from the
    /// shard's oldest record, skipping what was consumed. With `false` (the default) the refusal
    /// stops the run, and the next start's checks decide.
    pub fn continue_after_expiry(&mut self, accept: bool) {
        self.continue_after_expiry = accept;
    }

    /// Starts the shard afresh at `start`, forgetting its position.
    pub fn start_at(&mut self, start: StartPosition) {
        self.start = start;
        self.rewind_to(None);
    }

    /// A reader that fetches on from this one's position, with its settings and no iterator: the
    /// shard's consumer task reads with it while this one keeps the position handed out.
    pub fn fork(&self) -> Self {
        let mut reader = self.clone();
        reader.iterator = None;
        reader
    }

    /// Moves the position over an answer that a fork fetched and that was handed out.
    pub fn note_taken(&mut self, outcome: &FetchOutcome) {
        if let Some(last) = outcome.records.last() {
            self.last_read = Some(last.sequence_number.clone());
        }
        self.finished = outcome.finished;
        self.at_run_end = outcome.at_run_end;
        self.at_tip =
            !outcome.at_run_end && outcome.records.is_empty() && outcome.millis_behind == Some(0);
    }

    /// When the shard's call budget allows the next call.
    fn next_call(&self) -> Instant {
        let now = Instant::now();
        self.calls
            .lock()
            .map_or(now, |mut calls| calls.next_call(now))
    }

    /// The calls the shard's call budget holds now (tests).
    #[cfg(test)]
    pub(super) fn calls_left(&self) -> f64 {
        self.calls.lock().map_or(0.0, |mut calls| {
            calls.refill(Instant::now());
            calls.tokens
        })
    }

    /// Marks the shard as read to its end (known from a committed batch).
    pub fn mark_finished(&mut self) {
        self.finished = true;
        self.iterator = None;
        self.subscription = Subscription::default();
    }

    /// One GetRecords call of at most `limit` records (with enhanced fan-out: the subscription's
    /// next event, whatever its size), retried until it succeeds, the error is one retrying cannot
    /// fix, or `cancel` fires (then an empty outcome is returned).
    pub async fn fetch(
        &mut self,
        client: &KinesisClient,
        limit: i32,
        cancel: &CancellationToken,
    ) -> Result<FetchOutcome, SourceError> {
        if self.finished || self.at_run_end {
            return Ok(FetchOutcome {
                finished: self.finished,
                at_run_end: self.at_run_end,
                ..FetchOutcome::default()
            });
        }
        if let Some(consumer) = self.fan_out.clone() {
            let outcome = self.fetch_pushed(&consumer, client, cancel).await?;
            let unconfirmed_end = self.closed
                && outcome.records.is_empty()
                && outcome.millis_behind == Some(0)
                && !outcome.finished
                && !outcome.at_run_end;
            if !unconfirmed_end || cancel.is_cancelled() {
                return Ok(outcome);
            }
            // A shard listed as closed, at its tip, whose subscription did not name its children
            // (some servers never do): GetRecords tells whether it is read to its end. The next
            // subscription starts after whatever this call takes; the iterator of an earlier such
            // call is behind the records pushed since.
            self.subscription = Subscription::default();
            self.iterator = None;
        }
        self.fetch_polled(client, limit, cancel).await
    }

    /// [`Self::fetch`] by GetRecords.
    async fn fetch_polled(
        &mut self,
        client: &KinesisClient,
        limit: i32,
        cancel: &CancellationToken,
    ) -> Result<FetchOutcome, SourceError> {
        loop {
            if cancel.is_cancelled() {
                return Ok(FetchOutcome::default());
            }
            tokio::select! {
                () = tokio::time::sleep_until(self.next_call()) => {}
                () = cancel.cancelled() => return Ok(FetchOutcome::default()),
            }
            if let Ok(mut calls) = self.calls.lock() {
                calls.spend(Instant::now());
            }
            let iterator = match &self.iterator {
                Some(iterator) => iterator.clone(),
                None => match self.new_iterator(client).await? {
                    NewIterator::Got(iterator) => iterator,
                    NewIterator::Retry => {
                        self.pause(cancel).await;
                        continue;
                    }
                    NewIterator::None if self.closed => {
                        tracing::info!(stream = %self.stream, shard = %self.shard_id, "no shard iterator for a closed shard: it is read to its end");
                        self.finished = true;
                        self.metrics.finished();
                        return Ok(FetchOutcome {
                            finished: true,
                            ..FetchOutcome::default()
                        });
                    }
                    NewIterator::None => {
                        self.no_iterator += 1;
                        if self.no_iterator >= NO_ITERATOR_LIMIT {
                            return Err(SourceError::NoIterator {
                                stream: self.stream.clone(),
                                shard: self.shard_id.to_string(),
                                attempts: self.no_iterator,
                            });
                        }
                        tracing::warn!(stream = %self.stream, shard = %self.shard_id, attempt = self.no_iterator, "Kinesis answered GetShardIterator without an iterator for a shard listed as open; listing the shards again");
                        self.pause(cancel).await;
                        return Ok(FetchOutcome {
                            relist: true,
                            ..FetchOutcome::default()
                        });
                    }
                },
            };
            let response = client
                .get_records()
                .shard_iterator(iterator)
                .limit(limit.clamp(1, 10_000))
                .send()
                .await;
            match response {
                Ok(output) => {
                    self.backoff.reset();
                    return self.accept(output, limit);
                }
                Err(err) => match classify(&err) {
                    ErrorClass::Throttled => {
                        self.metrics.throttled();
                        tracing::debug!(stream = %self.stream, shard = %self.shard_id, "GetRecords throttled; backing off");
                        self.pause(cancel).await;
                    }
                    ErrorClass::IteratorExpired => {
                        self.metrics.retried();
                        tracing::info!(stream = %self.stream, shard = %self.shard_id, "shard iterator expired; resuming after the last record read");
                        self.iterator = None;
                    }
                    ErrorClass::Unavailable => {
                        // A server may answer a stale iterator with a 5xx: renew it to be safe;
                        // the position is known, so nothing is skipped or read twice.
                        self.metrics.retried();
                        tracing::warn!(stream = %self.stream, shard = %self.shard_id, error = %super::error::summary(&err), "GetRecords failed; retrying");
                        self.iterator = None;
                        self.pause(cancel).await;
                    }
                    ErrorClass::NotFound | ErrorClass::Fatal => {
                        return Err(SourceError::call(
                            "GetRecords",
                            &self.stream,
                            Some(&self.shard_id),
                            &err,
                        ));
                    }
                },
            }
        }
    }

    fn accept(
        &mut self,
        output: aws_sdk_kinesis::operation::get_records::GetRecordsOutput,
        limit: i32,
    ) -> Result<FetchOutcome, SourceError> {
        let full = usize::try_from(limit).is_ok_and(|limit| output.records.len() >= limit);
        let records = self.take_records(output.records, output.millis_behind_latest)?;
        let mut relist = false;
        if self.at_run_end {
            // Records past the cut remain unread: a later run asks again after `last_read`.
            self.iterator = None;
        } else {
            self.iterator = output.next_shard_iterator;
            if self.iterator.is_none() {
                // The end of a closed shard. A shard listed as open is not trusted to have
                // ended (a finished shard is never read again): list again, then ask again.
                self.finished = self.closed;
                if self.finished {
                    self.metrics.finished();
                }
                relist = !self.closed;
                if relist {
                    tracing::warn!(stream = %self.stream, shard = %self.shard_id, "GetRecords gave no next iterator for a shard listed as open; listing the shards again");
                }
            }
        }
        Ok(FetchOutcome {
            records,
            millis_behind: output.millis_behind_latest,
            finished: self.finished,
            at_run_end: self.at_run_end,
            relist,
            full,
        })
    }

    /// Takes the records of one answer (GetRecords, or an event of a subscription): parses their
    /// sequence numbers, skips what was consumed before an expiry, cuts at the run's end, and
    /// moves the position over them.
    fn take_records(
        &mut self,
        answer: Vec<aws_sdk_kinesis::types::Record>,
        millis_behind: Option<i64>,
    ) -> Result<Vec<KinesisRecord>, SourceError> {
        let answered_nothing = answer.is_empty();
        let mut records = Vec::with_capacity(answer.len());
        for record in answer {
            // Kinesis never sends such a number; skipping the record would lose it.
            let sequence_number = SequenceNumber::parse(&record.sequence_number).map_err(|e| {
                SourceError::BadSequenceNumber {
                    stream: self.stream.clone(),
                    shard: self.shard_id.to_string(),
                    message: e.to_string(),
                }
            })?;
            records.push(KinesisRecord {
                shard_id: Arc::clone(&self.shard_id),
                sequence_number,
                partition_key: record.partition_key.unwrap_or_default(),
                approximate_arrival_ms: record
                    .approximate_arrival_timestamp
                    .and_then(|t| t.to_millis().ok()),
                data: Bytes::from(record.data.into_inner()),
                sub_sequence: None,
            });
        }
        self.metrics.answered(
            millis_behind,
            records.last().and_then(|r| r.approximate_arrival_ms),
        );
        readiness().passed(&self.stream);
        if let Some(through) = &self.skip_through {
            records.retain(|r| &r.sequence_number > through);
            if !records.is_empty() {
                self.skip_through = None;
            }
        }
        if let Some(end) = self.end_after_ms
            && let Some(cut) = records
                .iter()
                .position(|r| r.approximate_arrival_ms.is_some_and(|at| at > end))
        {
            records.truncate(cut);
            self.at_run_end = true;
        }
        if let Some(last) = records.last() {
            self.last_read = Some(last.sequence_number.clone());
        }
        // An empty answer at MillisBehindLatest 0: nothing lay beyond (an answer with records may
        // have been cut by its Limit inside a burst that all arrived in the same millisecond, even
        // when all of them were skipped as consumed before).
        self.at_tip = !self.at_run_end && answered_nothing && millis_behind == Some(0);
        Ok(records)
    }

    /// Where reading goes on: just after the last record read, or at the start when nothing was;
    /// from the oldest record after an accepted expiry. As an iterator type, with its sequence
    /// number or timestamp.
    fn position(
        &self,
    ) -> (
        ShardIteratorType,
        Option<String>,
        Option<aws_smithy_types::DateTime>,
    ) {
        match (&self.last_read, &self.start) {
            (Some(_), _) if self.skip_through.is_some() => {
                (ShardIteratorType::TrimHorizon, None, None)
            }
            (Some(last), _) => (
                ShardIteratorType::AfterSequenceNumber,
                Some(last.as_str().to_owned()),
                None,
            ),
            (None, StartPosition::TrimHorizon) => (ShardIteratorType::TrimHorizon, None, None),
            (None, StartPosition::AtTimestamp(at)) => (
                ShardIteratorType::AtTimestamp,
                None,
                Some(aws_smithy_types::DateTime::from_millis(
                    at.timestamp_millis(),
                )),
            ),
            (None, StartPosition::AtSequence(seq)) => (
                ShardIteratorType::AtSequenceNumber,
                Some(seq.as_str().to_owned()),
                None,
            ),
        }
    }

    /// Gets an iterator at the reader's position.
    async fn new_iterator(&mut self, client: &KinesisClient) -> Result<NewIterator, SourceError> {
        let request = client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(self.shard_id.as_ref());
        let (kind, sequence, timestamp) = self.position();
        let request = request
            .shard_iterator_type(kind)
            .set_starting_sequence_number(sequence)
            .set_timestamp(timestamp);
        match request.send().await {
            // An answer without an iterator does not reset the backoff: asking again at once
            // would hammer the server.
            Ok(output) => match output.shard_iterator {
                Some(iterator) => {
                    self.backoff.reset();
                    self.no_iterator = 0;
                    self.iterator = Some(iterator.clone());
                    Ok(NewIterator::Got(iterator))
                }
                None => Ok(NewIterator::None),
            },
            Err(err) => match classify(&err) {
                ErrorClass::Throttled | ErrorClass::Unavailable | ErrorClass::IteratorExpired => {
                    self.metrics.iterator_retried();
                    tracing::warn!(stream = %self.stream, shard = %self.shard_id, error = %super::error::summary(&err), "GetShardIterator failed; retrying");
                    Ok(NewIterator::Retry)
                }
                ErrorClass::NotFound | ErrorClass::Fatal => {
                    let error = SourceError::call(
                        "GetShardIterator",
                        &self.stream,
                        Some(&self.shard_id),
                        &err,
                    );
                    match &self.last_read {
                        Some(last)
                            if self.continue_after_expiry
                                && self.skip_through.is_none()
                                && error.is_position_refused() =>
                        {
                            tracing::warn!(stream = %self.stream, shard = %self.shard_id, sequence = %last, "the position is no longer in the shard (expired): going on from its oldest record (on_lost_stream = restart)");
                            self.skip_through = Some(last.clone());
                            Ok(NewIterator::Retry)
                        }
                        _ => Err(error),
                    }
                }
            },
        }
    }

    async fn pause(&mut self, cancel: &CancellationToken) {
        let delay = self.backoff.next_delay(&mut rand::rng());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_and_its_forks_spend_one_call_budget() {
        let reader = ShardReader::new("s", "shardId-0", StartPosition::TrimHorizon, None, 5);
        let first = reader.fork();
        let now = Instant::now();
        for _ in 0..5 {
            first.calls.lock().unwrap().spend(now);
        }
        drop(first);
        let second = reader.fork();
        assert!(
            second.next_call() > Instant::now(),
            "the spent calls are remembered"
        );
    }

    #[test]
    fn calls_burst_up_to_the_per_second_limit_then_keep_to_it() {
        let mut calls = CallBudget::new(5);
        let start = calls.refilled;
        let mut now = start;
        let mut made = Vec::new();
        while now - start < Duration::from_secs(3) {
            now = now.max(calls.next_call(now));
            calls.spend(now);
            made.push((now - start).as_millis());
        }
        // Five at once, then one every 200 ms.
        assert_eq!(made[..7], [0, 0, 0, 0, 0, 200, 400], "{made:?}");
        for second in 0..3 {
            let in_window = made
                .iter()
                .filter(|&&at| (second * 1000..(second + 1) * 1000).contains(&at))
                .count();
            let limit = if second == 0 { 10 } else { 5 };
            assert!(in_window <= limit, "second {second}: {in_window} calls");
        }
    }
}
