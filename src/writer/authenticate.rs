//! Step 2: sort each record of a batch into `events` or `rejected` (CONTRACT §3), against the
//! credential view, reloading the view first when the batch needs it.

use std::sync::Arc;
use std::time::Duration;

use super::retry::{Retry, Stopped};
use crate::clickhouse::rows::Landing;
use crate::clickhouse::Clickhouse;
use crate::credentials::{CredentialCache, SharedCredentials};
use crate::ingest::{stored_body, BodyForm};
use crate::wal::Record;

pub struct Authenticate {
    ch: Clickhouse,
    credentials: Arc<SharedCredentials>,
    refresh: Duration,
}

impl Authenticate {
    pub fn new(ch: Clickhouse, credentials: Arc<SharedCredentials>, refresh: Duration) -> Self {
        Authenticate {
            ch,
            credentials,
            refresh,
        }
    }

    /// Each record as a row for `events`, or for `rejected` with the reason it fails; and the
    /// view it was checked against, for the steps after.
    pub async fn sort<'a>(
        &self,
        batch: &'a [Record],
        retry: &mut Retry,
    ) -> Result<(Vec<Landing<'a>>, Arc<CredentialCache>), Stopped> {
        let mut backoff = Retry::backoff();
        while self.credentials.current().needs_reload(batch, self.refresh) {
            match self.credentials.reload(&self.ch).await {
                Ok(()) => break,
                Err(error) => retry.pause("credentials", &error, &mut backoff).await?,
            }
        }
        let view = self.credentials.current();
        let rows = batch
            .iter()
            .map(|record| {
                let mut row = landing(record);
                row.reason = view.check(record).err().map(|reason| reason.as_str());
                row
            })
            .collect();
        Ok((rows, view))
    }
}

/// A record as a row, before any check has sorted it.
pub fn landing(record: &Record) -> Landing<'_> {
    let mut row = Landing::new(
        record.pipeline_id.get(),
        record.request_id.as_str(),
        record.accepted_at.secs(),
        record.key.to_string(),
        stored_body(&record.body, record.form),
    );
    row.seq = record.seq;
    row.received_at = record.accepted_at.whole_secs();
    row.headers = &record.headers;
    if record.form == BodyForm::FormPayload {
        // The edge took only UTF-8 forms; a record that decodes otherwise failed its checksum.
        row.body_as_sent = std::str::from_utf8(&record.body).unwrap_or_default();
    }
    row
}
