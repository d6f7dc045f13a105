#!/usr/bin/env python3
"""Runs every request hookhouse sends to ClickHouse on a current engine, then checks its meaning.

Usage: check_current_engine.py BIN, where BIN is the built `hookhouse-statements`, run with the
Python of a venv that has chDB (ClickHouse in-process, from PyPI). scripts/check-current-engine.sh
sets that up.

Why: hookhouse must run unchanged on current ClickHouse releases (CONTRACT §4, §7), and no current
server can be installed where the tests run. BIN drives the library's real code against a stand-in
HTTP server and prints each request it makes (see src/bin/hookhouse-statements.rs); this script
answers each one from chDB, so the library decodes what the engine really said, and afterwards
compares the tables with what the library wrote and expects.

Each request runs as ClickHouse's HTTP interface would run it. Its URL parameters are settings,
applied for that statement only, and each must be a setting the engine knows; but for the HTTP
interface's own parameters (not settings on 24.8 or 25.8): `query_id`, which must be a plain name,
and `default_format`, the answer's format, which must be one the engine writes. An insert's data
is its RowBinary body, read with `FROM INFILE`: chDB 4.4.0 reports inline insert data as written
even when the engine refused a row, and reads a file correctly. Everything else runs as sent.

`system.processes` and `KILL QUERY … SYNC` run for real in chDB, but nothing else runs in the
process: the writer's count of its running inserts is 0 and the KILL finds nothing. So for them
this checks that the engine takes the statements and hookhouse reads the answer, not that a
running insert is stopped.

Exits 1 with the reasons on any failure; else prints
`current engine: N statements checked on ClickHouse <version>`.
"""

import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading

# The whole exchange takes seconds; past this something hangs.
TIMEOUT_SECONDS = 120

# CONTRACT §4: a pipeline's view has exactly these columns.
VIEW_COLUMNS = [
    ["__kdd_request_id", "String"],
    ["__kdd_request_unix_timestamp", "Float64"],
    ["__kdd_requester_key", "String"],
    ["__kdd_request_body", "String"],
]

# Parameters of ClickHouse's HTTP interface that are not settings (its HTTP handler reads them
# itself) and that this script knows what to do with. Any other parameter must be a setting.
QUERY_ID, DEFAULT_FORMAT = "query_id", "default_format"

# The HTTP interface's answer format when the request names none.
HTTP_FORMAT = "TabSeparated"

# Insert data arrives as the body after the statement; the statement names its format last.
ROWBINARY_TAIL = " FORMAT RowBinary"


class Failure(Exception):
    """What makes the check fail, in words for whoever reads the CI log."""


def quote(text):
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """A chDB session answering requests as ClickHouse's HTTP interface would."""

    def __init__(self, workdir):
        from chdb import session

        self.workdir = workdir
        self.session = session.Session(os.path.join(workdir, "data"))
        self.version = self.rows("SELECT version()")[0][0]
        self.settings = {name for (name,) in self.rows("SELECT name FROM system.settings")}
        self.output_formats = {
            name for (name,) in self.rows("SELECT name FROM system.formats WHERE is_output")
        }
        self.inserts = 0

    def close(self):
        # chDB 2.x sessions have no close(); their data goes with the temporary directory.
        getattr(self.session, "close", lambda: None)()

    def rows(self, sql):
        """The rows of one of this script's own queries, as lists of JSON values."""
        answer = self.session.query(
            sql + " SETTINGS output_format_json_quote_64bit_integers = 0", "JSONCompactEachRow"
        )
        return [json.loads(line) for line in answer.bytes().decode().splitlines() if line]

    def setting(self, name):
        value = self.rows(f"SELECT value FROM system.settings WHERE name = {quote(name)}")[0][0]
        return {"true": "1", "false": "0"}.get(value, value)

    def parameters(self, request):
        """The request's settings and answer format, once its URL parameters are checked."""
        what, settings = request["what"], dict(request["settings"])
        query_id = settings.pop(QUERY_ID, None)
        if query_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", query_id):
            raise Failure(f"{what}: query_id {query_id!r} is not a plain name")
        answer_format = settings.pop(DEFAULT_FORMAT, HTTP_FORMAT)
        if answer_format not in self.output_formats:
            raise Failure(
                f"{what}: default_format {answer_format!r} is no output format of "
                f"ClickHouse {self.version}"
            )
        for name, value in settings.items():
            if name not in self.settings:
                raise Failure(
                    f"{what} sends setting {name}={value!r}, which ClickHouse {self.version} "
                    f"does not know (not in system.settings):\n    {request['sql'][:300]}"
                )
        return settings, answer_format

    def run(self, request):
        """Runs one request with its settings; returns the answer for hookhouse-statements and
        notes in the request the settings as they stood while it ran."""
        what, sql = request["what"], request["sql"]
        settings, answer_format = self.parameters(request)
        statement = self.statement(what, sql, request["rowbinary_hex"])
        previous = {name: self.setting(name) for name in settings}
        try:
            for name, value in settings.items():
                self.query(what, f"SET {name} = {quote(value)}", HTTP_FORMAT, request)
            request["applied"] = {name: self.setting(name) for name in settings}
            body = self.query(what, statement, answer_format, request)
        finally:
            for name, value in previous.items():
                self.session.query(f"SET {name} = {quote(value)}")
        if request["applied"] != settings:
            raise Failure(f"{what}: settings {settings} did not take: {request['applied']}")
        return {"status": 200, "body_hex": body.hex()}

    def query(self, what, sql, answer_format, request):
        """The answer to `sql`, which runs for `request`; an error fails the check."""
        try:
            return self.session.query(sql, answer_format).bytes()
        except Exception as error:  # chDB's exception classes changed between releases
            raise Failure(
                f"{what}: ClickHouse {self.version} refuses\n    {sql[:2000]}\n"
                f"  (request with URL parameters {request['settings']}):\n    {error}"
            ) from error

    def statement(self, what, sql, rowbinary_hex):
        """The statement to run: as sent, or for an insert with data, reading that data from
        a file (see the module's docs)."""
        if rowbinary_hex is None:
            return sql
        if not sql.endswith(ROWBINARY_TAIL):
            raise Failure(f"{what}: data sent with a statement not in RowBinary: {sql}")
        self.inserts += 1
        path = os.path.join(self.workdir, f"insert-{self.inserts}.bin")
        with open(path, "wb") as data:
            data.write(bytes.fromhex(rowbinary_hex))
        return sql[: -len(ROWBINARY_TAIL)] + f" FROM INFILE {quote(path)}" + ROWBINARY_TAIL


def exchange(engine, binary):
    """Runs hookhouse-statements, answering each request from the engine. Returns the requests
    and the results line."""
    process = subprocess.Popen(
        [binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    watchdog = threading.Timer(TIMEOUT_SECONDS, process.kill)
    watchdog.start()
    requests, results = [], None
    try:
        for line in process.stdout:
            message = json.loads(line)
            if message["what"] == "results":
                results = message
                continue
            requests.append(message)
            process.stdin.write(json.dumps(engine.run(message)) + "\n")
            process.stdin.flush()
    except BaseException:
        process.kill()
        raise
    finally:
        watchdog.cancel()
        process.wait()
    if process.returncode != 0:
        raise Failure(f"hookhouse-statements exited with {process.returncode} (see above)")
    if results is None:
        raise Failure("hookhouse-statements printed no results line")
    return requests, results


def expect(failures, label, have, want):
    if have != want:
        failures.append(f"{label}:\n    got:    {have!r}\n    wanted: {want!r}")


def float_bits(number):
    return struct.unpack("<Q", struct.pack("<d", number))[0]


def check_settings(engine, requests, results, failures):
    """Inserts are synchronous: async_insert=0 took on every RowBinary insert. The writer's
    inserts carry its query id prefix, which is how it finds them in system.processes."""
    expect(failures, "hookhouse sees async_insert as known", results["async_insert_known"], True)
    if "async_insert" not in engine.settings:
        failures.append(f"ClickHouse {engine.version} has no async_insert setting")
    for request in requests:
        if request["rowbinary_hex"] is None:
            continue
        label = f"{request['what']}: {request['sql'][:60]}"
        applied = request["applied"].get("async_insert")
        expect(failures, f"{label}: async_insert while it ran", applied, "0")
        if request["what"].startswith("delivery."):
            query_id = request["settings"].get(QUERY_ID, "")
            if not query_id.startswith(results["insert_query_prefix"]):
                failures.append(f"{label}: query_id {query_id!r} lacks the writer's prefix")


def check_versioned(engine, failures, db, table, fields, latest_rows, listed_rows):
    """A versioned table (pipelines, tokens, subscriptions): its latest versions as the library
    returned them, as `store.list_<table>` decoded them from the engine, and as read back with
    `FINAL`, all the same. Returns the rows read back."""
    def row_of(row):
        return [row[f] for f in fields]
    latest = sorted(row_of(row) for row in latest_rows)
    listed = sorted(row_of(row) for row in listed_rows)
    expect(failures, f"store.list_{table} (FINAL, decoded by hookhouse)", listed, latest)
    columns = ", ".join("toUInt32(created_at)" if f == "created_at" else f for f in fields)
    direct = engine.rows(f"SELECT {columns} FROM `{db}`.{table} FINAL ORDER BY {fields[0]}")
    expect(failures, f"{table} FINAL", direct, latest)
    return direct


def check_store(engine, results, failures):
    """Migrations apply once; `FINAL` reads give the latest version of pipelines and tokens,
    both as hookhouse decoded the engine's RowBinary and read back directly."""
    db = results["database"]
    applied = results["migrate_applied"]
    expect(failures, "migrations applied (first run, second)", applied, [results["migrations"], []])
    expect(failures, "schema_applied (before migrating, after)", results["schema_applied"], [False, True])

    check_versioned(engine, failures, db, "pipelines",
                    ["pipeline_id", "name", "active", "created_at", "version"],
                    results["pipelines_latest"], results["pipelines_listed"])
    check_versioned(engine, failures, db, "tokens",
                    ["key", "name", "token_hash", "pipelines", "revoked", "created_at", "version"],
                    results["tokens_latest"], results["tokens_listed"])
    revoked = [row["revoked"] for row in results["tokens_latest"]]
    expect(failures, "revoked, of the scoped token and the revoked one", revoked, [0, 1])

    # Notifications (CONTRACT §9): the latest version of a subscription, and an attempt.
    direct = check_versioned(engine, failures, db, "subscriptions",
                             ["subscription_id", "url", "secret", "pipelines", "event_types",
                              "active", "disabled_reason", "deleted", "created_at", "version"],
                             results["subscriptions_latest"], results["subscriptions_listed"])
    expect(failures, "a subscription disabled by its second version", [r[5] for r in direct], [0])
    fields = ["subscription_id", "webhook_id", "type", "attempt", "status_code", "error",
              "duration_ms", "attempted_at"]
    want = [[row[f] for f in fields] for row in results["attempts"]]
    direct = engine.rows(
        "SELECT subscription_id, webhook_id, type, attempt, status_code, error, duration_ms, "
        f"toUInt32(attempted_at) FROM `{db}`.notification_attempts"
    )
    expect(failures, "notification_attempts", direct, want)


def check_rows(engine, results, failures):
    """Every row landed once, byte for byte, in the table its reason says; the presence query
    finds exactly them; the pipeline's view shows its rows with exactly four columns."""
    db = results["database"]
    landings = sorted(results["landings"], key=lambda row: row["request_id"])
    for table, reason in [("events", ""), ("rejected", ", reason")]:
        have = engine.rows(
            "SELECT pipeline_id, __kdd_request_id, "
            "reinterpretAsUInt64(__kdd_request_unix_timestamp), __kdd_requester_key, "
            f"lower(hex(__kdd_request_body)), toUInt32(received_at), "
            f"event_type, delivery_id, headers{reason} "
            f"FROM `{db}`.{table} ORDER BY __kdd_request_id"
        )
        want = [
            [r["pipeline_id"], r["request_id"], float_bits(r["accepted_at"]), r["key"]]
            + [r["body_hex"], r["received_at"]]
            + [r["event_type"], r["delivery_id"], r["headers"]]
            + ([r["reason"]] if reason else [])
            for r in landings
            if (r["reason"] is not None) == bool(reason)
        ]
        expect(failures, f"rows in {table}", have, want)

    # Signed senders: redeliveries found by (pipeline, delivery id), `rejected replay`'s page
    # and its events lookup.
    want = sorted(
        (r["pipeline_id"], r["delivery_id"], r["request_id"], r["received_at"])
        for r in landings
        if r["reason"] is None
    )
    have = sorted(tuple(x) for x in results["redeliveries"])
    expect(failures, "delivery.redeliveries", have, want)
    want = [
        [r["request_id"], r["reason"], r["headers"], ""]
        for r in landings
        if r["pipeline_id"] == results["replay_pipeline"] and r["reason"] == "PIPELINE_DISABLED"
    ]
    expect(failures, "store.rejected_page", results["rejected_page"], want)
    want = sorted(r["request_id"] for r in landings if r["reason"] is None)
    expect(failures, "store.in_events", results["in_events"], want)

    ids = [row["request_id"] for row in landings]
    present = results["present"]
    expect(failures, "delivery.present (the inserted ids, not the absent one)", present, ids)

    by_id = {row["request_id"]: row for row in landings}
    for asked in results["requests_found"]:
        row = by_id.get(asked["request_id"])
        want = []
        if row is not None:
            table = "events" if row["reason"] is None else "rejected"
            want = [[table, row["pipeline_id"], row["key"], row["reason"] or ""]]
        expect(failures, f"store.find_request {asked['request_id']}", asked["found"], want)

    pipeline = results["pipelines_latest"][0]["pipeline_id"]
    view = f"pipeline_{pipeline}"
    columns = engine.rows(
        f"SELECT name, type FROM system.columns WHERE database = {quote(db)} "
        f"AND table = {quote(view)} ORDER BY position"
    )
    expect(failures, f"columns of {view}", columns, VIEW_COLUMNS)
    shown = engine.rows(f"SELECT __kdd_request_id FROM `{db}`.`{view}` ORDER BY 1")
    mine = [
        [row["request_id"]]
        for row in landings
        if row["reason"] is None and row["pipeline_id"] == pipeline
    ]
    expect(failures, f"rows of {view}", shown, mine)


def check_writer_queries(engine, results, failures):
    """The drift query sees the types rows.rs writes; none of this writer's inserts runs."""
    db = results["database"]
    expect(failures, "delivery.drift", results["drift"], None)
    # One server, plain MergeTree: the writer keeps the settle-and-check protocol.
    expect(failures, "delivery.deduplicating_engine", results["deduplicating_engine"], None)
    for table, wanted in [("events", "event_columns"), ("rejected", "rejected_columns")]:
        have = dict(
            engine.rows(
                f"SELECT name, type FROM system.columns WHERE database = {quote(db)} "
                f"AND table = {quote(table)}"
            )
        )
        wanted = dict(results[wanted])
        found = {name: have.get(name) for name in wanted}
        expect(failures, f"types of the columns of {table} (rows.rs)", found, wanted)
    expect(failures, "delivery.running_inserts", results["running_inserts"], 0)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    with tempfile.TemporaryDirectory(prefix="hookhouse-chdb-") as workdir:
        engine = Engine(workdir)
        try:
            requests, results = exchange(engine, sys.argv[1])
            failures = []
            check_settings(engine, requests, results, failures)
            check_store(engine, results, failures)
            check_rows(engine, results, failures)
            check_writer_queries(engine, results, failures)
            if failures:
                raise Failure("\n".join(failures))
        except Failure as failure:
            print(f"current engine check FAILED on ClickHouse {engine.version}:", file=sys.stderr)
            print(failure, file=sys.stderr)
            sys.exit(1)
        finally:
            engine.close()
    print(f"current engine: {len(requests)} statements checked on ClickHouse {engine.version}")


if __name__ == "__main__":
    main()
