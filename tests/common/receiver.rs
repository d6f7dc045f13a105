//! A webhook receiver for notification tests (CONTRACT §9): tests/receiver/receiver.py, which
//! verifies every notification with the reference Standard Webhooks library from PyPI (installed
//! by scripts/install-receiver.sh into .cache/receiver), records it, and answers as scripted.
//!
//! Each [`Receiver`] is its own process on a free loopback port; it stops when dropped, and by
//! itself when the test process ends however it ends (its stdin, a pipe from us, closes).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

/// How long the receiver may take to print its port (a cold Python start on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One notification the receiver got, as `GET /_received` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    /// The request's path, e.g. `/hooks/a`.
    #[serde(default)]
    pub path: String,
    pub webhook_id: Option<String>,
    pub webhook_timestamp: Option<String>,
    pub webhook_signature: Option<String>,
    /// Whether `standardwebhooks.Webhook(secret).verify(body, headers)` passed.
    pub verified: bool,
    /// Why it did not, in the library's words (e.g. `No matching signature found`).
    pub verify_error: Option<String>,
    /// The body parsed as JSON, or `None` when it is not JSON.
    pub json: Option<serde_json::Value>,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// Every request header, names in lower case.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The status answered (or being answered, after `delay_ms`); `None` when it hung.
    pub answered: Option<u16>,
    /// When it arrived, in Unix seconds.
    pub at: f64,
}

pub struct Receiver {
    child: Child,
    /// Held open for the receiver's life: it exits when this closes.
    _stdin: ChildStdin,
    port: u16,
    client: reqwest::Client,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs scripts/install-receiver.sh once per test binary; every caller gets its outcome.
fn install() -> Result<PathBuf, String> {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let output = Command::new(root().join("scripts/install-receiver.sh"))
                .current_dir(root())
                .stdin(Stdio::null())
                .output()
                .map_err(|error| format!("could not run scripts/install-receiver.sh: {error}"))?;
            if !output.status.success() {
                return Err(format!(
                    "scripts/install-receiver.sh failed ({}):\n{}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            Ok(root().join(".cache/receiver/bin/python"))
        })
        .clone()
}

impl Receiver {
    /// Installs the receiver if needed, starts it and waits until it listens.
    pub async fn start() -> Receiver {
        Self::start_with(&[]).await
    }

    /// [`Receiver::start`] with more arguments for receiver.py, e.g. `["--verbose"]`.
    pub async fn start_with(args: &[&str]) -> Receiver {
        let python = tokio::task::spawn_blocking(install)
            .await
            .expect("the install task")
            .unwrap_or_else(|error| panic!("{error}"));
        // No PR_SET_PDEATHSIG (it fires when the spawning *thread* ends, and a tokio worker may
        // end first): the receiver exits when its stdin closes, which the kernel does for us
        // however the test process ends.
        let mut child = Command::new(&python)
            .arg(root().join("tests/receiver/receiver.py"))
            .args(args)
            .current_dir(root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", python.display()));
        let stdin = child.stdin.take().expect("the receiver's stdin");
        let stdout = child.stdout.take().expect("the receiver's stdout");
        let pid = child.id();

        let read_port = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read the receiver's stdout");
            line
        });
        let line = match tokio::time::timeout(START_TIMEOUT, read_port).await {
            Ok(line) => line.expect("the port-reading task"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the receiver (pid {pid}) did not print its port within {START_TIMEOUT:?}");
            }
        };
        let port = match line.trim().strip_prefix("port=").map(str::parse::<u16>) {
            Some(Ok(port)) => port,
            _ => {
                let _ = child.kill();
                let status = child.wait().expect("wait for the receiver");
                panic!("the receiver (pid {pid}) printed {line:?} instead of port=<N> ({status})");
            }
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client");
        Receiver {
            child,
            _stdin: stdin,
            port,
            client,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Changes the plan: any of `secret`, `answers`, `default`, `delay_ms`, `retry_after`,
    /// `hang`. Panics if the receiver refuses it (an unknown key, a bad secret…).
    pub async fn control(&self, json: serde_json::Value) {
        let response = self
            .client
            .post(self.url("/_control"))
            .json(&json)
            .send()
            .await
            .expect("POST /_control to the receiver");
        let status = response.status();
        let body = response
            .text()
            .await
            .expect("the receiver's control answer");
        assert!(
            status.is_success(),
            "the receiver refused {json}: {status} {body}"
        );
    }

    /// Every notification received so far, in order of arrival.
    pub async fn received(&self) -> Vec<Received> {
        let response = self
            .client
            .get(self.url("/_received"))
            .send()
            .await
            .expect("GET /_received from the receiver");
        assert!(
            response.status().is_success(),
            "GET /_received: {}",
            response.status()
        );
        response.json().await.expect("the receiver's /_received")
    }

    /// Waits until at least `count` notifications have arrived, and returns them all; panics
    /// after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received().await;
            if received.len() >= count {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver got {} notifications, not {count}, within {timeout:?}: {received:#?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Forgets the notifications received so far; the plan stays.
    pub async fn reset(&self) {
        let response = self
            .client
            .post(self.url("/_reset"))
            .send()
            .await
            .expect("POST /_reset to the receiver");
        assert!(
            response.status().is_success(),
            "POST /_reset: {}",
            response.status()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's pid; wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
