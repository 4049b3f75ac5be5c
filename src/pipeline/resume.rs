//! Resuming a stream at start-up: read the last committed batch's manifest, check that the stream
//! is still the one its positions were taken on, and put every shard back where it was, deciding
//! shard by shard.

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
}

/// What resuming found.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Resumed {
    /// Some shard's positions meant nothing any more (another incarnation of the stream), and the
    /// policy said to read anew: a pending batch planned on them is abandoned.
    pub lost_incarnation: bool,
}

/// Whether the stream now is another incarnation than the one `manifest` was planned on: a
/// different creation time, or a listed shard that starts at another sequence number.
pub(super) fn incarnation_changed(
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
pub(super) fn lost_stream(
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
/// they were taken on (see `doc/DESIGN.md`).
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
) -> Result<Resumed, EngineError> {
    let stream = source.stream().to_owned();
    let manifest =
        manifests
            .get(checkpoint.batch_id)
            .await?
            .ok_or_else(|| EngineError::MissingManifest {
                table: checkpoint.table_uri.to_owned(),
                batch_id: checkpoint.batch_id,
            })?;
    if incarnation_changed(&manifest, source, checkpoint.stream_created_ms) {
        if let Some(stop) = lost_stream(source, &manifest, checkpoint.stream_created_ms, policy) {
            return Err(stop);
        }
        return Ok(Resumed {
            lost_incarnation: true,
        });
    }
    source.restore(&manifest.positions);
    let mut foreign = Vec::new();
    for (shard, position) in &manifest.positions {
        let Some(last) = &position.last else {
            continue; // nothing read yet: the shard starts at the initial position
        };
        if position.finished || !source.is_listed(shard) {
            continue; // read to its end, or aged out of the listing with all its records
        }
        match source.checkpoint_state(shard, last, cancel).await? {
            CheckpointState::Readable => {}
            CheckpointState::AgedOut => {
                tracing::warn!(%stream, %shard, sequence = %last, "the checkpointed record aged out of retention: reading the shard from its oldest record, which comes after it");
                source.start_at_trim_horizon(shard);
            }
            CheckpointState::Foreign => foreign.push(shard.clone()),
        }
    }
    if foreign.is_empty() {
        tracing::info!(%stream, batch_id = checkpoint.batch_id, "resuming after the last committed batch");
        return Ok(Resumed::default());
    }
    tracing::warn!(%stream, shards = ?foreign, "shards hold records before their checkpoint but not the checkpointed one");
    if let Some(stop) = lost_stream(source, &manifest, checkpoint.stream_created_ms, policy) {
        return Err(stop);
    }
    for shard in &foreign {
        source.start_at_trim_horizon(shard);
    }
    Ok(Resumed {
        lost_incarnation: true,
    })
}

/// The stream's creation time (ms since the epoch), when the server reports one.
pub(super) async fn stream_created_ms(
    client: &KinesisClient,
    stream: &str,
) -> Result<Option<i64>, EngineError> {
    match client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .stream_description_summary()
            .and_then(|d| d.stream_creation_timestamp().to_millis().ok())),
        Err(err) => {
            let call = KinesisCallError::new("DescribeStreamSummary", &err);
            if call.class == ErrorClass::NotFound {
                Err(SourceError::StreamNotFound {
                    stream: stream.to_owned(),
                }
                .into())
            } else {
                // Not worth failing the start for: the check is skipped, with a note.
                tracing::warn!(stream, error = %call, "cannot read the stream's creation time; the recreated-stream check relies on the other signs");
                Ok(None)
            }
        }
    }
}
