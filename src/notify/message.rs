//! What a notification says and how a subscription is written down: event types, bodies
//! (`{"type":…,"timestamp":…,"data":{…}}`), ids and secrets, and the checks `subscription
//! create` makes. Pure: no I/O.

use serde_json::json;

use crate::signing::Secret;

pub const DATA_LANDED: &str = "data.landed";
pub const REQUEST_REJECTED: &str = "request.rejected";
pub const PING: &str = "ping";
/// Every event type a subscription may name (`*` is all of them).
pub const EVENT_TYPES: [&str; 3] = [DATA_LANDED, REQUEST_REJECTED, PING];

/// A subscription's id: `sub_` and 32 hex digits.
pub fn new_subscription_id() -> String {
    format!("sub_{}", uuid::Uuid::new_v4().simple())
}

/// Whether `id` has the shape [`new_subscription_id`] gives (checked before it reaches SQL).
pub fn is_subscription_id(id: &str) -> bool {
    id.strip_prefix("sub_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A notification's `webhook-id`: `msg_` and 32 hex digits, drawn once and kept across retries.
pub fn new_webhook_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// The `webhook-id` of a notification about one request: the same however often the request is
/// told (a crash between telling and the writer's checkpoint), so receivers deduplicate it.
pub fn webhook_id_for(subscription_id: &str, request_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(subscription_id.as_bytes())
        .chain_update([0])
        .chain_update(request_id.as_bytes())
        .finalize();
    format!("msg_{}", &hex::encode(digest)[..32])
}

/// A new signing secret, `whsec_` + base64 of 32 random bytes, as Standard Webhooks libraries
/// take it (they decode what follows `whsec_` into the HMAC key).
pub fn new_secret() -> Secret {
    use rand::Rng;
    let mut key = [0u8; 32];
    rand::rng().fill(&mut key);
    let text = format!("whsec_{}", crate::signing::codec::base64_encode(&key));
    Secret::new(text.into_bytes())
}

/// Checks `--event` values: known types or `*`; none given means `*`.
pub fn event_types(given: &[String]) -> Result<Vec<String>, String> {
    if given.is_empty() {
        return Ok(vec!["*".into()]);
    }
    let mut types = Vec::new();
    for event in given {
        if event != "*" && !EVENT_TYPES.contains(&event.as_str()) {
            return Err(format!(
                "--event {event:?} is not an event type; use data.landed, request.rejected, ping or *"
            ));
        }
        if !types.contains(event) {
            types.push(event.clone());
        }
    }
    Ok(types)
}

/// Checks a receiver URL: `http://` or `https://`, with a host, at most 2,048 characters.
pub fn check_url(text: &str) -> Result<url::Url, String> {
    if text.len() > 2048 {
        return Err("--url is longer than 2048 characters".into());
    }
    let parsed = url::Url::parse(text).map_err(|error| format!("--url is not a URL: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "--url must start with http:// or https://, not {}://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("--url has no host".into());
    }
    Ok(parsed)
}

/// A receiver's URL as hookhouse shows it after `create`: scheme, host and port only. Paths
/// and queries often carry a credential (`hooks.slack.com/services/T…/B…/secret`).
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if parsed.path() == "/" && parsed.query().is_none() {
                "/"
            } else {
                "/…"
            };
            format!("{}://{host}{port}{rest}", parsed.scheme())
        }
        Err(_) => "<not a URL>".into(),
    }
}

/// Whether a subscription with `types` wants `event`.
pub fn wants(types: &[String], event: &str) -> bool {
    types.iter().any(|t| t == "*" || t == event)
}

/// Whether a subscription for `pipelines` (empty: all) covers `pipeline_id`.
pub fn covers(pipelines: &[u64], pipeline_id: u64) -> bool {
    pipelines.is_empty() || pipelines.contains(&pipeline_id)
}

/// RFC 3339 in UTC with milliseconds, as Standard Webhooks bodies carry their `timestamp`.
pub fn rfc3339(unix_millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Rows of one pipeline that reached `events`: how many, and the first and last of them (their
/// `__kdd_request_id` and `__kdd_request_unix_timestamp`, so that a consumer can select them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub count: u64,
    pub first_request_id: String,
    pub first_timestamp: f64,
    pub last_request_id: String,
    pub last_timestamp: f64,
}

impl Span {
    /// `later`, which landed after `self`, folded in.
    pub fn merge(&mut self, later: &Span) {
        self.count += later.count;
        self.last_request_id.clone_from(&later.last_request_id);
        self.last_timestamp = later.last_timestamp;
    }
}

/// The body of a `data.landed` notification.
pub fn data_landed(pipeline_id: u64, span: &Span, now_millis: i64) -> String {
    json!({
        "type": DATA_LANDED,
        "timestamp": rfc3339(now_millis),
        "data": {
            "pipeline_id": pipeline_id,
            "count": span.count,
            "first_request_id": span.first_request_id,
            "first_timestamp": span.first_timestamp,
            "last_request_id": span.last_request_id,
            "last_timestamp": span.last_timestamp,
        }
    })
    .to_string()
}

/// The body of a `request.rejected` notification: never the request's body or key.
pub fn request_rejected(
    pipeline_id: u64,
    request_id: &str,
    reason: &str,
    timestamp: f64,
    now_millis: i64,
) -> String {
    json!({
        "type": REQUEST_REJECTED,
        "timestamp": rfc3339(now_millis),
        "data": {
            "pipeline_id": pipeline_id,
            "request_id": request_id,
            "reason": reason,
            "timestamp": timestamp,
        }
    })
    .to_string()
}

/// The body of a `ping` (`subscription test`).
pub fn ping(subscription_id: &str, now_millis: i64) -> String {
    json!({
        "type": PING,
        "timestamp": rfc3339(now_millis),
        "data": { "subscription_id": subscription_id }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_have_their_shapes() {
        let id = new_subscription_id();
        assert!(is_subscription_id(&id), "{id}");
        assert!(!is_subscription_id("sub_x"));
        assert!(!is_subscription_id("sub_' OR 1=1 --0000000000000000000"));
        assert!(new_webhook_id().starts_with("msg_"));
        let told = webhook_id_for("sub_a", "rydjemeilmsqkqvjtfkc");
        assert_eq!(told, webhook_id_for("sub_a", "rydjemeilmsqkqvjtfkc"));
        assert_ne!(told, webhook_id_for("sub_b", "rydjemeilmsqkqvjtfkc"));
        assert_eq!(told.len(), new_webhook_id().len());
        let secret = new_secret();
        let text = std::str::from_utf8(secret.expose()).expect("text");
        assert!(text.starts_with("whsec_"), "shape");
        assert_ne!(new_secret().expose(), secret.expose());
    }

    #[test]
    fn event_types_and_urls_are_checked() {
        assert_eq!(event_types(&[]).expect("default"), vec!["*"]);
        assert_eq!(
            event_types(&["data.landed".into(), "data.landed".into()]).expect("known"),
            vec!["data.landed"]
        );
        let error = event_types(&["data.changed".into()]).unwrap_err();
        assert!(error.contains("data.changed"), "{error}");
        assert!(check_url("https://example.com/hooks?x=1").is_ok());
        assert!(check_url("ftp://example.com")
            .unwrap_err()
            .contains("ftp://"));
        assert!(check_url("not a url").is_err());
        assert_eq!(
            shown_url("https://u:p@hooks.slack.com/services/T1/B2/secret?x=1"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:9000/"),
            "http://127.0.0.1:9000/"
        );
        assert!(wants(&["*".into()], PING) && !wants(&[DATA_LANDED.into()], PING));
        assert!(covers(&[], 9) && covers(&[9], 9) && !covers(&[8], 9));
    }

    #[test]
    fn bodies_are_standard_webhooks_shaped() {
        let span = Span {
            count: 2,
            first_request_id: "a".into(),
            first_timestamp: 1.5,
            last_request_id: "b".into(),
            last_timestamp: 2.5,
        };
        let body: serde_json::Value =
            serde_json::from_str(&data_landed(7, &span, 1_700_000_000_123)).expect("json");
        assert_eq!(body["type"], "data.landed");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(body["data"]["count"], 2);
        assert_eq!(body["data"]["last_request_id"], "b");
        let rejected: serde_json::Value =
            serde_json::from_str(&request_rejected(7, "r", "WRONG_TOKEN", 1.0, 0)).expect("json");
        assert_eq!(rejected["data"]["reason"], "WRONG_TOKEN");
        assert!(rejected["data"].get("body").is_none());
    }
}
