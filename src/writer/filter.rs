//! Step 4: name each request's event and delivery (CONTRACT §8), and keep only the event types
//! its pipeline keeps. A request of another type lands in `rejected` as `EVENT_FILTERED`: it
//! was answered 200 like any other, and nothing acknowledged is dropped silently.
//!
//! Every row is named, rejected ones too, so that `rejected` tells what each request was.

use crate::clickhouse::rows::Landing;
use crate::credentials::{CredentialCache, Reason, Signing};
use crate::ingest::Headers;
use crate::signing;

/// `headers` are the rows' headers as [`super::verify::verify_signatures`] read them (`None`
/// where the pipeline does not verify, or for rows beyond them).
pub fn name_and_filter(
    view: &CredentialCache,
    rows: &mut [Landing<'_>],
    headers: &[Option<Headers>],
) {
    for (i, row) in rows.iter_mut().enumerate() {
        let Some(pipeline) = view.pipeline(row.pipeline_id) else {
            continue;
        };
        let scheme = match &pipeline.signing {
            Signing::On(verification) => Some(&verification.scheme),
            Signing::Off | Signing::Unreadable(_) => None,
        };
        if let Some(scheme) = scheme {
            let read;
            let headers = match headers.get(i) {
                Some(Some(headers)) => headers,
                _ => {
                    read = Headers::from_json(row.headers).unwrap_or_default();
                    &read
                }
            };
            let described = signing::describe(Some(scheme), headers, &row.body);
            row.event_type = described.event_type;
            row.delivery_id = described.delivery_id;
        }
        if row.reason.is_none() && !pipeline.filter.matches(&row.event_type) {
            row.reason = Some(Reason::EventFiltered.as_str());
        }
    }
}
