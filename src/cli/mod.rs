//! The operator's commands (CONTRACT §5). Human output by default, `--json` for scripts; errors
//! go to standard error as one line, with exit code 1.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::clickhouse::rows::{PipelineRow, TokenRow};
use crate::clickhouse::{migrate, store, Clickhouse};
use crate::config::Settings;
use crate::{startup, telemetry, Application};

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
    Serve,
    /// Apply the schema migrations to ClickHouse; safe to run again.
    Migrate,
    /// Create, list, disable or enable pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Create, list or revoke tokens (a key and a secret token).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline and its `pipeline_<id>` view.
    Create {
        #[arg(long)]
        name: String,
    },
    /// List pipelines.
    List,
    /// Stop a pipeline accepting data: its requests go to `rejected` as PIPELINE_DISABLED.
    Disable {
        #[arg(long)]
        id: u64,
    },
    /// Let a disabled pipeline accept data again.
    Enable {
        #[arg(long)]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for the given pipelines (repeat --pipeline), or for all if none is given.
    /// The token is printed once; only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long = "pipeline", value_name = "ID")]
        pipelines: Vec<u64>,
    },
    /// Revoke a token by its key: its requests are rejected within seconds on every gateway.
    Revoke {
        #[arg(long)]
        key: String,
    },
    /// List keys (never tokens).
    List,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init_logs(settings.log_format);
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
                println!("{:<8} {:<10} {:<20} NAME", "ID", "STATE", "CREATED");
                for row in rows {
                    println!(
                        "{:<8} {:<10} {:<20} {}",
                        row.pipeline_id,
                        state(row.active != 0),
                        when(row.created_at),
                        row.name
                    );
                }
            }
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
            let (row, key, token) = store::create_token(&ch, &name, &pipelines).await?;
            if as_json {
                println!(
                    "{}",
                    json!({"key": key.to_string(), "token": token.reveal(), "name": row.name, "pipelines": row.pipelines})
                );
            } else {
                println!(
                    "Created token {:?} for {}.",
                    row.name,
                    scope(&row.pipelines)
                );
                println!("key:   {key}");
                println!("token: {}", token.reveal());
                println!("The token is shown only now; hookhouse keeps only its hash.");
            }
        }
        TokenCommand::Revoke { key } => {
            let row = store::revoke_token(&ch, &key).await?;
            if as_json {
                println!("{}", token_json(&row));
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

fn pipeline_json(row: &PipelineRow) -> serde_json::Value {
    json!({"pipeline_id": row.pipeline_id, "name": row.name, "active": row.active != 0, "created_at": when(row.created_at)})
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
