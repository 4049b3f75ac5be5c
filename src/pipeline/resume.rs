//! Resuming a stream at start-up: read the last committed batch's manifest, check that the stream
//! is still the one its positions were taken on, and put every shard back where it was.

use tokio_util::sync::CancellationToken;

use super::EngineError;
use crate::config::LostStreamPolicy;
use crate::sink::ManifestLog;
use crate::source::{ErrorClass, KinesisClient, SourceError, StreamSource};
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

/// Restores the shard positions of `checkpoint`, or applies `policy` when the stream is not the one
/// they were taken on (see `doc/DESIGN.md`).
pub(super) async fn resume(
    source: &mut StreamSource,
    manifests: &ManifestLog,
    checkpoint: &Checkpoint<'_>,
    policy: LostStreamPolicy,
    cancel: &CancellationToken,
) -> Result<(), EngineError> {
    let stream = source.stream().to_owned();
    let manifest =
        manifests
            .get(checkpoint.batch_id)
            .await?
            .ok_or_else(|| EngineError::MissingManifest {
                table: checkpoint.table_uri.to_owned(),
                batch_id: checkpoint.batch_id,
            })?;
    let unreadable = source
        .unreadable_checkpoints(&manifest.positions, cancel)
        .await?;
    let starts_now = source.shard_starts();
    let shards_restarted = manifest
        .shard_starts
        .iter()
        .any(|(shard, start)| starts_now.get(shard).is_some_and(|now| now != start));
    let recreated = matches!(
        (manifest.stream_created_ms, checkpoint.stream_created_ms),
        (Some(recorded), Some(current)) if recorded != current
    );
    if unreadable.is_empty() && !shards_restarted && !recreated {
        source.restore(&manifest.positions);
        tracing::info!(%stream, batch_id = checkpoint.batch_id, "resuming after the last committed batch");
        return Ok(());
    }
    tracing::warn!(%stream, unreadable_shards = ?unreadable, shards_restarted, recreated, "the stream is not the one the checkpoint was taken on");
    match policy {
        LostStreamPolicy::Stop => Err(EngineError::LostStream {
            stream,
            recorded: manifest.stream_created_ms.unwrap_or_default(),
            current: checkpoint.stream_created_ms.unwrap_or_default(),
        }),
        LostStreamPolicy::Restart => {
            tracing::warn!(
                %stream,
                "reading the stream from its earliest record; records of the old stream that were never committed are gone"
            );
            Ok(())
        }
    }
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
