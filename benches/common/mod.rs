//! What the whole-pipeline benches share: settings from the environment, the embedded Kinesis
//! server in the bench's process, and the binary run against it.

use std::path::Path;
use std::process::Command;

use kinesis_delta::config::KinesisSettings;
use kinesis_delta::local::{LocalKinesis, LocalKinesisSettings};
use kinesis_delta::source::{KinesisClient, connect};
use tokio_util::sync::CancellationToken;

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The embedded server, in memory on a free loopback port, until `cancel` fires; its endpoint and
/// a client for it.
pub async fn start_server(cancel: &CancellationToken) -> (String, KinesisClient) {
    let server = LocalKinesis::start(
        &LocalKinesisSettings {
            bind: "127.0.0.1:0".parse().expect("address"),
            state_dir: None,
            subscription_lifetime: kinesis_delta::local::SUBSCRIPTION_LIFETIME,
        },
        cancel.clone(),
    )
    .await
    .expect("embedded Kinesis");
    let client = connect(&KinesisSettings {
        endpoint_url: Some(server.endpoint.clone()),
        ..KinesisSettings::default()
    })
    .await;
    (server.endpoint, client)
}

/// The binary, run from the repository (the shipped config) against `endpoint`.
pub fn binary(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesis-delta"));
    command
        .args(args)
        .args(["--endpoint-url", endpoint])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    command
}

/// Runs the binary against `endpoint` and waits for it to succeed; its standard output.
pub fn cli(endpoint: &str, args: &[&str]) -> String {
    let output = binary(endpoint, args).output().expect("kinesis-delta runs");
    assert!(
        output.status.success(),
        "kinesis-delta {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
