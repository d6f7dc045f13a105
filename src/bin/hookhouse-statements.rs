//! `hookhouse-statements`: every request hookhouse sends to ClickHouse, sent by the real code.
//!
//! Why it exists: hookhouse must run unchanged on current ClickHouse releases (CONTRACT §4, §7),
//! and no current server can be installed where the tests run. `scripts/check-current-engine.sh`
//! answers these requests with chDB (ClickHouse in-process, from PyPI) instead. So that the
//! check cannot drift from what hookhouse sends, nothing here writes SQL: a real [`Clickhouse`]
//! client points at a small HTTP/1.1 server on 127.0.0.1:0 inside this process, the library's
//! own functions run (migrations, the pipeline and token store, the writer's [`Delivery`]), and
//! the server records each request they make.
//!
//! Output, on stdout, one JSON object per line:
//! - per request, in the order sent: `{"what": the code path, "sql": the statement,
//!   "settings": {every URL parameter but query and decompress}, "rowbinary_hex": an insert's
//!   data, uncompressed, or null}`;
//! - last, `{"what": "results", …}`: what the library made of the answers (pipelines and tokens
//!   it listed, request ids it found present, drift) beside what it wrote and what it expects
//!   of the tables (`EVENT_COLUMNS`, `REJECTED_COLUMNS`), for the checker to compare.
//!
//! Answers: by default each request waits for its answer on stdin, one JSON line per request,
//! `{"status": 200, "body_hex": "…"}` or `{"status": 500, "error": "Code: …"}`, so the library
//! decodes what the engine really said. With `--canned` the program answers by itself, just
//! plausibly enough for every code path to send its requests (the tests check that every path
//! is covered); such a run means nothing about any engine.

use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Map, Value};

use hookhouse::clickhouse::client::QUERY_TIMEOUT;
use hookhouse::clickhouse::migrate::{self, MIGRATIONS};
use hookhouse::clickhouse::rows::{AttemptRow, Landing, PipelineRow, SubscriptionRow, TokenRow};
use hookhouse::clickhouse::rows::{EVENT_COLUMNS, REJECTED_COLUMNS};
use hookhouse::clickhouse::{sql, store, Clickhouse, Delivery};
use hookhouse::credentials::Reason;
use hookhouse::ingest::RequestId;
use hookhouse::Settings;

const USAGE: &str = "usage: hookhouse-statements [--canned]";

/// Who answers the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answers {
    /// The checker, on stdin: a real engine's answers.
    Engine,
    /// This program: plausible, meaningless.
    Canned,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let answers = match args.as_slice() {
        [] => Answers::Engine,
        [flag] if flag == "--canned" => Answers::Canned,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(answers).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookhouse-statements: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(answers: Answers) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the stand-in server")?;
    let address = listener
        .local_addr()
        .context("the stand-in server's address")?;
    let recorder = Arc::new(Recorder {
        answers,
        what: Mutex::new(String::new()),
        exchange: Mutex::new(()),
    });
    let serving = Arc::clone(&recorder);
    std::thread::spawn(move || serve(&listener, &serving));

    let ch = Clickhouse::new(&Settings {
        clickhouse_url: format!("http://{address}"),
        ..Settings::default()
    })?;
    let mut results = Map::new();
    let admin = admin(&ch, &recorder, &mut results).await?;
    writer(&ch, &recorder, &admin, &mut results).await?;
    results.insert("what".into(), "results".into());
    emit(&Value::Object(results)).context("writing the results")
}

/// Runs one library call, naming the code path its requests are recorded under.
async fn step<T, E: std::fmt::Display>(
    recorder: &Recorder,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    // The call is a future that has not started yet: its requests all come after this.
    *recorder.what.lock().unwrap_or_else(|e| e.into_inner()) = what.to_owned();
    call.await.map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

/// What the operator's commands left behind, for the writer's rows to refer to.
struct Admin {
    open: PipelineRow,
    disabled: PipelineRow,
    scoped: TokenRow,
    revoked: TokenRow,
}

/// Migrations (twice: the second run finds them applied) and every store function, as the
/// operator's commands call them.
async fn admin(
    ch: &Clickhouse,
    recorder: &Recorder,
    results: &mut Map<String, Value>,
) -> anyhow::Result<Admin> {
    step(recorder, "clickhouse.ping", ch.ping(QUERY_TIMEOUT)).await?;
    let before = step(
        recorder,
        "migrate.schema_applied",
        migrate::schema_applied(ch),
    )
    .await?;
    let first = step(recorder, "migrate", migrate::migrate(ch)).await?;
    let again = step(recorder, "migrate.again", migrate::migrate(ch)).await?;
    let after = step(
        recorder,
        "migrate.schema_applied",
        migrate::schema_applied(ch),
    )
    .await?;
    results.insert("schema_applied".into(), json!([before, after]));
    // Migrating asked already (its tracking row is an insert); ask again under its own name.
    ch.forget_features();
    let features = step(recorder, "clickhouse.features", ch.features()).await?;

    let open = store::create_pipeline(ch, "orders");
    let open = step(recorder, "store.create_pipeline", open).await?;
    let disabled = store::create_pipeline(ch, "paused");
    let disabled = step(recorder, "store.create_pipeline", disabled).await?;
    let view = store::create_view(ch, open.pipeline_id);
    step(recorder, "store.create_view", view).await?;
    let disable = store::set_pipeline_active(ch, disabled.pipeline_id, false);
    let disabled = step(recorder, "store.set_pipeline_active", disable).await?;
    // Signed senders: a sealed secret and event patterns on the open pipeline (CONTRACT §8).
    let key = hookhouse::signing::SecretsKey::from_bytes([7; 32]);
    let secret = hookhouse::signing::Secret::new(b"It's a Secret to Everybody".to_vec());
    let sealed = key.seal(open.pipeline_id, &secret);
    let signing = store::set_signing(ch, open.pipeline_id, |_| {
        Ok(store::StoredSigning {
            scheme: "github".into(),
            scheme_options: String::new(),
            secrets: vec![sealed.clone()],
        })
    });
    step(recorder, "store.set_signing", signing).await?;
    let patterns = vec!["push".to_string(), "linkedin.message.*".to_string()];
    let patterns = store::set_event_patterns(ch, open.pipeline_id, patterns);
    step(recorder, "store.set_event_patterns", patterns).await?;
    let open = step(
        recorder,
        "store.pipeline",
        store::pipeline(ch, open.pipeline_id),
    )
    .await?;
    let pipelines = store::list_pipelines(ch);
    let pipelines = step(recorder, "store.list_pipelines", pipelines).await?;

    let scope = [open.pipeline_id];
    let scoped = store::create_token(ch, "scoped", &scope);
    let (scoped, _, _) = step(recorder, "store.create_token", scoped).await?;
    let everywhere = store::create_token(ch, "everywhere", &[]);
    let (everywhere, _, _) = step(recorder, "store.create_token", everywhere).await?;
    let revoke = store::revoke_token(ch, &everywhere.key);
    let revoked = step(recorder, "store.revoke_token", revoke).await?;
    let tokens = step(recorder, "store.list_tokens", store::list_tokens(ch)).await?;

    // Notifications (CONTRACT §9): a subscription, a new version of it, and an attempt.
    let subscription = SubscriptionRow {
        subscription_id: "sub_0123456789abcdef0123456789abcdef".into(),
        url: "https://receiver.example/hooks?a='b'".into(),
        secret: key.seal_for_subscription(
            "sub_0123456789abcdef0123456789abcdef",
            &hookhouse::signing::Secret::new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec()),
        ),
        pipelines: vec![open.pipeline_id],
        event_types: vec!["data.landed".into(), "request.rejected".into()],
        active: 1,
        disabled_reason: String::new(),
        deleted: 0,
        created_at: 0,
        version: 0,
    };
    let created = store::create_subscription(ch, subscription);
    let created = step(recorder, "store.create_subscription", created).await?;
    let disable = store::update_subscription(ch, &created.subscription_id, |row| {
        row.active = 0;
        row.disabled_reason = "the receiver answered 410 Gone".into();
    });
    step(recorder, "store.update_subscription", disable).await?;
    // Written only while the subscription is still at the version judged: not again.
    let stale = store::disable_subscription(ch, &created.subscription_id, created.version, "x");
    let stale = step(recorder, "store.disable_subscription", stale).await?;
    anyhow::ensure!(stale.is_none(), "disabled a subscription that changed");
    let found = store::subscription(ch, &created.subscription_id);
    let subscription = step(recorder, "store.subscription", found).await?;
    let subscriptions = store::list_subscriptions(ch);
    let subscriptions = step(recorder, "store.list_subscriptions", subscriptions).await?;
    let attempt = AttemptRow {
        subscription_id: created.subscription_id.clone(),
        webhook_id: "msg_0123456789abcdef0123456789abcdef".into(),
        kind: "data.landed".into(),
        attempt: 2,
        status_code: 503,
        error: "the receiver answered 503".into(),
        duration_ms: 12,
        attempted_at: created.created_at,
    };
    let attempts = [attempt];
    let recorded = store::insert_attempts(ch, &attempts);
    step(recorder, "store.insert_attempts", recorded).await?;
    results.insert("subscriptions_latest".into(), json!([subscription]));
    results.insert(
        "subscriptions_listed".into(),
        serde_json::to_value(subscriptions)?,
    );
    results.insert("attempts".into(), serde_json::to_value(attempts)?);

    let versions: Vec<u32> = MIGRATIONS.iter().map(|(version, _, _)| *version).collect();
    results.insert("database".into(), ch.database().into());
    results.insert("migrations".into(), json!(versions));
    results.insert("migrate_applied".into(), json!([first, again]));
    results.insert("async_insert_known".into(), features.async_insert.into());
    results.insert("pipelines_latest".into(), json!([open, disabled]));
    results.insert("pipelines_listed".into(), serde_json::to_value(pipelines)?);
    results.insert("tokens_latest".into(), json!([scoped, revoked]));
    results.insert("tokens_listed".into(), serde_json::to_value(tokens)?);
    Ok(Admin {
        open,
        disabled,
        scoped,
        revoked,
    })
}

/// Bodies as senders send them: plain, with every character that needs care in SQL or JSON,
/// and one large enough to take several compressed frames.
fn bodies() -> Vec<String> {
    let numbers: Vec<String> = (0..120_000).map(|n: u32| n.to_string()).collect();
    vec![
        r#"{"order":1,"total":12.5}"#.to_owned(),
        // Non-ASCII, a single quote, escaped quotes, backslash and newline, a trailing newline.
        concat!(
            r#"{"text":"ünïcødé ✓ 😀","quote":"it's \"x\"","#,
            r#""path":"C:\\tmp","nl":"a\nb"}"#,
            "\n",
        )
        .to_owned(),
        format!("[{}]", numbers.join(",")),
        r#"{"order":4}"#.to_owned(),
        r#"["disabled",null,true]"#.to_owned(),
    ]
}

/// Every call of the writer's [`Delivery`], on rows that go to `events` and to `rejected`.
async fn writer(
    ch: &Clickhouse,
    recorder: &Recorder,
    admin: &Admin,
    results: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let delivery = Delivery::new(ch.clone(), instance.clone());
    let ids: Vec<RequestId> = (0..6).map(|_| RequestId::generate()).collect();
    let bodies = bodies();
    let rows = landings(admin, &ids, &bodies);
    let insert = delivery.insert(&rows, QUERY_TIMEOUT);
    step(recorder, "delivery.insert", insert).await?;

    // One more row asked about that was never inserted: it must not come back.
    let absent = Landing {
        request_id: ids[5].as_str(),
        ..rows[0].clone()
    };
    let sought: Vec<Landing> = rows.iter().cloned().chain([absent]).collect();
    let present = step(recorder, "delivery.present", delivery.present(&sought)).await?;
    let running = delivery.running_inserts();
    let running = step(recorder, "delivery.running_inserts", running).await?;
    let stop = delivery.stop_running_inserts();
    step(recorder, "delivery.stop_running_inserts", stop).await?;
    let drift = step(recorder, "delivery.drift", delivery.drift()).await?;
    let engine = delivery.deduplicating_engine();
    let engine = step(recorder, "delivery.deduplicating_engine", engine).await?;
    // `hookhouse request show`: an id in `events`, one in `rejected`, one in neither.
    let mut found = Vec::new();
    for id in [rows[0].request_id, rows[1].request_id, ids[5].as_str()] {
        let id = RequestId::from_bytes(id.as_bytes()).context("a generated id")?;
        let rows = step(recorder, "store.find_request", store::find_request(ch, &id)).await?;
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| json!([r.landed_in, r.pipeline_id, r.__kdd_requester_key, r.reason]))
            .collect();
        found.push(json!({"request_id": id.as_str(), "found": rows}));
    }

    // Signed senders: which deliveries landed, and `rejected replay`'s reads and its delete.
    let asked: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| (r.pipeline_id, r.delivery_id.as_str()))
        .chain([(rows[0].pipeline_id, "never-landed")])
        .collect();
    let redeliveries = delivery.redeliveries(&asked, 1_767_225_600 - 7 * 24 * 3600);
    let redeliveries = step(recorder, "delivery.redeliveries", redeliveries).await?;
    let mut landed_deliveries: Vec<Value> = redeliveries
        .iter()
        .map(|r| {
            json!([
                r.pipeline_id,
                r.delivery_id,
                r.__kdd_request_id,
                r.received_at
            ])
        })
        .collect();
    landed_deliveries.sort_by_key(|v| v.to_string());
    let replayed = admin.disabled.pipeline_id;
    let page = store::rejected_page(ch, replayed, Some("PIPELINE_DISABLED"), 0, "", 100);
    let page = step(recorder, "store.rejected_page", page).await?;
    let event_ids: Vec<&str> = rows.iter().map(|r| r.request_id).collect();
    let held = store::in_events(ch, admin.open.pipeline_id, &event_ids);
    let mut held: Vec<String> = step(recorder, "store.in_events", held)
        .await?
        .into_iter()
        .collect();
    held.sort_unstable();
    // An id never inserted: the statement runs and the rows the check reads stay.
    let never = [ids[5].as_str()];
    let delete = store::delete_rejected(ch, replayed, &never);
    step(recorder, "store.delete_rejected", delete).await?;
    results.insert("redeliveries".into(), json!(landed_deliveries));
    results.insert(
        "rejected_page".into(),
        json!(page
            .iter()
            .map(|r| json!([r.__kdd_request_id, r.reason, r.headers, r.body_as_sent]))
            .collect::<Vec<_>>()),
    );
    results.insert("replay_pipeline".into(), replayed.into());
    results.insert("in_events".into(), json!(held));

    let mut present: Vec<String> = present.into_iter().collect();
    present.sort_unstable();
    results.insert(
        "insert_query_prefix".into(),
        sql::insert_query_prefix(&instance).into(),
    );
    results.insert("landings".into(), rows.iter().map(landing_json).collect());
    results.insert("absent".into(), ids[5].as_str().into());
    results.insert("present".into(), json!(present));
    results.insert("running_inserts".into(), running.into());
    results.insert("deduplicating_engine".into(), json!(engine));
    results.insert("drift".into(), json!(drift));
    results.insert("requests_found".into(), json!(found));
    results.insert("event_columns".into(), json!(EVENT_COLUMNS));
    results.insert("rejected_columns".into(), json!(REJECTED_COLUMNS));
    Ok(())
}

/// Rows as the writer's steps hand them over, interleaving ones for `events` (no reason) and
/// for `rejected`, each with its own id and body.
fn landings<'a>(admin: &Admin, ids: &'a [RequestId], bodies: &'a [String]) -> Vec<Landing<'a>> {
    let (open, disabled) = (admin.open.pipeline_id, admin.disabled.pipeline_id);
    let (scoped, revoked) = (&admin.scoped.key, &admin.revoked.key);
    let fates = [
        (open, scoped, None),
        (open, revoked, Some(Reason::RevokedKey)),
        (open, scoped, None),
        (open, scoped, None),
        (disabled, scoped, Some(Reason::PipelineDisabled)),
    ];
    fates
        .into_iter()
        .zip(ids.iter().zip(bodies))
        .enumerate()
        .map(|(n, ((pipeline_id, key, reason), (id, body)))| {
            // 2026-01-01, with the sub-millisecond part the contract promises.
            let accepted_at = 1_767_225_600.123_456_7 + n as f64;
            let mut row = Landing::new(
                pipeline_id,
                id.as_str(),
                accepted_at,
                key.clone(),
                body.into(),
            );
            row.event_type = format!("type.{n}");
            // Sender text in SQL literals: a quote, a backslash, non-ASCII, question marks (the
            // crate reads `?` as a placeholder).
            row.delivery_id = format!("delivery-{n} it's \\ \"ü\" a?b ??");
            row.headers = r#"{"x-github-event":"push"}"#;
            row.reason = reason.map(Reason::as_str);
            row
        })
        .collect()
}

fn landing_json(row: &Landing) -> Value {
    json!({
        "pipeline_id": row.pipeline_id,
        "request_id": row.request_id,
        "accepted_at": row.accepted_at,
        "key": row.key,
        "body_hex": hex::encode(row.body.as_bytes()),
        "received_at": row.received_at,
        "event_type": row.event_type,
        "delivery_id": row.delivery_id,
        "headers": row.headers,
        "reason": row.reason,
    })
}

/// Records each request under the code path that sent it, and gets its answer.
struct Recorder {
    answers: Answers,
    /// The code path whose requests are coming in now.
    what: Mutex<String>,
    /// Held from printing a request to reading its answer, so that the answers on stdin pair
    /// with the requests on stdout even if the client opens a second connection.
    exchange: Mutex<()>,
}

/// An HTTP answer: 200 with ClickHouse's output, or 500 with its error text.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Recorder {
    fn answer(&self, request: &HttpRequest) -> Answer {
        self.record(request).unwrap_or_else(|error| {
            // The library then fails with this text, and so does the run.
            let text = format!("hookhouse-statements: {error:#}");
            eprintln!("{text}");
            Answer {
                status: 500,
                body: text.into_bytes(),
            }
        })
    }

    fn record(&self, request: &HttpRequest) -> anyhow::Result<Answer> {
        let statement = Statement::from_request(request)?;
        let what = self.what.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let line = json!({
            "what": what,
            "sql": statement.sql,
            "settings": statement.settings,
            "rowbinary_hex": statement.data.as_deref().map(hex::encode),
        });
        let _exchange = self.exchange.lock().unwrap_or_else(|e| e.into_inner());
        emit(&line).context("writing a request")?;
        match self.answers {
            Answers::Canned => Ok(Answer {
                status: 200,
                body: canned(&statement.sql),
            }),
            Answers::Engine => read_answer(),
        }
    }
}

fn emit(line: &Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// The checker's answer to the request just printed.
fn read_answer() -> anyhow::Result<Answer> {
    #[derive(serde::Deserialize)]
    struct EngineAnswer {
        status: u16,
        #[serde(default)]
        body_hex: String,
        #[serde(default)]
        error: String,
    }
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("stdin closed before the answer came");
    }
    let answer: EngineAnswer = serde_json::from_str(&line).context("an answer on stdin")?;
    let body = if answer.status == 200 {
        hex::decode(answer.body_hex).context("an answer's body_hex")?
    } else {
        answer.error.into_bytes()
    };
    Ok(Answer {
        status: answer.status,
        body,
    })
}

/// A request as ClickHouse's HTTP interface reads it.
struct Statement {
    sql: String,
    settings: Map<String, Value>,
    /// An insert's data (the body after the `query` parameter), uncompressed.
    data: Option<Vec<u8>>,
}

impl Statement {
    fn from_request(request: &HttpRequest) -> anyhow::Result<Statement> {
        let query = request.target.split_once('?').map_or("", |(_, q)| q);
        let (mut sql, mut compressed, mut settings) = (None, false, Map::new());
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "query" => sql = Some(value.into_owned()),
                // How the body is framed, not how the statement runs: undone below.
                "decompress" => compressed = value == "1",
                _ => {
                    ensure!(!settings.contains_key(&*name), "URL parameter {name} twice");
                    settings.insert(name.into_owned(), value.into_owned().into());
                }
            }
        }
        let (sql, data) = match sql {
            // ClickHouse reads the statement from `query` and the insert's data from the body.
            Some(sql) if compressed => (sql, Some(unframe_lz4(&request.body)?)),
            Some(sql) => (sql, Some(request.body.clone())),
            None => {
                let sql = String::from_utf8(request.body.clone()).context("a non-UTF-8 query")?;
                (sql, None)
            }
        };
        Ok(Statement {
            sql,
            settings,
            data,
        })
    }
}

/// The body of an insert the client compressed (`decompress=1`), in ClickHouse's native
/// framing: frames of a 16-byte checksum, the method byte (0x82: LZ4), the frame's size from
/// the method byte on and the data's size (both u32 little-endian), then one LZ4 block.
fn unframe_lz4(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    const CHECKSUM: usize = 16;
    const HEADER: usize = 9;
    let mut data = Vec::new();
    while !body.is_empty() {
        let header = body
            .get(CHECKSUM..CHECKSUM + HEADER)
            .context("a compressed frame cut short")?;
        ensure!(
            header[0] == 0x82,
            "compression method {:#x}, not LZ4",
            header[0]
        );
        let size = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
                as usize
        };
        let (framed, plain) = (size(1), size(5));
        let block = body
            .get(CHECKSUM + HEADER..CHECKSUM + framed)
            .context("a compressed frame cut short")?;
        data.extend(lz4_flex::block::decompress(block, plain).context("an LZ4 block")?);
        body = &body[CHECKSUM + framed..];
    }
    Ok(data)
}

/// Answers that let the library go down every path: the one setting it asks about is known,
/// and a pipeline, token or subscription it looks up exists. Everything else is zero rows.
fn canned(sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if sql == sql::SERVER_FEATURES {
        put_string(&mut out, "async_insert");
    } else if let Some(id) = after(sql, "FINAL WHERE pipeline_id = ") {
        // PipelineRow: pipeline_id, name, active, created_at, version, scheme,
        // scheme_options, secrets (empty), event_patterns (empty).
        out.extend(id.parse::<u64>().unwrap_or(1).to_le_bytes());
        put_string(&mut out, "canned");
        out.push(1);
        out.extend(0u32.to_le_bytes());
        out.extend(1u64.to_le_bytes());
        put_string(&mut out, "");
        put_string(&mut out, "");
        out.push(0);
        out.push(0);
    } else if let Some(key) = after(sql, "FINAL WHERE key = '") {
        // TokenRow: key, name, token_hash, pipelines (empty), revoked, created_at, version.
        put_string(&mut out, key.trim_end_matches('\''));
        put_string(&mut out, "canned");
        put_string(&mut out, &"0".repeat(64));
        out.push(0);
        out.push(0);
        out.extend(0u32.to_le_bytes());
        out.extend(1u64.to_le_bytes());
    } else if let Some(id) = after(sql, "FINAL WHERE subscription_id = '") {
        // SubscriptionRow: subscription_id, url, secret, pipelines (empty), event_types
        // (empty), active, disabled_reason, deleted, created_at, version.
        put_string(&mut out, id.trim_end_matches('\''));
        put_string(&mut out, "https://receiver.example/");
        put_string(&mut out, "v1:canned");
        out.push(0);
        out.push(0);
        out.push(1);
        put_string(&mut out, "");
        out.push(0);
        out.extend(0u32.to_le_bytes());
        out.extend(1u64.to_le_bytes());
    }
    out
}

fn after<'a>(sql: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &sql[sql.find(marker)? + marker.len()..];
    Some(rest.split_whitespace().next().unwrap_or(rest))
}

/// A RowBinary String: its length as an unsigned LEB128 varint, then its bytes.
fn put_string(out: &mut Vec<u8>, text: &str) {
    let mut len = text.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend(text.as_bytes());
}

/// One HTTP request, as much of it as ClickHouse's HTTP interface looks at here.
struct HttpRequest {
    /// The request target: path and query string.
    target: String,
    body: Vec<u8>,
}

/// Serves every connection the client opens, each on its own thread: the client keeps them
/// alive between requests and may open another while one is busy.
fn serve(listener: &TcpListener, recorder: &Arc<Recorder>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let recorder = Arc::clone(recorder);
        std::thread::spawn(move || {
            if let Err(error) = serve_connection(stream, &recorder) {
                eprintln!("hookhouse-statements: a connection failed: {error}");
            }
        });
    }
}

fn serve_connection(stream: TcpStream, recorder: &Recorder) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader)? {
        let answer = recorder.answer(&request);
        let reason = if answer.status == 200 { "OK" } else { "Error" };
        write!(
            writer,
            "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\n\r\n",
            answer.status,
            answer.body.len()
        )?;
        writer.write_all(&answer.body)?;
        writer.flush()?;
    }
    Ok(())
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The next request on a connection; `None` when the client closed it.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let target = line
        .split(' ')
        .nth(1)
        .ok_or_else(|| malformed("no request target"))?;
    let target = target.to_owned();
    let (mut length, mut chunked) = (0, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(malformed("headers cut short"));
        }
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break; // the empty line after the headers
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| malformed("Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some(HttpRequest { target, body }))
}

/// A chunked body: how the client streams an insert's rows.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| malformed("chunk size"))?;
        if size == 0 {
            // Trailers, then the empty line that ends the body.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut end = [0; 2];
        reader.read_exact(&mut end)?;
    }
}
