//! Shard leases while the engine runs (`[leases]` in the config): a heartbeat task keeps this
//! process's leases in the DynamoDB table (keys `<pipeline>/<stream>/<shardId>`), and each stream
//! job asks which of its shards it may
//! read now. The lease decides who reads; the Delta commit still decides what is committed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::EngineError;
use crate::config::{KinesisSettings, LeaseSettings};
use crate::lease::{LeaseTable, LeaseWorker};
use crate::source::connect_dynamodb;

/// The leases the last successful heartbeat held, and until when they are surely this
/// process's.
#[derive(Debug, Clone, Default)]
struct Held {
    keys: BTreeSet<String>,
    safe_until: Option<Instant>,
}

/// The heartbeat task of this process.
#[derive(Debug)]
pub(crate) struct LeaseService {
    stop: CancellationToken,
    task: JoinHandle<LeaseWorker>,
    shards: ShardLeases,
}

/// A shard's lease key, `<pipeline>/<stream>/<shard>`: the pipeline scopes the workers that
/// share it, so pipelines can share one table. With no shard, the start of the stream's keys.
pub(crate) fn lease_key(pipeline: &str, stream: &str, shard: &str) -> String {
    format!("{pipeline}/{stream}/{shard}")
}

/// What a stream job sees of the leases.
#[derive(Debug, Clone)]
pub(crate) struct ShardLeases {
    held: watch::Receiver<Held>,
    finished: mpsc::UnboundedSender<String>,
    wake: Arc<Notify>,
    table: LeaseTable,
    worker: String,
    /// The pipeline: the part of the table its processes share.
    pipeline: String,
    /// Reading stops this long before the leases may expire.
    margin: Duration,
}

impl LeaseService {
    /// Opens (or creates) the lease table and starts heartbeats, every third of the lease
    /// duration.
    pub async fn start(
        pipeline: &str,
        settings: &LeaseSettings,
        kinesis: &KinesisSettings,
    ) -> Result<Self, EngineError> {
        let client = connect_dynamodb(kinesis, settings.endpoint_url.as_deref()).await;
        let table = LeaseTable::open(client, &settings.table).await?;
        let id = settings
            .worker_id
            .clone()
            .unwrap_or_else(|| LeaseWorker::unique_id(&LeaseWorker::host_name()));
        tracing::info!(worker = %id, table = %settings.table, "sharing the shards through leases");
        let mut worker =
            LeaseWorker::new(table.clone(), &id, settings.duration).within(&format!("{pipeline}/"));
        let (held_tx, held) = watch::channel(Held::default());
        let (finished, mut finished_rx) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let every = settings.duration / 3;
        let task = {
            let (stop, wake) = (stop.clone(), Arc::clone(&wake));
            tokio::spawn(async move {
                loop {
                    while let Ok(key) = finished_rx.try_recv() {
                        worker.finish([key]);
                    }
                    match worker.heartbeat().await {
                        Ok(keys) => {
                            let safe_until = worker.safe_until();
                            held_tx.send_replace(Held { keys, safe_until });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "lease heartbeat failed; retrying (the shards stop being read before their leases may expire)");
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = wake.notified() => {}
                        () = stop.cancelled() => break,
                    }
                }
                worker
            })
        };
        Ok(Self {
            stop,
            task,
            shards: ShardLeases {
                held,
                finished,
                wake,
                table,
                worker: id,
                pipeline: pipeline.to_owned(),
                margin: settings.duration / 6,
            },
        })
    }

    /// The stream jobs' view.
    pub fn shards(&self) -> ShardLeases {
        self.shards.clone()
    }

    /// Stops the heartbeats, then releases every lease this process holds: the other processes
    /// take them at their next heartbeat.
    pub async fn stop(self) {
        self.stop.cancel();
        let Ok(worker) = self.task.await else {
            return;
        };
        match worker.release_all().await {
            Ok(released) => tracing::info!(released, "leases released"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the leases; the others take them once they expire");
            }
        }
    }
}

impl ShardLeases {
    /// The shards of `stream` whose leases the last successful heartbeat held.
    pub fn held(&self, stream: &str) -> BTreeSet<String> {
        let prefix = lease_key(&self.pipeline, stream, "");
        self.held
            .borrow()
            .keys
            .iter()
            .filter_map(|key| key.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect()
    }

    /// Whether the held leases are surely still this process's: its last successful renewal is
    /// younger than the lease duration less a sixth. Otherwise it reads nothing (another process
    /// may take its shards soon), and is not ready.
    pub fn safe(&self) -> bool {
        self.held
            .borrow()
            .safe_until
            .is_some_and(|until| Instant::now() + self.margin < until)
    }

    fn key(&self, stream: &str, shard: &str) -> String {
        lease_key(&self.pipeline, stream, shard)
    }

    /// Adds a free lease for each of `shards` unless it has one, then asks for a heartbeat.
    pub async fn ensure(&self, stream: &str, shards: &[String]) -> Result<(), EngineError> {
        for shard in shards {
            self.table.ensure(&self.key(stream, shard)).await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// `shard` was read to its end and that is committed: its lease goes.
    pub fn finished(&self, stream: &str, shard: &str) {
        // The heartbeat task is gone only while the process stops: nothing left to delete then.
        let _ = self.finished.send(self.key(stream, shard));
    }

    /// This process's worker id.
    pub fn worker(&self) -> &str {
        &self.worker
    }
}
