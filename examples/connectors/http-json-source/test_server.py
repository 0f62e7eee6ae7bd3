#!/usr/bin/env python3
"""A local paginated JSON API for testing and demonstrating `http-json-source`.

    python3 test_server.py --port 8765 --token secret --resources orders,customers --items 250

Every resource starts with `--items` deterministic items made from `--seed`. The API:

- `GET /{resource}?limit=N&cursor=C&updated_after=T` with `Authorization: Bearer TOKEN`
  answers `{"items": [...], "next_cursor": "..." | null}`: items ordered by
  (`updated_at`, `id`), only those updated after `T` when given, `N` at most 1000. The
  cursor is a keyset cursor (it names the last item returned), so it stays valid while
  items change and across restarts.
- `POST /{resource}` with a JSON object creates an item (no `id`, or an unknown one) or
  updates the item with that `id` (fields merge); either way `updated_at` moves past
  every earlier change. Answers the stored item.
- `POST /_fail` with `{"status": 503, "count": 2}` makes the next `count` reads answer
  `status` (to exercise retries); `GET /_stats` counts requests.

Items: `id` (integer), `name` (text), `amount` (number), `active` (boolean), `tags`
(list), `created_at` and `updated_at` (ISO 8601 UTC with microseconds).
Only the Python standard library is used.
"""

import argparse
import base64
import datetime as dt
import json
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_LIMIT = 1000
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def iso(t):
    """ISO 8601 UTC with microseconds and a `Z`."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store:
    """Items per resource, with a clock that gives every change a distinct, increasing time."""

    def __init__(self, resources, items, seed):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.clock = EPOCH
        self.data = {}
        self.fail = None
        self.stats = {"reads": 0, "writes": 0, "unauthorized": 0, "failed": 0}
        words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
        for r in resources:
            self.data[r] = {}
            for i in range(1, items + 1):
                t = self._tick(step=dt.timedelta(seconds=1))
                self.data[r][i] = {
                    "id": i,
                    "name": "%s %s %d" % (r, self.rng.choice(words), i),
                    "amount": round(self.rng.uniform(0, 1000), 2),
                    "active": self.rng.random() < 0.8,
                    "tags": self.rng.sample(words, 2),
                    "created_at": iso(t),
                    "updated_at": iso(t),
                }

    def _tick(self, step=None):
        # Initial items get fixed times (deterministic data); changes get wall time, but
        # never a time at or before an earlier change.
        if step is not None:
            self.clock += step
        else:
            self.clock = max(self.clock + dt.timedelta(microseconds=1),
                             dt.datetime.now(dt.timezone.utc))
        return self.clock

    def page(self, resource, limit, cursor, updated_after):
        with self.lock:
            items = sorted(self.data[resource].values(), key=lambda it: (it["updated_at"], it["id"]))
        if updated_after:
            items = [it for it in items if it["updated_at"] > updated_after]
        if cursor:
            after = decode_cursor(cursor)
            items = [it for it in items if (it["updated_at"], it["id"]) > after]
        page = items[:limit]
        more = len(items) > limit
        next_cursor = encode_cursor(page[-1]) if (more and page) else None
        return {"items": page, "next_cursor": next_cursor}

    def upsert(self, resource, fields):
        with self.lock:
            items = self.data[resource]
            t = iso(self._tick())
            ident = fields.get("id")
            if ident in items:
                item = items[ident]
                item.update({k: v for k, v in fields.items() if k not in ("created_at", "updated_at")})
            else:
                if ident is None:
                    ident = max(items, default=0) + 1
                item = {"id": ident, "name": "", "amount": 0.0, "active": True, "tags": [],
                        "created_at": t}
                item.update({k: v for k, v in fields.items() if k not in ("created_at", "updated_at")})
                item["id"] = ident
                items[ident] = item
            item["updated_at"] = t
            return dict(item)


def encode_cursor(item):
    raw = json.dumps([item["updated_at"], item["id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor):
    pad = "=" * (-len(cursor) % 4)
    updated_at, ident = json.loads(base64.urlsafe_b64decode(cursor + pad))
    return updated_at, ident


def make_handler(store, token):
    class Handler(BaseHTTPRequestHandler):
        server_version = "culvert-test-api/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            if self.server.verbose:
                sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

        def reply(self, status, value, headers=()):
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def authorized(self):
            if self.headers.get("Authorization") == "Bearer " + token:
                return True
            store.stats["unauthorized"] += 1
            self.reply(401, {"error": "missing or wrong bearer token"},
                       [("WWW-Authenticate", "Bearer")])
            return False

        def body_json(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return None

        def do_GET(self):
            url = urlsplit(self.path)
            name = url.path.strip("/")
            if not self.authorized():
                return
            if name == "_stats":
                return self.reply(200, store.stats)
            if name not in store.data:
                return self.reply(404, {"error": "no resource %r; known: %s"
                                                 % (name, sorted(store.data))})
            with store.lock:
                fail = store.fail
                if fail and fail["count"] > 0:
                    fail["count"] -= 1
                    store.stats["failed"] += 1
                    status = fail["status"]
                else:
                    status = None
            if status:
                return self.reply(status, {"error": "injected failure"},
                                  [("Retry-After", "0")] if status == 429 else ())
            q = parse_qs(url.query)
            try:
                limit = int(q.get("limit", ["100"])[0])
                if not 1 <= limit <= MAX_LIMIT:
                    raise ValueError
            except ValueError:
                return self.reply(400, {"error": "limit must be an integer from 1 to %d" % MAX_LIMIT})
            cursor = q.get("cursor", [""])[0]
            if cursor:
                try:
                    decode_cursor(cursor)
                except ValueError:
                    return self.reply(400, {"error": "invalid cursor"})
            store.stats["reads"] += 1
            self.reply(200, store.page(name, limit, cursor, q.get("updated_after", [""])[0]))

        def do_POST(self):
            url = urlsplit(self.path)
            name = url.path.strip("/")
            if not self.authorized():
                return
            value = self.body_json()
            if not isinstance(value, dict):
                return self.reply(400, {"error": "send a JSON object"})
            if name == "_fail":
                with store.lock:
                    store.fail = {"status": int(value.get("status", 503)),
                                  "count": int(value.get("count", 1))}
                return self.reply(200, store.fail)
            if name not in store.data:
                return self.reply(404, {"error": "no resource %r" % name})
            store.stats["writes"] += 1
            self.reply(200, store.upsert(name, value))

    return Handler


def serve(port=0, token="secret", resources=("orders", "customers"), items=250, seed=1,
          verbose=False):
    """Start the server on 127.0.0.1:`port` (0: any free port) in a background thread;
    returns the server (`server.server_address[1]` is the port; `shutdown()` stops it)."""
    store = Store(list(resources), items, seed)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(store, token))
    server.daemon_threads = True
    server.verbose = verbose
    server.store = store
    # A short poll interval makes shutdown() quick.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--token", default="secret", help="the bearer token clients must send")
    p.add_argument("--resources", default="orders,customers", help="comma-separated resource names")
    p.add_argument("--items", type=int, default=250, help="items per resource at start")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    p.add_argument("--verbose", action="store_true", help="log every request")
    args = p.parse_args()
    server = serve(args.port, args.token, [r for r in args.resources.split(",") if r],
                   args.items, args.seed, args.verbose)
    print("listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
