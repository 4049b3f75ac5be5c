//! One stream's shards, read together into micro-batches.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::SourceError;
use super::reader::{FetchOutcome, ShardReader, StartPosition};
use super::shards::{ShardInfo, list_shards, readable_shards};
use super::{Backoff, KinesisClient, KinesisRecord};
use crate::sequence::SequenceNumber;

/// Where one shard stands after a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPosition {
    /// The last sequence number consumed; `None` when nothing was read yet.
    pub last: Option<SequenceNumber>,
    /// The shard is closed and was read to its end.
    #[serde(default)]
    pub finished: bool,
    /// When the batch was planned, Kinesis said nothing lay beyond `last` (`MillisBehindLatest`
    /// was 0). A checkpoint found aged out later can then only have lost records put after the
    /// planning, which retention still holds if the planning is recent enough.
    #[serde(default)]
    pub at_tip: bool,
}

/// The records one batch read from one shard: `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRange {
    /// The first sequence number taken.
    pub first: SequenceNumber,
    /// The last sequence number taken.
    pub last: SequenceNumber,
}

/// When a batch is cut.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// At most this many records.
    pub max_records: usize,
    /// At most about this many bytes (one GetRecords response may overshoot).
    pub max_bytes: usize,
    /// Stop collecting after this long, even when the shards still have records.
    pub max_wait: Duration,
}

/// The records of one micro-batch.
#[derive(Debug, Default)]
pub struct CollectedBatch {
    /// The records, shard by shard in shard order.
    pub records: Vec<KinesisRecord>,
    /// The range taken from each shard that gave records.
    pub ranges: BTreeMap<String, ShardRange>,
    /// The largest `MillisBehindLatest` seen.
    pub millis_behind: i64,
    /// Every readable shard reported no more records at the end of collecting.
    pub caught_up: bool,
}

/// Reads the shards of one stream in order, keeping each shard's position.
#[derive(Debug)]
pub struct StreamSource {
    pub(super) client: KinesisClient,
    pub(super) stream: String,
    initial: StartPosition,
    pub(super) calls_per_second: u32,
    pub(super) shards: Vec<ShardInfo>,
    pub(super) readers: BTreeMap<String, ShardReader>,
    listed_at: Option<Instant>,
    end_after_ms: Option<i64>,
    /// Bytes per record in the last response that had records: sizes the next GetRecords calls
    /// so that a batch stays near `max_bytes`. Starts at Kinesis' largest record.
    bytes_per_record: usize,
    /// Which readable shard is asked first when not all fit in the byte budget (rotates).
    next_first: usize,
    startup_timeout: Option<Duration>,
    continue_after_expiry: bool,
}

/// The largest Kinesis record (1 MiB): the size assumed before any record was read, so that even
/// the first calls of a run cannot overshoot `max_bytes` (they take fewer records; the next
/// round, sized from what they returned, takes the rest).
const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// How often the shard list is refreshed while running (resharding is also noticed at once when a
/// shard closes).
const SHARD_REFRESH: Duration = Duration::from_secs(30);

impl StreamSource {
    /// A source for `stream`; shards without a position start at `initial`.
    pub fn new(
        client: KinesisClient,
        stream: &str,
        initial: StartPosition,
        calls_per_second: u32,
    ) -> Self {
        Self {
            client,
            stream: stream.to_owned(),
            initial,
            calls_per_second,
            shards: Vec::new(),
            readers: BTreeMap::new(),
            listed_at: None,
            end_after_ms: None,
            bytes_per_record: MAX_RECORD_BYTES,
            next_first: 0,
            startup_timeout: None,
            continue_after_expiry: false,
        }
    }

    /// See [`ShardReader::continue_after_expiry`]; applies to every shard.
    pub fn continue_after_expiry(mut self, accept: bool) -> Self {
        self.continue_after_expiry = accept;
        self
    }

    /// Gives up the first shard listing after `timeout` of failures (a bounded run must not wait
    /// forever for a server that is not there). Without it, the listing is retried until shutdown.
    pub fn with_startup_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Takes no record that arrived after `end_ms` (see [`ShardReader::end_after`]).
    pub fn end_after(&mut self, end_ms: i64) {
        self.end_after_ms = Some(end_ms);
        for reader in self.readers.values_mut() {
            reader.end_after(Some(end_ms));
        }
    }

    /// The stream name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Each listed shard's first sequence number (identifies this incarnation of the stream).
    pub fn shard_starts(&self) -> BTreeMap<String, String> {
        self.shards
            .iter()
            .filter_map(|s| {
                s.starting_sequence
                    .clone()
                    .map(|start| (s.shard_id.clone(), start))
            })
            .collect()
    }

    /// The readable shards whose last answer said nothing lay beyond their position.
    pub fn shards_at_tip(&self) -> Vec<String> {
        let finished = self.finished_map();
        readable_shards(&self.shards, &finished)
            .iter()
            .filter(|s| {
                self.readers
                    .get(&s.shard_id)
                    .is_some_and(ShardReader::is_at_tip)
            })
            .map(|s| s.shard_id.clone())
            .collect()
    }

    /// Each known shard's position.
    pub fn positions(&self) -> BTreeMap<String, ShardPosition> {
        self.readers
            .iter()
            .map(|(id, r)| {
                let position = ShardPosition {
                    last: r.last_read().cloned(),
                    finished: r.is_finished(),
                    at_tip: r.is_at_tip(),
                };
                (id.clone(), position)
            })
            .collect()
    }

    /// Puts every shard back at a committed position (shards not in `positions` start afresh).
    pub fn restore(&mut self, positions: &BTreeMap<String, ShardPosition>) {
        self.restore_except(positions, |_| false);
    }

    /// Like [`Self::restore`], leaving the shards for which `keep` is true as they are.
    pub fn restore_except(
        &mut self,
        positions: &BTreeMap<String, ShardPosition>,
        keep: impl Fn(&str) -> bool,
    ) {
        for (id, reader) in &mut self.readers {
            if keep(id) {
                continue;
            }
            let position = positions.get(id).cloned().unwrap_or_default();
            reader.rewind_to(position.last);
            if position.finished {
                reader.mark_finished();
            }
        }
        for (id, position) in positions {
            if !self.readers.contains_key(id) {
                let mut reader = self.reader_for(id);
                reader.rewind_to(position.last.clone());
                if position.finished {
                    reader.mark_finished();
                }
                self.readers.insert(id.clone(), reader);
            }
        }
    }

    /// Lists the shards (retrying while the service is away) and adds readers for new ones.
    pub async fn refresh_shards(&mut self, cancel: &CancellationToken) -> Result<(), SourceError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let started = Instant::now();
        let shards = loop {
            if let Some(shards) = list_shards(&self.client, &self.stream).await? {
                break shards;
            }
            if let Some(timeout) = self.startup_timeout
                && self.listed_at.is_none()
                && started.elapsed() >= timeout
            {
                return Err(SourceError::Unreachable {
                    stream: self.stream.clone(),
                    waited: timeout,
                });
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay(&mut rand::rng())) => {}
                () = cancel.cancelled() => return Ok(()),
            }
        };
        self.shards = shards;
        for shard in &self.shards {
            if !self.readers.contains_key(&shard.shard_id) {
                let reader = self.reader_for(&shard.shard_id);
                self.readers.insert(shard.shard_id.clone(), reader);
            }
            if let Some(reader) = self.readers.get_mut(&shard.shard_id) {
                reader.set_closed(shard.closed);
            }
        }
        self.listed_at = Some(Instant::now());
        Ok(())
    }

    fn reader_for(&self, shard_id: &str) -> ShardReader {
        let is_child = self
            .shards
            .iter()
            .any(|s| s.shard_id == shard_id && s.parents().next().is_some());
        // A child shard holds only records put after its parents closed: at TRIM_HORIZON it is
        // read whole; at a timestamp (LATEST is pinned to one), whole if it was made after it.
        let start = if is_child && self.initial != StartPosition::TrimHorizon {
            self.initial.clone()
        } else if is_child {
            StartPosition::TrimHorizon
        } else {
            self.initial.clone()
        };
        let mut reader =
            ShardReader::new(&self.stream, shard_id, start, None, self.calls_per_second);
        reader.end_after(self.end_after_ms);
        reader.set_closed(self.is_closed(shard_id));
        reader.continue_after_expiry(self.continue_after_expiry);
        reader
    }

    /// The shard is in the current listing.
    pub fn is_listed(&self, shard_id: &str) -> bool {
        self.shards.iter().any(|s| s.shard_id == shard_id)
    }

    pub(super) fn is_closed(&self, shard_id: &str) -> bool {
        self.shards
            .iter()
            .any(|s| s.shard_id == shard_id && s.closed)
    }

    /// The shards to ask now: readable, not at the run's end, and as many as can each take one
    /// record of the expected size in the bytes left, starting from a rotating one so that none
    /// is starved.
    fn shards_to_fetch(&mut self, bytes_left: usize) -> Vec<String> {
        let finished = self.finished_map();
        let readable: Vec<String> = readable_shards(&self.shards, &finished)
            .into_iter()
            .map(|s| s.shard_id.clone())
            .filter(|id| self.readers.get(id).is_some_and(|r| !r.is_at_run_end()))
            .collect();
        let fit = (bytes_left / self.bytes_per_record.max(1)).clamp(1, readable.len().max(1));
        if fit >= readable.len() {
            return readable;
        }
        let first = self.next_first % readable.len();
        self.next_first = self.next_first.wrapping_add(fit);
        readable
            .iter()
            .cycle()
            .skip(first)
            .take(fit)
            .cloned()
            .collect()
    }

    fn every_readable_caught_up(&self) -> bool {
        let finished = self.finished_map();
        readable_shards(&self.shards, &finished).iter().all(|s| {
            self.readers
                .get(&s.shard_id)
                .is_some_and(ShardReader::is_caught_up)
        })
    }

    fn finished_map(&self) -> BTreeMap<String, bool> {
        self.readers
            .iter()
            .map(|(id, r)| (id.clone(), r.is_finished()))
            .collect()
    }

    /// Reads new records from every readable shard until a limit is reached or every shard is
    /// caught up. Returns an empty batch (caught up) when there is nothing new.
    pub async fn collect_batch(
        &mut self,
        limits: BatchLimits,
        cancel: &CancellationToken,
    ) -> Result<CollectedBatch, SourceError> {
        if self.listed_at.is_none_or(|t| t.elapsed() >= SHARD_REFRESH) {
            self.refresh_shards(cancel).await?;
        }
        let deadline = Instant::now() + limits.max_wait;
        let mut batch = CollectedBatch::default();
        let mut bytes = 0usize;
        loop {
            let bytes_left = limits.max_bytes.saturating_sub(bytes);
            let readable = self.shards_to_fetch(bytes_left);
            let room = limits.max_records.saturating_sub(batch.records.len());
            if readable.is_empty() || room == 0 || bytes_left == 0 || cancel.is_cancelled() {
                batch.caught_up = readable.is_empty();
                return Ok(batch);
            }
            // Records by count and, from the sizes seen, by bytes: a batch ends within one record
            // of `max_bytes` when record sizes are steady.
            let by_bytes = bytes_left / (readable.len() * self.bytes_per_record.max(1));
            let per_shard = i32::try_from((room / readable.len()).min(by_bytes).clamp(1, 10_000))
                .unwrap_or(10_000);
            let client = &self.client;
            let fetches = self
                .readers
                .iter_mut()
                .filter(|(id, _)| readable.contains(id))
                .map(|(_, reader)| reader.fetch(client, per_shard, cancel));
            let outcomes: Vec<Result<FetchOutcome, SourceError>> =
                futures::future::join_all(fetches).await;
            let mut any_finished = false;
            let mut relist = false;
            for outcome in outcomes {
                let outcome = outcome?;
                any_finished |= outcome.finished;
                relist |= outcome.relist;
                batch.millis_behind = batch.millis_behind.max(outcome.millis_behind.unwrap_or(0));
                if let (Some(first), Some(last)) = (outcome.records.first(), outcome.records.last())
                {
                    let range = batch
                        .ranges
                        .entry(first.shard_id.to_string())
                        .or_insert_with(|| ShardRange {
                            first: first.sequence_number.clone(),
                            last: last.sequence_number.clone(),
                        });
                    range.last = last.sequence_number.clone();
                }
                let got: usize = outcome.records.iter().map(|r| r.data.len()).sum();
                if !outcome.records.is_empty() {
                    self.bytes_per_record = got.div_ceil(outcome.records.len());
                }
                bytes += got;
                batch.records.extend(outcome.records);
            }
            if any_finished || relist {
                // A shard closed: its children (now readable) are listed and read in this batch.
                // Or one looks closed while listed open: the listing says which it is.
                self.refresh_shards(cancel).await?;
            }
            if any_finished {
                continue;
            }
            // Every readable shard, not only those asked this round (the byte budget may leave
            // some out), must have found nothing more.
            let all_caught_up = self.every_readable_caught_up();
            if all_caught_up || Instant::now() >= deadline {
                batch.caught_up = all_caught_up;
                return Ok(batch);
            }
        }
    }
}
