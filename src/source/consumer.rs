//! One task per shard: it reads on at the shard's call budget into a small buffer, so that
//! fetching overlaps decoding, SQL and commits. A micro-batch takes whatever the buffers hold.
//!
//! The task reads with a fork of the shard's [`ShardReader`]; the stream's own reader moves only
//! over answers that were handed out, so the positions recorded in a batch are exactly the records
//! it took. Stopping a consumer throws its buffer away: those records are read again from the
//! handed-out position.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::KinesisClient;
use super::budget::{BudgetLease, MemoryBudget};
use super::error::SourceError;
use super::reader::{FetchOutcome, ShardReader};

/// Answers buffered per shard beyond the one being fetched (the memory budget is the real
/// limit; this keeps one shard from running far ahead of the batch).
const BUFFERED_ANSWERS: usize = 4;

/// The largest Kinesis record (1 MiB): the size assumed before any record was read, so that the
/// first call of a consumer cannot overshoot its share (it takes few records; the next call,
/// sized from what it returned, takes the rest).
const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The most one GetRecords answer holds (Kinesis' limit: 10 MiB).
const MAX_ANSWER_BYTES: usize = 10 * 1024 * 1024;

/// One answer handed out, with its share of the memory budget.
#[derive(Debug)]
pub(super) struct Fetched {
    pub outcome: FetchOutcome,
    pub lease: BudgetLease,
}

impl Fetched {
    /// The answer's first `n` records as an answer of their own (more follow: the rest, left in
    /// `self`, which keeps what the answer said about the shard).
    pub fn split_off_head(&mut self, n: usize) -> Fetched {
        let rest = self.outcome.records.split_off(n);
        let head = std::mem::replace(&mut self.outcome.records, rest);
        let head_bytes = head.iter().map(|r| r.data.len()).sum();
        Fetched {
            outcome: FetchOutcome {
                records: head,
                millis_behind: self.outcome.millis_behind,
                full: true,
                ..FetchOutcome::default()
            },
            lease: self.lease.split_off(head_bytes),
        }
    }
}

/// The settings a consumer reads with.
#[derive(Debug, Clone)]
pub(super) struct ConsumerSettings {
    pub client: KinesisClient,
    pub budget: MemoryBudget,
    /// About how many bytes one GetRecords call may return.
    pub call_bytes: usize,
    /// At most this many records per GetRecords call.
    pub call_records: usize,
}

/// A running shard consumer. Dropping it stops the task.
#[derive(Debug)]
pub(super) struct ShardConsumer {
    answers: mpsc::Receiver<Result<Fetched, SourceError>>,
    listing: watch::Sender<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// The last answer handed out said nothing more is likely waiting ([`FetchOutcome::ready`]).
    pub ready: bool,
    /// An answer taken from the buffer that did not fit in the batch: the next batch's first.
    held: Option<Fetched>,
    /// The task holds records it fetched and has not buffered yet (waiting for memory).
    fetched: Arc<AtomicBool>,
    /// When the task's latest answer was empty at `MillisBehindLatest` 0; `None` once an answer
    /// said otherwise. Calls that fail (an outage, throttling) leave it to age.
    tip_seen: Arc<Mutex<Option<Instant>>>,
}

impl ShardConsumer {
    /// Starts reading with `reader` (a fork of the handed-out position) until `cancel` fires, the
    /// shard ends, or an error that retrying cannot fix (handed out as the last answer).
    pub fn start(
        reader: ShardReader,
        closed: bool,
        settings: ConsumerSettings,
        cancel: &CancellationToken,
    ) -> Self {
        let (sender, answers) = mpsc::channel(BUFFERED_ANSWERS);
        let (listing, listing_rx) = watch::channel(closed);
        let stop = cancel.child_token();
        let fetched = Arc::new(AtomicBool::new(false));
        let tip_seen = Arc::new(Mutex::new(None));
        let flags = TaskFlags {
            fetched: Arc::clone(&fetched),
            tip_seen: Arc::clone(&tip_seen),
        };
        let task = tokio::spawn(consume(
            reader,
            settings,
            sender,
            listing_rx,
            flags,
            stop.clone(),
        ));
        Self {
            answers,
            listing,
            stop,
            task,
            ready: false,
            held: None,
            fetched,
            tip_seen,
        }
    }

    /// The next buffered answer, without waiting. `None` when the buffer is empty or the
    /// consumer has ended.
    pub fn try_take(&mut self) -> Option<Result<Fetched, SourceError>> {
        match self.held.take() {
            Some(held) => Some(Ok(held)),
            None => self.answers.try_recv().ok(),
        }
    }

    /// Waits for the next answer. `None` once the consumer has ended and its buffer is empty.
    pub async fn take(&mut self) -> Option<Result<Fetched, SourceError>> {
        match self.held.take() {
            Some(held) => Some(Ok(held)),
            None => self.answers.recv().await,
        }
    }

    /// Puts back an answer that did not fit in the batch: it is the next one taken.
    pub fn hold(&mut self, fetched: Fetched) {
        self.held = Some(fetched);
    }

    /// Records were read that are not handed out yet: buffered, held, or fetched and waiting for
    /// memory. The shard is then not at its tip, whatever its last handed-out answer said.
    pub fn has_more(&self) -> bool {
        self.held.is_some() || !self.answers.is_empty() || self.fetched.load(Ordering::Acquire)
    }

    /// The task's latest answer, no older than `within`, was empty at `MillisBehindLatest` 0:
    /// the shard is still at its tip, not merely last seen there before an outage.
    pub fn tip_confirmed(&self, within: Duration) -> bool {
        self.tip_seen
            .lock()
            .ok()
            .and_then(|seen| *seen)
            .is_some_and(|at| at.elapsed() <= within)
    }

    /// When the task's latest answer found the shard at its tip, if it did.
    pub fn tip_seen_at(&self) -> Option<Instant> {
        self.tip_seen.lock().ok().and_then(|seen| *seen)
    }

    /// The consumer has ended (the shard is read to its end or to the run's end, or it failed)
    /// and everything it buffered was taken.
    pub fn is_done(&self) -> bool {
        self.held.is_none() && self.answers.is_closed() && self.answers.is_empty()
    }

    /// Tells the consumer what the latest shard listing says: a consumer that found its shard
    /// looking closed waits for this before it asks again.
    pub fn relisted(&self, closed: bool) {
        // Sent even when unchanged: the consumer waits for a new listing, not a new value.
        self.listing.send_replace(closed);
    }
}

impl Drop for ShardConsumer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// What the task tells the batches between its answers.
struct TaskFlags {
    fetched: Arc<AtomicBool>,
    tip_seen: Arc<Mutex<Option<Instant>>>,
}

async fn consume(
    mut reader: ShardReader,
    settings: ConsumerSettings,
    answers: mpsc::Sender<Result<Fetched, SourceError>>,
    mut listing: watch::Receiver<bool>,
    flags: TaskFlags,
    stop: CancellationToken,
) {
    let mut bytes_per_record = MAX_RECORD_BYTES;
    // An empty answer at the tip is handed out once; repeating it would only fill the buffer.
    let mut told_at_tip = false;
    loop {
        reader.set_closed(*listing.borrow_and_update());
        let limit = (settings.call_bytes / bytes_per_record)
            .clamp(1, settings.call_records.clamp(1, 10_000));
        // An answer takes memory while it is received and parsed, before it is buffered: its
        // expected size is counted against the budget before the call is made.
        let expected = (limit * bytes_per_record).min(MAX_ANSWER_BYTES);
        let limit = i32::try_from(limit).unwrap_or(10_000);
        let mut lease = tokio::select! {
            lease = settings.budget.reserve(expected) => lease,
            () = stop.cancelled() => return,
        };
        let outcome = match reader.fetch(&settings.client, limit, &stop).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let _ = answers.send(Err(error)).await;
                return;
            }
        };
        if stop.is_cancelled() {
            return;
        }
        let bytes: usize = outcome.records.iter().map(|r| r.data.len()).sum();
        // What the answer did not need goes back.
        lease = lease.split_off(bytes);
        if !outcome.records.is_empty() {
            bytes_per_record = bytes.div_ceil(outcome.records.len()).max(1);
        }
        let ends = outcome.finished || outcome.at_run_end;
        let at_tip = outcome.records.is_empty() && outcome.caught_up();
        if let Ok(mut seen) = flags.tip_seen.lock() {
            let confirmed = outcome.records.is_empty() && outcome.millis_behind == Some(0);
            *seen = confirmed.then(Instant::now);
        }
        let news =
            !outcome.records.is_empty() || ends || outcome.relist || (at_tip && !told_at_tip);
        if !news {
            continue;
        }
        told_at_tip = at_tip;
        let relist = outcome.relist;
        // Seen by the batches before the answer is buffered: the shard has more than it handed out.
        flags
            .fetched
            .store(!outcome.records.is_empty(), Ordering::Release);
        if bytes > expected {
            // Records larger than those before (or an event of a subscription, whose size no
            // call limits): their whole share, asked for afresh, waiting if need be. Waiting for
            // the rest while holding part could wait forever for a share near the whole budget.
            drop(lease);
            lease = tokio::select! {
                lease = settings.budget.reserve(bytes) => lease,
                () = stop.cancelled() => return,
            };
        }
        let sent = tokio::select! {
            sent = answers.send(Ok(Fetched { outcome, lease })) => sent.is_ok(),
            () = stop.cancelled() => return,
        };
        flags.fetched.store(false, Ordering::Release);
        if !sent || ends {
            return;
        }
        if relist {
            tokio::select! {
                changed = listing.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KinesisSettings;
    use crate::source::client::connect;
    use crate::source::reader::StartPosition;

    /// A consumer makes no call while the memory budget is spent: the answer it would receive and
    /// parse takes memory before it is buffered.
    #[tokio::test]
    async fn no_call_is_made_while_the_memory_budget_is_spent() {
        // Nothing listens on this loopback port: a call fails, but it is made, and spends a call.
        let client = connect(&KinesisSettings {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            ..KinesisSettings::default()
        })
        .await;
        let budget = MemoryBudget::new(16 << 20);
        let everything = budget.reserve(budget.record_bytes()).await;
        // One call a second, so that a spent call is not refilled within the test.
        let reader = ShardReader::new("s", "shardId-0", StartPosition::TrimHorizon, None, 1);
        let settings = ConsumerSettings {
            client,
            budget: budget.clone(),
            call_bytes: 1 << 20,
            call_records: 10_000,
        };
        let cancel = CancellationToken::new();
        let _consumer = ShardConsumer::start(reader.fork(), false, settings, &cancel);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            reader.calls_left() >= 1.0,
            "no call while the budget is spent"
        );
        drop(everything);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            reader.calls_left() < 1.0,
            "the call is made once memory is given back"
        );
        cancel.cancel();
    }
}
