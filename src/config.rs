//! Typed settings: built-in defaults, then an optional TOML file, then `HOOKHOUSE_*` variables,
//! each overriding the one before (CONTRACT §5). [`Settings::load`] either returns settings that
//! passed [`Settings::validate`] or one line naming the setting that is wrong.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::wal::FsyncMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting, named as in the TOML file; the variable is `HOOKHOUSE_` + the name in capitals.
///
/// `Debug` hides the password and the URL's credentials (CONTRACT §7).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: String,
    /// `http://` or `https://`, optionally with `user:password@` (see
    /// [`Settings::clickhouse_endpoint`]).
    pub clickhouse_url: String,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
    /// A PEM file of CA certificates trusted for `https://` besides the system's roots.
    pub clickhouse_ca_file: Option<PathBuf>,
    pub clickhouse_database: String,
    /// A cluster of the server's `remote_servers` (CONTRACT §10): tables are made `ON CLUSTER`
    /// with replicated engines. Unset: one server.
    pub clickhouse_cluster: Option<String>,
    pub data_dir: PathBuf,
    /// 32 random bytes, base64: the key that seals pipelines' signing secrets (CONTRACT §8).
    pub secrets_key_file: Option<PathBuf>,
    #[serde(deserialize_with = "size::deserialize")]
    pub max_body_bytes: u64,
    #[serde(deserialize_with = "size::deserialize")]
    pub wal_max_bytes: u64,
    /// Size at which the log starts a new segment file (beyond the contract).
    #[serde(deserialize_with = "size::deserialize")]
    pub wal_segment_bytes: u64,
    pub fsync: FsyncMode,
    pub batch_max_rows: u64,
    pub batch_max_wait_ms: u64,
    /// The most body bytes one batch holds in memory (beyond the contract).
    #[serde(deserialize_with = "size::deserialize")]
    pub batch_max_bytes: u64,
    pub rate_limit_per_key: u32,
    pub body_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    /// How often the writer reloads pipelines and tokens at the latest (beyond the contract).
    pub credentials_refresh_ms: u64,
    /// The most connections the server keeps open at once (beyond the contract).
    pub max_connections: usize,
    /// The most ingest requests being read or logged at once; past it, 503 (beyond the contract).
    pub max_inflight_requests: usize,
    /// The most body bytes all requests in flight hold together; a request that would pass it is
    /// answered 503 at once (beyond the contract).
    #[serde(deserialize_with = "size::deserialize")]
    pub max_inflight_bytes: u64,
    /// How long ClickHouse may take to acknowledge one batch insert (beyond the contract). An
    /// insert that outlives it is not sent again until ClickHouse says it has stopped.
    pub clickhouse_insert_timeout_secs: u64,
    pub log_format: LogFormat,
    /// PEM certificate chain for HTTPS on `listen` (CONTRACT §11); set with `tls_key_file` or not
    /// at all (see [`crate::http::tls`]).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`'s certificate.
    pub tls_key_file: Option<PathBuf>,
    /// The base URL senders reach this gateway at, for the ingest URLs `token create` prints;
    /// unset, it is derived from `listen`.
    pub public_url: Option<String>,
    /// Multiplies the notification retry schedule (5 s, 30 s, 2 min, 10 min, 30 min): tests run
    /// it faster without a change of code (CONTRACT §9).
    pub notify_backoff_scale: f64,
    /// The most notifications one subscription may have waiting on this gateway; past it,
    /// `data.landed` counts are merged into the next one and `request.rejected` ones dropped.
    pub notify_max_pending: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            listen: "127.0.0.1:8080".into(),
            clickhouse_url: "http://127.0.0.1:8123".into(),
            clickhouse_user: "default".into(),
            clickhouse_password: String::new(),
            clickhouse_ca_file: None,
            clickhouse_database: "hookhouse".into(),
            clickhouse_cluster: None,
            data_dir: PathBuf::from("./data"),
            secrets_key_file: None,
            max_body_bytes: 10 * 1024 * 1024,
            wal_max_bytes: 8 * 1024 * 1024 * 1024,
            wal_segment_bytes: 64 * 1024 * 1024,
            fsync: FsyncMode::Always,
            batch_max_rows: 50_000,
            batch_max_wait_ms: 1000,
            batch_max_bytes: 32 * 1024 * 1024,
            rate_limit_per_key: 1000,
            body_timeout_secs: 30,
            shutdown_grace_secs: 20,
            credentials_refresh_ms: 2000,
            max_connections: 10_000,
            max_inflight_requests: 4096,
            max_inflight_bytes: 256 * 1024 * 1024,
            clickhouse_insert_timeout_secs: 120,
            log_format: LogFormat::Text,
            tls_cert_file: None,
            tls_key_file: None,
            public_url: None,
            notify_backoff_scale: 1.0,
            notify_max_pending: 10_000,
        }
    }
}

/// A setting that stops start-up, with the one line that says why.
#[derive(Debug, thiserror::Error)]
#[error("bad setting {setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    fn new(name: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            setting: format!("HOOKHOUSE_{}", name.to_uppercase()),
            message: message.into(),
        }
    }
}

/// One setting: its name in the TOML file (the variable is `HOOKHOUSE_` + it in capitals), what
/// a value looks like (said in errors: "expected …"), and what it does (said in `serve --help`).
pub struct Field {
    pub name: &'static str,
    pub expects: &'static str,
    pub help: &'static str,
}

const SIZE: &str = "a size such as 10485760 or 10MiB";
const COUNT: &str = "a whole number such as 1000";
const SECS: &str = "a whole number of seconds such as 30";
const MILLIS: &str = "a whole number of milliseconds such as 1000";

/// Every setting, in the order `serve --help` and the README list them.
pub const FIELDS: &[Field] = &[
    Field { name: "listen", expects: "an address such as 127.0.0.1:8080", help: "address to serve on" },
    Field { name: "public_url", expects: "a URL such as https://hooks.example.com", help: "base URL senders reach the gateway at, for the URLs `token create` prints (unset: http:// + HOOKHOUSE_LISTEN)" },
    Field { name: "clickhouse_url", expects: "a URL such as http://127.0.0.1:8123", help: "ClickHouse HTTP interface, http:// or https://, may hold user:password@" },
    Field { name: "clickhouse_user", expects: "a user name", help: "ClickHouse user" },
    Field { name: "clickhouse_password", expects: "a password", help: "ClickHouse password" },
    Field { name: "clickhouse_ca_file", expects: "a PEM file", help: "a CA added to the system's roots for https://" },
    Field { name: "clickhouse_database", expects: "letters, digits and underscores", help: "database of hookhouse's tables" },
    Field { name: "clickhouse_cluster", expects: "a cluster name of letters, digits and underscores", help: "a cluster of the servers' remote_servers: tables made ON CLUSTER, replicated (unset: one server)" },
    Field { name: "data_dir", expects: "a folder", help: "the write-ahead log and its checkpoint" },
    Field { name: "secrets_key_file", expects: "a file holding 32 random bytes in base64 (openssl rand -base64 32)", help: "the key that seals pipelines' signing secrets" },
    Field { name: "max_body_bytes", expects: SIZE, help: "larger bodies get 413" },
    Field { name: "wal_max_bytes", expects: SIZE, help: "disk budget of the log; past it, 503" },
    Field { name: "wal_segment_bytes", expects: SIZE, help: "log segment size" },
    Field { name: "fsync", expects: "`always` or `interval`", help: "always: fsync before every 200; interval: at most every 100 ms" },
    Field { name: "batch_max_rows", expects: COUNT, help: "rows per ClickHouse batch at most" },
    Field { name: "batch_max_wait_ms", expects: MILLIS, help: "a batch is sent when this old" },
    Field { name: "batch_max_bytes", expects: SIZE, help: "body bytes one batch holds in memory at most" },
    Field { name: "rate_limit_per_key", expects: COUNT, help: "requests a second per key (bursts twice that); 0 turns it off" },
    Field { name: "body_timeout_secs", expects: SECS, help: "a body not arrived by then gets 408" },
    Field { name: "shutdown_grace_secs", expects: SECS, help: "on SIGTERM, time to finish requests and the current batch" },
    Field { name: "credentials_refresh_ms", expects: MILLIS, help: "pipelines and tokens are reloaded this often at least (at most 5000)" },
    Field { name: "max_connections", expects: COUNT, help: "open connections at most" },
    Field { name: "max_inflight_requests", expects: COUNT, help: "ingest requests in flight at most; past it, 503" },
    Field { name: "max_inflight_bytes", expects: SIZE, help: "body bytes of all requests in flight at most; past it, 503" },
    Field { name: "clickhouse_insert_timeout_secs", expects: SECS, help: "time one batch insert may take to be acknowledged" },
    Field { name: "log_format", expects: "`text` or `json`", help: "json: one JSON object per line" },
    Field { name: "tls_cert_file", expects: "a PEM file", help: "certificate chain for HTTPS on HOOKHOUSE_LISTEN (with tls_key_file)" },
    Field { name: "tls_key_file", expects: "a PEM file", help: "private key of tls_cert_file's certificate" },
    Field { name: "notify_backoff_scale", expects: "a number such as 1 or 0.01", help: "multiplies the notification retry schedule (5 s, 30 s, 2 min, 10 min, 30 min)" },
    Field { name: "notify_max_pending", expects: COUNT, help: "notifications waiting per subscription at most" },
];

/// `HOOKHOUSE_*` variables that are not settings but are read: the file and the log filter.
const OTHER_VARIABLES: &[&str] = &["config", "log"];

fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

fn field_names() -> Vec<&'static str> {
    FIELDS.iter().map(|f| f.name).collect()
}

/// The settings that are text (or paths): any value is theirs, whatever it looks like.
const TEXT_FIELDS: &[&str] = &[
    "listen",
    "public_url",
    "clickhouse_url",
    "clickhouse_user",
    "clickhouse_password",
    "clickhouse_ca_file",
    "clickhouse_database",
    "clickhouse_cluster",
    "data_dir",
    "secrets_key_file",
    "tls_cert_file",
    "tls_key_file",
];

impl Settings {
    /// Defaults, then `file` (or `HOOKHOUSE_CONFIG`) if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("HOOKHOUSE_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError {
                    setting: "HOOKHOUSE_CONFIG".into(),
                    message: format!("no configuration file at {}", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only known names are taken from the environment, so that unrelated HOOKHOUSE_*
        // variables (a script's own) do not stop start-up; the TOML file is strict instead.
        figment = figment.merge(
            Env::prefixed("HOOKHOUSE_")
                .only(&field_names())
                .ignore(TEXT_FIELDS),
        );
        // figment reads `123` or `true` in a variable as a number or a boolean, which a text
        // setting then refuses: a password of digits only could not be set. Taken as they are.
        for (name, value) in Env::prefixed("HOOKHOUSE_").only(TEXT_FIELDS).iter() {
            figment = figment.merge(Serialized::default(name.as_str(), value));
        }
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract().map_err(plain_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// `HOOKHOUSE_*` variables in the environment that are no setting, each with the closest
    /// known name when one is close: a misspelt setting is otherwise silently ignored. Only
    /// reported, never refused: scripts keep their own `HOOKHOUSE_*` variables.
    pub fn unknown_variables() -> Vec<(String, Option<String>)> {
        let mut unknown: Vec<(String, Option<String>)> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter_map(|name| {
                let setting = name.strip_prefix("HOOKHOUSE_")?.to_lowercase();
                let known =
                    field(&setting).is_some() || OTHER_VARIABLES.contains(&setting.as_str());
                (!known).then(|| {
                    let suggestion = closest_name(&setting)
                        .map(|known| format!("HOOKHOUSE_{}", known.to_uppercase()));
                    (name, suggestion)
                })
            })
            .collect();
        unknown.sort();
        unknown
    }

    /// Every setting with its default and what it does, for `serve --help`; generated from
    /// [`FIELDS`] and [`Settings::default`], so it cannot fall behind either.
    pub fn help() -> String {
        let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
        let mut text = String::from(
            "Settings (environment variables; in a --config TOML file the same names in lower \
             case without HOOKHOUSE_; sizes take KiB, MiB, GiB, TiB or kB, MB, GB, TB):\n",
        );
        for f in FIELDS {
            let shown = match defaults.get(f.name) {
                Some(serde_json::Value::String(v)) if v.is_empty() => "empty".to_string(),
                Some(serde_json::Value::String(v)) => v.clone(),
                Some(serde_json::Value::Number(n)) if f.expects == SIZE => {
                    let bytes = n.as_u64().unwrap_or_default();
                    format!("{bytes} ({})", size::show(bytes))
                }
                Some(serde_json::Value::Null) | None => "unset".to_string(),
                Some(other) => other.to_string(),
            };
            text.push_str(&format!(
                "  HOOKHOUSE_{} [default: {shown}]\n      {}\n",
                f.name.to_uppercase(),
                f.help
            ));
        }
        text.push_str("  HOOKHOUSE_CONFIG: the TOML file, as --config\n");
        text.push_str("  HOOKHOUSE_LOG [default: info]: log filter, e.g. hookhouse=debug\n");
        text
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.public_base_url()?;
        self.clickhouse_endpoint()?;
        if let Some(path) = &self.clickhouse_ca_file {
            crate::clickhouse::http_client::read_ca_file(path)
                .map_err(|message| ConfigError::new("clickhouse_ca_file", message))?;
        }
        if let Some(path) = &self.secrets_key_file {
            crate::signing::SecretsKey::load(path)
                .map_err(|error| ConfigError::new("secrets_key_file", error.to_string()))?;
        }
        for (name, value) in [
            ("clickhouse_database", Some(&self.clickhouse_database)),
            ("clickhouse_cluster", self.clickhouse_cluster.as_ref()),
        ] {
            if let Some(value) = value.filter(|v| !plain_identifier(v)) {
                return Err(ConfigError::new(
                    name,
                    format!(
                        "{value:?} must be letters, digits and underscores, not starting with a digit"
                    ),
                ));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("wal_max_bytes", self.wal_max_bytes),
            ("wal_segment_bytes", self.wal_segment_bytes),
            ("batch_max_rows", self.batch_max_rows),
            ("batch_max_bytes", self.batch_max_bytes),
            ("body_timeout_secs", self.body_timeout_secs),
            ("credentials_refresh_ms", self.credentials_refresh_ms),
            ("max_connections", self.max_connections as u64),
            ("max_inflight_requests", self.max_inflight_requests as u64),
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("notify_max_pending", self.notify_max_pending),
            (
                "clickhouse_insert_timeout_secs",
                self.clickhouse_insert_timeout_secs,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(name, "must be greater than 0"));
            }
        }
        let max_body = crate::wal::record::MAX_BODY_LEN as u64;
        if self.max_body_bytes > max_body {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be at most {max_body}"),
            ));
        }
        if self.max_inflight_bytes < self.max_body_bytes {
            return Err(ConfigError::new(
                "max_inflight_bytes",
                format!(
                    "must be at least HOOKHOUSE_MAX_BODY_BYTES ({}), or a body of the largest size could never be accepted",
                    self.max_body_bytes
                ),
            ));
        }
        if self.max_inflight_bytes > tokio::sync::Semaphore::MAX_PERMITS as u64 {
            return Err(ConfigError::new(
                "max_inflight_bytes",
                format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            ));
        }
        if !(self.notify_backoff_scale > 0.0 && self.notify_backoff_scale <= 100.0) {
            return Err(ConfigError::new(
                "notify_backoff_scale",
                format!(
                    "{} must be a number above 0 and at most 100 (1 is the schedule as written)",
                    self.notify_backoff_scale
                ),
            ));
        }
        if self.credentials_refresh_ms > 5000 {
            return Err(ConfigError::new(
                "credentials_refresh_ms",
                "must be at most 5000, so that a revocation takes effect within 10 s",
            ));
        }
        // Both or neither. The files themselves are read by `serve` only: the admin commands
        // do not need them, nor the right to read the key.
        crate::http::tls::files(self)?;
        Ok(())
    }

    /// Where and as whom to reach ClickHouse: `clickhouse_url` without its credentials, and the
    /// user and password to send (as headers, never in the URL).
    ///
    /// Credentials may sit in the URL, `https://user:password@host:8443`, percent-encoded as URLs
    /// require. Each may come from one place only: a user in the URL together with a
    /// `clickhouse_user` other than the default `default`, or a password in the URL together with
    /// a non-empty `clickhouse_password`, stops start-up unless both say the same, rather than
    /// one silently winning over the other. A user from one place and a password from the other
    /// is fine.
    ///
    /// The setting may list several nodes separated by commas, each such a URL, tried in turn
    /// (CONTRACT §10); each is checked here, and the first of the list is returned.
    pub fn clickhouse_endpoint(&self) -> Result<ClickhouseEndpoint, ConfigError> {
        let mut endpoints = self.clickhouse_endpoints()?;
        Ok(endpoints.remove(0))
    }

    /// Every node of `clickhouse_url`, in the order given (see [`Settings::clickhouse_endpoint`]).
    pub fn clickhouse_endpoints(&self) -> Result<Vec<ClickhouseEndpoint>, ConfigError> {
        let urls = split_urls(&self.clickhouse_url);
        if urls.iter().any(|u| u.trim().is_empty()) {
            return Err(ConfigError::new(
                "clickhouse_url",
                format!(
                    "{:?} has an empty URL in its list: separate nodes by single commas",
                    redact_url(&self.clickhouse_url)
                ),
            ));
        }
        urls.iter().map(|url| self.endpoint(url.trim())).collect()
    }

    fn endpoint(&self, raw: &str) -> Result<ClickhouseEndpoint, ConfigError> {
        let bad_url = |message: String| ConfigError::new("clickhouse_url", message);
        let shown = redact_url(raw);
        let mut url = url::Url::parse(raw)
            .map_err(|error| bad_url(format!("{shown:?} is not a URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_url(format!(
                "{shown:?} is not an http:// or https:// URL"
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad_url(format!("{shown:?} has no host")));
        }
        // The client drops a query; ClickHouse would read credentials and settings from it.
        if url.query().is_some_and(|q| !q.is_empty())
            || url.fragment().is_some_and(|f| !f.is_empty())
        {
            return Err(bad_url(format!(
                "{shown:?} must not have a query or fragment: the database is \
                 HOOKHOUSE_CLICKHOUSE_DATABASE, credentials HOOKHOUSE_CLICKHOUSE_USER and \
                 HOOKHOUSE_CLICKHOUSE_PASSWORD or user:password@ in the URL"
            )));
        }
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| {
                    bad_url("its user or password is not UTF-8 once percent-decoded".into())
                })
        };
        let url_user = decode(url.username())?;
        let url_password = url.password().map(decode).transpose()?.unwrap_or_default();
        let user = from_one_place(
            ("clickhouse_user", &self.clickhouse_user, DEFAULT_USER),
            url_user,
        )?;
        let password = from_one_place(
            ("clickhouse_password", &self.clickhouse_password, ""),
            url_password,
        )?;
        // Setting these only fails for URLs that cannot have credentials, refused above.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        Ok(ClickhouseEndpoint {
            url: url.as_str().trim_end_matches('/').to_string(),
            user,
            password,
        })
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            let hint = match self.listen.trim().parse::<u16>() {
                Ok(port) => format!(" (port {port} on every interface is 0.0.0.0:{port})"),
                Err(_) => String::new(),
            };
            ConfigError::new(
                "listen",
                format!(
                    "expected an address such as 127.0.0.1:8080, got {:?}{hint}",
                    self.listen
                ),
            )
        })
    }

    /// The base URL senders reach this gateway at, without a trailing slash:
    /// `HOOKHOUSE_PUBLIC_URL`, or else `http://` (`https://` with TLS on the listener) + the
    /// listen address (127.0.0.1 when it listens on every interface, which no sender can reach
    /// as such).
    pub fn public_base_url(&self) -> Result<String, ConfigError> {
        let Some(given) = &self.public_url else {
            let mut addr = self.listen_addr()?;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let scheme = if self.tls_cert_file.is_some() {
                "https"
            } else {
                "http"
            };
            return Ok(format!("{scheme}://{addr}"));
        };
        let expected = |why: &str| {
            ConfigError::new(
                "public_url",
                format!("expected a URL such as https://hooks.example.com, got {given:?}: {why}"),
            )
        };
        let url = url::Url::parse(given).map_err(|error| expected(&error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(expected("it must be http:// or https:// with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(expected(
                "the ingest parameters are added to it, it must have no query",
            ));
        }
        Ok(url.as_str().trim_end_matches('/').to_string())
    }

    pub fn batch_max_wait(&self) -> Duration {
        Duration::from_millis(self.batch_max_wait_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn clickhouse_insert_timeout(&self) -> Duration {
        Duration::from_secs(self.clickhouse_insert_timeout_secs)
    }

    pub fn credentials_refresh(&self) -> Duration {
        Duration::from_millis(self.credentials_refresh_ms)
    }
}

/// Letters, digits and underscores, not starting with a digit, at most 64: safe in SQL as is.
fn plain_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// A figment error as one line in plain words: the setting, what it expects, what it got.
fn plain_error(error: figment::Error) -> ConfigError {
    use figment::error::{Actual, Kind};
    let name = error
        .path
        .last()
        .cloned()
        .unwrap_or_else(|| "config".into());
    let from_file = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(source @ figment::Source::File(_)) => format!(" (in {source})"),
        _ => String::new(),
    };
    let expects = field(&name).map_or("another value", |f| f.expects);
    let message = match &error.kind {
        Kind::UnknownField(unknown, _) => {
            let hint = closest_name(unknown)
                .map(|known| format!("; did you mean `{known}`?"))
                .unwrap_or_default();
            return ConfigError {
                setting: unknown.clone(),
                message: format!("unknown setting `{unknown}` in the configuration file{hint}"),
            };
        }
        // The value may be a password (one of digits only is read as a number and refused).
        _ if matches!(name.as_str(), "clickhouse_password" | "clickhouse_url") => {
            "must be a string (its value is not shown)".to_string()
        }
        // Our own deserializers (sizes) already say what they expect and what they got.
        Kind::Message(message) => message.clone(),
        Kind::InvalidType(actual, _) | Kind::InvalidValue(actual, _) => {
            let got = match actual {
                Actual::Str(text) => format!("{text:?}"),
                Actual::Unsigned(n) => n.to_string(),
                Actual::Signed(n) => n.to_string(),
                Actual::Float(n) => n.to_string(),
                Actual::Bool(b) => b.to_string(),
                other => other.to_string(),
            };
            format!("expected {expects}, got {got}")
        }
        Kind::UnknownVariant(got, _) => format!("expected {expects}, got {got:?}"),
        other => other.to_string(),
    };
    ConfigError::new(&name, format!("{message}{from_file}"))
}

/// The known setting closest to `name` by edit distance, if it is close enough to be a typo.
fn closest_name(name: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .map(|f| f.name)
        .chain(OTHER_VARIABLES.iter().copied())
        .map(|known| (edit_distance(name, known), known))
        .filter(|(distance, known)| *distance <= 3.min(known.len() / 2))
        .min()
        .map(|(_, known)| known)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Sizes in bytes: a plain integer, or a number with a unit. `KiB`, `MiB`, `GiB`, `TiB` are
/// powers of 1024; `kB`, `MB`, `GB`, `TB` powers of 1000, as the SI and IEC say; `B` is bytes.
/// Units are case-insensitive and may follow a space. In TOML, an integer or a string.
pub mod size {
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;

    const UNITS: &[(&str, u64)] = &[
        ("", 1),
        ("b", 1),
        ("kib", 1 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("tib", 1 << 40),
        ("kb", 1000),
        ("mb", 1_000_000),
        ("gb", 1_000_000_000),
        ("tb", 1_000_000_000_000),
    ];

    /// The bytes `text` means, or `None` if it is not a size.
    pub fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().ok()?;
        let unit = unit.trim_start().to_ascii_lowercase();
        let (_, factor) = UNITS.iter().find(|(name, _)| *name == unit)?;
        number.checked_mul(*factor)
    }

    /// `bytes` in the largest binary unit that divides it: `10 MiB`, `8 GiB`, `1000 B`.
    pub fn show(bytes: u64) -> String {
        for (unit, factor) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if bytes >= factor && bytes.is_multiple_of(factor) {
                return format!("{} {unit}", bytes / factor);
            }
        }
        format!("{bytes} B")
    }

    fn refused(got: impl fmt::Display) -> String {
        format!("expected {}, got {got}", super::SIZE)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        struct Size;
        impl Visitor<'_> for Size {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(super::SIZE)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom(refused(v)))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom(refused(v)))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom(refused(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
                Err(E::custom(refused(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<u64, E> {
                Err(E::custom(refused(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse(v).ok_or_else(|| E::custom(refused(format_args!("{v:?}"))))
            }
        }
        deserializer.deserialize_any(Size)
    }
}

/// The user that ClickHouse, and [`Settings::default`], log in as.
const DEFAULT_USER: &str = "default";

/// A credential given as `setting` (with its default) or in the URL (empty if not), from the one
/// place that gives it; see [`Settings::clickhouse_endpoint`].
fn from_one_place(
    (setting, value, default): (&str, &str, &str),
    in_url: String,
) -> Result<String, ConfigError> {
    let (chosen, from) = if in_url.is_empty() || in_url == value {
        (value.to_string(), setting)
    } else if value == default {
        (in_url, "clickhouse_url")
    } else {
        return Err(ConfigError::new(
            setting,
            "is set, and HOOKHOUSE_CLICKHOUSE_URL carries a different one: give it in one place",
        ));
    };
    // The client sends credentials as HTTP headers; a byte a header cannot carry would fail
    // every request, and the writer would take that for rows ClickHouse refuses.
    if !chosen.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let what = setting.trim_start_matches("clickhouse_");
        return Err(ConfigError::new(
            from,
            format!("the {what} must be printable ASCII: it is sent in an HTTP header"),
        ));
    }
    Ok(chosen)
}

/// Where and as whom to reach ClickHouse; see [`Settings::clickhouse_endpoint`].
#[derive(Clone)]
pub struct ClickhouseEndpoint {
    /// Scheme, host, port and path: no credentials, query or fragment, no trailing slash.
    pub url: String,
    pub user: String,
    pub password: String,
}

impl fmt::Debug for ClickhouseEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickhouseEndpoint")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &Redacted(&self.password))
            .finish()
    }
}

/// `raw` with its credentials hidden, whether it parses as a URL or not: `user:password@`
/// becomes `***@` and a query becomes `?***` (ClickHouse reads `?password=` too).
pub fn redact_url(raw: &str) -> String {
    split_urls(raw)
        .into_iter()
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// `raw` cut into the URLs of a comma-separated list. A comma starts a new URL only where a
/// scheme (`letters://`) follows it, so a comma inside a password does not cut it in two
/// (which would show part of it when the list is printed redacted).
fn split_urls(raw: &str) -> Vec<&str> {
    let mut urls = Vec::new();
    let mut start = 0;
    for (i, _) in raw.match_indices(',') {
        let next = raw[i + 1..].trim_start();
        let scheme_len = next
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(next.len());
        let starts_url = next[scheme_len..].starts_with("://") && scheme_len > 0;
        let empty = next.is_empty() || next.starts_with(',');
        if starts_url || empty {
            urls.push(&raw[start..i]);
            start = i + 1;
        }
    }
    urls.push(&raw[start..]);
    urls
}

fn redact_one_url(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let (scheme, rest) = raw.split_at(start);
    // A password may hold an unencoded '/', '?' or '#', so the last '@' ends the credentials
    // wherever it is; cutting too much only hides a little of a path.
    let rest = match rest.rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    let rest = match rest.find(['?', '#']) {
        Some(query) => format!("{}?***", &rest[..query]),
        None => rest,
    };
    format!("{scheme}{rest}")
}

/// Prints `<redacted>` for a non-empty secret, `""` for an empty one (so that "no password" is
/// still visible when debugging a login).
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so that a new setting cannot be left out of `Debug` unnoticed.
        let Settings {
            listen,
            clickhouse_url,
            clickhouse_user,
            clickhouse_password,
            clickhouse_ca_file,
            clickhouse_database,
            clickhouse_cluster,
            data_dir,
            secrets_key_file,
            max_body_bytes,
            wal_max_bytes,
            wal_segment_bytes,
            fsync,
            batch_max_rows,
            batch_max_wait_ms,
            batch_max_bytes,
            rate_limit_per_key,
            body_timeout_secs,
            shutdown_grace_secs,
            credentials_refresh_ms,
            max_connections,
            max_inflight_requests,
            max_inflight_bytes,
            clickhouse_insert_timeout_secs,
            log_format,
            tls_cert_file,
            tls_key_file,
            public_url,
            notify_backoff_scale,
            notify_max_pending,
        } = self;
        f.debug_struct("Settings")
            .field("listen", listen)
            .field("clickhouse_url", &redact_url(clickhouse_url))
            .field("clickhouse_user", clickhouse_user)
            .field("clickhouse_password", &Redacted(clickhouse_password))
            .field("clickhouse_ca_file", clickhouse_ca_file)
            .field("clickhouse_database", clickhouse_database)
            .field("clickhouse_cluster", clickhouse_cluster)
            .field("data_dir", data_dir)
            .field("secrets_key_file", secrets_key_file)
            .field("max_body_bytes", max_body_bytes)
            .field("wal_max_bytes", wal_max_bytes)
            .field("wal_segment_bytes", wal_segment_bytes)
            .field("fsync", fsync)
            .field("batch_max_rows", batch_max_rows)
            .field("batch_max_wait_ms", batch_max_wait_ms)
            .field("batch_max_bytes", batch_max_bytes)
            .field("rate_limit_per_key", rate_limit_per_key)
            .field("body_timeout_secs", body_timeout_secs)
            .field("shutdown_grace_secs", shutdown_grace_secs)
            .field("credentials_refresh_ms", credentials_refresh_ms)
            .field("max_connections", max_connections)
            .field("max_inflight_requests", max_inflight_requests)
            .field("max_inflight_bytes", max_inflight_bytes)
            .field(
                "clickhouse_insert_timeout_secs",
                clickhouse_insert_timeout_secs,
            )
            .field("log_format", log_format)
            .field("tls_cert_file", tls_cert_file)
            .field("tls_key_file", tls_key_file)
            .field("public_url", &public_url.as_deref().map(redact_url))
            .field("notify_backoff_scale", notify_backoff_scale)
            .field("notify_max_pending", notify_max_pending)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut figment =
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml));
        // Env providers read the process environment; build the same layering from a map so
        // tests stay independent of each other.
        for (name, value) in env {
            let key = name.trim_start_matches("HOOKHOUSE_").to_lowercase();
            let value = if TEXT_FIELDS.contains(&key.as_str()) {
                (*value).into()
            } else {
                parse_like_env(value)
            };
            figment = figment.merge(figment::providers::Serialized::default(&key, value));
        }
        Settings::from_figment(figment)
    }

    fn parse_like_env(value: &str) -> figment::value::Value {
        value
            .parse::<figment::value::Value>()
            .unwrap_or_else(|_| value.into())
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = load("", &[]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.clickhouse_url, "http://127.0.0.1:8123");
        assert_eq!(
            (s.clickhouse_user.as_str(), s.clickhouse_password.as_str()),
            ("default", "")
        );
        assert_eq!(s.clickhouse_database, "hookhouse");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.max_body_bytes, 10_485_760);
        assert_eq!(s.wal_max_bytes, 8_589_934_592);
        assert_eq!(s.fsync, FsyncMode::Always);
        assert_eq!((s.batch_max_rows, s.batch_max_wait_ms), (50_000, 1000));
        assert_eq!(s.rate_limit_per_key, 1000);
        assert_eq!((s.body_timeout_secs, s.shutdown_grace_secs), (30, 20));
    }

    #[test]
    fn file_then_env_override() {
        let s = load(
            "batch_max_rows = 10\nfsync = \"interval\"\n",
            &[("HOOKHOUSE_BATCH_MAX_ROWS", "20")],
        )
        .unwrap();
        assert_eq!(s.batch_max_rows, 20);
        assert_eq!(s.fsync, FsyncMode::Interval);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            (
                load("", &[("HOOKHOUSE_MAX_BODY_BYTES", "lots")]),
                "HOOKHOUSE_MAX_BODY_BYTES",
            ),
            (
                load("", &[("HOOKHOUSE_FSYNC", "sometimes")]),
                "HOOKHOUSE_FSYNC",
            ),
            (
                load("", &[("HOOKHOUSE_LISTEN", "nowhere")]),
                "HOOKHOUSE_LISTEN",
            ),
            (
                load("", &[("HOOKHOUSE_BATCH_MAX_ROWS", "0")]),
                "HOOKHOUSE_BATCH_MAX_ROWS",
            ),
            (
                load("", &[("HOOKHOUSE_CLICKHOUSE_DATABASE", "x; DROP")]),
                "HOOKHOUSE_CLICKHOUSE_DATABASE",
            ),
            (
                load("", &[("HOOKHOUSE_CLICKHOUSE_URL", "localhost:8123")]),
                "HOOKHOUSE_CLICKHOUSE_URL",
            ),
            (load("batch_max_rowz = 1", &[]), "batch_max_rowz"),
        ];
        for (result, setting) in cases {
            let error = result.unwrap_err();
            assert_eq!(error.setting, setting, "{error}");
            assert_eq!(error.to_string().lines().count(), 1, "{error}");
        }
    }

    fn error_of(result: Result<Settings, ConfigError>) -> ConfigError {
        let error = result.expect_err("refused");
        assert_eq!(error.to_string().lines().count(), 1, "{error}");
        error
    }

    #[test]
    fn clickhouse_url_must_be_http_or_https_with_a_host() {
        for url in [
            "ftp://ch.example:21",
            "ftp://hook:SECRETPW@ch.example",
            "localhost:8123",
            "hook:SECRETPW@localhost:8123",
            "http://",
            "https://:8443",
            "https://hook:SECRETPW@",
            "http://127.0.0.1:8123/?password=SECRETPW",
            "",
        ] {
            let error = error_of(load("", &[("HOOKHOUSE_CLICKHOUSE_URL", url)]));
            assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_URL", "{url}: {error}");
            assert!(!error.to_string().contains("SECRETPW"), "{error}");
        }
        let error = error_of(load(
            "",
            &[("HOOKHOUSE_CLICKHOUSE_URL", "ftp://ch.example")],
        ));
        assert!(
            error.message.contains("not an http:// or https:// URL"),
            "{error}"
        );
        for url in [
            "http://127.0.0.1:8123",
            "https://ch.example:8443/",
            "https://[::1]:8443/proxy/",
        ] {
            load("", &[("HOOKHOUSE_CLICKHOUSE_URL", url)]).expect(url);
        }
    }

    #[test]
    fn credentials_in_the_url_move_out_of_it() {
        let s = load(
            "",
            &[(
                "HOOKHOUSE_CLICKHOUSE_URL",
                "https://hook:SECRET%40PW%2F1@ch.example:8443/",
            )],
        )
        .unwrap();
        let endpoint = s.clickhouse_endpoint().unwrap();
        assert_eq!(endpoint.url, "https://ch.example:8443");
        assert_eq!(endpoint.user, "hook");
        assert_eq!(endpoint.password, "SECRET@PW/1");
        // Without credentials in the URL, the settings are used as they are.
        let plain = load(
            "clickhouse_user = \"hook\"\nclickhouse_password = \"SECRETPW\"",
            &[("HOOKHOUSE_CLICKHOUSE_URL", "http://127.0.0.1:8123/")],
        )
        .unwrap()
        .clickhouse_endpoint()
        .unwrap();
        assert_eq!(
            (
                plain.url.as_str(),
                plain.user.as_str(),
                plain.password.as_str()
            ),
            ("http://127.0.0.1:8123", "hook", "SECRETPW")
        );
        // A user in the URL and the password apart (kept out of shell history) is fine.
        let split = load(
            "",
            &[
                ("HOOKHOUSE_CLICKHOUSE_URL", "https://hook@ch.example"),
                ("HOOKHOUSE_CLICKHOUSE_PASSWORD", "SECRETPW"),
            ],
        )
        .unwrap()
        .clickhouse_endpoint()
        .unwrap();
        assert_eq!(
            (split.user.as_str(), split.password.as_str()),
            ("hook", "SECRETPW")
        );
    }

    #[test]
    fn a_credential_given_twice_must_agree() {
        let url = (
            "HOOKHOUSE_CLICKHOUSE_URL",
            "https://hook:SECRETPW@ch.example",
        );
        let error = error_of(load("", &[url, ("HOOKHOUSE_CLICKHOUSE_USER", "other")]));
        assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_USER");
        let error = error_of(load(
            "",
            &[url, ("HOOKHOUSE_CLICKHOUSE_PASSWORD", "OTHERPW")],
        ));
        assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_PASSWORD");
        assert!(!error.to_string().contains("PW"), "{error}");
        let same = load(
            "",
            &[
                url,
                ("HOOKHOUSE_CLICKHOUSE_USER", "hook"),
                ("HOOKHOUSE_CLICKHOUSE_PASSWORD", "SECRETPW"),
            ],
        );
        assert_eq!(same.unwrap().clickhouse_endpoint().unwrap().user, "hook");
    }

    #[test]
    fn credentials_must_fit_in_a_header() {
        let error = error_of(load(
            "",
            &[("HOOKHOUSE_CLICKHOUSE_PASSWORD", "SECRET\u{e9}PW")],
        ));
        assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_PASSWORD");
        assert!(!error.to_string().contains("SECRET"), "{error}");
        let error = error_of(load(
            "",
            &[(
                "HOOKHOUSE_CLICKHOUSE_URL",
                "https://hook:SECRET%0APW@ch.example",
            )],
        ));
        assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_URL");
        assert!(!error.to_string().contains("SECRET"), "{error}");
    }

    #[test]
    fn a_password_never_shows() {
        // In the file, digits only are a number, and figment's "not a string" quotes it.
        let error = error_of(load("clickhouse_password = 987654321", &[]));
        assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_PASSWORD");
        assert!(!error.to_string().contains("987654321"), "{error}");

        let s = load(
            "",
            &[
                ("HOOKHOUSE_CLICKHOUSE_URL", "https://hook@ch.example:8443"),
                ("HOOKHOUSE_CLICKHOUSE_PASSWORD", "SECRETPW"),
            ],
        )
        .unwrap();
        let shown = format!("{s:?} {:?}", s.clickhouse_endpoint().unwrap());
        assert!(!shown.contains("SECRETPW"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let s = Settings {
            clickhouse_url: "https://hook:SECRETPW@ch.example:8443".into(),
            ..Settings::default()
        };
        let shown = format!("{s:?} {s:#?} {:?}", s.clickhouse_endpoint().unwrap());
        assert!(!shown.contains("SECRETPW"), "{shown}");
        assert!(shown.contains("https://***@ch.example:8443"), "{shown}");
    }

    #[test]
    fn several_clickhouse_nodes_are_each_checked_and_kept_in_order() {
        let s = load(
            "",
            &[(
                "HOOKHOUSE_CLICKHOUSE_URL",
                "http://ch1:8123, https://u:p,w@ch2:8443/",
            )],
        )
        .expect("two nodes");
        let endpoints = s.clickhouse_endpoints().expect("valid");
        let urls: Vec<&str> = endpoints.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(urls, ["http://ch1:8123", "https://ch2:8443"]);
        assert_eq!(endpoints[1].user, "u");
        assert_eq!(endpoints[1].password, "p,w");
        assert_eq!(
            redact_url(&s.clickhouse_url),
            "http://ch1:8123, https://***@ch2:8443/"
        );
        for (url, says) in [
            (
                "http://ch1:8123,ftp://ch2",
                "\"ftp://ch2\" is not an http:// or https:// URL",
            ),
            (
                "http://ch1:8123,,http://ch2",
                "has an empty URL in its list",
            ),
            ("http://ch1:8123,", "has an empty URL in its list"),
            ("http://ch1:8123,http://u:SECRET@", "\"http://***@\" "),
        ] {
            let error = error_of(load("", &[("HOOKHOUSE_CLICKHOUSE_URL", url)]));
            assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_URL");
            assert!(error.message.contains(says), "{url}: {error}");
            assert!(!error.to_string().contains("SECRET"), "{error}");
        }
    }

    #[test]
    fn the_cluster_is_a_plain_identifier() {
        let s = load("", &[("HOOKHOUSE_CLICKHOUSE_CLUSTER", "prod_1")]).expect("valid");
        assert_eq!(s.clickhouse_cluster.as_deref(), Some("prod_1"));
        for bad in ["", "1st", "a-b", "a b", "x`; DROP"] {
            let error = error_of(load("", &[("HOOKHOUSE_CLICKHOUSE_CLUSTER", bad)]));
            assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_CLUSTER", "{bad}");
        }
    }

    #[test]
    fn redacts_urls_whether_they_parse_or_not() {
        assert_eq!(
            redact_url("https://u:p@ch.example:8443/x"),
            "https://***@ch.example:8443/x"
        );
        assert_eq!(redact_url("https://u:p/w@ch"), "https://***@ch");
        assert_eq!(redact_url("u:p@ch:8123"), "***@ch:8123");
        assert_eq!(
            redact_url("http://ch:8123/?password=p"),
            "http://ch:8123/?***"
        );
        assert_eq!(redact_url("http://127.0.0.1:8123"), "http://127.0.0.1:8123");
    }

    #[test]
    fn a_bad_ca_file_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for path in [not_pem.to_str().unwrap(), missing.to_str().unwrap(), ""] {
            let error = error_of(load("", &[("HOOKHOUSE_CLICKHOUSE_CA_FILE", path)]));
            assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_CA_FILE", "{error}");
        }
        let error = error_of(load(
            &format!("clickhouse_ca_file = {:?}", missing.to_str().unwrap()),
            &[],
        ));
        assert_eq!(error.setting, "HOOKHOUSE_CLICKHOUSE_CA_FILE", "{error}");
        assert!(error.message.contains("missing.pem"), "{error}");
        assert_eq!(load("", &[]).unwrap().clickhouse_ca_file, None);
    }

    #[test]
    fn errors_say_what_is_expected_in_plain_words() {
        let cases = [
            (
                load("", &[("HOOKHOUSE_MAX_BODY_BYTES", "abc")]),
                "bad setting HOOKHOUSE_MAX_BODY_BYTES: expected a size such as 10485760 or 10MiB, got \"abc\"",
            ),
            (
                load("", &[("HOOKHOUSE_LISTEN", "8081")]),
                "bad setting HOOKHOUSE_LISTEN: expected an address such as 127.0.0.1:8080, got \"8081\" (port 8081 on every interface is 0.0.0.0:8081)",
            ),
            (
                load("", &[("HOOKHOUSE_FSYNC", "sometimes")]),
                "bad setting HOOKHOUSE_FSYNC: expected `always` or `interval`, got \"sometimes\"",
            ),
            (
                load("", &[("HOOKHOUSE_BATCH_MAX_ROWS", "many")]),
                "bad setting HOOKHOUSE_BATCH_MAX_ROWS: expected a whole number such as 1000, got \"many\"",
            ),
            (
                load("", &[("HOOKHOUSE_WAL_MAX_BYTES", "10M")]),
                "bad setting HOOKHOUSE_WAL_MAX_BYTES: expected a size such as 10485760 or 10MiB, got \"10M\"",
            ),
            (
                load("", &[("HOOKHOUSE_BATCH_MAX_BYTES", "-1")]),
                "bad setting HOOKHOUSE_BATCH_MAX_BYTES: expected a size such as 10485760 or 10MiB, got -1",
            ),
            (
                load("listen = 8081", &[]),
                "bad setting HOOKHOUSE_LISTEN: expected an address such as 127.0.0.1:8080, got 8081",
            ),
        ];
        for (result, expected) in cases {
            let error = error_of(result).to_string();
            assert!(error.starts_with(expected), "{error}\nexpected: {expected}");
        }
        let error = error_of(load("batch_max_rowz = 1", &[]));
        assert!(
            error.message.contains("did you mean `batch_max_rows`?"),
            "{error}"
        );
    }

    #[test]
    fn sizes_take_units() {
        let s = load(
            "wal_max_bytes = \"8GiB\"\nwal_segment_bytes = 1048576\n",
            &[
                ("HOOKHOUSE_MAX_BODY_BYTES", "512KiB"),
                ("HOOKHOUSE_BATCH_MAX_BYTES", "10MB"),
                ("HOOKHOUSE_MAX_INFLIGHT_BYTES", "1 gib"),
            ],
        )
        .unwrap();
        assert_eq!(s.wal_max_bytes, 8 << 30);
        assert_eq!(s.wal_segment_bytes, 1 << 20);
        assert_eq!(s.max_body_bytes, 512 << 10);
        assert_eq!(s.batch_max_bytes, 10_000_000);
        assert_eq!(s.max_inflight_bytes, 1 << 30);
        assert_eq!(size::parse("10485760"), Some(10_485_760));
        assert_eq!(size::parse("10MiB"), Some(10 << 20));
        assert_eq!(size::parse("99999999999TiB"), None);
        assert_eq!(size::parse("1.5GiB"), None);
        assert_eq!(size::show(10 << 20), "10 MiB");
        assert_eq!(size::show(1000), "1000 B");
    }

    #[test]
    fn misspelt_names_get_a_suggestion() {
        assert_eq!(closest_name("listn"), Some("listen"));
        assert_eq!(closest_name("fsyn"), Some("fsync"));
        assert_eq!(closest_name("max_body_byte"), Some("max_body_bytes"));
        assert_eq!(closest_name("crash_cycles"), None);
    }

    #[test]
    fn the_public_url_is_given_or_derived() {
        let s = load("", &[]).unwrap();
        assert_eq!(s.public_base_url().unwrap(), "http://127.0.0.1:8080");
        let s = load("", &[("HOOKHOUSE_LISTEN", "0.0.0.0:9000")]).unwrap();
        assert_eq!(s.public_base_url().unwrap(), "http://127.0.0.1:9000");
        let s = load(
            "",
            &[("HOOKHOUSE_PUBLIC_URL", "https://hooks.example.com/")],
        )
        .unwrap();
        assert_eq!(s.public_base_url().unwrap(), "https://hooks.example.com");
        for bad in ["hooks.example.com", "ftp://x", "https://h.example/?a=1"] {
            let error = error_of(load("", &[("HOOKHOUSE_PUBLIC_URL", bad)]));
            assert_eq!(error.setting, "HOOKHOUSE_PUBLIC_URL", "{error}");
        }
    }

    #[test]
    fn help_lists_every_setting_with_its_default() {
        let help = Settings::help();
        for f in FIELDS {
            assert!(
                help.contains(&format!("HOOKHOUSE_{} [default:", f.name.to_uppercase())),
                "{help}"
            );
        }
        assert!(
            help.contains("HOOKHOUSE_MAX_BODY_BYTES [default: 10485760 (10 MiB)]"),
            "{help}"
        );
        assert!(help.contains("HOOKHOUSE_FSYNC [default: always]"), "{help}");
        assert!(
            help.contains("HOOKHOUSE_PUBLIC_URL [default: unset]"),
            "{help}"
        );
        // Every field of Settings is in FIELDS, and nothing else.
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let mut names: Vec<&str> = defaults
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = field_names();
        names.sort();
        fields.sort();
        assert_eq!(names, fields);
    }
}
