//! Local mode's Kinesis: the `ferrokinesis` emulator, in-process, on a loopback port, its state
//! kept durable (WAL + snapshots) under the data folder so a restart resumes where it was. Every
//! other command reaches it through the normal AWS SDK path (an endpoint URL), as it would AWS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferrokinesis::store::{DurableStateOptions, StoreOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Where and how the embedded server runs.
#[derive(Debug, Clone)]
pub struct LocalKinesisSettings {
    /// The address to listen on (loopback by default).
    pub bind: SocketAddr,
    /// Where the durable state lives; `None` keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// How long a SubscribeToShard subscription lasts before the server ends it (Kinesis: 5
    /// minutes, [`SUBSCRIPTION_LIFETIME`]; tests shorten it to see subscriptions renewed).
    pub subscription_lifetime: Duration,
}

/// How long Kinesis keeps a SubscribeToShard subscription open.
pub const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(300);

/// A running embedded server.
#[derive(Debug)]
pub struct LocalKinesis {
    /// `http://<address>`, for `--endpoint-url`.
    pub endpoint: String,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl LocalKinesis {
    /// Binds and starts serving until `cancel` fires.
    pub async fn start(
        settings: &LocalKinesisSettings,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let mut options = StoreOptions {
            create_stream_ms: 0,
            delete_stream_ms: 0,
            update_stream_ms: 0,
            shard_limit: 500,
            subscribe_to_shard_session_ms: u64::try_from(
                settings.subscription_lifetime.as_millis(),
            )
            .unwrap_or(u64::MAX),
            ..StoreOptions::default()
        };
        if let Some(dir) = &settings.state_dir {
            std::fs::create_dir_all(dir)?;
            options.durable = Some(DurableStateOptions {
                state_dir: dir.clone(),
                snapshot_interval_secs: 30,
                max_retained_bytes: None,
            });
        }
        let listener = TcpListener::bind(settings.bind).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (app, _store) = ferrokinesis::create_app(options);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        });
        tracing::info!(%endpoint, "embedded Kinesis listening");
        Ok(Self { endpoint, task })
    }

    /// Waits until the server has stopped (after `cancel`).
    pub async fn stopped(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}
