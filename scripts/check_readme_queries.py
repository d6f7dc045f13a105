#!/usr/bin/env python3
"""Runs every query of README.md's "Querying" section on a current ClickHouse engine (chDB).

Usage: check_readme_queries.py README PAYLOADS, with the Python of a venv that has chDB;
scripts/check-readme-queries.sh sets that up. PAYLOADS is a folder of JSON webhook bodies
(../shared/payloads/github).

Why: the README promises that its `-- query:` blocks run on ClickHouse 18.16 and on current
releases, and shows `-- current:` blocks (the JSON functions) for current releases only.
tests/querying.rs runs the `-- query:` blocks on 18.16; no current server can be installed where
the tests run, so this runs every block, exactly as the README has it, on the engine chDB embeds,
against tables made from schema/ and filled with the payloads, and checks the answers.

Exits 1 with the reasons on any failure; else prints
`readme queries: N blocks checked on ClickHouse <version>`.
"""

import json
import os
import re
import sys
import tempfile
import time

# Every block the README has, by name; a new block needs its check here and in tests/querying.rs.
EXPECTED = {
    "requests-per-hour",
    "latest-of-a-pipeline",
    "rejected-by-reason",
    "freshness",
    "landing-lag",
    "pretty-printed-trap",
    "fields-from-bodies",
    "actions-by-regex",
    "fields-from-bodies-current",
    "array-elements",
}

KEY = "d538b946-9d55-405a-9bd2-72d74b1cb8f5"
OTHER_KEY = "0b8f6c8e-3a47-4c1e-9f7e-2a5d6c4b1e90"

# A text search finds the first "action" at any depth: gollum has none at the top, one in pages.
FIRST_ACTION_ANYWHERE = {"gollum.payload.json": "edited"}


class Failure(Exception):
    """What makes the check fail, in words for whoever reads the CI log."""


def blocks(readme):
    """(kind, name, sql) of each ```sql block whose first line is `-- query:` or `-- current:`."""
    pattern = re.compile(r"^```sql\n(-- (query|current): ([\w-]+)\n.*?)^```$", re.S | re.M)
    return [(m.group(2), m.group(3), m.group(1)) for m in pattern.finditer(readme)]


def quote(text):
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def unescape_tsv(field):
    """A TabSeparated field as the text it stands for; None for NULL."""
    if field == "\\N":
        return None
    table = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0", "\\": "\\",
             "'": "'"}
    return re.sub(r"\\(.)", lambda m: table.get(m.group(1), m.group(1)), field)


class Engine:
    def __init__(self, workdir):
        from chdb import session

        self.session = session.Session(os.path.join(workdir, "data"))
        self.version = self.rows("SELECT version()")[0][0]

    def close(self):
        # chDB 2.x sessions have no close().
        getattr(self.session, "close", lambda: None)()

    def rows(self, sql):
        """The TabSeparated answer to `sql` as rows of unescaped fields."""
        try:
            answer = self.session.query(sql, "TabSeparated").bytes().decode()
        except Exception as error:  # chDB raises its own RuntimeError subclasses
            raise Failure(f"ClickHouse refused:\n{sql}\n{error}") from None
        return [[unescape_tsv(f) for f in line.split("\t")] for line in answer.splitlines()]


def fill(engine, repo, payload_dir, payloads):
    """hookhouse's tables from schema/, pipeline 1's view, and rows as the writer would make them:
    the payloads in pipeline 1, five small bodies in pipeline 2, five rejected requests.
    Returns {request id: payload file name} for pipeline 1, oldest first."""
    engine.rows("CREATE DATABASE IF NOT EXISTS hookhouse")
    schema_dir = os.path.join(repo, "schema")
    for name in sorted(os.listdir(schema_dir)):
        text = open(os.path.join(schema_dir, name), encoding="utf-8").read()
        text = re.sub(r"^--.*$", "", text.replace("{db}", "hookhouse"), flags=re.M)
        for statement in text.split(";"):
            if statement.strip():
                engine.rows(statement)
    # As src/clickhouse/store.rs creates it.
    engine.rows(
        "CREATE VIEW IF NOT EXISTS hookhouse.pipeline_1 AS SELECT __kdd_request_id, "
        "__kdd_request_unix_timestamp, __kdd_requester_key, __kdd_request_body "
        "FROM hookhouse.events WHERE pipeline_id = 1"
    )
    start = time.time() - 5
    ids = {}

    def insert(table, rows):
        """Rows of SQL literals."""
        columns = "pipeline_id, __kdd_request_id, __kdd_request_unix_timestamp, " \
                  "__kdd_requester_key, __kdd_request_body"
        if table == "rejected":
            columns += ", reason"
        values = ", ".join("(" + ", ".join(row) + ")" for row in rows)
        engine.rows(f"INSERT INTO hookhouse.{table} ({columns}) VALUES {values}")

    rows = []
    for n, name in enumerate(payloads):
        body = open(os.path.join(payload_dir, name), encoding="utf-8").read()
        request_id = "".join(chr(ord("a") + (n * 7 + i) % 26) for i in range(18)) + \
            chr(ord("a") + n // 26) + chr(ord("a") + n % 26)
        ids[request_id] = name
        rows.append(["1", quote(request_id), repr(start + n / 1000), quote(KEY), quote(body)])
    insert("events", rows)
    insert("events", [["2", quote(f"pipelinetwo{n:09d}"), repr(start + n / 1000), quote(KEY),
                       quote('{"n": %d}' % n)] for n in range(5)])
    rejected = [("WRONG_TOKEN", KEY)] * 3 + [("UNKNOWN_KEY", OTHER_KEY)] * 2
    insert("rejected", [["1", quote(f"rejected{n:012d}"), repr(start), quote(key), quote("{}"),
                         quote(reason)] for n, (reason, key) in enumerate(rejected)])
    return ids


def nested(document, outer, inner):
    """document[outer][inner] as text, '' where either is missing or null."""
    value = (document.get(outer) or {}).get(inner)
    return "" if value is None else value


def expect(condition, message):
    if not condition:
        raise Failure(message)


def check(name, rows, ids, truth):
    """Whether `rows`, the answer to block `name`, says what the README says it does."""
    top_action = {n: d.get("action", "") if isinstance(d, dict) else "" for n, d in truth.items()}
    first_action = {n: FIRST_ACTION_ANYWHERE.get(n, a) for n, a in top_action.items()}
    if name == "requests-per-hour":
        per_pipeline = {}
        for pipeline, _hour, n in rows:
            per_pipeline[pipeline] = per_pipeline.get(pipeline, 0) + int(n)
        expect(per_pipeline == {"1": len(ids), "2": 5}, f"{name}: {per_pipeline}")
    elif name == "latest-of-a-pipeline":
        newest = list(ids)[::-1][:10]
        expect([r[0] for r in rows] == newest, f"{name}: {[r[0] for r in rows]}")
        for request_id, _accepted, body in rows:
            expect(json.loads(body) == truth[ids[request_id]], f"{name}: body of {request_id}")
    elif name == "rejected-by-reason":
        got = [(r[0], r[1], r[2], r[3]) for r in rows]
        want = [("WRONG_TOKEN", "1", KEY, "3"), ("UNKNOWN_KEY", "1", OTHER_KEY, "2")]
        expect(got == want, f"{name}: {got}")
    elif name == "freshness":
        got = {r[0]: (int(r[2]), r[3]) for r in rows}
        expect(set(got) == {"1", "2"}, f"{name}: {rows}")
        expect(got["1"][1] == str(len(ids)) and got["2"][1] == "5", f"{name}: {rows}")
        expect(all(0 <= lag < 600 for lag, _ in got.values()), f"{name}: {rows}")
    elif name == "landing-lag":
        expect(rows, f"{name}: no part of level 0")
        for _landed, _rows, newest, oldest in rows:
            expect(0 <= int(newest) <= int(oldest) < 600, f"{name}: {rows}")
    elif name == "pretty-printed-trap":
        expect(rows == [["", str(len(ids))]], f"{name}: {rows}")
    elif name == "fields-from-bodies":
        expect(len(rows) == len(ids), f"{name}: {len(rows)} rows")
        for request_id, action, repository, sender in rows:
            d = truth[ids[request_id]]
            want = (first_action[ids[request_id]], nested(d, "repository", "full_name"),
                    nested(d, "sender", "login"))
            expect((action, repository, sender) == want,
                   f"{name}: {ids[request_id]}: {(action, repository, sender)} != {want}")
    elif name == "actions-by-regex":
        want = {}
        for a in first_action.values():
            want[a] = want.get(a, 0) + 1
        got = {a: int(n) for a, n in rows}
        expect(got == want, f"{name}: {got} != {want}")
    elif name == "fields-from-bodies-current":
        expect(len(rows) == len(ids), f"{name}: {len(rows)} rows")
        for request_id, action, repository, sender, repository_id, page_action in rows:
            d = truth[ids[request_id]]
            repo = d.get("repository") or {}
            pages = d.get("pages") or []
            want = (top_action[ids[request_id]], nested(d, "repository", "full_name"),
                    nested(d, "sender", "login"), str(repo.get("id", 0)),
                    pages[0]["action"] if pages else None)
            got = (action, repository, sender, repository_id, page_action)
            expect(got == want, f"{name}: {ids[request_id]}: {got} != {want}")
    elif name == "array-elements":
        gollum = [i for i, n in ids.items() if n == "gollum.payload.json"]
        expect([[r[0], r[1], r[2]] for r in rows] == [[gollum[0], "Home", "edited"]],
               f"{name}: {rows}")
    else:
        raise Failure(f"README block {name!r} has no check here")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    readme_path, payload_dir = sys.argv[1], sys.argv[2]
    repo = os.path.dirname(os.path.abspath(readme_path))
    found = blocks(open(readme_path, encoding="utf-8").read())
    names = {name for _, name, _ in found}
    payloads = sorted(n for n in os.listdir(payload_dir) if n.endswith(".json"))
    truth = {n: json.load(open(os.path.join(payload_dir, n), encoding="utf-8")) for n in payloads}
    failures = []
    if names != EXPECTED or len(names) != len(found):
        failures.append(f"README blocks {sorted(names)} are not the expected {sorted(EXPECTED)}")
    with tempfile.TemporaryDirectory(prefix="hookhouse-readme-") as workdir:
        engine = Engine(workdir)
        try:
            ids = fill(engine, repo, payload_dir, payloads)
            for _kind, name, sql in found:
                try:
                    check(name, engine.rows(sql), ids, truth)
                except Failure as failure:
                    failures.append(str(failure))
        finally:
            engine.close()
    if failures:
        for failure in failures:
            print(f"readme queries: {failure}", file=sys.stderr)
        sys.exit(1)
    print(f"readme queries: {len(found)} blocks checked on ClickHouse {engine.version}")


if __name__ == "__main__":
    main()
