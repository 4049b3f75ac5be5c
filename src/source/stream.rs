//! One stream's shards, read ahead by one consumer task each, cut into micro-batches.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::budget::{BudgetLease, DEFAULT_MEMORY_BUDGET, MemoryBudget};
use super::consumer::{ConsumerSettings, Fetched, ShardConsumer};
use super::error::SourceError;
use super::reader::{ShardReader, StartPosition};
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
    /// The bytes of record data.
    pub bytes: usize,
    /// The batch's share of the memory budget, given back when it is dropped (after its commit).
    pub lease: BudgetLease,
}

/// Reads the shards of one stream, each with its own consumer task, and keeps each shard's
/// handed-out position.
#[derive(Debug)]
pub struct StreamSource {
    pub(super) client: KinesisClient,
    pub(super) stream: String,
    initial: StartPosition,
    pub(super) calls_per_second: u32,
    pub(super) shards: Vec<ShardInfo>,
    /// Each shard's handed-out position: it moves only over records given to a batch.
    pub(super) readers: BTreeMap<String, ShardReader>,
    /// The shards being read on ahead of the batches.
    consumers: BTreeMap<String, ShardConsumer>,
    budget: MemoryBudget,
    listed_at: Option<Instant>,
    end_after_ms: Option<i64>,
    /// Which shard's buffer is taken first (rotates, so that none waits behind the others).
    next_first: usize,
    startup_timeout: Option<Duration>,
    continue_after_expiry: bool,
}

/// How often the shard list is refreshed while running (resharding is also noticed at once when a
/// shard closes).
const SHARD_REFRESH: Duration = Duration::from_secs(30);

/// What became of an answer offered to a batch.
enum Offer {
    /// All of it is in the batch; `relist`: the shard ended or asked for a new listing.
    Taken { relist: bool },
    /// The batch is full: the answer (or its rest) is held for the next batch.
    Full,
}

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
            consumers: BTreeMap::new(),
            budget: MemoryBudget::new(DEFAULT_MEMORY_BUDGET),
            listed_at: None,
            end_after_ms: None,
            next_first: 0,
            startup_timeout: None,
            continue_after_expiry: false,
        }
    }

    /// Shares `budget` with the other streams of the process.
    pub fn with_budget(mut self, budget: MemoryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The memory budget the stream's records are held in.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
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
        self.stop_consumers();
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
            .filter(|s| self.is_at_tip(&s.shard_id))
            .map(|s| s.shard_id.clone())
            .collect()
    }

    /// The shard's last answer handed out was empty at `MillisBehindLatest` 0, and its consumer
    /// has nothing more: no answer buffered or held, and none waiting for memory.
    fn is_at_tip(&self, shard_id: &str) -> bool {
        self.readers
            .get(shard_id)
            .is_some_and(ShardReader::is_at_tip)
            && !self.has_more(shard_id)
    }

    /// The shard's consumer has records not handed out yet.
    fn has_more(&self, shard_id: &str) -> bool {
        self.consumers
            .get(shard_id)
            .is_some_and(ShardConsumer::has_more)
    }

    /// Each known shard's position.
    pub fn positions(&self) -> BTreeMap<String, ShardPosition> {
        self.readers
            .iter()
            .map(|(id, r)| {
                let position = ShardPosition {
                    last: r.last_read().cloned(),
                    finished: r.is_finished(),
                    at_tip: self.is_at_tip(id),
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
        self.stop_consumers();
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
            if let Some(consumer) = self.consumers.get(&shard.shard_id) {
                consumer.relisted(shard.closed);
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

    fn every_readable_caught_up(&self) -> bool {
        let finished = self.finished_map();
        readable_shards(&self.shards, &finished).iter().all(|s| {
            self.readers
                .get(&s.shard_id)
                .is_some_and(ShardReader::is_caught_up)
                && !self.has_more(&s.shard_id)
        })
    }

    /// Every readable shard's last answer handed out said nothing more is likely waiting, and
    /// its consumer has nothing more buffered.
    fn every_readable_ready(&self) -> bool {
        let finished = self.finished_map();
        readable_shards(&self.shards, &finished).iter().all(|s| {
            let id = &s.shard_id;
            let answered_ready = self.readers.get(id).is_some_and(ShardReader::is_caught_up)
                || self.consumers.get(id).is_some_and(|c| c.ready);
            answered_ready && !self.has_more(id)
        })
    }

    fn finished_map(&self) -> BTreeMap<String, bool> {
        self.readers
            .iter()
            .map(|(id, r)| (id.clone(), r.is_finished()))
            .collect()
    }

    /// Stops every consumer and throws their buffers away: the shards read on from their
    /// handed-out positions when batches are collected again.
    pub(super) fn stop_consumers(&mut self) {
        self.consumers.clear();
    }

    /// Starts a consumer for every readable shard that has more to read and none yet.
    fn start_consumers(
        &mut self,
        limits: BatchLimits,
        cancel: &CancellationToken,
    ) -> Result<(), SourceError> {
        let done: Vec<String> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.is_done())
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            self.consumers.remove(&id);
            self.check_ended(&id, cancel)?;
        }
        let finished = self.finished_map();
        let readable: Vec<ShardInfo> = readable_shards(&self.shards, &finished)
            .into_iter()
            .cloned()
            .collect();
        // One call's share: a batch of every readable shard stays near `max_bytes`, and the
        // budget holds several calls of every shard of every stream.
        let call_bytes = (limits.max_bytes / readable.len().max(1))
            .min(self.budget.record_bytes() / 16)
            .max(1);
        for shard in readable {
            let Some(reader) = self.readers.get(&shard.shard_id) else {
                continue;
            };
            if reader.is_finished()
                || reader.is_at_run_end()
                || self.consumers.contains_key(&shard.shard_id)
            {
                continue;
            }
            let settings = ConsumerSettings {
                client: self.client.clone(),
                budget: self.budget.clone(),
                call_bytes,
                call_records: limits.max_records,
            };
            let consumer = ShardConsumer::start(reader.fork(), shard.closed, settings, cancel);
            self.consumers.insert(shard.shard_id.clone(), consumer);
        }
        Ok(())
    }

    /// A consumer whose answers are all taken ends only with its shard (read to its end or to the
    /// run's end), with an error it handed out, or at shutdown; otherwise its task died (a panic).
    /// Restarting it would hide that, and could repeat it forever.
    fn check_ended(&self, shard_id: &str, cancel: &CancellationToken) -> Result<(), SourceError> {
        let ended = cancel.is_cancelled()
            || self
                .readers
                .get(shard_id)
                .is_some_and(|r| r.is_finished() || r.is_at_run_end());
        if ended {
            return Ok(());
        }
        Err(SourceError::ReaderStopped {
            stream: self.stream.clone(),
            shard: shard_id.to_owned(),
        })
    }

    /// Takes what the consumers have buffered into `batch`, within `limits`. Returns whether a
    /// shard ended or asked for a new listing, and whether the batch is full.
    fn take_buffered(
        &mut self,
        batch: &mut CollectedBatch,
        limits: BatchLimits,
    ) -> Result<(bool, bool), SourceError> {
        let ids: Vec<String> = self.consumers.keys().cloned().collect();
        if ids.is_empty() {
            return Ok((false, false));
        }
        let first = self.next_first % ids.len();
        self.next_first = self.next_first.wrapping_add(1);
        let mut relist = false;
        for id in ids.iter().cycle().skip(first).take(ids.len()) {
            while let Some(answer) = self.consumers.get_mut(id).and_then(ShardConsumer::try_take) {
                match self.offer(id, answer?, batch, limits) {
                    Offer::Taken { relist: r } => relist |= r,
                    Offer::Full => return Ok((relist, true)),
                }
            }
        }
        Ok((relist, false))
    }

    /// Gives `batch` as much of an answer as fits in `limits`: all of it when the batch is empty
    /// (a record larger than the limits still goes through). What does not fit is held for the
    /// next batch.
    fn offer(
        &mut self,
        shard_id: &str,
        mut fetched: Fetched,
        batch: &mut CollectedBatch,
        limits: BatchLimits,
    ) -> Offer {
        let records = &fetched.outcome.records;
        let mut fit = records.len();
        if !batch.records.is_empty() {
            let room = limits.max_records.saturating_sub(batch.records.len());
            let mut bytes = batch.bytes;
            fit = records
                .iter()
                .take(room)
                .take_while(|r| {
                    bytes += r.data.len();
                    bytes <= limits.max_bytes
                })
                .count();
        }
        if fit == records.len() {
            return Offer::Taken {
                relist: self.hand_out(shard_id, fetched, batch),
            };
        }
        if fit > 0 {
            let head = fetched.split_off_head(fit);
            self.hand_out(shard_id, head, batch);
        }
        if let Some(consumer) = self.consumers.get_mut(shard_id) {
            consumer.hold(fetched);
        }
        Offer::Full
    }

    /// Gives an answer to the batch and moves the shard's position over it. Returns whether the
    /// shard ended or asked for a new listing.
    fn hand_out(&mut self, shard_id: &str, fetched: Fetched, batch: &mut CollectedBatch) -> bool {
        let Fetched { outcome, lease } = fetched;
        if let Some(reader) = self.readers.get_mut(shard_id) {
            reader.note_taken(&outcome);
        }
        if let Some(consumer) = self.consumers.get_mut(shard_id) {
            consumer.ready = outcome.ready();
        }
        batch.lease.merge(lease);
        batch.millis_behind = batch.millis_behind.max(outcome.millis_behind.unwrap_or(0));
        if let (Some(first), Some(last)) = (outcome.records.first(), outcome.records.last()) {
            let range = batch
                .ranges
                .entry(shard_id.to_owned())
                .or_insert_with(|| ShardRange {
                    first: first.sequence_number.clone(),
                    last: last.sequence_number.clone(),
                });
            range.last = last.sequence_number.clone();
        }
        batch.bytes += outcome.records.iter().map(|r| r.data.len()).sum::<usize>();
        batch.records.extend(outcome.records);
        outcome.finished || outcome.relist
    }

    /// Waits for the next answer of any consumer (or `deadline`, or `cancel`) and hands it out.
    /// Returns whether a shard ended or asked for a new listing.
    async fn wait_for_answer(
        &mut self,
        batch: &mut CollectedBatch,
        limits: BatchLimits,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<bool, SourceError> {
        if self.consumers.is_empty() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = cancel.cancelled() => {}
            }
            return Ok(false);
        }
        let next = futures::future::select_all(
            self.consumers
                .iter_mut()
                .map(|(id, c)| Box::pin(async move { (id.clone(), c.take().await) })),
        );
        let (id, answer) = tokio::select! {
            ((id, answer), _, _) = next => (id, answer),
            () = tokio::time::sleep_until(deadline) => return Ok(false),
            () = cancel.cancelled() => return Ok(false),
        };
        match answer {
            None => {
                self.consumers.remove(&id);
                self.check_ended(&id, cancel)?;
                Ok(false)
            }
            Some(answer) => match self.offer(&id, answer?, batch, limits) {
                Offer::Taken { relist } => Ok(relist),
                // Taken from the buffer next round, which finds the batch full.
                Offer::Full => Ok(false),
            },
        }
    }

    /// The next micro-batch: what the shards' consumers have read, cut
    ///
    /// * at once when every shard's last answer said nothing more is likely waiting (latency),
    /// * when it reaches `max_records` or `max_bytes`, or the memory budget runs low,
    /// * otherwise after `max_wait` (under load: commits stay rare and files large).
    ///
    /// An empty batch is returned after `max_wait` with nothing new, or at once when every shard
    /// was read to the run's end; `caught_up` then says every readable shard is at its end.
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
        loop {
            self.start_consumers(limits, cancel)?;
            let (relist, full) = self.take_buffered(&mut batch, limits)?;
            if relist {
                // A shard closed: its children (now readable) are listed and read in this batch.
                // Or one looks closed while listed open: the listing says which it is.
                self.refresh_shards(cancel).await?;
                continue;
            }
            let caught_up = self.every_readable_caught_up();
            let has_records = !batch.records.is_empty();
            let cut = full
                || (has_records && (self.every_readable_ready() || self.budget.under_pressure()));
            // A bounded run (or one whose shards all ended) has nothing more to wait for.
            let ended = caught_up && (self.end_after_ms.is_some() || self.consumers.is_empty());
            if cut || (!has_records && ended) || cancel.is_cancelled() || Instant::now() >= deadline
            {
                batch.caught_up = caught_up && !full;
                return Ok(batch);
            }
            if self
                .wait_for_answer(&mut batch, limits, deadline, cancel)
                .await?
            {
                self.refresh_shards(cancel).await?;
            }
        }
    }
}
