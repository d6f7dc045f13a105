//! The `hookhouse` command line (CONTRACT §5): every command, human and `--json` output, and
//! one clear line for a bad setting.

mod common;

use common::*;
use serde_json::Value;

fn run(ch: &ClickhouseServer, args: &[&str]) -> (i32, String, String) {
    hookhouse_cli(args, &[("HOOKHOUSE_CLICKHOUSE_URL", &ch.url())])
}

fn json(ch: &ClickhouseServer, args: &[&str]) -> Value {
    let (code, out, err) = run(ch, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed {out:?}: {e}"))
}

#[test]
fn help_explains_every_command() {
    let (code, out, _) = hookhouse_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    for command in ["serve", "migrate", "pipeline", "token"] {
        assert!(out.contains(command), "{out}");
    }
    let (_, out, _) = hookhouse_cli(&["pipeline", "--help"], &[]);
    for command in ["create", "list", "disable"] {
        assert!(out.contains(command), "{out}");
    }
    let (_, out, _) = hookhouse_cli(&["token", "create", "--help"], &[]);
    assert!(
        out.contains("--pipeline") && out.contains("--name") && out.contains("--json"),
        "{out}"
    );
    let (code, _, err) = hookhouse_cli(&["pipeline", "create"], &[]);
    assert_eq!(code, 2, "a missing argument is a usage error");
    assert!(err.contains("--name"), "{err}");
}

#[test]
fn migrate_is_idempotent() {
    let ch = ClickhouseServer::start();
    let (code, out, _) = run(&ch, &["migrate"]);
    assert_eq!(code, 0);
    assert!(out.contains("Applied migrations [1, 2, 3]"), "{out}");
    let again = json(&ch, &["migrate", "--json"]);
    assert_eq!(
        again,
        serde_json::json!({"applied": [], "database": "hookhouse"})
    );
}

#[test]
fn pipelines_are_created_listed_disabled_and_enabled() {
    let ch = ClickhouseServer::start();
    assert_eq!(
        json(&ch, &["pipeline", "create", "--name", "crm", "--json"]),
        serde_json::json!({"pipeline_id": 1, "name": "crm"})
    );
    assert_eq!(
        json(&ch, &["pipeline", "create", "--name", "ads ção", "--json"])["pipeline_id"],
        2
    );
    let (code, out, _) = run(&ch, &["pipeline", "create", "--name", "outreach"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Created pipeline 3 (outreach)") && out.contains("hookhouse.pipeline_3"),
        "{out}"
    );
    let list = json(&ch, &["pipeline", "list", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crm", "ads ção", "outreach"]);
    assert!(list.as_array().unwrap().iter().all(|p| p["active"] == true));

    let (code, out, _) = run(&ch, &["pipeline", "disable", "--id", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains("now disabled"), "{out}");
    let (_, out, _) = run(&ch, &["pipeline", "list"]);
    let line = out.lines().find(|l| l.starts_with("2 ")).unwrap();
    assert!(
        line.contains("disabled") && line.contains("ads ção"),
        "{out}"
    );
    assert_eq!(
        json(&ch, &["pipeline", "enable", "--id", "2", "--json"])["active"],
        true
    );

    let (code, _, err) = run(&ch, &["pipeline", "disable", "--id", "99"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "hookhouse: no pipeline with id 99");
    let (code, _, err) = run(&ch, &["pipeline", "create", "--name", ""]);
    assert_eq!(code, 1);
    assert!(err.contains("name"), "{err}");
    // Each pipeline has its view.
    let views = ch.query_blocking("SELECT name FROM system.tables WHERE database = 'hookhouse' AND name LIKE 'pipeline\\\\_%' ORDER BY name");
    assert_eq!(
        views.lines().collect::<Vec<_>>(),
        ["pipeline_1", "pipeline_2", "pipeline_3"]
    );
}

#[test]
fn tokens_are_shown_once_listed_without_secrets_and_revoked() {
    let ch = ClickhouseServer::start();
    json(&ch, &["pipeline", "create", "--name", "p", "--json"]);
    let created = json(
        &ch,
        &[
            "token",
            "create",
            "--name",
            "kakiyo",
            "--pipeline",
            "1",
            "--json",
        ],
    );
    let (key, token) = (
        created["key"].as_str().unwrap(),
        created["token"].as_str().unwrap(),
    );
    assert!(hookhouse::ingest::Key::parse(key).is_some(), "{key}");
    assert_eq!(token.len(), 40);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
    let (code, out, _) = run(&ch, &["token", "create", "--name", "everything"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("all pipelines") && out.contains("key:") && out.contains("token:"),
        "{out}"
    );

    let list = json(&ch, &["token", "list", "--json"]);
    let listed = list.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        !list.to_string().contains(token),
        "token list never shows tokens"
    );
    let kakiyo = listed.iter().find(|t| t["key"] == key).unwrap();
    assert_eq!(
        (
            kakiyo["name"].clone(),
            kakiyo["pipelines"].clone(),
            kakiyo["revoked"].clone()
        ),
        ("kakiyo".into(), serde_json::json!([1]), false.into())
    );

    let (code, out, _) = run(&ch, &["token", "revoke", "--key", &key.to_uppercase()]);
    assert_eq!(code, 0, "keys are case-insensitive");
    assert!(out.contains("Revoked key"), "{out}");
    let list = json(&ch, &["token", "list", "--json"]);
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .unwrap()["revoked"],
        true
    );

    let (code, _, err) = run(&ch, &["token", "revoke", "--key", "not-a-key"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a key"), "{err}");
    let (code, _, err) = run(&ch, &["token", "revoke", "--key", KEY_SHAPE]);
    assert_eq!(
        (code, err.trim()),
        (
            1,
            format!("hookhouse: no token with key {KEY_SHAPE}").as_str()
        )
    );
    let (code, _, err) = run(&ch, &["token", "create", "--name", "x", "--pipeline", "42"]);
    assert_eq!((code, err.trim()), (1, "hookhouse: no pipeline with id 42"));
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("HOOKHOUSE_MAX_BODY_BYTES", "lots")],
            "HOOKHOUSE_MAX_BODY_BYTES",
        ),
        (&[("HOOKHOUSE_FSYNC", "sometimes")], "HOOKHOUSE_FSYNC"),
        (&[("HOOKHOUSE_LISTEN", "nowhere")], "HOOKHOUSE_LISTEN"),
        (
            &[("HOOKHOUSE_BATCH_MAX_WAIT_MS", "-1")],
            "HOOKHOUSE_BATCH_MAX_WAIT_MS",
        ),
        (
            &[("HOOKHOUSE_CONFIG", "/nonexistent/hookhouse.toml")],
            "HOOKHOUSE_CONFIG",
        ),
    ];
    for (env, setting) in cases {
        let (code, out, err) = hookhouse_cli(&["serve"], env);
        assert_eq!(code, 1, "{env:?}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(setting) && !err.contains("panicked"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookhouse.toml");
    std::fs::write(&file, "batch_max_rowz = 10\n").unwrap();
    let (code, _, err) = hookhouse_cli(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("batch_max_rowz") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_config_file_is_layered_under_the_environment() {
    let ch = ClickhouseServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookhouse.toml");
    std::fs::write(
        &file,
        format!(
            "clickhouse_url = \"{}\"\nclickhouse_database = \"from_file\"\n",
            ch.url()
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, out, err) = hookhouse_cli(&["migrate", "--json", "--config", path], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"database\":\"from_file\""), "{out}");
    let (_, out, _) = hookhouse_cli(
        &["migrate", "--json"],
        &[
            ("HOOKHOUSE_CONFIG", path),
            ("HOOKHOUSE_CLICKHOUSE_DATABASE", "from_env"),
        ],
    );
    assert!(out.contains("\"database\":\"from_env\""), "{out}");
}

#[test]
fn an_unreachable_clickhouse_is_one_clear_line() {
    let port = free_port();
    let (code, _, err) = hookhouse_cli(
        &["pipeline", "list"],
        &[(
            "HOOKHOUSE_CLICKHOUSE_URL",
            &format!("http://127.0.0.1:{port}"),
        )],
    );
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("ClickHouse at http://127.0.0.1:{port}"))
            && err.contains("HOOKHOUSE_CLICKHOUSE_URL"),
        "{err}"
    );
}

#[test]
fn read_only_commands_never_create_the_database() {
    let ch = ClickhouseServer::start();
    for args in [
        &["pipeline", "list"][..],
        &["token", "list"],
        &["--json", "token", "list"],
    ] {
        let (code, out, err) = run(&ch, args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("database hookhouse does not exist") && err.contains("hookhouse migrate"),
            "{err}"
        );
    }
    let databases =
        ch.query_blocking("SELECT count() FROM system.databases WHERE name = 'hookhouse'");
    assert_eq!(
        databases.trim(),
        "0",
        "a read-only command created the database"
    );
    let (code, _, err) = run(&ch, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&ch, &["--json", "pipeline", "list"]),
        serde_json::json!([])
    );
}

#[test]
fn help_lists_every_setting_and_describes_every_flag() {
    let (code, out, _) = hookhouse_cli(&["serve", "--help"], &[]);
    assert_eq!(code, 0);
    for line in [
        "HOOKHOUSE_LISTEN [default: 127.0.0.1:8080]",
        "HOOKHOUSE_MAX_BODY_BYTES [default: 10485760 (10 MiB)]",
        "HOOKHOUSE_FSYNC [default: always]",
        "HOOKHOUSE_PUBLIC_URL [default: unset]",
        "HOOKHOUSE_LOG_FORMAT [default: text]",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    let commands: &[&[&str]] = &[
        &["serve"],
        &["migrate"],
        &["pipeline", "create"],
        &["pipeline", "list"],
        &["pipeline", "disable"],
        &["pipeline", "enable"],
        &["token", "create"],
        &["token", "revoke"],
        &["token", "list"],
        &["request", "show"],
    ];
    for command in commands {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let (code, out, err) = hookhouse_cli(&args, &[]);
        assert_eq!(code, 0, "{args:?}: {err}");
        // clap puts a flag's description on its own line: a flag line ending in its value name
        // alone has none.
        for line in out.lines().map(str::trim) {
            if line.starts_with("--") || line.starts_with("-h") || line.starts_with('<') {
                let described = line.split("  ").filter(|p| !p.trim().is_empty()).count() > 1;
                assert!(described, "{args:?}: {line:?} has no description:\n{out}");
            }
        }
    }
    let (_, out, _) = hookhouse_cli(&["token", "create", "--help"], &[]);
    for (flag, description) in [
        ("--name <NAME>", "A name for the token"),
        ("--pipeline <ID>", "A pipeline the token may write to"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(flag) && l.contains(description)),
            "{out}"
        );
    }
}

#[test]
fn settings_errors_say_what_is_expected() {
    for (env, expected) in [
        (
            ("HOOKHOUSE_MAX_BODY_BYTES", "abc"),
            "hookhouse: bad setting HOOKHOUSE_MAX_BODY_BYTES: expected a size such as 10485760 or 10MiB, got \"abc\"",
        ),
        (
            ("HOOKHOUSE_LISTEN", "8081"),
            "hookhouse: bad setting HOOKHOUSE_LISTEN: expected an address such as 127.0.0.1:8080, got \"8081\" (port 8081 on every interface is 0.0.0.0:8081)",
        ),
        (
            ("HOOKHOUSE_FSYNC", "sometimes"),
            "hookhouse: bad setting HOOKHOUSE_FSYNC: expected `always` or `interval`, got \"sometimes\"",
        ),
    ] {
        let (code, out, err) = hookhouse_cli(&["serve"], &[env]);
        assert_eq!((code, out.as_str(), err.trim()), (1, "", expected));
    }
    // Sizes take units, in the environment and in the file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookhouse.toml");
    std::fs::write(&file, "wal_max_bytes = \"1GiB\"\nlisten = 8081\n").unwrap();
    let (code, _, err) = hookhouse_cli(
        &["serve", "--config", file.to_str().unwrap()],
        &[("HOOKHOUSE_MAX_BODY_BYTES", "512KiB")],
    );
    assert_eq!(code, 1);
    assert!(
        err.trim().starts_with("hookhouse: bad setting HOOKHOUSE_LISTEN: expected an address such as 127.0.0.1:8080, got 8081 (in "),
        "only the listen address is wrong: {err}"
    );
}

#[test]
fn unknown_hookhouse_variables_are_warned_about_by_name() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, err) = hookhouse_cli(
        &["pipeline", "list"],
        &[
            ("HOOKHOUSE_CLICKHOUSE_URL", &url),
            ("HOOKHOUSE_LISTN", "0.0.0.0:8080"),
            ("HOOKHOUSE_MY_SCRIPTS_OWN", "1"),
        ],
    );
    assert_eq!(
        code, 1,
        "ClickHouse is not there; the variables do not stop it: {err}"
    );
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("is not a hookhouse setting"))
        .collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].contains("HOOKHOUSE_LISTN")
            && warnings[0].contains("did you mean HOOKHOUSE_LISTEN?"),
        "{err}"
    );
    assert!(
        warnings[1].contains("HOOKHOUSE_MY_SCRIPTS_OWN") && !warnings[1].contains("did you mean"),
        "{err}"
    );
    assert!(
        err.lines().last().unwrap().contains("ClickHouse at"),
        "{err}"
    );
}

#[test]
fn token_create_prints_the_senders_url() {
    let ch = ClickhouseServer::start();
    json(&ch, &["pipeline", "create", "--name", "crm", "--json"]);
    json(&ch, &["pipeline", "create", "--name", "ads", "--json"]);
    let public = [
        ("HOOKHOUSE_CLICKHOUSE_URL", ch.url()),
        (
            "HOOKHOUSE_PUBLIC_URL",
            "https://hooks.example.com/".to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = public.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = hookhouse_cli(
        &[
            "token",
            "create",
            "--name",
            "s",
            "--pipeline",
            "1",
            "--pipeline",
            "2",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let (key, token) = (
        created["key"].as_str().unwrap(),
        created["token"].as_str().unwrap(),
    );
    assert_eq!(
        created["urls"],
        serde_json::json!([
            format!("https://hooks.example.com/?pipeline_id=1&key={key}&token={token}"),
            format!("https://hooks.example.com/?pipeline_id=2&key={key}&token={token}"),
        ])
    );
    assert_eq!(created["name"], "s");

    // For every pipeline: a template; without HOOKHOUSE_PUBLIC_URL, from the listen address.
    let all = json(&ch, &["token", "create", "--name", "all", "--json"]);
    let (key, token) = (all["key"].as_str().unwrap(), all["token"].as_str().unwrap());
    assert_eq!(
        all["url"],
        format!("http://127.0.0.1:8080/?pipeline_id=PIPELINE_ID&key={key}&token={token}")
    );
    let (code, out, _) = run(
        &ch,
        &["token", "create", "--name", "one", "--pipeline", "2"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("  http://127.0.0.1:8080/?pipeline_id=2&key=")
            && out.contains("HOOKHOUSE_PUBLIC_URL"),
        "{out}"
    );
}

#[test]
fn revoking_twice_and_naming_twice_are_said_plainly() {
    let ch = ClickhouseServer::start();
    json(&ch, &["pipeline", "create", "--name", "crm", "--json"]);
    let (code, _, err) = run(&ch, &["pipeline", "create", "--name", "crm"]);
    assert_eq!(
        (code, err.trim()),
        (
            1,
            "hookhouse: a pipeline named \"crm\" already exists (id 1); pick another name"
        )
    );
    assert_eq!(
        json(&ch, &["pipeline", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let created = json(&ch, &["token", "create", "--name", "t", "--json"]);
    let key = created["key"].as_str().unwrap();
    let (code, out, _) = run(&ch, &["token", "revoke", "--key", key]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Revoked key"), "{out}");
    let (code, out, err) = run(&ch, &["token", "revoke", "--key", key]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("Key {key} (t) was already revoked; nothing changed.")
    );
    let again = json(&ch, &["token", "revoke", "--key", key, "--json"]);
    assert_eq!(
        (again["revoked"].clone(), again["already_revoked"].clone()),
        (true.into(), true.into())
    );
}

#[test]
fn every_command_says_each_cause_once() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    for scheme in ["http", "https"] {
        let url = format!("{scheme}://127.0.0.1:{port}");
        let commands: &[&[&str]] = &[
            &["migrate"],
            &["pipeline", "list"],
            &["pipeline", "create", "--name", "x"],
            &["pipeline", "disable", "--id", "1"],
            &["token", "create", "--name", "x"],
            &["token", "revoke", "--key", KEY_SHAPE],
            &["token", "list"],
            &["request", "show", "abcdefghijabcdefghij"],
        ];
        for args in commands {
            let (code, _, err) = hookhouse_cli(
                args,
                &[
                    ("HOOKHOUSE_CLICKHOUSE_URL", &url),
                    ("HOOKHOUSE_DATA_DIR", dir),
                ],
            );
            assert_eq!(code, 1, "{args:?}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            let parts: Vec<&str> = err.trim().split(": ").collect();
            for (i, part) in parts.iter().enumerate() {
                assert!(
                    !parts[i + 1..].contains(part),
                    "{args:?} says {part:?} twice: {err}"
                );
            }
            assert!(err.contains("Connection refused"), "{args:?}: {err}");
        }
    }
}
