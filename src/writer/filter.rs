//! Step 4: name each request's event and delivery (CONTRACT §8), and keep only the event types
//! its pipeline keeps. A request of another type lands in `rejected` as `EVENT_FILTERED`: it
//! was answered 200 like any other, and nothing acknowledged is dropped silently.
//!
//! Every row is named, rejected ones too, so that `rejected` tells what each request was.

use crate::clickhouse::rows::Landing;
use crate::credentials::{CredentialCache, Reason, Signing};
use crate::ingest::Headers;
use crate::signing;

/// `headers` are the rows' headers as [`super::verify::verify_signatures`] read them: there for
/// every row whose pipeline verifies signatures, the only rows that have a scheme to name
/// events by.
pub fn name_and_filter(
    view: &CredentialCache,
    rows: &mut [Landing<'_>],
    headers: &[Option<Headers>],
) {
    for (row, headers) in rows.iter_mut().zip(headers) {
        let Some(pipeline) = view.pipeline(row.pipeline_id) else {
            continue;
        };
        if let (Signing::On(verification), Some(headers)) = (&pipeline.signing, headers) {
            let described = signing::describe(Some(&verification.scheme), headers, &row.body);
            row.event_type = described.event_type;
            row.delivery_id = described.delivery_id;
        }
        if row.reason.is_none() && !pipeline.filter.matches(&row.event_type) {
            row.reason = Some(Reason::EventFiltered.as_str());
        }
    }
}
