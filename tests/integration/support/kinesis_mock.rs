//! Starts kinesis-mock (`kinesis-local@0.6.2`, npm) on free loopback ports for one test.
//!
//! The npm package is installed into `tools/kinesis-local` on first use (pinned by its
//! package-lock.json), so `cargo test` needs only Node.js and npm on a fresh machine.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static INSTALL: Mutex<bool> = Mutex::new(false);

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/kinesis-local")
}

fn main_js() -> PathBuf {
    tools_dir().join("node_modules/kinesis-local/main.js")
}

/// Installs the pinned npm package once per test run.
fn ensure_installed() {
    let mut done = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if *done || main_js().exists() {
        *done = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(tools_dir())
        .status()
        .expect("npm must be installed to run the Kinesis integration tests");
    assert!(status.success(), "npm ci in tools/kinesis-local failed");
    *done = true;
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running kinesis-mock, killed on drop.
pub struct KinesisMock {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl KinesisMock {
    /// Starts a server and waits until it answers. A server that exits at once (its port was
    /// taken between choosing and binding it) is started again on other ports.
    pub async fn start() -> Self {
        ensure_installed();
        for _ in 0..3 {
            if let Some(server) = Self::try_start().await {
                return server;
            }
        }
        panic!("kinesis-mock did not start on three sets of ports");
    }

    async fn try_start() -> Option<Self> {
        let plain = free_port();
        let tls = std::iter::repeat_with(free_port)
            .find(|port| *port != plain)
            .unwrap();
        let mut command = Command::new("node");
        command
            .arg(main_js())
            .env(
                "KINESIS_MOCK_CERT_PATH",
                tools_dir().join("node_modules/kinesis-local/server.json"),
            )
            .env("KINESIS_MOCK_PLAIN_PORT", plain.to_string())
            .env("KINESIS_MOCK_TLS_PORT", tls.to_string())
            .env("LOG_LEVEL", "ERROR")
            .env("SHOULD_PERSIST_DATA", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for var in [
            "CREATE_STREAM_DURATION",
            "DELETE_STREAM_DURATION",
            "MERGE_SHARDS_DURATION",
            "SPLIT_SHARD_DURATION",
            "UPDATE_SHARD_COUNT_DURATION",
            "REGISTER_STREAM_CONSUMER_DURATION",
            "DEREGISTER_STREAM_CONSUMER_DURATION",
            "START_STREAM_ENCRYPTION_DURATION",
            "STOP_STREAM_ENCRYPTION_DURATION",
            "UPDATE_STREAM_MODE_DURATION",
        ] {
            command.env(var, "0ms");
        }
        let child = command.spawn().expect("start kinesis-mock with node");
        let mut server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{plain}"),
        };
        let client = super::client(&server.endpoint).await;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if client.list_streams().send().await.is_ok() {
                return Some(server);
            }
            if server.child.try_wait().ok().flatten().is_some() {
                return None; // exited: the ports were taken
            }
            assert!(
                Instant::now() < deadline,
                "kinesis-mock did not answer on {}",
                server.endpoint
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for KinesisMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
