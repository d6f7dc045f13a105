//! The operator's commands (CONTRACT §5). Human output by default, `--json` for scripts; errors
//! go to standard error as one line, with exit code 1.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::clickhouse::rows::{PipelineRow, TokenRow};
use crate::clickhouse::{migrate, store, Clickhouse};
use crate::config::Settings;
use crate::ingest::RequestId;
use crate::{events, startup, telemetry, Application};

mod signed;
mod subscriptions;

#[derive(Debug, Parser)]
#[command(
    name = "hookhouse",
    version,
    about = "A webhook ingestion gateway into ClickHouse: Kondado-compatible ingest, a durable log, exactly-once delivery."
)]
pub struct Cli {
    /// A TOML configuration file (also HOOKHOUSE_CONFIG). Environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (applies pending migrations first, once ClickHouse answers).
    #[command(after_help = Settings::help())]
    Serve,
    /// Apply the schema migrations to ClickHouse; safe to run again.
    Migrate,
    /// Create, list, disable or enable pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Create, list or revoke tokens (a key and a secret token).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Look up what became of a request.
    #[command(subcommand)]
    Request(RequestCommand),
    /// Check rejected requests again and move those that now pass.
    #[command(subcommand)]
    Rejected(Box<RejectedCommand>),
    /// Tell other systems when data lands: signed webhooks to a URL (Standard Webhooks).
    #[command(subcommand)]
    Subscription(SubscriptionCommand),
}

#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Subscribe a URL to notifications; prints its id and signing secret (once). Needs
    /// HOOKHOUSE_SECRETS_KEY_FILE.
    Create {
        /// Where notifications are POSTed (http:// or https://).
        #[arg(long)]
        url: String,
        /// Only this pipeline's events; repeat for several. None: every pipeline.
        #[arg(long = "pipeline", value_name = "ID")]
        pipelines: Vec<u64>,
        /// data.landed, request.rejected, ping or * (all, the default); repeat for several.
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
    },
    /// List subscriptions (never their secrets).
    List,
    /// Stop sending to a subscription.
    Disable {
        #[arg(long)]
        id: String,
    },
    /// Send to a subscription again; its count of failed notifications starts from 0.
    Enable {
        #[arg(long)]
        id: String,
    },
    /// Remove a subscription; what was waiting for it is dropped.
    Delete {
        #[arg(long)]
        id: String,
    },
    /// Send a `ping` now and print the receiver's answer (exit code 1 unless it is a 2xx).
    Test {
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RejectedCommand {
    /// Check a pipeline's rejected requests again with today's credentials, secrets and event
    /// filters, and move those that now pass into `events`: each exactly once, however often
    /// this runs. Run one replay of a pipeline at a time.
    Replay {
        /// The pipeline whose rejected requests are checked.
        #[arg(long, value_name = "ID")]
        pipeline: u64,
        /// Only those rejected for this reason, e.g. INVALID_SIGNATURE or EVENT_FILTERED.
        #[arg(long, value_name = "REASON")]
        reason: Option<String>,
        /// Only those received at or after this time (RFC 3339, e.g. 2026-11-20T00:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Did a request land? By its __kdd_request_id: landed (in `events`), rejected (with the
    /// reason), pending in this gateway's log (HOOKHOUSE_DATA_DIR, read without disturbing a
    /// running gateway), or unknown. Exit code 0 when found, 1 when unknown.
    #[command(
        after_help = "Exit status: 0 when the request is found (landed, rejected or pending), 1 when it is unknown or on an error."
    )]
    Show {
        /// The request's __kdd_request_id from its 200 answer: 20 lowercase letters.
        #[arg(value_name = "REQUEST_ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline and its `pipeline_<id>` view.
    Create {
        /// A name for it, unique among pipelines (1 to 200 characters).
        #[arg(long)]
        name: String,
    },
    /// List pipelines.
    List,
    /// Stop a pipeline accepting data: its requests go to `rejected` as PIPELINE_DISABLED.
    Disable {
        /// The pipeline's id (see `pipeline list`).
        #[arg(long)]
        id: u64,
    },
    /// Let a disabled pipeline accept data again.
    Enable {
        /// The pipeline's id (see `pipeline list`).
        #[arg(long)]
        id: u64,
    },
    /// Verify the signatures of a pipeline's sender (needs HOOKHOUSE_SECRETS_KEY_FILE).
    #[command(after_help = VERIFY_HELP)]
    Verify(Box<VerifyArgs>),
    /// Keep only the event types that match a pattern (`*` matches any run of characters;
    /// `*` alone keeps everything). Others land in `rejected` as EVENT_FILTERED.
    Events {
        /// The pipeline's id (see `pipeline list`).
        #[arg(long)]
        id: u64,
        /// Event type patterns, e.g. push 'pull_request' 'linkedin.message.*'.
        #[arg(value_name = "PATTERN", required = true)]
        patterns: Vec<String>,
    },
}

const VERIFY_HELP: &str = "Schemes: github, stripe, shopify, slack, standard (Standard Webhooks, also svix-* headers), kakiyo, hmac (with --header, --algorithm, --encoding), none.

Examples:
  hookhouse pipeline verify --id 1 --scheme github --secret-file github.secret
  hookhouse pipeline verify --id 1 --add-secret-file new.secret     (rotation: both verify)
  hookhouse pipeline verify --id 1 --remove-oldest-secret           (end of the overlap)
  hookhouse pipeline verify --id 2 --scheme hmac --secret-file s --header X-Signature --algorithm sha256 --encoding hex --prefix sha256= --event-field event
  hookhouse pipeline verify --id 1 --scheme none                    (verification off)";

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The pipeline's id (see `pipeline list`).
    #[arg(long)]
    pub id: u64,
    /// How the sender signs: github, stripe, shopify, slack, standard, kakiyo, hmac or none.
    #[arg(long, value_name = "SCHEME")]
    pub scheme: Option<String>,
    /// A file holding the secret (trailing newline trimmed); replaces the secrets.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// A second active secret, for rotation (at most two; either verifies).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["scheme", "secret_file", "remove_oldest_secret"])]
    pub add_secret_file: Option<PathBuf>,
    /// Ends a rotation: the older of the two secrets stops verifying.
    #[arg(long, conflicts_with_all = ["scheme", "secret_file"])]
    pub remove_oldest_secret: bool,
    /// hmac: the header carrying the signature.
    #[arg(long, value_name = "HEADER")]
    pub header: Option<String>,
    /// hmac: sha1, sha256 or sha512.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// hmac: hex or base64.
    #[arg(long)]
    pub encoding: Option<String>,
    /// hmac: text before the signature in its header, e.g. sha256=.
    #[arg(long)]
    pub prefix: Option<String>,
    /// hmac: the header naming the event type.
    #[arg(long, value_name = "HEADER", conflicts_with = "event_field")]
    pub event_header: Option<String>,
    /// hmac: the body field naming the event type (a.b walks into objects).
    #[arg(long, value_name = "NAME")]
    pub event_field: Option<String>,
    /// hmac: the header carrying the delivery id.
    #[arg(long, value_name = "HEADER", conflicts_with = "id_field")]
    pub id_header: Option<String>,
    /// hmac: the body field carrying the delivery id.
    #[arg(long, value_name = "NAME")]
    pub id_field: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for the given pipelines (repeat --pipeline), or for all if none is given.
    /// The token is printed once; only its hash is stored.
    Create {
        /// A name for the token, to tell it apart in `token list` (e.g. the sender's name).
        #[arg(long)]
        name: String,
        /// A pipeline the token may write to; repeat for several. None: every pipeline.
        #[arg(long = "pipeline", value_name = "ID")]
        pipelines: Vec<u64>,
    },
    /// Revoke a token by its key: its requests are rejected within seconds on every gateway.
    Revoke {
        /// The token's key, a UUID (see `token list`).
        #[arg(long)]
        key: String,
    },
    /// List keys (never tokens).
    List,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init_logs(settings.log_format);
    for (variable, suggestion) in Settings::unknown_variables() {
        events::config::unknown_variable(&variable, suggestion.as_deref());
    }
    match cli.command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run(startup::stop_signal()).await
        }
        Command::Migrate => {
            let ch = Clickhouse::new(&settings)?;
            let applied = migrate::migrate(&ch)
                .await
                .with_context(|| unreachable(&settings))?;
            if cli.json {
                println!(
                    "{}",
                    json!({"applied": applied, "database": settings.clickhouse_database})
                );
            } else if applied.is_empty() {
                println!(
                    "Schema of database {} is up to date.",
                    settings.clickhouse_database
                );
            } else {
                println!(
                    "Applied migrations {applied:?} to database {}.",
                    settings.clickhouse_database
                );
            }
            Ok(())
        }
        Command::Pipeline(command) => pipeline(command, &settings, cli.json).await,
        Command::Token(command) => token(command, &settings, cli.json).await,
        Command::Request(RequestCommand::Show { id }) => {
            request_show(&id, &settings, cli.json).await
        }
        Command::Rejected(command) => match *command {
            RejectedCommand::Replay {
                pipeline,
                reason,
                since,
            } => signed::replay(pipeline, reason, since, &settings, cli.json).await,
        },
        Command::Subscription(command) => subscriptions::run(command, &settings, cli.json).await,
    }
}

fn unreachable(settings: &Settings) -> String {
    format!(
        "ClickHouse at {} (HOOKHOUSE_CLICKHOUSE_URL)",
        crate::config::redact_url(&settings.clickhouse_url)
    )
}

/// A client with the schema in place: admin commands work on a fresh ClickHouse.
async fn admin_client(settings: &Settings) -> anyhow::Result<Clickhouse> {
    let ch = Clickhouse::new(settings)?;
    migrate::migrate(&ch)
        .await
        .with_context(|| unreachable(settings))?;
    Ok(ch)
}

/// A client for a command that only reads: it never creates the database or a table
/// (CONTRACT §7), and says so when they are not there.
async fn read_client(settings: &Settings) -> anyhow::Result<Clickhouse> {
    let ch = Clickhouse::new(settings)?;
    let applied = migrate::schema_applied(&ch)
        .await
        .with_context(|| unreachable(settings))?;
    if !applied {
        anyhow::bail!(
            "database {} does not exist or has no hookhouse tables on {}; create them with `hookhouse migrate`",
            settings.clickhouse_database,
            unreachable(settings)
        );
    }
    Ok(ch)
}

async fn pipeline(
    command: PipelineCommand,
    settings: &Settings,
    as_json: bool,
) -> anyhow::Result<()> {
    let ch = match command {
        PipelineCommand::List => read_client(settings).await?,
        _ => admin_client(settings).await?,
    };
    match command {
        PipelineCommand::Create { name } => {
            let row = store::create_pipeline(&ch, &name).await?;
            if as_json {
                println!(
                    "{}",
                    json!({"pipeline_id": row.pipeline_id, "name": row.name})
                );
            } else {
                println!("Created pipeline {} ({}).", row.pipeline_id, row.name);
                println!(
                    "Its rows: SELECT * FROM {}.pipeline_{}",
                    settings.clickhouse_database, row.pipeline_id
                );
            }
        }
        PipelineCommand::List => {
            let rows = store::list_pipelines(&ch).await?;
            if as_json {
                println!(
                    "{}",
                    serde_json::Value::Array(rows.iter().map(pipeline_json).collect())
                );
            } else if rows.is_empty() {
                println!("No pipelines yet: hookhouse pipeline create --name NAME");
            } else {
                println!(
                    "{:<8} {:<10} {:<20} {:<14} {:<24} NAME",
                    "ID", "STATE", "CREATED", "SIGNATURES", "EVENTS"
                );
                for row in rows {
                    println!(
                        "{:<8} {:<10} {:<20} {:<14} {:<24} {}",
                        row.pipeline_id,
                        state(row.active != 0),
                        when(row.created_at),
                        signed::signatures_column(&row),
                        signed::events_column(&row),
                        row.name
                    );
                }
            }
        }
        PipelineCommand::Verify(args) => signed::verify(&ch, *args, settings, as_json).await?,
        PipelineCommand::Events { id, patterns } => {
            signed::events(&ch, id, patterns, as_json).await?
        }
        PipelineCommand::Disable { id } | PipelineCommand::Enable { id } => {
            let enable = matches!(command, PipelineCommand::Enable { .. });
            let row = store::set_pipeline_active(&ch, id, enable).await?;
            if as_json {
                println!("{}", pipeline_json(&row));
            } else {
                println!(
                    "Pipeline {} ({}) is now {}.",
                    row.pipeline_id,
                    row.name,
                    state(enable)
                );
            }
        }
    }
    Ok(())
}

async fn token(command: TokenCommand, settings: &Settings, as_json: bool) -> anyhow::Result<()> {
    let ch = match command {
        TokenCommand::List => read_client(settings).await?,
        _ => admin_client(settings).await?,
    };
    match command {
        TokenCommand::Create { name, pipelines } => {
            let base = settings.public_base_url()?;
            let (row, key, token) = store::create_token(&ch, &name, &pipelines).await?;
            let url = |pipeline: &str| {
                format!(
                    "{base}/?pipeline_id={pipeline}&key={key}&token={}",
                    token.reveal()
                )
            };
            if as_json {
                let mut out = json!({"key": key.to_string(), "token": token.reveal(), "name": row.name, "pipelines": row.pipelines});
                if row.pipelines.is_empty() {
                    out["url"] = url("PIPELINE_ID").into();
                } else {
                    let urls: Vec<String> =
                        row.pipelines.iter().map(|p| url(&p.to_string())).collect();
                    out["urls"] = urls.into();
                }
                println!("{out}");
            } else {
                println!(
                    "Created token {:?} for {}.",
                    row.name,
                    scope(&row.pipelines)
                );
                println!("key:   {key}");
                println!("token: {}", token.reveal());
                if row.pipelines.is_empty() {
                    println!("The sender's URL (put a pipeline's id in place of PIPELINE_ID):");
                    println!("  {}", url("PIPELINE_ID"));
                } else {
                    println!("The sender's URL (POST the JSON body to it):");
                    for pipeline in &row.pipelines {
                        println!("  {}", url(&pipeline.to_string()));
                    }
                }
                if settings.public_url.is_none() {
                    println!(
                        "(Set HOOKHOUSE_PUBLIC_URL to the address senders reach this gateway at.)"
                    );
                }
                println!("The token is shown only now; hookhouse keeps only its hash.");
            }
        }
        TokenCommand::Revoke { key } => {
            let (row, already) = match store::revoke_token(&ch, &key).await {
                Ok(row) => (row, false),
                Err(store::StoreError::AlreadyRevoked(row)) => (row, true),
                Err(error) => return Err(error.into()),
            };
            if as_json {
                let mut out = token_json(&row);
                out["already_revoked"] = already.into();
                println!("{out}");
            } else if already {
                println!(
                    "Key {} ({}) was already revoked; nothing changed.",
                    row.key, row.name
                );
            } else {
                println!(
                    "Revoked key {} ({}). Its requests are rejected within 10 seconds.",
                    row.key, row.name
                );
            }
        }
        TokenCommand::List => {
            let rows = store::list_tokens(&ch).await?;
            if as_json {
                println!(
                    "{}",
                    serde_json::Value::Array(rows.iter().map(token_json).collect())
                );
            } else if rows.is_empty() {
                println!("No tokens yet: hookhouse token create --name NAME [--pipeline ID]");
            } else {
                println!(
                    "{:<36} {:<8} {:<20} {:<16} NAME",
                    "KEY", "STATE", "CREATED", "PIPELINES"
                );
                for row in rows {
                    let state = if row.revoked != 0 {
                        "revoked"
                    } else {
                        "active"
                    };
                    let pipelines = if row.pipelines.is_empty() {
                        "all".to_string()
                    } else {
                        list(&row.pipelines)
                    };
                    println!(
                        "{:<36} {:<8} {:<20} {:<16} {}",
                        row.key,
                        state,
                        when(row.created_at),
                        pipelines,
                        row.name
                    );
                }
            }
        }
    }
    Ok(())
}

/// `hookhouse request show`: where a request is, from the log of this gateway's data folder
/// and from ClickHouse. Unknown is an error (exit 1), so that scripts can test for it.
async fn request_show(id: &str, settings: &Settings, as_json: bool) -> anyhow::Result<()> {
    let request_id = RequestId::from_bytes(id.as_bytes()).ok_or_else(|| {
        anyhow::anyhow!(
            "{id:?} is not a request id: a __kdd_request_id is 20 lowercase letters, like rydjemeilmsqkqvjtfkc"
        )
    })?;
    let found = request_outcomes(&request_id, settings).await?;
    if found.is_empty() {
        if as_json {
            println!("{}", json!({"request_id": id, "status": "unknown"}));
        }
        anyhow::bail!(
            "request {id} is unknown: not in {} nor in the log in {} (it may have been accepted by \
             another gateway, with another data folder, or never answered 200)",
            settings.clickhouse_database,
            settings.data_dir.display()
        );
    }
    for outcome in found {
        if as_json {
            println!("{outcome}");
        } else {
            println!("{}", describe_outcome(&outcome, settings));
        }
    }
    Ok(())
}

/// The request's rows in `events` and `rejected`, or else its record waiting in the log; empty
/// when it is in neither. If ClickHouse cannot be asked, the log alone answers when it can.
async fn request_outcomes(
    request_id: &RequestId,
    settings: &Settings,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let (id, data_dir) = (request_id.as_str(), &settings.data_dir);
    let in_log = crate::wal::lookup::find_pending(data_dir, request_id).with_context(|| {
        format!(
            "reading the log in {} (HOOKHOUSE_DATA_DIR)",
            data_dir.display()
        )
    })?;
    let landed = match read_client(settings).await {
        Ok(ch) => store::find_request(&ch, request_id)
            .await
            .map_err(anyhow::Error::from),
        Err(error) => Err(error),
    };
    let landed = match (landed, &in_log) {
        (Ok(rows), _) => rows,
        (Err(error), Some(_)) => {
            eprintln!(
                "hookhouse: ClickHouse not asked: {}",
                crate::error_chain::one_line(&*error)
            );
            Vec::new()
        }
        (Err(error), None) => return Err(error),
    };
    let mut found: Vec<serde_json::Value> = landed
        .iter()
        .map(|row| {
            let status = if row.landed_in == "events" {
                "landed"
            } else {
                "rejected"
            };
            json!({
                "request_id": id, "status": status, "table": row.landed_in,
                "pipeline_id": row.pipeline_id, "key": row.__kdd_requester_key,
                "accepted_at": when_precise(row.__kdd_request_unix_timestamp),
                "__kdd_request_unix_timestamp": row.__kdd_request_unix_timestamp,
                "reason": (!row.reason.is_empty()).then_some(&row.reason),
            })
        })
        .collect();
    if let (true, Some(record)) = (found.is_empty(), &in_log) {
        found.push(json!({
            "request_id": id, "status": "pending", "data_dir": data_dir.display().to_string(),
            "pipeline_id": record.pipeline_id.get(), "key": record.key.to_string(),
            "accepted_at": when_precise(record.accepted_at.secs()),
            "__kdd_request_unix_timestamp": record.accepted_at.secs(),
        }));
    }
    Ok(found)
}

/// One outcome of [`request_outcomes`] as a line for people.
fn describe_outcome(outcome: &serde_json::Value, settings: &Settings) -> String {
    let text = |field: &str| outcome[field].as_str().unwrap_or_default().to_string();
    let (id, at, key) = (text("request_id"), text("accepted_at"), text("key"));
    let pipeline = &outcome["pipeline_id"];
    let database = &settings.clickhouse_database;
    match outcome["status"].as_str() {
        Some("landed") => format!(
            "{id}: landed in {database}.events, pipeline {pipeline}, key {key}, accepted {at}."
        ),
        Some("rejected") => format!(
            "{id}: rejected ({}), in {database}.rejected, pipeline {pipeline}, key {key}, accepted {at}.",
            text("reason")
        ),
        _ => format!(
            "{id}: pending, in the log in {} and not yet in ClickHouse; pipeline {pipeline}, key {key}, accepted {at}.",
            settings.data_dir.display()
        ),
    }
}

fn when_precise(secs: f64) -> String {
    chrono::DateTime::from_timestamp_micros((secs * 1e6) as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

fn pipeline_json(row: &PipelineRow) -> serde_json::Value {
    json!({
        "pipeline_id": row.pipeline_id, "name": row.name, "active": row.active != 0,
        "created_at": when(row.created_at),
        "scheme": if row.scheme.is_empty() { "none" } else { row.scheme.as_str() },
        "secrets": row.secrets.len(),
        "event_patterns": if row.event_patterns.is_empty() { vec!["*".to_string()] } else { row.event_patterns.clone() },
    })
}

fn token_json(row: &TokenRow) -> serde_json::Value {
    json!({"key": row.key, "name": row.name, "pipelines": row.pipelines, "revoked": row.revoked != 0, "created_at": when(row.created_at)})
}

fn state(active: bool) -> &'static str {
    if active {
        "active"
    } else {
        "disabled"
    }
}

fn scope(pipelines: &[u64]) -> String {
    match pipelines {
        [] => "all pipelines".into(),
        [one] => format!("pipeline {one}"),
        many => format!("pipelines {}", list(many)),
    }
}

fn list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn when(secs: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(secs), 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}
