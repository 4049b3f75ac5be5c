//! Reading what a checkpoint or a planned batch refers to: whether a checkpointed record is still
//! there, and the exact records of a planned batch.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::KinesisRecord;
use super::error::SourceError;
use super::reader::{FetchOutcome, ShardReader, StartPosition};
use super::stream::{ShardRange, StreamSource};
use crate::sequence::SequenceNumber;

/// What a replay may do when a shard's part of the batch is gone.
#[derive(Debug, Clone, Default)]
pub struct ReplayRules {
    /// Shards of another incarnation: their part, if gone, is left out.
    pub foreign: BTreeSet<String>,
    /// The user accepted losing what is gone (`on_lost_stream = "restart"`).
    pub what_remains: bool,
}

/// The records a replay read.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The records, shard by shard.
    pub records: Vec<KinesisRecord>,
    /// Shards whose part was left out (another incarnation).
    pub left_out: BTreeSet<String>,
    /// Some shard gave only what remained of its range.
    pub partial: bool,
}

/// What became of a shard's checkpointed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointState {
    /// The record is there: the shard resumes after it.
    Readable,
    /// The record is gone and so is everything before it, while what the shard still holds
    /// comes after it: it aged out of retention (a shard idle for longer than retention, say).
    /// Nothing committed is read again by starting the shard at its oldest record.
    AgedOut,
    /// The shard holds records at or before the checkpoint, but not the checkpointed one: it is
    /// not the shard the checkpoint was taken on (the stream was recreated, or the server lost
    /// its data).
    Foreign,
}

impl StreamSource {
    /// Where the record a shard was checkpointed at stands now.
    pub async fn checkpoint_state(
        &self,
        shard_id: &str,
        last: &SequenceNumber,
        cancel: &CancellationToken,
    ) -> Result<CheckpointState, SourceError> {
        let at = self
            .first_record(shard_id, StartPosition::AtSequence(last.clone()), cancel)
            .await?;
        if at.as_ref() == Some(last) {
            return Ok(CheckpointState::Readable);
        }
        let oldest = self
            .first_record(shard_id, StartPosition::TrimHorizon, cancel)
            .await?;
        Ok(match oldest {
            Some(oldest) if &oldest <= last => CheckpointState::Foreign,
            _ => CheckpointState::AgedOut,
        })
    }

    /// The sequence number of the first record at `start` (`None`: the shard holds none there, or
    /// Kinesis refuses the position as one the shard never had). Anything it cannot tell for sure
    /// is an error: resuming decides nothing on a guess.
    async fn first_record(
        &self,
        shard_id: &str,
        start: StartPosition,
        cancel: &CancellationToken,
    ) -> Result<Option<SequenceNumber>, SourceError> {
        let unverified = |start: &StartPosition| SourceError::CheckpointUnverified {
            stream: self.stream.clone(),
            shard: shard_id.to_owned(),
            sequence: format!("{start:?}"),
        };
        let mut reader = ShardReader::new(
            &self.stream,
            shard_id,
            start.clone(),
            None,
            self.calls_per_second,
        );
        reader.set_closed(self.is_closed(shard_id));
        // Empty answers with records further on are allowed by Kinesis (for minutes after an
        // old position): ask on while it says it is behind, for up to ten minutes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while tokio::time::Instant::now() < deadline {
            match reader.fetch(&self.client, 1, cancel).await {
                Ok(outcome) => {
                    if let Some(record) = outcome.records.first() {
                        return Ok(Some(record.sequence_number.clone()));
                    }
                    if cancel.is_cancelled() {
                        return Err(unverified(&start));
                    }
                    if outcome.caught_up() {
                        return Ok(None);
                    }
                }
                Err(refused) if refused.is_position_refused() => return Ok(None),
                Err(other) => return Err(other),
            }
        }
        Err(unverified(&start))
    }

    /// Starts a shard afresh at its oldest record.
    pub fn start_at_trim_horizon(&mut self, shard_id: &str) {
        self.stop_consumers();
        if let Some(reader) = self.readers.get_mut(shard_id) {
            reader.start_at(StartPosition::TrimHorizon);
        }
    }

    /// Reads the records of a planned batch again: for each shard, `first..=last`.
    ///
    /// Fails with [`SourceError::RecordsGone`] when a shard no longer starts at `first` (its
    /// records were trimmed, or the server lost them): a planned batch is never silently shrunk,
    /// unless `rules` say the user accepted it. Then a shard of another incarnation is left out,
    /// and any other gives what it still holds of its range, read from its oldest record.
    pub async fn replay(
        &mut self,
        ranges: &BTreeMap<String, ShardRange>,
        rules: &ReplayRules,
        cancel: &CancellationToken,
    ) -> Result<Replayed, SourceError> {
        // The shards are put back where the batch leaves them afterwards: reading ahead now
        // would only spend their calls twice.
        self.stop_consumers();
        let mut replayed = Replayed::default();
        for (shard_id, range) in ranges {
            let exact = self
                .read_range(
                    shard_id,
                    range,
                    StartPosition::AtSequence(range.first.clone()),
                    true,
                    cancel,
                )
                .await;
            let records = match exact {
                Err(SourceError::RecordsGone { .. }) if rules.foreign.contains(shard_id) => {
                    replayed.left_out.insert(shard_id.clone());
                    Vec::new()
                }
                Err(SourceError::RecordsGone { .. }) if rules.what_remains => {
                    tracing::warn!(stream = %self.stream, shard = %shard_id, first = %range.first, "records of a planned batch are gone: taking what remains of its range");
                    replayed.partial = true;
                    if self.is_listed(shard_id) {
                        self.read_range(shard_id, range, StartPosition::TrimHorizon, false, cancel)
                            .await?
                    } else {
                        // The shard aged out of the listing with all its records: nothing remains.
                        Vec::new()
                    }
                }
                other => other?,
            };
            replayed.records.extend(records);
        }
        Ok(replayed)
    }

    /// The records of `range` in one shard, reading from `start`. With `from_first`, the first
    /// record must be `range.first`; otherwise records before it are skipped (they belong to
    /// committed batches).
    async fn read_range(
        &self,
        shard_id: &str,
        range: &ShardRange,
        start: StartPosition,
        from_first: bool,
        cancel: &CancellationToken,
    ) -> Result<Vec<KinesisRecord>, SourceError> {
        let gone = || SourceError::RecordsGone {
            stream: self.stream.clone(),
            shard: shard_id.to_owned(),
            sequence: range.first.to_string(),
        };
        let mut reader =
            ShardReader::new(&self.stream, shard_id, start, None, self.calls_per_second);
        reader.set_closed(self.is_closed(shard_id));
        let mut records = Vec::new();
        let mut first_seen = false;
        loop {
            if cancel.is_cancelled() {
                return Ok(Vec::new());
            }
            let outcome: FetchOutcome = match reader.fetch(&self.client, 10_000, cancel).await {
                Ok(outcome) => outcome,
                // A sequence number the shard never had is refused outright.
                Err(refused) if refused.is_position_refused() && from_first => return Err(gone()),
                Err(other) => return Err(other),
            };
            let at_end = outcome.finished
                || (outcome.records.is_empty() && outcome.millis_behind == Some(0));
            for record in outcome.records {
                if from_first && !first_seen && record.sequence_number != range.first {
                    return Err(gone());
                }
                first_seen = true;
                if record.sequence_number < range.first {
                    continue;
                }
                let done = record.sequence_number >= range.last;
                if record.sequence_number <= range.last {
                    records.push(record);
                }
                if done {
                    return Ok(records);
                }
            }
            if at_end {
                return if from_first { Err(gone()) } else { Ok(records) };
            }
        }
    }
}
