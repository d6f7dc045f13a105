//! One attempt to deliver a notification: a signed POST, answered within 10 s (CONTRACT §9).
//!
//! reqwest on rustls (ring) with the operating system's roots, the TLS stack the rest of
//! hookhouse uses. Redirects are not followed (a receiver that moved says so with its new URL
//! in `subscription create`), and no error text carries the receiver's URL, which may hold a
//! credential in its path or query.

use std::time::{Duration, Instant, SystemTime};

use crate::signing::{sign_standard, Secret};

/// A delivery succeeds on a 2xx within this (CONTRACT §9).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a receiver's answer is kept for `subscription test`.
const ANSWER_BYTES: usize = 64 * 1024;

/// What a receiver said, or why it said nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `None` when there was no HTTP answer (refused, timed out, TLS failed).
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The receiver's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
    /// The start of the answer's body (for `subscription test`).
    pub body: String,
    pub took: Duration,
}

impl Answer {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// `410 Gone`: the receiver asks never to be called again.
    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
}

impl Sender {
    pub fn new() -> Result<Sender, String> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(crate::clickhouse::http_client::system_roots())
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!("hookhouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| error.without_url().to_string())?;
        Ok(Sender { client })
    }

    /// POSTs `body` to `url`, signed now with `secret` under `webhook_id`.
    pub async fn send(&self, url: &str, secret: &Secret, webhook_id: &str, body: &str) -> Answer {
        let started = Instant::now();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign_standard(secret, webhook_id, timestamp, body.as_bytes());
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned());
        let failed = |error: reqwest::Error, started: Instant| Answer {
            status: None,
            error: Some(describe(error)),
            retry_after: None,
            body: String::new(),
            took: started.elapsed(),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return failed(error, started),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        let mut body = Vec::new();
        let mut response = response;
        let mut error = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = ANSWER_BYTES.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= ANSWER_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(describe(e));
                    break;
                }
            }
        }
        let error = error.or_else(|| {
            (!(200..300).contains(&status)).then(|| format!("the receiver answered {status}"))
        });
        Answer {
            status: Some(status),
            error,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
            took: started.elapsed(),
        }
    }
}

/// One line without the URL.
fn describe(error: reqwest::Error) -> String {
    let timeout = error.is_timeout();
    let connect = error.is_connect();
    let line = crate::error_chain::one_line(&error.without_url());
    if timeout {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else if connect {
        format!("cannot connect: {line}")
    } else {
        line
    }
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3), from `now`.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past is now"
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }
}
