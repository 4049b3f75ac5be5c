//! One stream's shards and each one's handed-out position; the batches are cut in `collect`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::budget::{BudgetLease, DEFAULT_MEMORY_BUDGET, MemoryBudget};
use super::consumer::ShardConsumer;
use super::error::SourceError;
use super::fan_out::FanOutConsumer;
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
    /// At most this many bytes of record data (a single record larger than that still goes
    /// through, alone).
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
    pub(super) consumers: BTreeMap<String, ShardConsumer>,
    pub(super) budget: MemoryBudget,
    pub(super) listed_at: Option<Instant>,
    pub(super) end_after_ms: Option<i64>,
    /// Which shard's buffer is taken first (rotates, so that none waits behind the others).
    pub(super) next_first: usize,
    startup_timeout: Option<Duration>,
    continue_after_expiry: bool,
    /// With leases, the shards this process reads (`None`: every shard).
    owned: Option<BTreeSet<String>>,
    /// With enhanced fan-out, the consumer every shard is subscribed with.
    fan_out: Option<Arc<FanOutConsumer>>,
}

/// How often the shard list is refreshed while running (resharding is also noticed at once when a
/// shard closes).
/// How recent a consumer's last "nothing beyond" must be for its shard to count as at its tip
/// (its calls come 5 a second; an outage or long throttling makes the claim lapse).
const TIP_CONFIRMED_WITHIN: Duration = Duration::from_secs(10);

pub(super) const SHARD_REFRESH: Duration = Duration::from_secs(30);

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
            owned: None,
            fan_out: None,
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

    /// Reads every shard by enhanced fan-out with `consumer` (see [`FanOutConsumer`]).
    pub fn with_fan_out(mut self, consumer: Option<Arc<FanOutConsumer>>) -> Self {
        self.fan_out = consumer;
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

    /// Reads only `owned` from now on (`None`: every shard); the others' consumers stop.
    pub fn set_owned(&mut self, owned: Option<BTreeSet<String>>) {
        if let Some(owned) = &owned {
            self.consumers.retain(|id, _| owned.contains(id));
        }
        self.owned = owned;
    }

    /// Whether this process reads `shard_id`.
    pub fn is_owned(&self, shard_id: &str) -> bool {
        self.owned.as_ref().is_none_or(|o| o.contains(shard_id))
    }

    /// The shards read now: readable (see [`readable_shards`]) and owned.
    pub(super) fn readable(&self) -> Vec<&ShardInfo> {
        let finished = self.finished_map();
        readable_shards(&self.shards, &finished)
            .into_iter()
            .filter(|s| self.is_owned(&s.shard_id))
            .collect()
    }

    /// The listed parents, not finished here, of owned shards: their children wait for them.
    pub fn waiting_parents(&self) -> BTreeSet<String> {
        let unfinished = |id: &str| {
            self.is_listed(id) && !self.readers.get(id).is_some_and(ShardReader::is_finished)
        };
        self.shards
            .iter()
            .filter(|s| self.is_owned(&s.shard_id))
            .flat_map(ShardInfo::parents)
            .filter(|p| unfinished(p))
            .map(str::to_owned)
            .collect()
    }

    /// The readable shards whose last answer said nothing lay beyond their position, each with
    /// the moment its consumer last found it so (a shard without that confirmation is left out).
    pub fn shards_at_tip(&self) -> Vec<(String, std::time::Instant)> {
        self.readable()
            .iter()
            .filter(|s| self.is_at_tip(&s.shard_id))
            .filter_map(|s| {
                let seen = self.consumers.get(&s.shard_id)?.tip_seen_at()?;
                Some((s.shard_id.clone(), seen))
            })
            .collect()
    }

    /// The shard's last answer handed out was empty at `MillisBehindLatest` 0, its consumer has
    /// nothing more (no answer buffered or held, none waiting for memory), and its consumer's
    /// latest call, recent enough, still found it so (not an outage since).
    fn is_at_tip(&self, shard_id: &str) -> bool {
        self.readers
            .get(shard_id)
            .is_some_and(ShardReader::is_at_tip)
            && !self.has_more(shard_id)
            && self
                .consumers
                .get(shard_id)
                .is_none_or(|c| c.tip_confirmed(TIP_CONFIRMED_WITHIN))
    }

    /// Nothing more to read now: the shard is read to its end, or to the run's end, or at its tip.
    pub(super) fn is_caught_up(&self, shard_id: &str) -> bool {
        let ended = self
            .readers
            .get(shard_id)
            .is_some_and(|r| r.is_finished() || r.is_at_run_end());
        (ended && !self.has_more(shard_id)) || self.is_at_tip(shard_id)
    }

    /// The shard's consumer has records not handed out yet.
    pub(super) fn has_more(&self, shard_id: &str) -> bool {
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

    /// Puts one shard back at a committed position; what its consumer read ahead is dropped, the
    /// other shards keep theirs.
    pub fn restore_shard(&mut self, shard_id: &str, position: &ShardPosition) {
        self.consumers.remove(shard_id);
        if !self.readers.contains_key(shard_id) {
            let reader = self.reader_for(shard_id);
            self.readers.insert(shard_id.to_owned(), reader);
        }
        if let Some(reader) = self.readers.get_mut(shard_id) {
            reader.rewind_to(position.last.clone());
            if position.finished {
                reader.mark_finished();
            }
        }
    }

    /// Each listed shard's hash key range, `first..=last`.
    pub fn hash_ranges(&self) -> BTreeMap<String, (u128, u128)> {
        self.shards
            .iter()
            .filter_map(|s| Some((s.shard_id.clone(), s.hash_range?)))
            .collect()
    }

    /// The shards of the current listing.
    pub fn listed_shards(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.shard_id.clone()).collect()
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
        if let Some(consumer) = &self.fan_out {
            reader.subscribe_with(Arc::clone(consumer));
        }
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

    pub(super) fn every_readable_caught_up(&self) -> bool {
        self.readable()
            .iter()
            .all(|s| self.is_caught_up(&s.shard_id))
    }

    pub(super) fn finished_map(&self) -> BTreeMap<String, bool> {
        self.readers
            .iter()
            .map(|(id, r)| (id.clone(), r.is_finished()))
            .collect()
    }
}
