//! Starts a throwaway MariaDB server on a free loopback port, when one is installed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server, killed on drop.
pub struct MariaDb {
    child: Child,
    _dir: tempfile::TempDir,
    /// `mysql://root@127.0.0.1:<port>/pinterest`.
    pub url: String,
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let dirs = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"];
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| PathBuf::from(d).join(n)))
        .find(|p| p.exists())
}

impl MariaDb {
    /// Starts a server, or `None` when MariaDB is not installed.
    pub async fn start() -> Option<Self> {
        let server = find(&["mariadbd", "mysqld"])?;
        let install = find(&["mariadb-install-db", "mysql_install_db"])?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let socket = dir.path().join("mysql.sock");
        let status = Command::new(install)
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        assert!(status.success(), "mariadb-install-db failed");
        let port = super::kinesis_mock::free_port();
        let child = Command::new(server)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-grant-tables",
                "--skip-log-bin",
            ])
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let url = format!("mysql://root@127.0.0.1:{port}/pinterest");
        let server = Self {
            child,
            _dir: dir,
            url,
        };
        let admin = format!("mysql://root@127.0.0.1:{port}/mysql");
        sqlx::any::install_default_drivers();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(pool) = sqlx::AnyPool::connect(&admin).await {
                sqlx::query("CREATE DATABASE IF NOT EXISTS pinterest")
                    .execute(&pool)
                    .await
                    .unwrap();
                return Some(server);
            }
            assert!(Instant::now() < deadline, "MariaDB did not start");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
