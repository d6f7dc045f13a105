//! Which event types a pipeline keeps (`hookhouse pipeline events`, CONTRACT §8).
//!
//! Patterns are globs with one wildcard, `*`, matching any run of characters (dots included), so
//! `linkedin.message.*` keeps every message event. Matching runs for every delivery, on patterns
//! an operator typed and event types a sender chose, so it is the classic two-pointer algorithm:
//! it backtracks only to the last `*`, which bounds the work by the product of the two lengths
//! (a few thousand steps at the limits below) instead of the exponential blow-up of naive
//! recursion on patterns like `*a*a*a*b`.

use std::fmt;

/// At most this many patterns per pipeline.
pub const MAX_PATTERNS: usize = 100;
/// At most this many bytes per pattern.
pub const MAX_PATTERN_LEN: usize = 200;

/// A pipeline's event filter: a delivery is kept when any pattern matches its event type.
#[derive(Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// Canonical: `["*"]` when everything is kept, else the patterns in the order given, once each.
    patterns: Vec<String>,
}

/// Why a list of patterns was refused; each message names the offending pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("an event pattern is empty; use * to keep every event")]
    Empty,
    #[error("the event pattern {0:?} contains whitespace or a control character")]
    BadCharacter(String),
    #[error(
        "the event pattern {pattern:?}… is {len} bytes long; at most {MAX_PATTERN_LEN} are allowed"
    )]
    TooLong { pattern: String, len: usize },
    #[error("{0} event patterns were given; at most {MAX_PATTERNS} are allowed")]
    TooMany(usize),
}

impl EventFilter {
    /// From the operator's patterns. An empty list, or one that contains `*`, keeps everything.
    pub fn parse(patterns: &[String]) -> Result<EventFilter, FilterError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(FilterError::TooMany(patterns.len()));
        }
        let mut kept: Vec<String> = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            check(pattern)?;
            if !kept.contains(pattern) {
                kept.push(pattern.clone());
            }
        }
        if kept.is_empty() || kept.iter().any(|p| p == "*") {
            return Ok(EventFilter::everything());
        }
        Ok(EventFilter { patterns: kept })
    }

    pub fn everything() -> EventFilter {
        EventFilter {
            patterns: vec!["*".to_owned()],
        }
    }

    pub fn is_everything(&self) -> bool {
        self.patterns == ["*"]
    }

    /// Whether `event_type` is kept. Case-sensitive; only `*` is special.
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| glob_matches(pattern.as_bytes(), event_type.as_bytes()))
    }

    /// The patterns as stored and shown: `["*"]` for everything.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl Default for EventFilter {
    fn default() -> EventFilter {
        EventFilter::everything()
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EventFilter").field(&self.patterns).finish()
    }
}

fn check(pattern: &str) -> Result<(), FilterError> {
    if pattern.is_empty() {
        return Err(FilterError::Empty);
    }
    if pattern.len() > MAX_PATTERN_LEN {
        let mut end = 40;
        while !pattern.is_char_boundary(end) {
            end -= 1;
        }
        return Err(FilterError::TooLong {
            pattern: pattern[..end].to_owned(),
            len: pattern.len(),
        });
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FilterError::BadCharacter(pattern.to_owned()));
    }
    Ok(())
}

/// Glob matching with `*` only, on bytes: a literal in the pattern is whole UTF-8 characters, so
/// matching bytes is matching characters.
///
/// On a mismatch, the last `*` seen absorbs one more byte of the text and matching resumes after
/// it; an earlier star never needs revisiting, because whatever it could absorb the later star
/// can absorb too.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The position just after the last star, and the text position it was tried at.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                resume = Some((p, t));
            }
            Some(&literal) if literal == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match resume {
                Some((after_star, tried)) => {
                    p = after_star;
                    t = tried + 1;
                    resume = Some((after_star, t));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    fn filter(patterns: &[&str]) -> EventFilter {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        EventFilter::parse(&patterns).expect("valid patterns")
    }

    /// Dynamic programming over every (pattern prefix, text prefix) pair: obviously right, slow.
    fn reference(pattern: &[u8], text: &[u8]) -> bool {
        let mut table = vec![vec![false; text.len() + 1]; pattern.len() + 1];
        table[0][0] = true;
        for p in 1..=pattern.len() {
            for t in 0..=text.len() {
                table[p][t] = if pattern[p - 1] == b'*' {
                    table[p - 1][t] || (t > 0 && table[p][t - 1])
                } else {
                    t > 0 && pattern[p - 1] == text[t - 1] && table[p - 1][t - 1]
                };
            }
        }
        table[pattern.len()][text.len()]
    }

    #[test]
    fn kakiyo_style_patterns() {
        let messages = filter(&["linkedin.message.*"]);
        assert!(messages.matches("linkedin.message.received"));
        assert!(messages.matches("linkedin.message.sent"));
        assert!(messages.matches("linkedin.message."));
        assert!(!messages.matches("linkedin.invitation.sent"));
        assert!(!messages.matches("linkedin.message"));
        assert!(!messages.matches("LinkedIn.message.sent"));
        let two = filter(&["prospect.unqualified", "linkedin.*.sent"]);
        assert!(two.matches("prospect.unqualified"));
        assert!(two.matches("linkedin.invitation.sent"));
        assert!(two.matches("linkedin.a.b.sent"));
        assert!(!two.matches("prospect.qualification.manual"));
        assert!(!two.matches(""));
    }

    #[test]
    fn stars() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "anything.at.all", true),
            ("**", "", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "a.x.b.y.c", true),
            ("a*b*c", "aXbXcX", false),
            ("a*b*c", "acb", false),
            ("*.sent", "linkedin.message.sent", true),
            ("*.sent", "sent", false),
            ("é*", "été", true),
            ("a", "", false),
            ("", "", true),
        ] {
            assert_eq!(
                glob_matches(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} {text}"
            );
            assert_eq!(
                reference(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} {text}"
            );
        }
    }

    #[test]
    fn pathological_patterns_finish_fast() {
        let text = "a".repeat(100_000);
        let started = Instant::now();
        for pattern in [
            "*a*a*a*a*a*b",
            "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
        ] {
            assert!(!filter(&[pattern]).matches(&text));
        }
        let long_pattern = format!("{}b", "*a".repeat(99));
        assert!(!filter(&[&long_pattern]).matches(&text[..10_000]));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn everything_is_the_default_and_canonical() {
        assert!(EventFilter::everything().matches(""));
        assert!(filter(&[]).is_everything());
        assert!(filter(&["*"]).is_everything());
        assert!(filter(&["a.*", "*"]).is_everything());
        assert_eq!(filter(&[]).patterns(), ["*"]);
        assert_eq!(filter(&["b", "a", "b"]).patterns(), ["b", "a"]);
        assert_eq!(EventFilter::default(), EventFilter::everything());
        assert!(!filter(&["a"]).is_everything());
    }

    #[test]
    fn bad_patterns_are_refused_by_name() {
        let parse = |patterns: Vec<String>| EventFilter::parse(&patterns);
        assert_eq!(parse(vec!["a".into(), "".into()]), Err(FilterError::Empty));
        for bad in ["a b", "a\tb", "a\nb", "a\u{7f}", "\u{a0}x", " "] {
            assert_eq!(
                parse(vec![bad.into()]),
                Err(FilterError::BadCharacter(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(vec!["x".repeat(MAX_PATTERN_LEN)]).map(|f| f.patterns().len()),
            Ok(1)
        );
        let too_long = "é".repeat(MAX_PATTERN_LEN);
        let error = parse(vec![too_long]).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the event pattern {:?}… is 400 bytes long; at most 200 are allowed",
                "é".repeat(20)
            )
        );
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("e{i}")).collect();
        assert_eq!(
            parse(many[..MAX_PATTERNS].to_vec()).map(|f| f.patterns().len()),
            Ok(MAX_PATTERNS)
        );
        assert_eq!(parse(many), Err(FilterError::TooMany(MAX_PATTERNS + 1)));
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(pattern in "[ab.*]{0,12}", text in "[ab.]{0,24}") {
            prop_assert_eq!(
                glob_matches(pattern.as_bytes(), text.as_bytes()),
                reference(pattern.as_bytes(), text.as_bytes())
            );
        }

        #[test]
        fn a_pattern_without_stars_matches_only_itself(pattern in "[a-c.]{1,8}", text in "[a-c.]{0,8}") {
            prop_assert_eq!(filter(&[&pattern]).matches(&text), pattern == text);
        }
    }
}
