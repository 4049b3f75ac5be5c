//! Cutting a stream's micro-batches from what its shard consumers read ahead: which answers go
//! in (split to fit the limits), when a batch is cut, and the consumers' lifecycle.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::consumer::{ConsumerSettings, Fetched, ShardConsumer};
use super::error::SourceError;
use super::reader::ShardReader;
use super::shards::ShardInfo;
use super::stream::{BatchLimits, CollectedBatch, SHARD_REFRESH, ShardRange, StreamSource};

/// What became of an answer offered to a batch.
enum Offer {
    /// All of it is in the batch; `relist`: the shard ended or asked for a new listing.
    Taken { relist: bool },
    /// The batch is full: the answer (or its rest) is held for the next batch.
    Full,
}

impl StreamSource {
    /// Every readable shard's last answer handed out said nothing more is likely waiting, and
    /// its consumer has nothing more buffered.
    fn every_readable_ready(&self) -> bool {
        self.readable().iter().all(|s| {
            let id = &s.shard_id;
            let answered_ready = self.readers.get(id).is_some_and(ShardReader::is_caught_up)
                || self.consumers.get(id).is_some_and(|c| c.ready);
            answered_ready && !self.has_more(id)
        })
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
        let readable: Vec<ShardInfo> = self.readable().into_iter().cloned().collect();
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
                if !has_records && ended && self.end_after_ms.is_none() {
                    // Nothing to read (every shard ended, or none is held): the interval is waited
                    // out, or the caller would ask again at once, round after round.
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = cancel.cancelled() => {}
                    }
                }
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
