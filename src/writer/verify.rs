//! Step 3: signatures (CONTRACT §8). A request to a pipeline that verifies its sender's
//! signatures lands in `events` only if one of the pipeline's secrets signed it; otherwise it
//! goes to `rejected` as `INVALID_SIGNATURE`.
//!
//! The edge already answered 401 to what it could check; this step checks every record again,
//! because the edge may not have known the pipeline's settings yet (a gateway just started, a
//! pipeline set up a moment ago), and because what lands must never depend on the edge alone.
//! Time windows are measured from the moment the request was accepted, so this check agrees
//! with the edge's however late it runs (after an outage, or in `rejected replay`).

use crate::clickhouse::rows::Landing;
use crate::credentials::{CredentialCache, Reason, Signing};
use crate::ingest::Headers;
use crate::signing;

/// Marks the rows bound for `events` whose signature does not hold. Returns each row's
/// headers where its pipeline verifies signatures (read once, for the next step too).
pub fn verify_signatures(view: &CredentialCache, rows: &mut [Landing<'_>]) -> Vec<Option<Headers>> {
    let mut parsed = Vec::with_capacity(rows.len());
    for row in rows.iter_mut() {
        let signing = view.pipeline(row.pipeline_id).map(|p| &p.signing);
        let Some(Signing::On(verification)) = signing else {
            parsed.push(None);
            if row.reason.is_none() && matches!(signing, Some(Signing::Unreadable(_))) {
                row.reason = Some(Reason::InvalidSignature.as_str());
            }
            continue;
        };
        let headers = Headers::from_json(row.headers).unwrap_or_default();
        let holds = row.reason.is_some()
            || signing::verify(
                &verification.scheme,
                &verification.secrets,
                &headers,
                signed_bytes(row),
                row.accepted_at,
            )
            .is_ok();
        if !holds {
            row.reason = Some(Reason::InvalidSignature.as_str());
        }
        parsed.push(Some(headers));
    }
    parsed
}

/// The bytes the sender signed: the body as sent, which is the stored body unless the two
/// differ (a form-encoded delivery).
pub fn signed_bytes<'r>(row: &'r Landing<'_>) -> &'r [u8] {
    if row.body_as_sent.is_empty() {
        row.body.as_bytes()
    } else {
        row.body_as_sent.as_bytes()
    }
}
