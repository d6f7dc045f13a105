#!/usr/bin/env python3
"""Small helpers for bench/run.sh: the parts that are easier in Python than in bash.

Each subcommand does one thing and prints its answer (a number, or one JSON object) on standard
output, so run.sh stays a readable list of phases. Only the standard library is used, and every
wait or loop here has a deadline: nothing can hang the benchmark.

Subcommands:
  free-port                      a free loopback port
  body SRC_DIR OUT [BYTES]       a realistic JSON body of exactly BYTES (1024) bytes
  wait-http URL SECONDS          wait until URL answers 200
  ch URL SQL                     run SQL on ClickHouse, print the answer
  wait-count URL SQL N SECONDS   poll SQL (a count) until it reaches N; print JSON with the time
  drain URL SQL FROM N SECONDS   like wait-count, also noting when the count first passed FROM
  metric URL NAME [LABEL=VALUE]  sum of a Prometheus counter or gauge over matching series
  snap URL NAME...               several Prometheus series (summed over labels) in one scrape, as JSON
  hist URL NAME                  a Prometheus histogram's cumulative buckets, as JSON
  hist-delta BEFORE AFTER        p50/p90/p99 of the observations between two `hist` snapshots
  lag-sampler ...                direct measurement of landing lag (see `lag_sampler`)
  oha FILE                       the numbers we keep from oha's JSON output
  rss PID                        VmHWM and VmRSS of a process, in KiB, as JSON
  cpu NAME=PID...                CPU seconds used so far by each process and by the machine
  cpu-delta BEFORE AFTER         cores used by each between two `cpu` snapshots
  dead-receiver PORT SECONDS     accept connections on PORT and never answer, for SECONDS at most
  report DIR MD JSON             assemble results into the markdown and JSON reports
"""

import json
import math
import select
import os
import re
import socket
import statistics
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def die(message):
    print(f"bench.py: {message}", file=sys.stderr)
    sys.exit(1)


# --- processes, ports and HTTP ------------------------------------------------------------------


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, data=None, timeout=10.0):
    """(status, body bytes); a connection failure is status 0, never an exception."""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_http(url, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if http("GET", url, timeout=2.0)[0] == 200:
            return
        time.sleep(0.1)
    die(f"{url} did not answer 200 within {seconds} s")


def ch_query(url, sql, timeout=30.0):
    status, body = http("POST", url, sql.encode(), timeout=timeout)
    if status != 200:
        raise RuntimeError(f"ClickHouse answered {status}: {body[:300]!r} to {sql}")
    return body.decode().strip()


def wait_count(url, sql, expected, seconds, poll=0.2):
    """Polls a count until it reaches `expected`. The time is to the first poll that saw it, so
    its resolution is `poll` plus one query; a failed query (ClickHouse starting) is retried."""
    started = time.monotonic()
    deadline = started + seconds
    count, queries = -1, 0
    while time.monotonic() < deadline:
        try:
            count = int(ch_query(url, sql, timeout=10.0))
            queries += 1
        except (RuntimeError, ValueError):
            pass
        if count >= expected:
            return {"reached": True, "seconds": time.monotonic() - started, "count": count}
        time.sleep(poll)
    return {"reached": False, "seconds": time.monotonic() - started, "count": count}


def drain(url, sql, start, expected, seconds, poll=0.2):
    """Times a backlog landing: `first` is when the count first moved past `start` (the writer
    noticed ClickHouse is back), `seconds` when it reached `expected`, both from now."""
    started = time.monotonic()
    deadline = started + seconds
    count, first = -1, None
    while time.monotonic() < deadline:
        try:
            count = int(ch_query(url, sql, timeout=10.0))
        except (RuntimeError, ValueError):
            pass
        now = time.monotonic() - started
        if first is None and count > start:
            first = now
        if count >= expected:
            return {"reached": True, "first": first, "seconds": now, "count": count}
        time.sleep(poll)
    return {"reached": False, "first": first, "seconds": time.monotonic() - started, "count": count}


def dead_receiver(port, seconds):
    """A receiver that is there and never answers: it accepts every connection, reads and
    discards what is sent, and writes nothing, so a sender waits for its own timeout. Closed
    connections are let go; after `seconds` it exits, whatever happens."""
    deadline = time.monotonic() + seconds
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    held = []
    while time.monotonic() < deadline:
        readable, _, _ = select.select([listener] + held, [], [], 1.0)
        for sock in readable:
            if sock is listener:
                conn, _ = listener.accept()
                held.append(conn)
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                held.remove(sock)
                sock.close()
    for sock in held + [listener]:
        sock.close()


# --- the request body ----------------------------------------------------------------------------


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def fit(value, budget):
    """`value` trimmed to serialize within `budget` bytes: objects keep their leading keys that
    fit (nested objects trimmed in turn), long strings are cut, arrays keep leading items."""
    if len(compact(value)) <= budget:
        return value
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            room = budget - len(compact(kept)) - len(compact(key)) - 2
            if room < 4:
                break
            trimmed = fit(item, room)
            if trimmed is not None:
                kept[key] = trimmed
        return kept
    if isinstance(value, list):
        kept = []
        for item in value:
            trimmed = fit(item, budget - len(compact(kept)) - 1)
            if trimmed is None:
                break
            kept.append(trimmed)
        return kept
    if isinstance(value, str) and budget > 8:
        return value[: budget - 2 - 8]
    return None


def make_body(src_dir, out, size=1024):
    """A GitHub webhook payload trimmed to `size` bytes of valid JSON, padded exactly."""
    names = sorted(n for n in os.listdir(src_dir) if n.endswith(".json"))
    preferred = "push.1.payload.json"
    name = preferred if preferred in names else (names[0] if names else None)
    if name is None:
        die(f"no .json payloads in {src_dir}")
    with open(os.path.join(src_dir, name), encoding="utf-8") as f:
        payload = json.load(f)
    pad_key = "bench_padding"
    overhead = len(compact({pad_key: ""})) - 2 + 1  # the key, quotes, colon and a comma
    body = fit(payload, size - overhead - 16)
    if not isinstance(body, dict):
        body = {"payload": body}
    body[pad_key] = ""
    missing = size - len(compact(body))
    if missing < 0:
        die("could not trim the payload to size")
    body[pad_key] = "x" * missing
    text = compact(body).encode()
    json.loads(text)
    if len(text) != size:
        die(f"body is {len(text)} bytes, not {size}")
    with open(out, "wb") as f:
        f.write(text)
    print(name)


# --- Prometheus ----------------------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url):
    status, body = http("GET", url, timeout=10.0)
    if status != 200:
        die(f"{url} answered {status}")
    samples = []
    for line in body.decode().splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            labels = dict(LABEL.findall(m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def metric(url, name, filters):
    want = dict(f.split("=", 1) for f in filters)
    total = 0.0
    for sample, labels, value in scrape(url):
        if sample == name and all(labels.get(k) == v for k, v in want.items()):
            total += value
    return total


def snap(url, names):
    totals = dict.fromkeys(names, 0.0)
    for sample, _labels, value in scrape(url):
        if sample in totals:
            totals[sample] += value
    return totals


def hist(url, name):
    buckets = {}
    for sample, labels, value in scrape(url):
        if sample == f"{name}_bucket":
            buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + value
    return buckets


def hist_quantiles(before, after, quantiles=(0.5, 0.9, 0.99)):
    """Quantiles of the observations made between two cumulative snapshots, each given as the
    upper bound of the bucket it falls in: bucket resolution, never optimistic."""
    bounds = sorted(after, key=lambda le: math.inf if le == "+Inf" else float(le))
    counts = [after[le] - before.get(le, 0.0) for le in bounds]
    total = counts[-1] if counts else 0.0
    result = {"observations": int(total), "buckets": bounds}
    for q in quantiles:
        key = f"p{q * 100:g}".replace(".", "")
        if total == 0:
            result[key] = None
            continue
        rank = q * total
        result[key] = next(
            (math.inf if le == "+Inf" else float(le)) for le, c in zip(bounds, counts) if c >= rank
        )
    return result


# --- landing lag, measured directly ----------------------------------------------------------------


def percentile(values, p):
    """Nearest-rank percentile of a list of numbers (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def lag_sampler(args):
    """Sends one request every 1/rate s for `seconds` to the gateway on its own pipeline, notes
    when each 200 arrived, and polls ClickHouse for the ids still pending every `poll` s. The lag
    of a request is from its 200 to the end of the first poll that returned its id: an upper
    bound, with resolution `poll` plus one query. Its own pipeline keeps the poll on a primary-key
    range of a handful of rows, so the sampler adds almost nothing to ClickHouse's load."""
    opts = dict(a.split("=", 1) for a in args)
    gateway, ch_url = opts["gateway"], opts["ch"]
    pipeline = int(opts["pipeline"])
    seconds, rate = float(opts["seconds"]), float(opts["rate"])
    poll, give_up = float(opts.get("poll", "0.05")), float(opts.get("give_up", "60"))
    with open(opts["body"], "rb") as f:
        body = f.read()

    pending, lags, lock = {}, [], threading.Lock()
    stats = {"sent": 0, "accepted": 0, "refused": 0, "polls": 0, "poll_errors": 0}
    sending_done = threading.Event()

    def send():
        interval, start = 1.0 / rate, time.monotonic()
        for i in range(int(seconds * rate)):
            wait = start + i * interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            status, answer = http("POST", gateway, body, timeout=10.0)
            acked = time.monotonic()
            stats["sent"] += 1
            if status != 200:
                stats["refused"] += 1
                continue
            request_id = json.loads(answer)["data"]["__kdd_request_id"]
            with lock:
                pending[request_id] = acked
            stats["accepted"] += 1
        sending_done.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    deadline = time.monotonic() + seconds + give_up
    while time.monotonic() < deadline:
        with lock:
            ids = list(pending)
        if not ids:
            if sending_done.is_set():
                break
            time.sleep(poll)
            continue
        in_list = ",".join(f"'{i}'" for i in ids)  # ids are 20 lowercase letters: safe to quote
        sql = (
            f"SELECT __kdd_request_id FROM {opts.get('db', 'hookhouse')}.events "
            f"WHERE pipeline_id = {pipeline} AND __kdd_request_id IN ({in_list}) FORMAT TabSeparated"
        )
        try:
            found = ch_query(ch_url, sql, timeout=5.0).split()
            stats["polls"] += 1
        except RuntimeError:
            stats["poll_errors"] += 1
            found = []
        seen = time.monotonic()
        with lock:
            for request_id in found:
                acked = pending.pop(request_id, None)
                if acked is not None:
                    lags.append(seen - acked)
        time.sleep(poll)
    sender.join(timeout=5)
    result = dict(stats)
    result.update(
        {
            "landed": len(lags),
            "never_seen": len(pending),
            "poll_seconds": poll,
            "rate": rate,
            "p50": percentile(lags, 50),
            "p90": percentile(lags, 90),
            "p99": percentile(lags, 99),
            "max": max(lags) if lags else None,
        }
    )
    print(json.dumps(result))


# --- oha ---------------------------------------------------------------------------------------------


def oha_summary(path):
    """The numbers we keep from `oha --output-format json`, in seconds and requests/s."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    codes = {str(k): v for k, v in (data.get("statusCodeDistribution") or {}).items()}
    pct = data.get("latencyPercentiles") or {}
    summary = data.get("summary") or {}
    total = float(summary.get("total") or 0.0)
    accepted = int(codes.get("200", 0))
    print(
        json.dumps(
            {
                "seconds": total,
                "requests": sum(codes.values()),
                "accepted": accepted,
                "accepted_per_s": accepted / total if total else None,
                "status_codes": codes,
                "errors": data.get("errorDistribution") or {},
                "p50": pct.get("p50"),
                "p99": pct.get("p99"),
                "p999": pct.get("p99.9"),
                "max": summary.get("slowest"),
            }
        )
    )


def rss(pid):
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":", 1)
                fields[name] = int(value.split()[0])
    print(json.dumps({"hwm_kib": fields.get("VmHWM"), "rss_kib": fields.get("VmRSS")}))


def cpu(pairs):
    """CPU seconds (user + system) used so far by each named process, and by the whole machine
    (all but idle and iowait), with the wall clock: two snapshots give cores used in between."""
    tick = os.sysconf("SC_CLK_TCK")
    result = {"wall": time.monotonic()}
    for pair in pairs:
        name, pid = pair.split("=", 1)
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            result[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            result[name] = None
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    result["machine"] = (sum(ticks) - ticks[3] - ticks[4]) / tick
    print(json.dumps(result))


def cpu_delta(before_path, after_path):
    with open(before_path, encoding="utf-8") as f:
        before = json.load(f)
    with open(after_path, encoding="utf-8") as f:
        after = json.load(f)
    wall = after["wall"] - before["wall"]
    cores = {
        name: (after[name] - before[name]) / wall
        for name in after
        if name != "wall" and after.get(name) is not None and before.get(name) is not None
    }
    print(json.dumps({"seconds": wall, "cores": cores}))


# --- the report ----------------------------------------------------------------------------------------


def load_results(directory):
    results = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                text = f.read().strip()
            try:
                results[name[: -len(".json")]] = json.loads(text) if text else None
            except json.JSONDecodeError:
                results[name[: -len(".json")]] = {"unparsed": text}
    return results


def ms(seconds):
    return "–" if seconds is None else f"{seconds * 1000:.2f} ms"


def s(seconds):
    return "–" if seconds is None else f"{seconds:.2f} s"


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:.0f} MiB"


def num(value, digits=0):
    return "–" if value is None else f"{value:,.{digits}f}"


def verdict(value, limit, higher_is_better):
    if value is None:
        return "not measured"
    ok = value >= limit if higher_is_better else value <= limit
    return "met" if ok else "**missed**"


def report(directory, md_path, json_path):
    r = load_results(directory)
    meta = r.get("meta", {})

    def wrk_rounds(target):
        rounds = []
        for key in sorted(k for k in r if k.startswith(f"wrk-{target}-")):
            w = r[key]
            secs = w["duration_us"] / 1e6
            accepted = w["requests"] - w["non_2xx"]
            rounds.append(
                {
                    "round": int(key.rsplit("-", 1)[1]),
                    "seconds": secs,
                    "requests": w["requests"],
                    "accepted": accepted,
                    "accepted_per_s": accepted / secs if secs else 0.0,
                    "non_2xx": w["non_2xx"],
                    "socket_errors": w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"],
                    "p50": w["p50_us"] / 1e6,
                    "p99": w["p99_us"] / 1e6,
                    "p999": w["p999_us"] / 1e6,
                    "max": w["max_us"] / 1e6,
                }
            )
        return rounds

    gateway, bare = wrk_rounds("gateway"), wrk_rounds("bare")
    g_rps = statistics.median([x["accepted_per_s"] for x in gateway]) if gateway else None
    b_rps = statistics.median([x["accepted_per_s"] for x in bare]) if bare else None
    ratio = g_rps / b_rps if g_rps and b_rps else None
    # Latency at full load: the median over rounds of each percentile.
    def med(rounds, field):
        return statistics.median([x[field] for x in rounds]) if rounds else None

    landing = [r[k] for k in sorted(r) if k.startswith("landing-gateway-")]
    land_rows = sum(x["rows"] for x in landing)
    land_secs = sum(x["seconds"] for x in landing)
    rows_per_s_load = land_rows / land_secs if land_secs else None

    rate_g, rate_b = r.get("rate-gateway"), r.get("rate-bare")
    lag, lag_hist = r.get("lag-sampler"), r.get("lag-histogram")
    backlog, big = r.get("backlog"), r.get("big-backlog")
    rss_phases = {k[len("rss-"):]: v for k, v in r.items() if k.startswith("rss-")}
    peak_rss = max((v.get("hwm_kib") or 0 for v in rss_phases.values()), default=None) or None

    summary = {
        "throughput": {
            "gateway_accepted_per_s": g_rps,
            "bare_accepted_per_s": b_rps,
            "ratio": ratio,
            "gateway_rounds": gateway,
            "bare_rounds": bare,
        },
        "latency_full_load": {
            "gateway": {f: med(gateway, f) for f in ("p50", "p99", "p999", "max")},
            "bare": {f: med(bare, f) for f in ("p50", "p99", "p999", "max")},
        },
        "latency_fixed_rate": {"gateway": rate_g, "bare": rate_b, "rate": meta.get("fixed_rate")},
        "landing_lag": {"sampler": lag, "histogram": lag_hist},
        "rows_per_s_into_clickhouse_full_load": rows_per_s_load,
        "landing_during_full_load": landing,
        "backlog": backlog,
        "big_backlog": big,
        "peak_rss_kib": rss_phases,
        "meta": meta,
    }
    unsigned, signed = wrk_rounds("unsigned"), wrk_rounds("signed")
    u_rps = statistics.median([x["accepted_per_s"] for x in unsigned]) if unsigned else None
    s_rps = statistics.median([x["accepted_per_s"] for x in signed]) if signed else None
    signed_ratio = s_rps / u_rps if s_rps and u_rps else None
    summary["signed"] = {
        "unsigned_accepted_per_s": u_rps,
        "signed_accepted_per_s": s_rps,
        "ratio": signed_ratio,
        "unsigned_rounds": unsigned,
        "signed_rounds": signed,
    }
    quiet, notifying = wrk_rounds("unsubscribed"), wrk_rounds("subscribed")
    q_rps = statistics.median([x["accepted_per_s"] for x in quiet]) if quiet else None
    n_rps = statistics.median([x["accepted_per_s"] for x in notifying]) if notifying else None
    notify_ratio = n_rps / q_rps if n_rps and q_rps else None
    receivers = r.get("notify-receivers")
    summary["notifications"] = {
        "unsubscribed_accepted_per_s": q_rps,
        "subscribed_accepted_per_s": n_rps,
        "ratio": notify_ratio,
        "unsubscribed_rounds": quiet,
        "subscribed_rounds": notifying,
        "notifier_rounds": {k[len("notify-"):]: v for k, v in r.items() if k.startswith("notify-") and k != "notify-receivers"},
        "attempts_by_receiver": receivers,
    }
    p99_half = rate_g.get("p99") if rate_g else None
    lag_p99 = lag.get("p99") if lag else None
    drain = backlog.get("drain_rows_per_s") if backlog else None
    lines = [
        "# hookhouse benchmark",
        "",
        f"Run {meta.get('date', '?')} on `{meta.get('host', '?')}`: {meta.get('nproc', '?')} cores, "
        f"{meta.get('mem', '?')}, commit `{meta.get('commit', '?')}`. Everything on 127.0.0.1; ClickHouse "
        f"{meta.get('clickhouse_version', '?')}, the gateway, the baseline and the load generator share the machine.",
        "",
        "## Against the targets",
        "",
        "| measure | result | target | |",
        "| --- | --- | --- | --- |",
        f"| throughput, gateway / bare (fsync before ack) | {num(ratio, 2)}× ({num(g_rps)} / {num(b_rps)} req/s) | ≥ 0.7× | {verdict(ratio, 0.7, True)} |",
        f"| p99 at half of the gateway's max ({num(meta.get('fixed_rate'))} req/s) | {ms(p99_half)} | ≤ 5 ms | {verdict(p99_half, 0.005, False)} |",
        f"| landing lag p99 (direct sampler) | {s(lag_p99)} | ≤ 2 s | {verdict(lag_p99, 2.0, False)} |",
        f"| backlog drain ({num(backlog.get('n') if backlog else None)} requests) | {num(drain)} rows/s | ≥ 100,000 rows/s | {verdict(drain, 100000, True)} |",
        f"| peak RSS of the gateway, any phase | {mib(peak_rss)} | ≤ 150 MiB | {verdict(peak_rss, 150 * 1024, False)} |",
        f"| throughput, GitHub-signed / unsigned pipeline | {num(signed_ratio, 2)}× ({num(s_rps)} / {num(u_rps)} req/s) | ≥ 0.9× | {verdict(signed_ratio, 0.9, True)} |",
        f"| throughput, 3 subscriptions (1 dead) / none | {num(notify_ratio, 2)}× ({num(n_rps)} / {num(q_rps)} req/s) | ≥ 0.95× | {verdict(notify_ratio, 0.95, True)} |",
        "",
        "## Throughput (closed loop: wrk, 64 connections, 1 KiB JSON body, only 200s count)",
        "",
        "| round | gateway req/s | bare req/s | gateway non-200 | bare non-200 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for g, b in zip(gateway, bare):
        lines.append(
            f"| {g['round']} | {num(g['accepted_per_s'])} | {num(b['accepted_per_s'])} | "
            f"{g['non_2xx'] + g['socket_errors']} | {b['non_2xx'] + b['socket_errors']} |"
        )
    lines += [
        f"| **median** | **{num(g_rps)}** | **{num(b_rps)}** | | |",
        "",
        "Cores used during each run (of " + str(meta.get("nproc", "?")) + "; the rest of `machine` is the load generator and others):",
        "",
        "| round | gateway run: gateway / ClickHouse / machine | bare run: bare / machine |",
        "| --- | --- | --- |",
    ]
    for g, b in zip(gateway, bare):
        cg = (r.get(f"cpu-gateway-{g['round']}") or {}).get("cores", {})
        cb = (r.get(f"cpu-bare-{b['round']}") or {}).get("cores", {})
        lines.append(
            f"| {g['round']} | {num(cg.get('gateway'), 2)} / {num(cg.get('clickhouse'), 2)} / {num(cg.get('machine'), 2)} "
            f"| {num(cb.get('bare'), 2)} / {num(cb.get('machine'), 2)} |"
        )
    commits = [r[k] for k in sorted(r) if k.startswith("commit-gateway-")]
    if commits:
        total = {k: sum(c.get(k, 0.0) for c in commits) for k in commits[0]}
        fsyncs = total.get("hookhouse_wal_group_records_count") or 0
        batches = total.get("hookhouse_batch_rows_count") or 0
        secs = sum(x["seconds"] for x in gateway) or 1.0
        summary["group_commit_full_load"] = total
        lines += [
            "",
            f"Group commit under full load: {num(fsyncs / secs)} fsyncs/s, "
            f"{num(total['hookhouse_wal_group_records_sum'] / fsyncs if fsyncs else None, 1)} records per fsync, "
            f"mean fsync {ms(total['hookhouse_wal_fsync_seconds_sum'] / fsyncs if fsyncs else None)}. "
            f"Batches into ClickHouse: {num(batches)}, {num(total['hookhouse_batch_rows_sum'] / batches if batches else None)} rows each, "
            f"mean insert {ms(total['hookhouse_insert_seconds_sum'] / batches if batches else None)}.",
        ]
    lines += [
        "",
        f"Rows into ClickHouse while the gateway was under full load: {num(rows_per_s_load)} rows/s "
        "(`count()` before and after each gateway round).",
        "",
        "## Latency",
        "",
        "| | p50 | p99 | p99.9 | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, lat in (
        ("gateway, full load (wrk, closed loop)", summary["latency_full_load"]["gateway"]),
        ("bare, full load (wrk, closed loop)", summary["latency_full_load"]["bare"]),
        (f"gateway, {num(meta.get('fixed_rate'))} req/s (oha, open loop)", rate_g),
        (f"bare, {num(meta.get('fixed_rate'))} req/s (oha, open loop)", rate_b),
    ):
        if lat:
            lines.append(f"| {label} | {ms(lat.get('p50'))} | {ms(lat.get('p99'))} | {ms(lat.get('p999'))} | {ms(lat.get('max'))} |")
    for label, rate in (("gateway", rate_g), ("bare", rate_b)):
        if rate:
            lines.append("")
            lines.append(
                f"At the fixed rate the {label} got {num(rate.get('requests'))} requests in {s(rate.get('seconds'))} "
                f"({num(rate.get('accepted_per_s'))} accepted/s), answers {rate.get('status_codes')}, errors {rate.get('errors') or 'none'}."
            )
            # Open loop: a server that falls behind the rate builds a queue, and the corrected
            # latency is then mostly time spent waiting in it.
            wanted = meta.get("fixed_rate")
            if wanted and (rate.get("accepted_per_s") or 0) < 0.98 * wanted:
                lines.append(
                    f"**The {label} did not keep up with {num(wanted)} req/s**: its latency above is that of a growing queue, "
                    "not of a server at half load (the machine's cores are shared with the load generator and ClickHouse)."
                )
    if signed:
        lines += [
            "",
            "## Signed senders (the same gateway; GitHub's headers and a fresh delivery id on every request)",
            "",
            "| round | unsigned pipeline req/s | signed pipeline req/s | unsigned non-200 | signed non-200 | cores, unsigned run: gateway / ClickHouse | cores, signed run: gateway / ClickHouse |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for u, g in zip(unsigned, signed):
            cu = (r.get(f"cpu-unsigned-{u['round']}") or {}).get("cores", {})
            cs = (r.get(f"cpu-signed-{g['round']}") or {}).get("cores", {})
            lines.append(
                f"| {u['round']} | {num(u['accepted_per_s'])} | {num(g['accepted_per_s'])} | "
                f"{u['non_2xx'] + u['socket_errors']} | {g['non_2xx'] + g['socket_errors']} | "
                f"{num(cu.get('gateway'), 2)} / {num(cu.get('clickhouse'), 2)} | {num(cs.get('gateway'), 2)} / {num(cs.get('clickhouse'), 2)} |"
            )
        lines.append(f"| **median** | **{num(u_rps)}** | **{num(s_rps)}** | | | | |")
    if notifying:
        lines += [
            "",
            "## Notifications (the same gateway and load pipeline; no active subscription, then three: two live receivers and a dead one)",
            "",
            "| round | none req/s | 3 subscriptions req/s | none non-200 | 3 subs non-200 | cores, none: gateway / machine | cores, 3 subs: gateway / machine | sent during 3 subs | waiting after |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for q, n in zip(quiet, notifying):
            cq = (r.get(f"cpu-unsubscribed-{q['round']}") or {}).get("cores", {})
            cn = (r.get(f"cpu-subscribed-{n['round']}") or {}).get("cores", {})
            nn = r.get(f"notify-subscribed-{n['round']}") or {}
            lines.append(
                f"| {q['round']} | {num(q['accepted_per_s'])} | {num(n['accepted_per_s'])} | "
                f"{q['non_2xx'] + q['socket_errors']} | {n['non_2xx'] + n['socket_errors']} | "
                f"{num(cq.get('gateway'), 2)} / {num(cq.get('machine'), 2)} | {num(cn.get('gateway'), 2)} / {num(cn.get('machine'), 2)} | "
                f"{num(nn.get('hookhouse_notifications_sent_total'))} | {num(nn.get('hookhouse_notifications_pending'))} |"
            )
        lines.append(f"| **median** | **{num(q_rps)}** | **{num(n_rps)}** | | | | | | |")
        if receivers:
            lines += [
                "",
                "Attempts kept in `notification_attempts` over the phase, by receiver: "
                + "; ".join(
                    f"{name}: {num(v.get('delivered'))} delivered of {num(v.get('attempts'))} attempts, "
                    f"p50 {num(v.get('p50_ms'))} ms, max {num(v.get('max_ms'))} ms"
                    for name, v in sorted(receivers.items())
                )
                + ". The dead receiver accepts connections and never answers: each attempt waits out the 10 s timeout "
                "(attempts still waiting when the phase ended are not in the table yet).",
            ]
    lines += ["", "## Landing lag (from the 200 to queryable in ClickHouse)", ""]
    if lag:
        lines.append(
            f"Direct sampler, during the fixed-rate phase: {lag['accepted']} requests at {lag['rate']:g}/s on a pipeline "
            f"of its own, polled every {lag['poll_seconds'] * 1000:.0f} ms: p50 {s(lag['p50'])}, p90 {s(lag['p90'])}, "
            f"p99 {s(lag['p99'])}, max {s(lag['max'])}; {lag['never_seen']} never seen."
        )
    if lag_hist and lag_hist.get("observations"):
        lines.append("")
        lines.append(
            f"The gateway's own histogram `hookhouse_landing_lag_seconds` over the same phase "
            f"({num(lag_hist['observations'])} rows; bucket upper bounds, so coarse): "
            f"p50 ≤ {s(lag_hist['p50'])}, p90 ≤ {s(lag_hist['p90'])}, p99 ≤ {s(lag_hist['p99'])}."
        )
    lines += ["", "## Backlog written while ClickHouse was down", ""]
    lines.append(
        "| backlog | load req/s | log on disk | ClickHouse start | writer resumed after | drain time | drain rows/s | rows/s once resumed | peak RSS loading | peak RSS draining |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    drain_cpu = []
    for label, b, phase in (("backlog", backlog, "backlog"), ("big backlog", big, "big-backlog")):
        if b and not b.get("skipped"):
            lines.append(
                f"| {num(b.get('n'))} | {num(b.get('load_per_s'))} | {num((b.get('wal_bytes') or 0) / 2**30, 2)} GiB | "
                f"{s(b.get('clickhouse_start_seconds'))} | {s(b.get('writer_resumed_after_seconds'))} | {s(b.get('drain_seconds'))} | "
                f"{num(b.get('drain_rows_per_s'))} | {num(b.get('rows_per_s_once_resumed'))} | "
                f"{mib((rss_phases.get(phase + '-load') or {}).get('hwm_kib'))} | {mib((rss_phases.get(phase + '-drain') or {}).get('hwm_kib'))} |"
            )
            cores = (r.get(f"cpu-{phase}-drain") or {}).get("cores", {})
            if cores:
                drain_cpu.append(
                    f"{label}: gateway {num(cores.get('gateway'), 2)}, ClickHouse {num(cores.get('clickhouse'), 2)}, "
                    f"machine {num(cores.get('machine'), 2)} cores"
                )
        elif b:
            lines.append(f"| {label}: skipped ({b.get('skipped')}) | | | | | | | | | |")
    lines += [
        "",
        "ClickHouse is killed (SIGKILL) before the load and started again after it. Drain time runs from "
        "ClickHouse answering `/ping` again to `count()` (polled every 200 ms) reaching every accepted request; "
        "it includes the writer's retry back-off, which is why the time the writer took to resume and the rate "
        "after it are shown apart. The log size is `du` of the data folder.",
        "",
        "Cores used while draining: " + ("; ".join(drain_cpu) or "–") + ".",
        "",
        "## Peak RSS of the gateway by phase (VmHWM, reset at the start of each phase)",
        "",
        "| phase | peak RSS |",
        "| --- | --- |",
    ]
    for phase, v in rss_phases.items():
        lines.append(f"| {phase} | {mib(v.get('hwm_kib'))} |")
    lines += ["", "## Settings and commands", "", "```"]
    lines += [f"{k}={v}" for k, v in sorted((meta.get("settings") or {}).items())]
    lines += [""] + (meta.get("commands") or []) + ["```", ""]
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("\n".join(lines[: lines.index("## Settings and commands")]))


def main(argv):
    if not argv:
        die("no subcommand; see the module docstring")
    command, args = argv[0], argv[1:]
    if command == "free-port":
        print(free_port())
    elif command == "body":
        make_body(args[0], args[1], int(args[2]) if len(args) > 2 else 1024)
    elif command == "wait-http":
        wait_http(args[0], float(args[1]))
    elif command == "ch":
        print(ch_query(args[0], args[1]))
    elif command == "wait-count":
        print(json.dumps(wait_count(args[0], args[1], int(args[2]), float(args[3]))))
    elif command == "drain":
        print(json.dumps(drain(args[0], args[1], int(args[2]), int(args[3]), float(args[4]))))
    elif command == "metric":
        print(f"{metric(args[0], args[1], args[2:]):.0f}")
    elif command == "snap":
        print(json.dumps(snap(args[0], args[1:])))
    elif command == "hist":
        print(json.dumps(hist(args[0], args[1])))
    elif command == "hist-delta":
        with open(args[0], encoding="utf-8") as f:
            before = json.load(f)
        with open(args[1], encoding="utf-8") as f:
            after = json.load(f)
        print(json.dumps(hist_quantiles(before, after)))
    elif command == "lag-sampler":
        lag_sampler(args)
    elif command == "oha":
        oha_summary(args[0])
    elif command == "rss":
        rss(args[0])
    elif command == "cpu":
        cpu(args)
    elif command == "cpu-delta":
        cpu_delta(args[0], args[1])
    elif command == "dead-receiver":
        dead_receiver(int(args[0]), float(args[1]))
    elif command == "report":
        report(args[0], args[1], args[2])
    else:
        die(f"unknown subcommand {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
