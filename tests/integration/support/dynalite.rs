//! Starts dynalite (`dynalite@4.0.0`, npm, in memory), a DynamoDB-compatible server, on a free
//! loopback port for one test. Installed into `tools/dynalite` on first use (pinned by its
//! package-lock.json), like the local Kinesis server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

use super::kinesis_mock::free_port;

static INSTALL: Mutex<bool> = Mutex::new(false);

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/dynalite")
}

fn cli_js() -> PathBuf {
    tools_dir().join("node_modules/dynalite/cli.js")
}

fn ensure_installed() {
    let mut done = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if *done || cli_js().exists() {
        *done = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(tools_dir())
        .status()
        .expect("npm must be installed to run the lease tests");
    assert!(status.success(), "npm ci in tools/dynalite failed");
    *done = true;
}

/// A running dynalite, killed on drop.
pub struct Dynalite {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Dynalite {
    /// Starts a server and waits until it answers (again on another port if the first was taken).
    pub async fn start() -> Self {
        ensure_installed();
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new("node")
                .arg(cli_js())
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--createTableMs", "0", "--deleteTableMs", "0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dynalite with node");
            let mut server = Self {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let client = server.client();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if client.list_tables().send().await.is_ok() {
                    return server;
                }
                if server.child.try_wait().ok().flatten().is_some() {
                    break; // exited: the port was taken
                }
                assert!(Instant::now() < deadline, "dynalite did not answer");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("dynalite did not start on three ports");
    }

    /// A client for it, with dummy credentials (nothing leaves loopback).
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("local", "local", None, None, "test"))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}

impl Drop for Dynalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
