//! Resuming a stream at start-up: read the last committed batch's manifest, check that the stream
//! is still the one its positions were taken on, and put every shard back where it was, deciding
//! shard by shard.

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

use super::EngineError;
use crate::config::LostStreamPolicy;
use crate::sink::{BatchManifest, ManifestLog};
use crate::source::{CheckpointState, ErrorClass, KinesisClient, SourceError, StreamSource};
use crate::streams::KinesisCallError;

/// The table's last committed batch of a stream.
pub(super) struct Checkpoint<'a> {
    /// Its batch id.
    pub batch_id: i64,
    /// The table, for messages.
    pub table_uri: &'a str,
    /// The stream's creation time now.
    pub stream_created_ms: Option<i64>,
    /// The stream's retention period now, when the server reports it.
    pub retention: Option<std::time::Duration>,
}

/// A margin under the retention period: positions planned more recently than retention minus
/// this are known to be followed by nothing that has expired.
const RETENTION_MARGIN: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether nothing after a shard's checkpoint can have expired: Kinesis said nothing lay beyond
/// it (when the batch was planned, or later while it was the newest: a tip marker), and that was
/// less than the retention period ago (so every record put since is still there).
fn nothing_expired_after(
    observed_at: chrono::DateTime<chrono::Utc>,
    at_tip: bool,
    retention: Option<std::time::Duration>,
) -> bool {
    let age = (chrono::Utc::now() - observed_at)
        .to_std()
        .unwrap_or_default();
    at_tip && retention.is_some_and(|r| age + RETENTION_MARGIN < r)
}

/// Whether the stream now is another incarnation than the one `manifest` was planned on: a
/// different creation time, or a listed shard that starts at another sequence number.
pub(crate) fn incarnation_changed(
    manifest: &BatchManifest,
    source: &StreamSource,
    created_now: Option<i64>,
) -> bool {
    let starts_now = source.shard_starts();
    let shards_restarted = manifest
        .shard_starts
        .iter()
        .any(|(shard, start)| starts_now.get(shard).is_some_and(|now| now != start));
    let recreated = matches!(
        (manifest.stream_created_ms, created_now),
        (Some(recorded), Some(current)) if recorded != current
    );
    shards_restarted || recreated
}

/// What `policy` makes of a stream whose positions mean nothing any more: the error that stops
/// the engine, or `None` after a warning that it is read anew.
pub(crate) fn lost_stream(
    source: &StreamSource,
    manifest: &BatchManifest,
    created_now: Option<i64>,
    policy: LostStreamPolicy,
) -> Option<EngineError> {
    let stream = source.stream().to_owned();
    match policy {
        LostStreamPolicy::Stop => Some(EngineError::LostStream {
            stream,
            recorded: manifest.stream_created_ms.unwrap_or_default(),
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

/// Restores the shard positions of `checkpoint`, or applies `policy` when the stream is not the one
/// they were taken on (see `doc/DESIGN.md`). Returns the shards found to be of another incarnation
/// and read anew (under `restart`): a pending batch leaves out their part if it is gone. A wholly
/// recreated stream returns none: every shard starts afresh, and a pending batch planned on the
/// old stream is recognised by its own manifest.
///
/// Shard by shard: a checkpointed record still there resumes after it; one that aged out (with
/// everything before it) starts the shard at its oldest record, which comes after the checkpoint;
/// one whose shard holds older records but not it means another incarnation of the shard.
pub(super) async fn resume(
    source: &mut StreamSource,
    manifests: &ManifestLog,
    checkpoint: &Checkpoint<'_>,
    policy: LostStreamPolicy,
    cancel: &CancellationToken,
) -> Result<BTreeSet<String>, EngineError> {
    let stream = source.stream().to_owned();
    let manifest =
        manifests
            .get(checkpoint.batch_id)
            .await?
            .ok_or_else(|| EngineError::MissingManifest {
                table: checkpoint.table_uri.to_owned(),
                batch_id: checkpoint.batch_id,
            })?;
    if cancel.is_cancelled() {
        // Stopped while starting: the listing may be incomplete; nothing is decided on it.
        source.restore(&manifest.positions);
        return Ok(BTreeSet::new());
    }
    if incarnation_changed(&manifest, source, checkpoint.stream_created_ms) {
        if let Some(stop) = lost_stream(source, &manifest, checkpoint.stream_created_ms, policy) {
            return Err(stop);
        }
        return Ok(BTreeSet::new());
    }
    source.restore(&manifest.positions);
    let tip = manifests
        .read_tip()
        .await?
        .filter(|t| t.batch_id == checkpoint.batch_id);
    // Shards whose records after the checkpoint may be gone, and shards of another incarnation.
    let mut expired = Vec::new();
    let mut foreign = BTreeSet::new();
    for (shard, position) in &manifest.positions {
        let Some(last) = &position.last else {
            continue; // nothing read yet: the shard starts at the initial position
        };
        if position.finished {
            continue; // read to its end
        }
        let marked = tip.as_ref().filter(|t| t.shards.contains(shard));
        let safe =
            nothing_expired_after(manifest.planned_at, position.at_tip, checkpoint.retention)
                || marked.is_some_and(|t| {
                    nothing_expired_after(t.observed_at, true, checkpoint.retention)
                });
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
        tracing::info!(%stream, batch_id = checkpoint.batch_id, "resuming after the last committed batch");
        return Ok(foreign);
    }
    tracing::warn!(%stream, other_incarnation = ?foreign, maybe_expired = ?expired, "shards whose records after the checkpoint may be gone");
    if let Some(stop) = lost_stream(source, &manifest, checkpoint.stream_created_ms, policy) {
        return Err(stop);
    }
    // What remains of them is read; on the same incarnation every record there comes after the
    // checkpoint, since only the oldest records expire.
    for shard in expired.iter().chain(&foreign) {
        source.start_at_trim_horizon(shard);
    }
    Ok(foreign)
}

/// What the engine needs to know of a stream beyond its shards.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct StreamFacts {
    /// When it was created (ms since the epoch).
    pub created_ms: Option<i64>,
    /// How long it keeps records.
    pub retention: Option<std::time::Duration>,
}

/// The stream's creation time and retention, when the server reports them (asked a few times:
/// without them, a checkpoint found expired cannot be judged safe).
pub(super) async fn stream_facts(
    client: &KinesisClient,
    stream: &str,
) -> Result<StreamFacts, EngineError> {
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
            .map(|d| StreamFacts {
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
                Ok(StreamFacts::default())
            }
        }
    }
}
