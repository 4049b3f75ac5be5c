//! Resuming a stream's shards: each shard's committed checkpoint (its newest committed plan, or
//! the stream-level checkpoint it was upgraded from) is checked against the stream as it is now,
//! and every shard is put back where it was, deciding shard by shard.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::EngineError;
use crate::config::LostStreamPolicy;
use crate::source::{
    CheckpointState, ErrorClass, KinesisClient, ShardPosition, SourceError, StreamSource,
};
use crate::streams::KinesisCallError;

/// Where one shard's committed checkpoint left it, and on what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardCheckpoint {
    /// Its position.
    pub position: ShardPosition,
    /// When it was planned.
    pub planned_at: DateTime<Utc>,
    /// When the shard was last found with nothing beyond it (a tip marker), if ever.
    pub tip_seen_at: Option<DateTime<Utc>>,
    /// The stream's creation time then (ms since the epoch).
    pub stream_created_ms: Option<i64>,
    /// The shard's first sequence number then.
    pub shard_start: Option<String>,
}

/// The stream now: its creation time and retention period, when the server reports them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct StreamNow {
    /// The stream's creation time (ms since the epoch).
    pub created_ms: Option<i64>,
    /// How long it keeps records.
    pub retention: Option<std::time::Duration>,
}

/// A margin under the retention period: positions planned more recently than retention minus
/// this are known to be followed by nothing that has expired.
const RETENTION_MARGIN: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether nothing after a shard's checkpoint can have expired: Kinesis said nothing lay beyond
/// it (when the plan was made, or later while it was the newest: a tip marker), and that was
/// less than the retention period ago (so every record put since is still there).
fn nothing_expired_after(
    observed_at: DateTime<Utc>,
    at_tip: bool,
    retention: Option<std::time::Duration>,
) -> bool {
    let age = (Utc::now() - observed_at).to_std().unwrap_or_default();
    at_tip && retention.is_some_and(|r| age + RETENTION_MARGIN < r)
}

/// Whether the stream now is another incarnation than the one a checkpoint (or a plan) was made
/// on: a different creation time, or its shard, still listed, starting at another sequence number.
pub(crate) fn incarnation_changed(
    recorded_created_ms: Option<i64>,
    recorded_start: Option<(&str, &str)>,
    source: &StreamSource,
    created_now: Option<i64>,
) -> bool {
    let starts_now = source.shard_starts();
    let shard_restarted = recorded_start
        .is_some_and(|(shard, start)| starts_now.get(shard).is_some_and(|now| now != start));
    let recreated = matches!(
        (recorded_created_ms, created_now),
        (Some(recorded), Some(current)) if recorded != current
    );
    shard_restarted || recreated
}

/// What `policy` makes of a stream whose positions mean nothing any more: the error that stops
/// the engine, or `None` after a warning that it is read anew.
pub(crate) fn lost_stream(
    stream: &str,
    recorded_created_ms: Option<i64>,
    created_now: Option<i64>,
    policy: LostStreamPolicy,
) -> Option<EngineError> {
    match policy {
        LostStreamPolicy::Stop => Some(EngineError::LostStream {
            stream: stream.to_owned(),
            recorded: recorded_created_ms.unwrap_or_default(),
            current: created_now.unwrap_or_default(),
        }),
        LostStreamPolicy::Restart => {
            tracing::warn!(
                %stream,
                "the stream is not the one the checkpoint was taken on: reading it from its earliest record; records of the old stream that were never committed are gone"
            );
            None
        }
    }
}

/// What resuming decided beyond restoring positions.
#[derive(Debug, Default)]
pub(super) struct Resumed {
    /// Shards whose checkpointed record is not in the shard (another incarnation of it), read
    /// anew: a pending plan leaves out their part if it is gone.
    pub foreign: BTreeSet<String>,
    /// Shards whose checkpoint was taken on another incarnation of the stream or of the shard
    /// (another creation time, another first sequence number), started afresh.
    pub afresh: BTreeSet<String>,
}

/// Restores the shards' committed positions, or applies `policy` to the shards that are not the
/// ones their checkpoints were taken on (see `doc/DESIGN.md`). Each shard is decided on its own:
/// one idle shard's old checkpoint never sends the others back.
///
/// A checkpointed record still there resumes after it; one that aged out (with everything before
/// it) starts the shard at its oldest record, which comes after the checkpoint; one whose shard
/// holds older records but not it means another incarnation of the shard.
pub(super) async fn resume(
    source: &mut StreamSource,
    checkpoints: &BTreeMap<String, ShardCheckpoint>,
    now: StreamNow,
    policy: LostStreamPolicy,
    cancel: &CancellationToken,
) -> Result<Resumed, EngineError> {
    let stream = source.stream().to_owned();
    if cancel.is_cancelled() {
        // Stopped while starting: the listing may be incomplete; nothing is decided on it.
        for (shard, checkpoint) in checkpoints {
            source.restore_shard(shard, &checkpoint.position);
        }
        return Ok(Resumed::default());
    }
    let afresh: BTreeSet<String> = checkpoints
        .iter()
        .filter(|(shard, c)| {
            let start = c.shard_start.as_deref().map(|s| (shard.as_str(), s));
            incarnation_changed(c.stream_created_ms, start, source, now.created_ms)
        })
        .map(|(shard, _)| shard.clone())
        .collect();
    if let Some(first) = afresh.first() {
        let recorded = checkpoints[first].stream_created_ms;
        if let Some(stop) = lost_stream(&stream, recorded, now.created_ms, policy) {
            return Err(stop);
        }
    }
    for (shard, checkpoint) in checkpoints {
        let position = if afresh.contains(shard) {
            ShardPosition::default()
        } else {
            checkpoint.position.clone()
        };
        source.restore_shard(shard, &position);
    }
    let recorded_created = checkpoints.values().find_map(|c| c.stream_created_ms);
    let checkpoints = checkpoints
        .iter()
        .filter(|(shard, _)| !afresh.contains(*shard));
    // Shards whose records after the checkpoint may be gone, and shards of another incarnation.
    let mut expired = Vec::new();
    let mut foreign = BTreeSet::new();
    for (shard, checkpoint) in checkpoints {
        let position = &checkpoint.position;
        let Some(last) = &position.last else {
            continue; // nothing read yet: the shard starts at the initial position
        };
        if position.finished {
            continue; // read to its end
        }
        let safe = nothing_expired_after(checkpoint.planned_at, position.at_tip, now.retention)
            || checkpoint
                .tip_seen_at
                .is_some_and(|seen| nothing_expired_after(seen, true, now.retention));
        if !source.is_listed(shard) {
            // Aged out of the listing with all its records.
            if !safe {
                expired.push(shard.clone());
            }
            continue;
        }
        match source.checkpoint_state(shard, last, cancel).await? {
            CheckpointState::Readable => {}
            CheckpointState::AgedOut if safe => {
                tracing::warn!(%stream, %shard, sequence = %last, "the checkpointed record aged out of retention (nothing after it had): reading the shard from its oldest record, which comes after it");
                source.start_at_trim_horizon(shard);
            }
            CheckpointState::AgedOut => expired.push(shard.clone()),
            CheckpointState::Foreign => {
                foreign.insert(shard.clone());
            }
        }
    }
    if foreign.is_empty() && expired.is_empty() {
        tracing::info!(%stream, "resuming after the committed checkpoints");
        return Ok(Resumed { foreign, afresh });
    }
    tracing::warn!(%stream, other_incarnation = ?foreign, maybe_expired = ?expired, "shards whose records after the checkpoint may be gone");
    if let Some(stop) = lost_stream(&stream, recorded_created, now.created_ms, policy) {
        return Err(stop);
    }
    // What remains of them is read; on the same incarnation every record there comes after the
    // checkpoint, since only the oldest records expire.
    for shard in expired.iter().chain(&foreign) {
        source.start_at_trim_horizon(shard);
    }
    Ok(Resumed { foreign, afresh })
}

/// The stream's creation time and retention, when the server reports them (asked a few times:
/// without them, a checkpoint found expired cannot be judged safe).
pub(super) async fn stream_facts(
    client: &KinesisClient,
    stream: &str,
) -> Result<StreamNow, EngineError> {
    let mut backoff = crate::source::Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(2),
    );
    let mut answer = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await;
    for _ in 0..4 {
        let retry = answer.as_ref().err().is_some_and(|err| {
            matches!(
                crate::source::classify(err),
                ErrorClass::Throttled | ErrorClass::Unavailable
            )
        });
        if !retry {
            break;
        }
        let delay = backoff.next_delay(&mut rand::rng());
        tokio::time::sleep(delay).await;
        answer = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await;
    }
    match answer {
        Ok(out) => Ok(out
            .stream_description_summary()
            .map(|d| StreamNow {
                created_ms: d.stream_creation_timestamp().to_millis().ok(),
                retention: u64::try_from(d.retention_period_hours())
                    .ok()
                    .map(|h| std::time::Duration::from_secs(h * 3600)),
            })
            .unwrap_or_default()),
        Err(err) => {
            let call = KinesisCallError::new("DescribeStreamSummary", &err);
            if call.class == ErrorClass::NotFound {
                Err(SourceError::StreamNotFound {
                    stream: stream.to_owned(),
                }
                .into())
            } else {
                // Not worth failing the start for: the check is skipped, with a note.
                tracing::warn!(stream, error = %call, "cannot read the stream's creation time and retention; the recreated-stream check relies on the other signs, and an expired checkpoint is the policy's to decide");
                Ok(StreamNow::default())
            }
        }
    }
}
