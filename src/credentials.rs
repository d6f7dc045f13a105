//! The credential check (CONTRACT §3) against an in-memory view of the pipelines and tokens
//! tables, shared by the writer and the edge.
//!
//! The writer is the authority: it checks every record against the view before it is written,
//! and reloads the view when it is older than the refresh interval, and whenever a record names
//! a key or pipeline the view does not know *and* the view was loaded before that record was
//! accepted: a token created before a request was sent is then always seen, while a flood of
//! unknown keys costs at most one reload per batch.
//!
//! The edge only reads the view, never to refuse a request (a 200 does not depend on the token:
//! CONTRACT §1), but to keep a flood apart from the real sender: the rate limiter counts a key's
//! requests with the right token separately from those with a wrong one (see [`Verdict`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::clickhouse::rows::PipelineRow;
use crate::clickhouse::{store, ChError, Clickhouse};
use crate::ingest::{AcceptedAt, Key, TokenHash};
use crate::signing::{EventFilter, Scheme, Secret, SecretsKey};
use crate::wal::Record;

/// What the edge can tell of a request's token from the view it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The key is known and the token matches.
    Right,
    /// The key is known and the token does not match.
    Wrong,
    /// The key is not in the view (yet): a token created a moment ago, or no token at all.
    Unknown,
}

/// The view, swapped whole on every reload: readers never wait for a reload. It opens the
/// pipelines' sealed secrets with the key from `HOOKHOUSE_SECRETS_KEY_FILE`, if there is one.
#[derive(Default)]
pub struct SharedCredentials(ArcSwap<CredentialCache>, Option<Arc<SecretsKey>>);

impl SharedCredentials {
    pub fn new(secrets_key: Option<Arc<SecretsKey>>) -> SharedCredentials {
        SharedCredentials(ArcSwap::default(), secrets_key)
    }

    pub fn current(&self) -> Arc<CredentialCache> {
        self.0.load_full()
    }

    /// What the edge can tell of `key` and `token` now.
    pub fn verdict(&self, key: &Key, token: &TokenHash) -> Verdict {
        match self.0.load().keys.get(key).and_then(|entry| entry.hash) {
            Some(hash) if hash.matches(token) => Verdict::Right,
            Some(_) => Verdict::Wrong,
            None => Verdict::Unknown,
        }
    }

    /// Loads the view again from ClickHouse and publishes it.
    pub async fn reload(&self, ch: &Clickhouse) -> Result<(), ChError> {
        let mut fresh = CredentialCache::default();
        fresh.reload(ch, self.1.as_deref()).await?;
        self.0.store(Arc::new(fresh));
        Ok(())
    }
}

/// Why a request does not reach its pipeline's data; stored in `rejected.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    UnknownKey,
    RevokedKey,
    WrongToken,
    UnknownPipeline,
    PipelineDisabled,
    KeyNotAllowed,
    /// ClickHouse refused the row for good (not a passing failure).
    InsertFailed,
    /// The pipeline verifies signatures and this one is missing, wrong or stale (CONTRACT §8).
    InvalidSignature,
    /// The pipeline keeps other event types.
    EventFiltered,
    /// The same delivery already landed in the last 7 days.
    DuplicateDelivery,
}

impl Reason {
    /// Every reason, as `rejected replay --reason` takes them.
    pub const ALL: [Reason; 10] = [
        Reason::UnknownKey,
        Reason::RevokedKey,
        Reason::WrongToken,
        Reason::UnknownPipeline,
        Reason::PipelineDisabled,
        Reason::KeyNotAllowed,
        Reason::InsertFailed,
        Reason::InvalidSignature,
        Reason::EventFiltered,
        Reason::DuplicateDelivery,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownKey => "UNKNOWN_KEY",
            Reason::RevokedKey => "REVOKED_KEY",
            Reason::WrongToken => "WRONG_TOKEN",
            Reason::UnknownPipeline => "UNKNOWN_PIPELINE",
            Reason::PipelineDisabled => "PIPELINE_DISABLED",
            Reason::KeyNotAllowed => "KEY_NOT_ALLOWED",
            Reason::InsertFailed => "INSERT_FAILED",
            Reason::InvalidSignature => "INVALID_SIGNATURE",
            Reason::EventFiltered => "EVENT_FILTERED",
            Reason::DuplicateDelivery => "DUPLICATE_DELIVERY",
        }
    }
}

/// How a pipeline's requests are checked beyond credentials (CONTRACT §8).
#[derive(Debug, Clone)]
pub struct PipelineEntry {
    pub active: bool,
    pub signing: Signing,
    pub filter: Arc<EventFilter>,
}

/// Whether, and how, a pipeline's sender signs.
#[derive(Debug, Clone)]
pub enum Signing {
    /// Not verified.
    Off,
    On(Arc<Verification>),
    /// It should be verified, but this gateway cannot: its secrets do not open with this
    /// gateway's key, or there is no key. Its requests fail the check (to `rejected`, from
    /// where `rejected replay` takes them once the key is right); the text says why.
    Unreadable(String),
}

/// A scheme and its one or two open secrets. `Secret`'s `Debug` is redacted.
#[derive(Debug)]
pub struct Verification {
    pub scheme: Scheme,
    pub secrets: Vec<Secret>,
}

impl PipelineEntry {
    fn from_row(row: &PipelineRow, key: Option<&SecretsKey>) -> PipelineEntry {
        let filter = EventFilter::parse(&row.event_patterns).unwrap_or_else(|_| {
            // Written only through `pipeline events`, which checks patterns: keep everything
            // rather than lose data to a row written by something else.
            EventFilter::everything()
        });
        PipelineEntry {
            active: row.active != 0,
            signing: signing(row, key),
            filter: Arc::new(filter),
        }
    }
}

fn signing(row: &PipelineRow, key: Option<&SecretsKey>) -> Signing {
    if row.scheme.is_empty() {
        return Signing::Off;
    }
    let scheme = match Scheme::from_stored(&row.scheme, &row.scheme_options) {
        Ok(scheme) => scheme,
        Err(error) => return Signing::Unreadable(error.to_string()),
    };
    let Some(key) = key else {
        return Signing::Unreadable(
            "its secrets are sealed and HOOKHOUSE_SECRETS_KEY_FILE is not set".into(),
        );
    };
    let mut secrets = Vec::with_capacity(row.secrets.len());
    for sealed in &row.secrets {
        match key.open(row.pipeline_id, sealed) {
            Ok(secret) => secrets.push(secret),
            Err(_) => {
                return Signing::Unreadable(
                    "its secrets do not open with the key in HOOKHOUSE_SECRETS_KEY_FILE (another key sealed them)"
                        .into(),
                )
            }
        }
    }
    if secrets.is_empty() {
        return Signing::Unreadable("it has a scheme and no secret".into());
    }
    Signing::On(Arc::new(Verification { scheme, secrets }))
}

#[derive(Debug, Clone)]
struct KeyEntry {
    hash: Option<TokenHash>,
    /// Empty: every pipeline.
    pipelines: Vec<u64>,
    revoked: bool,
}

#[derive(Debug, Default)]
pub struct CredentialCache {
    keys: HashMap<Key, KeyEntry>,
    pipelines: HashMap<u64, PipelineEntry>,
    /// When the last load started, on the clock requests are stamped with.
    loaded_at: Option<AcceptedAt>,
    loaded_instant: Option<Instant>,
}

impl CredentialCache {
    /// The contract's checks, in its order.
    pub fn check(&self, record: &Record) -> Result<(), Reason> {
        let entry = self.keys.get(&record.key).ok_or(Reason::UnknownKey)?;
        if entry.revoked {
            return Err(Reason::RevokedKey);
        }
        if !entry
            .hash
            .is_some_and(|hash| hash.matches(&record.token_hash))
        {
            return Err(Reason::WrongToken);
        }
        self.check_pipeline(entry, record.pipeline_id.get())
    }

    /// The checks after the token's, for a request whose token was right when it was first
    /// checked (`rejected replay`: a key's token never changes, and only its hash is kept).
    pub fn check_again(&self, key: &Key, pipeline: u64) -> Result<(), Reason> {
        let entry = self.keys.get(key).ok_or(Reason::UnknownKey)?;
        if entry.revoked {
            return Err(Reason::RevokedKey);
        }
        self.check_pipeline(entry, pipeline)
    }

    fn check_pipeline(&self, entry: &KeyEntry, pipeline: u64) -> Result<(), Reason> {
        let found = self
            .pipelines
            .get(&pipeline)
            .ok_or(Reason::UnknownPipeline)?;
        if !found.active {
            return Err(Reason::PipelineDisabled);
        }
        if !entry.pipelines.is_empty() && !entry.pipelines.contains(&pipeline) {
            return Err(Reason::KeyNotAllowed);
        }
        Ok(())
    }

    /// A pipeline's settings, if the view knows it.
    pub fn pipeline(&self, id: u64) -> Option<&PipelineEntry> {
        self.pipelines.get(&id)
    }

    /// Whether the view must be reloaded before `records` are checked.
    pub fn needs_reload(&self, records: &[Record], max_age: Duration) -> bool {
        let (Some(loaded_at), Some(instant)) = (self.loaded_at, self.loaded_instant) else {
            return true;
        };
        if instant.elapsed() >= max_age {
            return true;
        }
        records.iter().any(|r| {
            r.accepted_at >= loaded_at
                && (!self.keys.contains_key(&r.key)
                    || !self.pipelines.contains_key(&r.pipeline_id.get()))
        })
    }

    async fn reload(&mut self, ch: &Clickhouse, key: Option<&SecretsKey>) -> Result<(), ChError> {
        let started_at = AcceptedAt::now();
        let started = Instant::now();
        store::sync_credentials(ch).await;
        let pipelines = store::list_pipelines(ch).await.map_err(into_ch)?;
        let tokens = store::list_tokens(ch).await.map_err(into_ch)?;
        self.replace(
            pipelines.iter().map(|p| {
                let entry = PipelineEntry::from_row(p, key);
                if let Signing::Unreadable(why) = &entry.signing {
                    crate::events::writer::signing_unreadable(p.pipeline_id, why);
                }
                (p.pipeline_id, entry)
            }),
            tokens.into_iter().filter_map(|t| {
                let key = Key::parse(&t.key)?;
                let entry = KeyEntry {
                    hash: TokenHash::from_hex(&t.token_hash),
                    pipelines: t.pipelines,
                    revoked: t.revoked != 0,
                };
                Some((key, entry))
            }),
        );
        self.loaded_at = Some(started_at);
        self.loaded_instant = Some(started);
        crate::events::writer::credentials_reloaded(self.keys.len(), self.pipelines.len());
        Ok(())
    }

    fn replace(
        &mut self,
        pipelines: impl Iterator<Item = (u64, PipelineEntry)>,
        keys: impl Iterator<Item = (Key, KeyEntry)>,
    ) {
        self.pipelines = pipelines.collect();
        self.keys = keys.collect();
    }
}

fn into_ch(e: store::StoreError) -> ChError {
    match e {
        store::StoreError::Clickhouse(e) => e,
        other => ChError(clickhouse::error::Error::Custom(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{PipelineId, RequestId, Token};

    #[test]
    fn the_edge_tells_a_right_token_from_a_wrong_one() {
        let (key, token) = (Key::generate(), Token::generate());
        let shared = SharedCredentials::default();
        assert_eq!(shared.verdict(&key, &token.hash()), Verdict::Unknown);
        shared.0.store(Arc::new(cache(&token, key, vec![], false)));
        assert_eq!(shared.verdict(&key, &token.hash()), Verdict::Right);
        assert_eq!(
            shared.verdict(&key, &Token::generate().hash()),
            Verdict::Wrong
        );
        assert_eq!(
            shared.verdict(&Key::generate(), &token.hash()),
            Verdict::Unknown
        );
    }
    use bytes::Bytes;

    fn record(pipeline: u64, key: Key, token: &Token) -> Record {
        Record {
            seq: 1,
            accepted_at: AcceptedAt::now(),
            request_id: RequestId::generate(),
            pipeline_id: PipelineId::new(pipeline).unwrap(),
            key,
            token_hash: token.hash(),
            headers: "{}".to_owned(),
            form: crate::ingest::BodyForm::Json,
            body: Bytes::from_static(b"{}"),
        }
    }

    fn cache(token: &Token, key: Key, pipelines: Vec<u64>, revoked: bool) -> CredentialCache {
        let mut c = CredentialCache::default();
        c.replace(
            [(1, true), (2, false), (3, true)]
                .into_iter()
                .map(|(id, active)| {
                    let entry = PipelineEntry {
                        active,
                        signing: Signing::Off,
                        filter: Arc::new(EventFilter::everything()),
                    };
                    (id, entry)
                }),
            [(
                key,
                KeyEntry {
                    hash: Some(token.hash()),
                    pipelines,
                    revoked,
                },
            )]
            .into_iter(),
        );
        c
    }

    #[test]
    fn each_reason_in_the_contract_order() {
        let (key, token) = (Key::generate(), Token::generate());
        let c = cache(&token, key, vec![1, 2], false);
        assert_eq!(c.check(&record(1, key, &token)), Ok(()));
        assert_eq!(
            c.check(&record(1, Key::generate(), &token)),
            Err(Reason::UnknownKey)
        );
        assert_eq!(
            c.check(&record(1, key, &Token::generate())),
            Err(Reason::WrongToken)
        );
        assert_eq!(
            c.check(&record(9, key, &token)),
            Err(Reason::UnknownPipeline)
        );
        assert_eq!(
            c.check(&record(2, key, &token)),
            Err(Reason::PipelineDisabled)
        );
        assert_eq!(c.check(&record(3, key, &token)), Err(Reason::KeyNotAllowed));
        let revoked = cache(&token, key, vec![], true);
        assert_eq!(
            revoked.check(&record(1, key, &Token::generate())),
            Err(Reason::RevokedKey)
        );
        let all = cache(&token, key, vec![], false);
        assert_eq!(all.check(&record(3, key, &token)), Ok(()));
    }

    #[test]
    fn reloads_for_unknown_keys_only_if_loaded_before_the_request() {
        let (key, token) = (Key::generate(), Token::generate());
        let mut c = cache(&token, key, vec![], false);
        c.loaded_at = Some(AcceptedAt::now());
        c.loaded_instant = Some(Instant::now());
        let long = Duration::from_secs(60);
        assert!(!c.needs_reload(&[record(1, key, &token)], long));
        let mut stranger = record(1, Key::generate(), &token);
        assert!(c.needs_reload(std::slice::from_ref(&stranger), long));
        stranger.accepted_at = AcceptedAt::from_secs(0.0);
        assert!(!c.needs_reload(&[stranger], long));
        assert!(c.needs_reload(&[], Duration::ZERO));
    }
}
