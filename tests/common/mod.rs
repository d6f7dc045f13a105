//! The test harness: a private ClickHouse per test (Debian's `clickhouse-server`, a temporary
//! folder, free loopback ports, removed after), and gateways, in-process or as the real binary.
//!
//! Nothing here is shared between tests: each test starts its own servers and they stop with it.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hookhouse::clickhouse::{store, Clickhouse};
use hookhouse::shutdown::{self, ShutdownTrigger};
use hookhouse::{Application, Settings};
use tempfile::TempDir;

pub mod cluster;
pub mod receiver;

pub const KEY_SHAPE: &str = "d538b946-9d55-405a-9bd2-72d74b1cb8f5";

/// Finds the server binary: `HOOKHOUSE_TEST_CLICKHOUSE` if set, else Debian's path, else PATH.
fn clickhouse_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOOKHOUSE_TEST_CLICKHOUSE") {
        return PathBuf::from(path);
    }
    for candidate in [
        "/usr/sbin/clickhouse-server",
        "/usr/bin/clickhouse-server",
        "/usr/bin/clickhouse",
    ] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("clickhouse-server")
}

/// A free loopback port, found by binding port 0.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Makes a child die with the thread that started it, should the test process be killed.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

pub struct ClickhouseServer {
    dir: TempDir,
    child: Option<Child>,
    pub http_port: u16,
    tcp_port: u16,
    /// More `<profiles>` and `<users>` entries for users.xml.
    extra_profiles: String,
    extra_users: String,
    /// The HTTPS port and how its certificate is made, with [`ClickhouseServer::start_tls`].
    pub https_port: Option<u16>,
    certificate: Certificate,
    /// A user `hook` with this password, besides the password-less `default`.
    hook_password: Option<String>,
    /// More top-level elements for config.xml (a cluster node's, see [`cluster`]).
    extra_config: String,
}

/// How a test server's HTTPS certificate (for 127.0.0.1 and localhost) is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificate {
    /// Signed by its own key; [`ClickhouseServer::ca_file`] is the certificate itself.
    SelfSigned,
    /// Signed by a CA made for the test, as a company's private CA would;
    /// [`ClickhouseServer::ca_file`] is that CA's.
    PrivateCa,
}

impl ClickhouseServer {
    pub fn start() -> ClickhouseServer {
        Self::start_with(None, None, "", "")
    }

    /// Also serves HTTPS on [`ClickhouseServer::https_url`] with a `certificate` that only
    /// [`ClickhouseServer::ca_file`] makes trusted; plain HTTP stays, for `query`.
    pub fn start_tls(certificate: Certificate) -> ClickhouseServer {
        Self::start_with(Some(certificate), None, "", "")
    }

    /// [`ClickhouseServer::start_tls`] with a self-signed certificate, and a user `hook` that
    /// logs in with `password` only.
    pub fn start_tls_with_hook_user(password: &str) -> ClickhouseServer {
        Self::start_with(
            Some(Certificate::SelfSigned),
            Some(password.to_string()),
            "",
            "",
        )
    }

    /// Starts a server whose users.xml also has these `<profiles>` and `<users>` entries.
    pub fn start_with_users(extra_profiles: &str, extra_users: &str) -> ClickhouseServer {
        Self::start_with(None, None, extra_profiles, extra_users)
    }

    fn start_with(
        tls: Option<Certificate>,
        hook_password: Option<String>,
        extra_profiles: &str,
        extra_users: &str,
    ) -> ClickhouseServer {
        let mut server = Self::unstarted(tls, hook_password, extra_profiles, extra_users);
        server.write_config();
        server.launch();
        server
    }

    /// A server with its folder, ports and certificates, not configured or started yet.
    fn unstarted(
        tls: Option<Certificate>,
        hook_password: Option<String>,
        extra_profiles: &str,
        extra_users: &str,
    ) -> ClickhouseServer {
        let dir = tempfile::Builder::new()
            .prefix("hookhouse-ch-")
            .tempdir()
            .expect("temp dir");
        let server = ClickhouseServer {
            dir,
            child: None,
            http_port: free_port(),
            tcp_port: free_port(),
            extra_profiles: extra_profiles.to_string(),
            extra_users: extra_users.to_string(),
            https_port: tls.map(|_| free_port()),
            certificate: tls.unwrap_or(Certificate::SelfSigned),
            hook_password,
            extra_config: String::new(),
        };
        if tls.is_some() {
            server.write_certificates();
        }
        server
    }

    /// `server.crt` and `server.key` for 127.0.0.1 and localhost, and `ca.pem`, which makes
    /// `server.crt` trusted.
    fn write_certificates(&self) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().expect("server key");
        let params =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).expect("params");
        let (certificate, ca) = match self.certificate {
            Certificate::SelfSigned => {
                let certificate = params.self_signed(&key).expect("certificate").pem();
                (certificate.clone(), certificate)
            }
            Certificate::PrivateCa => {
                let ca_key = KeyPair::generate().expect("CA key");
                let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
                ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                ca.distinguished_name
                    .push(rcgen::DnType::CommonName, "hookhouse test CA");
                let ca_certificate = ca.self_signed(&ca_key).expect("CA certificate").pem();
                let issuer = Issuer::new(ca, ca_key);
                let certificate = params.signed_by(&key, &issuer).expect("certificate");
                (certificate.pem(), ca_certificate)
            }
        };
        let dir = self.dir.path();
        std::fs::write(dir.join("ca.pem"), ca).expect("write CA");
        std::fs::write(dir.join("server.crt"), certificate).expect("write certificate");
        std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write key");
    }

    /// The PEM file that makes the HTTPS certificate trusted (see [`Certificate`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn https_url(&self) -> String {
        let port = self.https_port.expect("started with start_tls");
        format!("https://127.0.0.1:{port}")
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let https = match self.https_port {
            Some(port) => format!(
                r#"<https_port>{port}</https_port>
  <openSSL><server><certificateFile>{d}/server.crt</certificateFile><privateKeyFile>{d}/server.key</privateKeyFile><verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile><cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols><preferServerCiphers>true</preferServerCiphers></server></openSSL>"#
            ),
            None => String::new(),
        };
        let hook = match &self.hook_password {
            Some(password) => format!(
                "<hook><password>{password}</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></hook>"
            ),
            None => String::new(),
        };
        let config = format!(
            r#"<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  {https}
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  {extra}
</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
            extra = self.extra_config,
        );
        let users = format!(
            r#"<yandex>
  <profiles><default><log_queries>0</log_queries></default>{profiles}</profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>{hook}{users}</users>
  <quotas><default></default></quotas>
</yandex>
"#,
            profiles = self.extra_profiles,
            users = self.extra_users
        );
        std::fs::write(self.dir.path().join("config.xml"), config).expect("write config");
        std::fs::write(self.dir.path().join("users.xml"), users).expect("write users");
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Starts the process without waiting for it to answer (see [`ClickhouseServer::wait_ready`]).
    fn spawn(&mut self) {
        let mut command = Command::new(clickhouse_binary());
        command
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; install it with scripts/install-clickhouse.sh",
                clickhouse_binary().display()
            )
        });
        self.child = Some(child);
    }

    /// Waits up to 60 s for the started process to answer.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let https_up = self
                .https_port
                .is_none_or(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
            if std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok()
                && self.ping()
                && https_up
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log =
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
                panic!("clickhouse-server exited with {status}: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("clickhouse-server did not answer within 60 s");
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /ping HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.http_port
        );
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.ends_with("Ok.\n")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Kills the server (an outage). Its data stays for [`ClickhouseServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Runs SQL and returns ClickHouse's TabSeparated answer, panicking on an error.
    pub async fn query(&self, sql: &str) -> String {
        let response = reqwest::Client::new()
            .post(self.url())
            .body(sql.to_string())
            .send()
            .await
            .expect("ClickHouse answers");
        let status = response.status();
        let text = response.text().await.expect("ClickHouse answer body");
        assert!(status.is_success(), "ClickHouse refused {sql}: {text}");
        text
    }

    /// Runs SQL over plain HTTP/1.0 without a runtime; `None` on any failure.
    pub fn try_query_blocking(&self, sql: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    }

    /// [`ClickhouseServer::query`] for tests without a runtime.
    pub fn query_blocking(&self, sql: &str) -> String {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(self.query(sql))
    }

    pub async fn count(&self, sql: &str) -> u64 {
        self.query(sql)
            .await
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a count: {sql}"))
    }
}

impl Drop for ClickhouseServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Settings for a gateway under test: port 0, its own data folder, the given ClickHouse, quick
/// batches.
pub fn test_settings(ch: &ClickhouseServer, data_dir: &Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        clickhouse_url: ch.url(),
        data_dir: data_dir.to_path_buf(),
        batch_max_wait_ms: 200,
        shutdown_grace_secs: 10,
        ..Settings::default()
    }
}

/// A gateway running in this process.
pub struct Gateway {
    pub port: u16,
    pub data: TempDir,
    trigger: Option<ShutdownTrigger>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    pub async fn start(ch: &ClickhouseServer, tweak: impl FnOnce(&mut Settings)) -> Gateway {
        let data = tempfile::Builder::new()
            .prefix("hookhouse-data-")
            .tempdir()
            .expect("temp dir");
        Self::start_in(ch, data, tweak).await
    }

    /// Starts on an existing data folder (a restart).
    pub async fn start_in(
        ch: &ClickhouseServer,
        data: TempDir,
        tweak: impl FnOnce(&mut Settings),
    ) -> Gateway {
        let mut settings = test_settings(ch, data.path());
        tweak(&mut settings);
        settings.validate().expect("test settings are valid");
        let app = Application::build(settings).await.expect("gateway starts");
        let port = app.port();
        let (trigger, mut stop) = shutdown::channel();
        let task = tokio::spawn(app.run(async move { stop.triggered().await }));
        Gateway {
            port,
            data,
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("http://127.0.0.1:{}/{query}", self.port)
    }

    /// Stops gracefully and returns the data folder, for a restart.
    pub async fn stop(mut self) -> TempDir {
        if let Some(trigger) = self.trigger.take() {
            trigger.trigger();
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("gateway task")
                .expect("gateway stops cleanly");
        }
        let data = tempfile::Builder::new().tempdir().expect("temp dir");
        std::mem::replace(&mut self.data, data)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger.trigger();
        }
    }
}

/// A pipeline and a token for it, created through the store as `hookhouse` commands do.
pub struct Credentials {
    pub pipeline_id: u64,
    pub key: String,
    pub token: String,
}

impl Credentials {
    pub fn query(&self) -> String {
        format!(
            "?pipeline_id={}&key={}&token={}",
            self.pipeline_id, self.key, self.token
        )
    }
}

pub fn admin(ch: &ClickhouseServer) -> Clickhouse {
    let settings = Settings {
        clickhouse_url: ch.url(),
        ..Settings::default()
    };
    Clickhouse::new(&settings).expect("test settings are valid")
}

pub async fn setup_pipeline(ch: &ClickhouseServer, name: &str) -> Credentials {
    let admin = admin(ch);
    hookhouse::clickhouse::migrate::migrate(&admin)
        .await
        .expect("migrate");
    let pipeline = store::create_pipeline(&admin, name)
        .await
        .expect("create pipeline");
    let (_, key, token) = store::create_token(&admin, name, &[pipeline.pipeline_id])
        .await
        .expect("create token");
    Credentials {
        pipeline_id: pipeline.pipeline_id,
        key: key.to_string(),
        token: token.reveal().to_string(),
    }
}

/// The answer to one request: status, headers we look at, and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub allow: Option<String>,
    pub json: serde_json::Value,
}

pub async fn post(client: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> Answer {
    answer(
        client
            .post(url)
            .body(body)
            .send()
            .await
            .expect("gateway answers"),
    )
    .await
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (retry_after, allow) = (header("retry-after"), header("allow"));
    let text = response.text().await.expect("answer body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Answer {
        status,
        retry_after,
        allow,
        json,
    }
}

impl Answer {
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    pub fn request_id(&self) -> &str {
        self.json["data"]["__kdd_request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("not a success: {self:?}"))
    }
}

/// Polls `check` every 50 ms until it is true or `within` has passed; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real `hookhouse` binary as a child process, for kill -9 and signal tests.
pub struct GatewayProcess {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    env: Vec<(String, String)>,
}

impl GatewayProcess {
    /// Starts `hookhouse serve` with `env` on top of test defaults; waits until it listens.
    pub fn spawn(ch: &ClickhouseServer, data_dir: &Path, env: &[(&str, &str)]) -> GatewayProcess {
        let mut process = GatewayProcess {
            child: None,
            port: free_port(),
            data_dir: data_dir.to_path_buf(),
            // Not in the data folder: a test may fill that disk.
            log_path: std::env::temp_dir().join(format!(
                "hookhouse-test-{}.log",
                uuid::Uuid::new_v4().simple()
            )),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        if !env
            .iter()
            .any(|(name, _)| *name == "HOOKHOUSE_CLICKHOUSE_URL")
        {
            process
                .env
                .push(("HOOKHOUSE_CLICKHOUSE_URL".into(), ch.url()));
        }
        process.launch();
        process
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookhouse"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOOKHOUSE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("HOOKHOUSE_DATA_DIR", &self.data_dir)
            .env("HOOKHOUSE_BATCH_MAX_WAIT_MS", "200")
            .env("HOOKHOUSE_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut command);
        self.child = Some(command.spawn().expect("start hookhouse"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("hookhouse exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("hookhouse did not listen within 30 s:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    pub fn url(&self, query: &str) -> String {
        format!("http://127.0.0.1:{}/{query}", self.port)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` and waits for the exit code (None if it did not exit within `within`).
    pub fn signal_and_wait(&mut self, signal: i32, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        // SAFETY: kill(2) on the pid of our own child.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Starts it again after [`GatewayProcess::kill9`], on the same folder and settings.
    pub fn relaunch(&mut self) {
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Runs the `hookhouse` binary with arguments and environment; returns (exit code, stdout, stderr).
pub fn hookhouse_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hookhouse"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run hookhouse");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The secrets key the tests give gateways and the CLI (`HOOKHOUSE_SECRETS_KEY_FILE`).
pub const SECRETS_KEY: &str = "q2VeT3p0mFh0cJcU7l3m3vKX1kR0o7C4b2s8N1yY6aQ=";

/// Everything a test needs to drive the CLI: ClickHouse's URL and a secrets key file
/// ([`SECRETS_KEY`]) in a folder of its own, which test files add their own files to.
pub struct CliEnv {
    pub dir: TempDir,
    pub url: String,
}

impl CliEnv {
    pub fn new(ch: &ClickhouseServer) -> CliEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("secrets.key"), format!("{SECRETS_KEY}\n"))
            .expect("key file");
        CliEnv { dir, url: ch.url() }
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("secrets.key")
    }

    /// Runs `hookhouse ARGS` against this ClickHouse with the key file set.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let key = self.key_file();
        hookhouse_cli(
            args,
            &[
                ("HOOKHOUSE_CLICKHOUSE_URL", &self.url),
                (
                    "HOOKHOUSE_SECRETS_KEY_FILE",
                    key.to_str().expect("utf-8 path"),
                ),
            ],
        )
    }

    /// [`CliEnv::cli`], which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args);
        assert_eq!(code, 0, "hookhouse {args:?} failed:\n{out}\n{err}");
        out
    }
}

/// How many times each request id is in ClickHouse, `events` and `rejected` together.
pub async fn landed_counts(ch: &ClickhouseServer) -> std::collections::HashMap<String, u64> {
    ch.query(
        "SELECT __kdd_request_id, count() FROM (SELECT __kdd_request_id FROM hookhouse.events \
         UNION ALL SELECT __kdd_request_id FROM hookhouse.rejected) GROUP BY __kdd_request_id",
    )
    .await
    .lines()
    .filter_map(|line| {
        let (id, n) = line.split_once('\t')?;
        Some((id.to_string(), n.parse().ok()?))
    })
    .collect()
}

/// The gateway's `/metrics` text.
pub async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

/// The sum of every sample of the series `name` whose labels contain `labels`.
pub fn metric_value(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until every acked id is in ClickHouse (or `within` passes), then counts: acked ids
/// missing (lost), ids there more than once (duplicated), ids there that were never acked.
pub async fn verify_exactly_once(
    ch: &ClickhouseServer,
    acked: &[String],
    within: Duration,
) -> (usize, usize, usize) {
    let deadline = Instant::now() + within;
    let mut counts = landed_counts(ch).await;
    while acked.iter().any(|id| !counts.contains_key(id)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counts = landed_counts(ch).await;
    }
    // Let anything still in flight land, so that a late duplicate would be seen.
    tokio::time::sleep(Duration::from_millis(800)).await;
    counts = landed_counts(ch).await;
    let lost = acked
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    let unacked_landed = counts.len() - (acked.len() - lost);
    (lost, duplicated, unacked_landed)
}
