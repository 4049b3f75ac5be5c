//! Reads one shard: keeps its iterator and position, paces GetRecords calls, and survives
//! throttling, expired iterators and the service being away without skipping a record.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{ErrorClass, SourceError, classify};
use super::{Backoff, KinesisClient, KinesisRecord};
use crate::sequence::SequenceNumber;

/// Where a shard with nothing read yet starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record in the shard.
    TrimHorizon,
    /// Only records put from now on.
    Latest,
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
}

impl FetchOutcome {
    /// Nothing more to read at the moment.
    pub fn caught_up(&self) -> bool {
        self.finished || (self.records.is_empty() && self.millis_behind.unwrap_or(0) == 0)
    }
}

/// One shard's reading state.
#[derive(Debug)]
pub struct ShardReader {
    stream: String,
    shard_id: Arc<str>,
    start: StartPosition,
    last_read: Option<SequenceNumber>,
    iterator: Option<String>,
    finished: bool,
    min_interval: Duration,
    next_call: Instant,
    backoff: Backoff,
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
            min_interval: Duration::from_millis(1000 / u64::from(calls_per_second.max(1))),
            next_call: Instant::now(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
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

    /// Moves the position back to just after `sequence` (records past it were not taken), or to the
    /// start when `None`, and marks the shard unfinished.
    pub fn rewind_to(&mut self, sequence: Option<SequenceNumber>) {
        self.last_read = sequence;
        self.iterator = None;
        self.finished = false;
    }

    /// Marks the shard as read to its end (known from a committed batch).
    pub fn mark_finished(&mut self) {
        self.finished = true;
        self.iterator = None;
    }

    /// One GetRecords call of at most `limit` records, retried until it succeeds, the error is one
    /// retrying cannot fix, or `cancel` fires (then an empty outcome is returned).
    pub async fn fetch(
        &mut self,
        client: &KinesisClient,
        limit: i32,
        cancel: &CancellationToken,
    ) -> Result<FetchOutcome, SourceError> {
        if self.finished {
            return Ok(FetchOutcome {
                finished: true,
                ..FetchOutcome::default()
            });
        }
        loop {
            if cancel.is_cancelled() {
                return Ok(FetchOutcome::default());
            }
            tokio::select! {
                () = tokio::time::sleep_until(self.next_call) => {}
                () = cancel.cancelled() => return Ok(FetchOutcome::default()),
            }
            self.next_call = Instant::now() + self.min_interval;
            let iterator = match &self.iterator {
                Some(iterator) => iterator.clone(),
                None => match self.new_iterator(client).await? {
                    Some(iterator) => iterator,
                    None => {
                        self.pause(cancel).await;
                        continue;
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
                    return Ok(self.accept(output));
                }
                Err(err) => match classify(&err) {
                    ErrorClass::Throttled => {
                        tracing::debug!(stream = %self.stream, shard = %self.shard_id, "GetRecords throttled; backing off");
                        self.pause(cancel).await;
                    }
                    ErrorClass::IteratorExpired => {
                        tracing::info!(stream = %self.stream, shard = %self.shard_id, "shard iterator expired; resuming after the last record read");
                        self.iterator = None;
                    }
                    ErrorClass::Unavailable => {
                        // A server may answer a stale iterator with a 5xx: renew it to be safe;
                        // the position is known, so nothing is skipped or read twice.
                        tracing::warn!(stream = %self.stream, shard = %self.shard_id, error = %aws_smithy_types::error::display::DisplayErrorContext(&err), "GetRecords failed; retrying");
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
    ) -> FetchOutcome {
        let mut records = Vec::with_capacity(output.records.len());
        for record in output.records {
            let Ok(sequence_number) = SequenceNumber::parse(&record.sequence_number) else {
                // Kinesis never sends such a number; keep going rather than lose the record's place.
                tracing::error!(stream = %self.stream, shard = %self.shard_id, sequence = record.sequence_number, "malformed sequence number from Kinesis");
                continue;
            };
            records.push(KinesisRecord {
                shard_id: Arc::clone(&self.shard_id),
                sequence_number,
                partition_key: record.partition_key.unwrap_or_default(),
                approximate_arrival_ms: record
                    .approximate_arrival_timestamp
                    .and_then(|t| t.to_millis().ok()),
                data: Bytes::from(record.data.into_inner()),
            });
        }
        if let Some(last) = records.last() {
            self.last_read = Some(last.sequence_number.clone());
        }
        self.iterator = output.next_shard_iterator;
        self.finished = self.iterator.is_none();
        FetchOutcome {
            records,
            millis_behind: output.millis_behind_latest,
            finished: self.finished,
        }
    }

    /// Gets an iterator at the reader's position; `Ok(None)` when worth retrying after a pause.
    async fn new_iterator(
        &mut self,
        client: &KinesisClient,
    ) -> Result<Option<String>, SourceError> {
        let request = client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(self.shard_id.as_ref());
        let request = match (&self.last_read, &self.start) {
            (Some(last), _) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(last.as_str()),
            (None, StartPosition::TrimHorizon) => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            (None, StartPosition::Latest) => request.shard_iterator_type(ShardIteratorType::Latest),
            (None, StartPosition::AtTimestamp(at)) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_smithy_types::DateTime::from_millis(
                    at.timestamp_millis(),
                )),
            (None, StartPosition::AtSequence(seq)) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq.as_str()),
        };
        match request.send().await {
            Ok(output) => {
                self.backoff.reset();
                match output.shard_iterator {
                    Some(iterator) => {
                        self.iterator = Some(iterator.clone());
                        Ok(Some(iterator))
                    }
                    None => {
                        self.finished = true;
                        Ok(None)
                    }
                }
            }
            Err(err) => match classify(&err) {
                ErrorClass::Throttled | ErrorClass::Unavailable | ErrorClass::IteratorExpired => {
                    tracing::warn!(stream = %self.stream, shard = %self.shard_id, error = %aws_smithy_types::error::display::DisplayErrorContext(&err), "GetShardIterator failed; retrying");
                    Ok(None)
                }
                ErrorClass::NotFound | ErrorClass::Fatal => Err(SourceError::call(
                    "GetShardIterator",
                    &self.stream,
                    Some(&self.shard_id),
                    &err,
                )),
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
