//! The two Kinesis servers the engine suite runs against: kinesis-mock (npm, a separate process) and
//! the embedded ferrokinesis of local mode (in-process), both on loopback ports.

use std::time::Duration;

use kinesis_delta::config::Pipeline;
use kinesis_delta::local::{LocalKinesis, LocalKinesisSettings};
use kinesis_delta::source::KinesisClient;
use tokio_util::sync::CancellationToken;

use super::kinesis_mock::KinesisMock;

/// Which server.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// kinesis-local@0.6.2.
    KinesisMock,
    /// ferrokinesis, as `kinesis-delta kinesis` runs it.
    Embedded,
}

/// A running server.
pub enum TestKinesis {
    /// kinesis-mock.
    Mock(KinesisMock),
    /// The embedded server and the token that stops it.
    Embedded(String, CancellationToken),
}

impl TestKinesis {
    /// Starts a server of `kind`.
    pub async fn start(kind: Kind) -> Self {
        match kind {
            Kind::KinesisMock => Self::Mock(KinesisMock::start().await),
            Kind::Embedded => Self::embedded(kinesis_delta::local::SUBSCRIPTION_LIFETIME).await,
        }
    }

    /// The embedded server, ending each SubscribeToShard subscription after `lifetime`.
    pub async fn embedded(subscription_lifetime: Duration) -> Self {
        let cancel = CancellationToken::new();
        let settings = LocalKinesisSettings {
            bind: "127.0.0.1:0".parse().unwrap(),
            state_dir: None,
            subscription_lifetime,
        };
        let server = LocalKinesis::start(&settings, cancel.clone())
            .await
            .unwrap();
        let endpoint = server.endpoint.clone();
        tokio::spawn(server.stopped());
        Self::Embedded(endpoint, cancel)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        match self {
            Self::Mock(m) => &m.endpoint,
            Self::Embedded(endpoint, _) => endpoint,
        }
    }

    /// A client for it.
    pub async fn client(&self) -> KinesisClient {
        super::client(self.endpoint()).await
    }
}

/// The embedded server `old` loses its state: a new, empty one takes its place, with the
/// pipeline's streams made again (`shards` each). Returns it and the pipeline pointed at it.
pub async fn lose_server_state(
    old: TestKinesis,
    pipeline: &Pipeline,
    shards: i32,
) -> (TestKinesis, Pipeline) {
    drop(old);
    // A new server in another millisecond: its streams are another incarnation.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let server = TestKinesis::start(Kind::Embedded).await;
    let mut pipeline = pipeline.clone();
    pipeline.kinesis.endpoint_url = Some(server.endpoint().to_owned());
    super::create_streams(&server.client().await, &pipeline, shards).await;
    (server, pipeline)
}

impl Drop for TestKinesis {
    fn drop(&mut self) {
        if let Self::Embedded(_, cancel) = self {
            cancel.cancel();
        }
    }
}
