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
    /// PEM certificate chain for HTTPS on `listen` (CONTRACT §11); set with `tls_key_file` or not
    /// at all (see [`crate::http::tls`]).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`'s certificate.
    pub tls_key_file: Option<PathBuf>,
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
            tls_cert_file: None,
            tls_key_file: None,
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
    "clickhouse_ca_file",
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
    "tls_cert_file",
    "tls_key_file",
];

/// The settings that are text (or paths): any value is theirs, whatever it looks like.
const TEXT_FIELDS: &[&str] = &[
    "listen",
    "clickhouse_url",
    "clickhouse_user",
    "clickhouse_password",
    "clickhouse_ca_file",
    "clickhouse_database",
    "data_dir",
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
        figment = figment.merge(Env::prefixed("HOOKHOUSE_").only(FIELDS).ignore(TEXT_FIELDS));
        // figment reads `123` or `true` in a variable as a number or a boolean, which a text
        // setting then refuses: a password of digits only could not be set. Taken as they are.
        for (name, value) in Env::prefixed("HOOKHOUSE_").only(TEXT_FIELDS).iter() {
            figment = figment.merge(Serialized::default(name.as_str(), value));
        }
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
                // figment's message quotes the value, and these may hold a password (one of
                // digits only is read as a number and refused as "not a string").
                _ if matches!(name.as_str(), "clickhouse_password" | "clickhouse_url") => {
                    ConfigError::new(&name, "must be a string (its value is not shown)")
                }
                _ => ConfigError::new(&name, message),
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.clickhouse_endpoint()?;
        if let Some(path) = &self.clickhouse_ca_file {
            crate::clickhouse::http_client::read_ca_file(path)
                .map_err(|message| ConfigError::new("clickhouse_ca_file", message))?;
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
    pub fn clickhouse_endpoint(&self) -> Result<ClickhouseEndpoint, ConfigError> {
        let bad_url = |message: String| ConfigError::new("clickhouse_url", message);
        let shown = redact_url(&self.clickhouse_url);
        let mut url = url::Url::parse(&self.clickhouse_url)
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
            data_dir,
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
        } = self;
        f.debug_struct("Settings")
            .field("listen", listen)
            .field("clickhouse_url", &redact_url(clickhouse_url))
            .field("clickhouse_user", clickhouse_user)
            .field("clickhouse_password", &Redacted(clickhouse_password))
            .field("clickhouse_ca_file", clickhouse_ca_file)
            .field("clickhouse_database", clickhouse_database)
            .field("data_dir", data_dir)
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
}
