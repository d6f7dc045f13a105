//! An error and its causes as one line, each cause said once.
//!
//! Libraries disagree on whether an error's text repeats its source: the clickhouse crate's
//! "network error: client error (Connect)" repeats hyper's "client error (Connect)" and hides
//! the cause below it, while `anyhow`'s `{:#}` prints every link and so says some things twice.
//! Walking the chain and skipping a cause whose text is already in the line gives every cause,
//! each once, whichever convention each link follows.

use std::error::Error;

/// `error`, then each cause not already said, joined by `": "`.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Link {
        text: &'static str,
        #[source]
        source: Option<Box<Link>>,
    }

    fn chain(texts: &[&'static str]) -> Link {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Link {
                    text,
                    source: source.map(Box::new),
                })
            })
            .expect("at least one link")
    }

    #[test]
    fn says_each_cause_once() {
        let error = chain(&[
            "ClickHouse at https://127.0.0.1:8443 (HOOKHOUSE_CLICKHOUSE_URL)",
            "network error: client error (Connect)",
            "network error: client error (Connect)",
            "client error (Connect)",
            "invalid peer certificate: UnknownIssuer",
        ]);
        assert_eq!(
            one_line(&error),
            "ClickHouse at https://127.0.0.1:8443 (HOOKHOUSE_CLICKHOUSE_URL): network error: \
             client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn keeps_a_chain_without_repeats() {
        let error = chain(&["cannot open the log", "permission denied"]);
        assert_eq!(one_line(&error), "cannot open the log: permission denied");
    }

    #[test]
    fn follows_anyhow_context() {
        let error = anyhow::Error::new(chain(&["outer: inner", "inner"])).context("doing it");
        assert_eq!(one_line(&*error), "doing it: outer: inner");
    }
}
