#!/usr/bin/env python3
"""A webhook receiver for hookhouse's notification tests (CONTRACT §9).

Every notification is checked with the `standardwebhooks` package from PyPI, the reference
Standard Webhooks library, so hookhouse's signatures are verified by code that is not ours.
scripts/install-receiver.sh puts it in .cache/receiver; tests/common/receiver.rs starts this file
with that venv's python.

Listens on 127.0.0.1, port 0 (a free one), and prints `port=<N>` once listening. Exits when its
stdin closes (the test that started it ended, however it ended) or after --max-seconds.

Control API, JSON:
  POST /_control   any of {"secret": "whsec_…", "answers": [500, 410, 200], "default": 200,
                   "delay_ms": 0, "retry_after": "1", "hang": false}; the keys given replace the
                   current values (`answers` replaces the queue). Answers the whole plan.
  GET  /_received  every notification received, in order of arrival.
  POST /_reset     forgets the notifications received (the plan stays).
Any other POST is a notification: verified with standardwebhooks.Webhook(secret).verify, recorded,
then answered with the next status in `answers`, else `default`, after `delay_ms`; a non-2xx
answer carries `Retry-After: <retry_after>` when set. With `hang`, it is recorded and never
answered: the connection is held until the client gives up (or the receiver exits).
"""

import argparse
import json
import os
import select
import socket
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import standardwebhooks

CONTROL_KEYS = {"secret", "answers", "default", "delay_ms", "retry_after", "hang"}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.secret = None
        self.answers = deque()
        self.default = 200
        self.delay_ms = 0
        self.retry_after = None
        self.hang = False
        self.received = []

    def plan(self):
        return {
            "secret": self.secret,
            "answers": list(self.answers),
            "default": self.default,
            "delay_ms": self.delay_ms,
            "retry_after": self.retry_after,
            "hang": self.hang,
        }


STATE = State()
STOP = threading.Event()


def valid_status(value):
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def apply_control(update):
    """Checks the whole update, then applies it; returns an error message or None."""
    if not isinstance(update, dict):
        return "the control body must be a JSON object"
    unknown = set(update) - CONTROL_KEYS
    if unknown:
        return f"unknown control keys: {sorted(unknown)}"
    if "secret" in update:
        secret = update["secret"]
        if secret is not None:
            try:
                standardwebhooks.Webhook(secret)
            except Exception as error:  # noqa: BLE001 - any reason makes the secret unusable
                return f"unusable secret: {type(error).__name__}: {error}"
    if "answers" in update:
        answers = update["answers"]
        if not isinstance(answers, list) or not all(valid_status(a) for a in answers):
            return "answers must be a list of HTTP status codes"
    if "default" in update and not valid_status(update["default"]):
        return "default must be an HTTP status code"
    if "delay_ms" in update:
        delay = update["delay_ms"]
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            return "delay_ms must be a number of milliseconds, 0 or more"
    if "retry_after" in update:
        retry_after = update["retry_after"]
        if retry_after is not None and not isinstance(retry_after, (str, int)):
            return "retry_after must be a string, an integer or null"
    if "hang" in update and not isinstance(update["hang"], bool):
        return "hang must be true or false"

    with STATE.lock:
        if "secret" in update:
            STATE.secret = update["secret"]
        if "answers" in update:
            STATE.answers = deque(update["answers"])
        if "default" in update:
            STATE.default = update["default"]
        if "delay_ms" in update:
            STATE.delay_ms = update["delay_ms"]
        if "retry_after" in update:
            value = update["retry_after"]
            STATE.retry_after = None if value is None else str(value)
        if "hang" in update:
            STATE.hang = update["hang"]
    return None


def verify(secret, body, headers):
    """(verified, error message) for this body and these headers, by the reference library."""
    if secret is None:
        return False, "no secret set: POST /_control {\"secret\": \"whsec_...\"} first"
    try:
        # json_parse=False: whether the body is JSON is not the signature's business.
        standardwebhooks.Webhook(secret).verify(body, headers, json_parse=False)
        return True, None
    except standardwebhooks.WebhookVerificationError as error:
        return False, str(error) or type(error).__name__
    except Exception as error:  # noqa: BLE001 - a malformed header or a non-UTF-8 body
        return False, f"{type(error).__name__}: {error}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hookhouse-test-receiver"
    verbose = False

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        if self.verbose:
            sys.stderr.write(f"receiver: {self.address_string()} {format % args}\n")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status, value, extra_headers=()):
        payload = json.dumps(value).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, header in extra_headers:
                self.send_header(name, header)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client has gone; nothing to tell it

    def do_GET(self):
        if self.path == "/_received":
            with STATE.lock:
                received = list(STATE.received)
            self.send_json(200, received)
        elif self.path == "/_control":
            with STATE.lock:
                plan = STATE.plan()
            self.send_json(200, plan)
        else:
            self.send_json(404, {"error": "notifications are POSTs"})

    def do_POST(self):
        try:
            body = self.read_body()
        except (ValueError, OSError) as error:
            self.close_connection = True
            self.send_json(400, {"error": f"unreadable body: {error}"})
            return
        if self.path == "/_control":
            try:
                update = json.loads(body or b"{}")
            except ValueError as error:
                self.send_json(400, {"error": f"control body is not JSON: {error}"})
                return
            error = apply_control(update)
            if error is not None:
                self.send_json(400, {"error": error})
                return
            with STATE.lock:
                plan = STATE.plan()
            self.send_json(200, plan)
        elif self.path == "/_reset":
            with STATE.lock:
                STATE.received.clear()
            self.send_json(200, {"ok": True})
        else:
            self.notification(body)

    def notification(self, body):
        at = time.time()
        headers = {name.lower(): value for name, value in self.headers.items()}
        with STATE.lock:
            secret = STATE.secret
        verified, verify_error = verify(secret, body, headers)
        text = body.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        with STATE.lock:
            hang = STATE.hang
            if hang:
                status = None
            elif STATE.answers:
                status = STATE.answers.popleft()
            else:
                status = STATE.default
            delay_ms = STATE.delay_ms
            retry_after = STATE.retry_after
            STATE.received.append(
                {
                    "path": self.path,
                    "webhook_id": headers.get("webhook-id"),
                    "webhook_timestamp": headers.get("webhook-timestamp"),
                    "webhook_signature": headers.get("webhook-signature"),
                    "verified": verified,
                    "verify_error": verify_error,
                    "json": parsed,
                    "body": text,
                    "headers": headers,
                    "answered": status,
                    "at": at,
                }
            )
        if hang:
            self.hold_until_client_leaves()
            return
        if delay_ms:
            STOP.wait(delay_ms / 1000)
        if 200 <= status < 300:
            self.send_json(status, {"ok": True})
        else:
            extra = [("Retry-After", retry_after)] if retry_after is not None else []
            self.send_json(status, {"error": "scripted"}, extra)

    def hold_until_client_leaves(self):
        """Never answers: waits until the client closes the connection, or the receiver stops."""
        self.close_connection = True
        connection = self.connection
        while not STOP.is_set():
            readable, _, _ = select.select([connection], [], [], 0.2)
            if readable:
                try:
                    if connection.recv(1, socket.MSG_PEEK) == b"":
                        return  # the client gave up
                except OSError:
                    return
                time.sleep(0.2)  # the client sent more (a pipelined request): keep holding


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args()
    Handler.verbose = args.verbose

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def stop(reason):
        if not STOP.is_set():
            STOP.set()
            if args.verbose:
                sys.stderr.write(f"receiver: stopping ({reason})\n")
            threading.Thread(target=server.shutdown, daemon=True).start()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except OSError:
            pass
        stop("stdin closed")

    threading.Thread(target=watch_stdin, daemon=True).start()
    timer = threading.Timer(args.max_seconds, stop, args=("max seconds",))
    timer.daemon = True
    timer.start()

    print(f"port={server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        STOP.set()
        server.server_close()
    # Handler threads are daemons; one still holding a hung connection must not keep us alive.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
