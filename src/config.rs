//! Typed settings: built-in defaults, then an optional TOML file, then `HOOKHOUSE_*` variables,
//! each overriding the one before (CONTRACT §5). [`Settings::load`] either returns settings that
//! passed [`Settings::validate`] or one line naming the setting that is wrong.

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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: String,
    pub clickhouse_url: String,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
    pub clickhouse_database: String,
    pub data_dir: PathBuf,
    pub max_body_bytes: u64,
    pub wal_max_bytes: u64,
    /// Size at which the log starts a new segment file (beyond the contract).
    pub wal_segment_bytes: u64,
    pub fsync: FsyncMode,
    pub batch_max_rows: u64,
    pub batch_max_wait_ms: u64,
    /// The most body bytes one batch holds in memory (beyond the contract).
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
    pub max_inflight_bytes: u64,
    /// How long ClickHouse may take to acknowledge one batch insert (beyond the contract). An
    /// insert that outlives it is not sent again until ClickHouse says it has stopped.
    pub clickhouse_insert_timeout_secs: u64,
    pub log_format: LogFormat,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            listen: "127.0.0.1:8080".into(),
            clickhouse_url: "http://127.0.0.1:8123".into(),
            clickhouse_user: "default".into(),
            clickhouse_password: String::new(),
            clickhouse_database: "hookhouse".into(),
            data_dir: PathBuf::from("./data"),
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

const FIELDS: &[&str] = &[
    "listen",
    "clickhouse_url",
    "clickhouse_user",
    "clickhouse_password",
    "clickhouse_database",
    "data_dir",
    "max_body_bytes",
    "wal_max_bytes",
    "wal_segment_bytes",
    "fsync",
    "batch_max_rows",
    "batch_max_wait_ms",
    "batch_max_bytes",
    "rate_limit_per_key",
    "body_timeout_secs",
    "shutdown_grace_secs",
    "credentials_refresh_ms",
    "max_connections",
    "max_inflight_requests",
    "max_inflight_bytes",
    "clickhouse_insert_timeout_secs",
    "log_format",
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
        figment = figment.merge(Env::prefixed("HOOKHOUSE_").only(FIELDS));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract().map_err(|error| {
            let name = error
                .path
                .last()
                .cloned()
                .unwrap_or_else(|| "config".into());
            let mut message = error.kind.to_string();
            if let Some(source) = error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                message = format!("{message} (from {source})");
            }
            match error.kind {
                figment::error::Kind::UnknownField(ref field, _) => ConfigError {
                    setting: field.clone(),
                    message: format!("unknown setting `{field}` in the configuration file"),
                },
                _ => ConfigError::new(&name, message),
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let url = &self.clickhouse_url;
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.len() <= "http://".len()
        {
            return Err(ConfigError::new(
                "clickhouse_url",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        let db = &self.clickhouse_database;
        let plain_identifier = db
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && db.len() <= 64;
        if !plain_identifier {
            return Err(ConfigError::new(
                "clickhouse_database",
                format!(
                    "{db:?} must be letters, digits and underscores, not starting with a digit"
                ),
            ));
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
        if self.credentials_refresh_ms > 5000 {
            return Err(ConfigError::new(
                "credentials_refresh_ms",
                "must be at most 5000, so that a revocation takes effect within 10 s",
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:8080", self.listen),
            )
        })
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
            figment = figment.merge(figment::providers::Serialized::default(
                &key,
                parse_like_env(value),
            ));
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
}
