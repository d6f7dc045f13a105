//! The commands for signed senders (CONTRACT §8): `pipeline verify`, `pipeline events` and
//! `rejected replay`. A secret is read from a file, sealed, stored, and never printed.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::json;

use super::{admin_client, VerifyArgs};
use crate::clickhouse::rows::PipelineRow;
use crate::clickhouse::store::{self, StoredSigning};
use crate::clickhouse::Clickhouse;
use crate::config::Settings;
use crate::credentials::SharedCredentials;
use crate::signing::{EventFilter, HmacOptions, Locator, Scheme, Secret, SecretsKey};
use crate::writer::replay::{self, ReplayScope};

/// The most secrets a pipeline holds at once: the current one and, during a rotation, the next.
const MAX_SECRETS: usize = 2;

pub async fn verify(
    ch: &Clickhouse,
    args: VerifyArgs,
    settings: &Settings,
    as_json: bool,
) -> anyhow::Result<()> {
    let id = args.id;
    let change = Change::from_args(args)?;
    let key = match &change {
        Change::Set(_, _) | Change::Add(_) => Some(secrets_key(settings)?),
        Change::Off | Change::RemoveOldest => None,
    };
    let row = store::set_signing(ch, id, |row| change.apply(row, key.as_ref())).await?;
    let scheme = if row.scheme.is_empty() {
        "none"
    } else {
        &row.scheme
    };
    if as_json {
        println!(
            "{}",
            json!({"pipeline_id": row.pipeline_id, "name": row.name, "scheme": scheme, "secrets": row.secrets.len()})
        );
    } else if row.scheme.is_empty() {
        println!(
            "Pipeline {} ({}) no longer verifies signatures.",
            row.pipeline_id, row.name
        );
    } else {
        println!(
            "Pipeline {} ({}) verifies {} signatures with {} active secret{}. Gateways use it within 10 seconds.",
            row.pipeline_id,
            row.name,
            scheme,
            row.secrets.len(),
            if row.secrets.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// What `pipeline verify` was asked to do.
enum Change {
    Set(Scheme, Secret),
    Off,
    Add(Secret),
    RemoveOldest,
}

impl Change {
    fn from_args(args: VerifyArgs) -> anyhow::Result<Change> {
        let hmac_given = args.header.is_some()
            || args.algorithm.is_some()
            || args.encoding.is_some()
            || args.prefix.is_some()
            || args.event_header.is_some()
            || args.event_field.is_some()
            || args.id_header.is_some()
            || args.id_field.is_some();
        if args.remove_oldest_secret {
            return Ok(Change::RemoveOldest);
        }
        if let Some(file) = &args.add_secret_file {
            return Ok(Change::Add(read_secret(file)?));
        }
        let Some(name) = args.scheme.as_deref() else {
            bail!("say what to change: --scheme SCHEME --secret-file FILE, --add-secret-file FILE, --remove-oldest-secret or --scheme none");
        };
        if name == "none" {
            if args.secret_file.is_some() || hmac_given {
                bail!("--scheme none takes no secret and no hmac options");
            }
            return Ok(Change::Off);
        }
        let scheme = if name == "hmac" {
            let options = HmacOptions {
                header: args
                    .header
                    .context("--scheme hmac needs --header (the header carrying the signature)")?,
                algorithm: args
                    .algorithm
                    .context("--scheme hmac needs --algorithm sha1|sha256|sha512")?
                    .parse()?,
                encoding: args
                    .encoding
                    .context("--scheme hmac needs --encoding hex|base64")?
                    .parse()?,
                prefix: args.prefix.unwrap_or_default(),
                event: args
                    .event_header
                    .map(Locator::Header)
                    .or(args.event_field.map(Locator::Field)),
                id: args
                    .id_header
                    .map(Locator::Header)
                    .or(args.id_field.map(Locator::Field)),
            };
            options.check()?;
            Scheme::Hmac(options)
        } else {
            if hmac_given {
                bail!("--header, --algorithm, --encoding, --prefix, --event-*, --id-* are for --scheme hmac only");
            }
            Scheme::from_stored(name, "")?
        };
        let file = args
            .secret_file
            .with_context(|| format!("--scheme {name} needs --secret-file FILE"))?;
        Ok(Change::Set(scheme, read_secret(&file)?))
    }

    fn apply(
        &self,
        row: &PipelineRow,
        key: Option<&SecretsKey>,
    ) -> Result<StoredSigning, store::StoreError> {
        let invalid = |text: String| store::StoreError::Invalid(text);
        let seal = |secret: &Secret| {
            key.map(|key| key.seal(row.pipeline_id, secret))
                .ok_or_else(|| invalid("no key to seal the secret with".into()))
        };
        match self {
            Change::Set(scheme, secret) => Ok(StoredSigning {
                scheme: scheme.name().to_string(),
                scheme_options: scheme.options_json(),
                secrets: vec![seal(secret)?],
            }),
            Change::Off => Ok(StoredSigning {
                scheme: String::new(),
                scheme_options: String::new(),
                secrets: Vec::new(),
            }),
            Change::Add(secret) => {
                if row.scheme.is_empty() {
                    return Err(invalid(format!(
                        "pipeline {} does not verify signatures yet: set a scheme first (--scheme SCHEME --secret-file FILE)",
                        row.pipeline_id
                    )));
                }
                if row.secrets.len() >= MAX_SECRETS {
                    return Err(invalid(format!(
                        "pipeline {} already has two active secrets; end the rotation first with --remove-oldest-secret",
                        row.pipeline_id
                    )));
                }
                if let Some(key) = key {
                    if row
                        .secrets
                        .iter()
                        .any(|sealed| key.open(row.pipeline_id, sealed).is_err())
                    {
                        return Err(invalid(format!(
                            "pipeline {}'s secret was sealed with another key than HOOKHOUSE_SECRETS_KEY_FILE's; set it again with --scheme {} --secret-file FILE",
                            row.pipeline_id, row.scheme
                        )));
                    }
                }
                let mut secrets = row.secrets.clone();
                secrets.push(seal(secret)?);
                Ok(StoredSigning {
                    scheme: row.scheme.clone(),
                    scheme_options: row.scheme_options.clone(),
                    secrets,
                })
            }
            Change::RemoveOldest => {
                if row.secrets.len() < MAX_SECRETS {
                    return Err(invalid(format!(
                        "pipeline {} has {} secret{}; only the older of two can be removed (to stop verifying: --scheme none)",
                        row.pipeline_id,
                        row.secrets.len(),
                        if row.secrets.len() == 1 { "" } else { "s" }
                    )));
                }
                Ok(StoredSigning {
                    scheme: row.scheme.clone(),
                    scheme_options: row.scheme_options.clone(),
                    secrets: row.secrets[1..].to_vec(),
                })
            }
        }
    }
}

/// A secret from its file: the content with its trailing newline trimmed. Errors name the file,
/// never its content.
fn read_secret(file: &Path) -> anyhow::Result<Secret> {
    let mut bytes = std::fs::read(file)
        .with_context(|| format!("reading the secret file {}", file.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        bail!("the secret file {} is empty", file.display());
    }
    Ok(Secret::new(bytes))
}

/// The key from HOOKHOUSE_SECRETS_KEY_FILE, which sealing a secret needs.
pub(super) fn secrets_key(settings: &Settings) -> anyhow::Result<SecretsKey> {
    let Some(path) = &settings.secrets_key_file else {
        bail!("HOOKHOUSE_SECRETS_KEY_FILE is not set: secrets are stored sealed under its key; create one with `openssl rand -base64 32 > secrets.key` and point HOOKHOUSE_SECRETS_KEY_FILE at it (every gateway needs the same file)");
    };
    Ok(SecretsKey::load(path)?)
}

pub async fn events(
    ch: &Clickhouse,
    id: u64,
    patterns: Vec<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let filter = EventFilter::parse(&patterns)?;
    if !filter.is_everything() {
        // A pipeline whose scheme names no event type has only empty ones: every request
        // would be filtered out.
        let row = store::pipeline(ch, id).await?;
        let names_events = match Scheme::from_stored(&row.scheme, &row.scheme_options) {
            _ if row.scheme.is_empty() => false,
            Ok(Scheme::Hmac(options)) => options.event.is_some(),
            Ok(_) => true,
            Err(_) => false,
        };
        if !names_events {
            bail!(
                "pipeline {id} has no scheme that names event types (set one first: `hookhouse pipeline verify --id {id} --scheme …`, for hmac with --event-header or --event-field); a filter now would reject every request as EVENT_FILTERED"
            );
        }
    }
    let kept: Vec<String> = filter.patterns().to_vec();
    let row = store::set_event_patterns(ch, id, kept).await?;
    if as_json {
        println!(
            "{}",
            json!({"pipeline_id": row.pipeline_id, "name": row.name, "event_patterns": patterns})
        );
    } else {
        println!(
            "Pipeline {} ({}) keeps event types {}; others land in `rejected` as EVENT_FILTERED.",
            row.pipeline_id,
            row.name,
            patterns.join(" ")
        );
    }
    Ok(())
}

pub async fn replay(
    pipeline: u64,
    reason: Option<String>,
    since: Option<String>,
    settings: &Settings,
    as_json: bool,
) -> anyhow::Result<()> {
    if let Some(reason) = &reason {
        let known = replay::known_reasons();
        if !known.contains(&reason.as_str()) {
            bail!(
                "--reason {reason:?} is not a reason hookhouse writes; one of: {}",
                known.join(", ")
            );
        }
    }
    let since = match &since {
        None => 0,
        Some(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(text).with_context(|| {
                format!("--since {text:?} is not an RFC 3339 time like 2026-11-20T00:00:00Z")
            })?;
            u32::try_from(at.timestamp().max(0)).unwrap_or(u32::MAX)
        }
    };
    let ch = admin_client(settings).await?;
    store::pipeline(&ch, pipeline).await?;
    let key = match &settings.secrets_key_file {
        Some(_) => Some(Arc::new(secrets_key(settings)?)),
        None => None,
    };
    let credentials = SharedCredentials::new(key);
    credentials.reload(&ch).await?;
    let scope = ReplayScope {
        pipeline,
        reason,
        since,
    };
    let outcome = replay::replay(&ch, &credentials.current(), &scope).await?;
    if as_json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        println!(
            "Checked {} rejected request{} of pipeline {pipeline}: {} moved to events now, {} already there.",
            outcome.checked,
            if outcome.checked == 1 { "" } else { "s" },
            outcome.moved,
            outcome.already_in_events
        );
        for (reason, count) in &outcome.still_rejected {
            println!("  still rejected: {count} {reason}");
        }
    }
    Ok(())
}

/// `pipeline list`'s SIGNATURES column: the scheme and how many secrets, never a secret.
pub fn signatures_column(row: &PipelineRow) -> String {
    if row.scheme.is_empty() {
        "none".into()
    } else {
        format!("{} ({})", row.scheme, row.secrets.len())
    }
}

/// `pipeline list`'s EVENTS column.
pub fn events_column(row: &PipelineRow) -> String {
    if row.event_patterns.is_empty() {
        "*".into()
    } else {
        row.event_patterns.join(" ")
    }
}
