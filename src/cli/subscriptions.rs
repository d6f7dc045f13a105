//! `hookhouse subscription …` (CONTRACT §9): who is told when data lands. The signing secret
//! is printed once, by `create`, and stored sealed like pipelines' secrets.

use anyhow::bail;
use serde_json::json;

use super::signed::secrets_key;
use super::{admin_client, read_client, scope, state, when, SubscriptionCommand};
use crate::clickhouse::rows::SubscriptionRow;
use crate::clickhouse::store;
use crate::config::Settings;
use crate::notify::{self, message};

pub async fn run(
    command: SubscriptionCommand,
    settings: &Settings,
    as_json: bool,
) -> anyhow::Result<()> {
    if let SubscriptionCommand::Create {
        url,
        pipelines,
        events,
    } = command
    {
        return create(url, pipelines, events, settings, as_json).await;
    }
    let ch = match command {
        SubscriptionCommand::List => read_client(settings).await?,
        _ => admin_client(settings).await?,
    };
    match command {
        SubscriptionCommand::Create { .. } => unreachable!("handled above"),
        SubscriptionCommand::List => {
            let rows: Vec<SubscriptionRow> = store::list_subscriptions(&ch)
                .await?
                .into_iter()
                .filter(|row| row.deleted == 0)
                .collect();
            if as_json {
                let list: Vec<serde_json::Value> = rows.iter().map(subscription_json).collect();
                println!("{}", serde_json::Value::Array(list));
            } else if rows.is_empty() {
                println!("No subscriptions yet: hookhouse subscription create --url URL");
            } else {
                println!(
                    "{:<36} {:<9} {:<20} {:<16} {:<28} URL",
                    "ID", "STATE", "CREATED", "PIPELINES", "EVENTS"
                );
                for row in &rows {
                    println!(
                        "{:<36} {:<9} {:<20} {:<16} {:<28} {}",
                        row.subscription_id,
                        state(row.active != 0),
                        when(row.created_at),
                        scope(&row.pipelines),
                        row.event_types.join(","),
                        message::shown_url(&row.url)
                    );
                    if row.active == 0 && !row.disabled_reason.is_empty() {
                        println!("    disabled: {}", row.disabled_reason);
                    }
                }
            }
        }
        SubscriptionCommand::Disable { id } => change(&ch, &id, Change::Disable, as_json).await?,
        SubscriptionCommand::Enable { id } => change(&ch, &id, Change::Enable, as_json).await?,
        SubscriptionCommand::Delete { id } => change(&ch, &id, Change::Delete, as_json).await?,
        SubscriptionCommand::Test { id } => {
            check_id(&id)?;
            let key = secrets_key(settings)?;
            let row = store::subscription(&ch, &id).await?;
            let secret = key.open_for_subscription(&row.subscription_id, &row.secret)?;
            let answer = notify::ping(&ch, &row, &secret).await?;
            if as_json {
                println!(
                    "{}",
                    json!({
                        "subscription_id": row.subscription_id,
                        "delivered": answer.delivered(),
                        "status": answer.status,
                        "error": answer.error,
                        "body": answer.body,
                        "duration_ms": answer.took.as_millis() as u64,
                    })
                );
            } else {
                match answer.status {
                    Some(status) => println!(
                        "The receiver answered {status} in {} ms.",
                        answer.took.as_millis()
                    ),
                    None => println!(
                        "No answer: {}.",
                        answer.error.as_deref().unwrap_or("unknown error")
                    ),
                }
                if !answer.body.is_empty() {
                    println!("{}", answer.body);
                }
            }
            if !answer.delivered() {
                bail!("the ping to subscription {id} was not delivered (a 2xx within 10 s)");
            }
        }
    }
    Ok(())
}

async fn create(
    url: String,
    pipelines: Vec<u64>,
    events: Vec<String>,
    settings: &Settings,
    as_json: bool,
) -> anyhow::Result<()> {
    message::check_url(&url).map_err(anyhow::Error::msg)?;
    let event_types = message::event_types(&events).map_err(anyhow::Error::msg)?;
    if pipelines.contains(&0) {
        bail!("--pipeline: pipeline ids start at 1");
    }
    // Before anything is written: without the key there is nothing to seal the secret with.
    let key = secrets_key(settings)?;
    let ch = admin_client(settings).await?;
    let id = message::new_subscription_id();
    let secret = message::new_secret();
    let mut pipelines = pipelines;
    pipelines.sort_unstable();
    pipelines.dedup();
    let row = SubscriptionRow {
        subscription_id: id.clone(),
        url,
        secret: key.seal_for_subscription(&id, &secret),
        pipelines,
        event_types,
        active: 1,
        disabled_reason: String::new(),
        deleted: 0,
        created_at: 0,
        version: 0,
    };
    let row = store::create_subscription(&ch, row).await?;
    let shown = String::from_utf8_lossy(secret.expose()).into_owned();
    if as_json {
        let mut out = subscription_json(&row);
        out["secret"] = shown.into();
        println!("{out}");
    } else {
        println!(
            "Created subscription {} for {} ({}).",
            row.subscription_id,
            scope(&row.pipelines),
            row.event_types.join(", ")
        );
        println!("secret: {shown}");
        println!("Receivers verify each notification with this secret and any Standard Webhooks library.");
        println!("The secret is shown only now. Gateways use the subscription within 10 seconds.");
    }
    Ok(())
}

enum Change {
    Disable,
    Enable,
    Delete,
}

async fn change(
    ch: &crate::clickhouse::Clickhouse,
    id: &str,
    change: Change,
    as_json: bool,
) -> anyhow::Result<()> {
    check_id(id)?;
    let row = store::update_subscription(ch, id, |row| match change {
        Change::Enable => {
            row.active = 1;
            row.disabled_reason.clear();
        }
        Change::Disable => {
            row.active = 0;
            row.disabled_reason = "disabled by an operator".into();
        }
        Change::Delete => {
            row.active = 0;
            row.deleted = 1;
        }
    })
    .await?;
    let verb = if row.deleted != 0 {
        "deleted"
    } else if row.active != 0 {
        "enabled (its count of failed notifications starts again from 0)"
    } else {
        "disabled"
    };
    if as_json {
        let mut out = subscription_json(&row);
        out["deleted"] = (row.deleted != 0).into();
        println!("{out}");
    } else {
        println!(
            "Subscription {} is now {verb}. Gateways use it within 10 seconds.",
            row.subscription_id
        );
    }
    Ok(())
}

fn check_id(id: &str) -> anyhow::Result<()> {
    if !message::is_subscription_id(id) {
        bail!("{id:?} is not a subscription id (sub_ and 32 hex digits; see `hookhouse subscription list`)");
    }
    Ok(())
}

fn subscription_json(row: &SubscriptionRow) -> serde_json::Value {
    json!({
        "subscription_id": row.subscription_id,
        "url": message::shown_url(&row.url),
        "pipelines": row.pipelines,
        "events": row.event_types,
        "active": row.active != 0,
        "disabled_reason": row.disabled_reason,
        "created_at": when(row.created_at),
    })
}
