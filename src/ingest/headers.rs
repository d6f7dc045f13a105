//! A request's headers as hookhouse keeps them (CONTRACT §8): lowercase names, several values of
//! one name joined with `, ` (as HTTP allows), and never the headers that carry a sender's own
//! credentials to something else (`authorization`, `cookie`, `proxy-authorization`).
//!
//! The log stores them as a JSON object; the writer reads them back to check signatures and
//! to name events, and stores the same text in the `headers` column.

use std::collections::BTreeMap;

/// Headers dropped at the edge: they are credentials meant for a proxy or an application, and
/// hookhouse must not keep them.
pub const DROPPED: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// A request's headers, by lowercase name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// From the headers actix parsed. Values that are not UTF-8 are kept lossily: they are
    /// stored for people to read, and no scheme signs with such a header.
    pub fn from_http(map: &actix_web::http::header::HeaderMap) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in map {
            headers.push(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
        }
        headers
    }

    /// Adds one value; a second value of the same name is joined to the first with `, `.
    pub fn push(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        if DROPPED.contains(&name.as_str()) {
            return;
        }
        self.0
            .entry(name)
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }

    /// The value of `name`, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
        } else {
            self.0.get(name).map(String::as_str)
        }
    }

    /// The first of `names` that is present (`webhook-id`, else `svix-id`).
    pub fn first_of(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|name| self.get(name))
    }

    /// The JSON object stored in the log and the `headers` column.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a map of strings always serializes")
    }

    /// Back from [`Headers::to_json`]; `None` if the text is not such an object. The writer
    /// reads every signed record's headers, so the map is taken as it is when its names are
    /// already as [`Headers::push`] keeps them (they are, when hookhouse wrote them).
    pub fn from_json(text: &str) -> Option<Headers> {
        let map: BTreeMap<String, String> = serde_json::from_str(text).ok()?;
        let kept = |name: &String| {
            !name.bytes().any(|b| b.is_ascii_uppercase()) && !DROPPED.contains(&name.as_str())
        };
        if map.keys().all(kept) {
            return Some(Headers(map));
        }
        let mut headers = Headers::new();
        for (name, value) in &map {
            headers.push(name, value);
        }
        Some(headers)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_values_joined_and_credentials_dropped() {
        let mut headers = Headers::new();
        headers.push("X-GitHub-Event", "push");
        headers.push("Accept", "a");
        headers.push("accept", "b");
        headers.push("Authorization", "Bearer secret");
        headers.push("Cookie", "session=secret");
        headers.push("Proxy-Authorization", "Basic secret");
        assert_eq!(headers.get("x-github-event"), Some("push"));
        assert_eq!(headers.get("X-GITHUB-EVENT"), Some("push"));
        assert_eq!(headers.get("accept"), Some("a, b"));
        let json = headers.to_json();
        assert!(!json.contains("secret"), "{json}");
        assert_eq!(json, r#"{"accept":"a, b","x-github-event":"push"}"#);
        assert_eq!(Headers::from_json(&json), Some(headers));
        assert_eq!(Headers::from_json("[1]"), None);
        assert_eq!(Headers::from_json("{}"), Some(Headers::new()));
        // Written by something else: made as `push` makes them.
        let odd = Headers::from_json(r#"{"X-Event":"a","cookie":"secret"}"#).unwrap();
        assert_eq!(odd.get("x-event"), Some("a"));
        assert_eq!(odd.to_json(), r#"{"x-event":"a"}"#);
    }

    #[test]
    fn first_of_takes_the_first_present() {
        let mut headers = Headers::new();
        headers.push("svix-id", "msg_1");
        assert_eq!(headers.first_of(&["webhook-id", "svix-id"]), Some("msg_1"));
        headers.push("webhook-id", "msg_2");
        assert_eq!(headers.first_of(&["webhook-id", "svix-id"]), Some("msg_2"));
    }
}
