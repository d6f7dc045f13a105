//! Subscriptions as this gateway sees them, loaded from ClickHouse by a task of its own (so that
//! neither the writer nor the notifier ever waits for ClickHouse), which also writes the
//! disables the notifier asks for (a 410, or 20 failures in a row).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clickhouse::rows::SubscriptionRow;
use crate::clickhouse::{store, Clickhouse};
use crate::events;
use crate::shutdown::Shutdown;
use crate::signing::{Secret, SecretsKey};

/// How soon a failed first load is tried again.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// A subscription, with its signing secret opened (or why it cannot be).
pub struct Subscription {
    pub row: SubscriptionRow,
    pub secret: Result<Secret, String>,
}

impl Subscription {
    pub fn live(&self) -> bool {
        self.row.active != 0 && self.row.deleted == 0
    }
}

/// Every subscription by id, as last loaded.
pub type Subscriptions = HashMap<String, Subscription>;

/// A subscription the notifier wants disabled, at the version it judged.
#[derive(Debug)]
pub struct Disable {
    pub sub: String,
    pub version: u64,
    pub why: String,
}

/// Loads subscriptions every `refresh` (and at once after a disable), publishing each load.
pub async fn load(
    ch: Clickhouse,
    secrets_key: Option<Arc<SecretsKey>>,
    refresh: Duration,
    published: watch::Sender<Option<Arc<Subscriptions>>>,
    mut disables: mpsc::UnboundedReceiver<Disable>,
    wanted: Arc<AtomicBool>,
    mut shutdown: Shutdown,
) {
    let mut waiting: Vec<Disable> = Vec::new();
    // Until the first load, tried again soon: the writer's first batches wait for it (the
    // table may be created by the migration running at the same moment).
    let mut next = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            asked = disables.recv() => match asked {
                Some(disable) => waiting.push(disable),
                None => return,
            },
            _ = shutdown.triggered() => return,
        }
        while let Ok(disable) = disables.try_recv() {
            waiting.push(disable);
        }
        let mut failed = Vec::new();
        for disable in waiting.drain(..) {
            match store::disable_subscription(&ch, &disable.sub, disable.version, &disable.why)
                .await
            {
                Ok(_) => {}
                Err(error) => {
                    events::notify::subscriptions_unloaded(&error);
                    failed.push(disable);
                }
            }
        }
        waiting = failed;
        let rows = match store::list_subscriptions(&ch).await {
            Ok(rows) => rows,
            Err(error) => {
                events::notify::subscriptions_unloaded(&error);
                if published.borrow().is_none() {
                    next = FIRST_RETRY;
                }
                continue;
            }
        };
        next = refresh;
        let subs: Subscriptions = rows
            .into_iter()
            .map(|row| {
                let secret = match &secrets_key {
                    Some(key) => key
                        .open_for_subscription(&row.subscription_id, &row.secret)
                        .map_err(|error| error.to_string()),
                    None => Err("HOOKHOUSE_SECRETS_KEY_FILE is not set".into()),
                };
                (row.subscription_id.clone(), Subscription { row, secret })
            })
            .collect();
        wanted.store(subs.values().any(Subscription::live), Ordering::Relaxed);
        published.send_replace(Some(Arc::new(subs)));
    }
}
