#!/usr/bin/env python3
"""Cold start and API latency of the control plane's custom handler, `culvert-functions`.

Started by bench/control_plane.sh, which picks the PostgreSQL binaries, builds the handler
if needed, creates the work directory and cleans up behind this script.

Everything runs on this machine, against one throw-away PostgreSQL cluster (the control
store, on 127.0.0.1) and the handler spoken to directly, as the Functions host does:

  cold start   spawn of `culvert-functions serve` to the first HTTP 200 on GET / (the host's
               readiness probe), GET /api/openapi.json and an authenticated
               GET /api/v1/pipelines, RUNS times each (interleaved); baseline: spawn to exit
               of `culvert-functions --version`, the cost of the process itself
  open loop    RATE requests/s for SECONDS s, scheduled at fixed intervals on keep-alive
               connections, latency from the scheduled send time (no coordinated omission):
               GET /api/v1/pipelines/{id} and POST /api/v1/connectors; baselines GET / and
               GET /api/openapi.json on the same handler
  closed loop  wrk -t2 -c16 for WRK_SECONDS s: GET /api/v1/pipelines/{id}, POST
               /api/v1/connectors (unique names from a Lua script), baseline GET /

Exit status: 0 when every run completed (missed targets are reported, not failures);
1 when something broke.
"""

# The open-loop load generator is written here rather than taken from PyPI: none of the
# Python load tools there sends requests open-loop at a fixed rate with latency measured
# from the scheduled send time. Locust (and locust-plugins' constant_total_ips), molotov,
# and the small asyncio/threaded "load test" tools are closed-loop (a user waits for its
# response before the next request, so a stall delays later sends and hides their wait);
# yandextank's and encarno's open-loop generators are native binaries fetched from outside
# PyPI; hdrhistogram only records. asyncio on raw sockets is enough at a few hundred
# requests/s and costs little CPU next to the handler on a 2-core machine.

import argparse
import asyncio
import json
import math
import os
import re
import selectors
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from benchlib import Broken, ClusterTools, Interrupted, agent_identity, catch_signals, free_port, log, now, read_stat, table  # noqa: E402



class ServerGone(Broken):
    """The handler exited while it was measured (on a shared machine: stopped from outside)."""
COLD_TARGET_MS = 50.0
P99_TARGET_MS = 20.0

PG_SETTINGS = ["-c listen_addresses=127.0.0.1"]






def pct(sorted_values, p):
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def summary(values):
    v = sorted(values)
    return {"n": len(v), "min": v[0], "p50": pct(v, 50), "p90": pct(v, 90), "p95": pct(v, 95),
            "p99": pct(v, 99), "max": v[-1]} if v else None


def fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)




# ---------------------------------------------------------------- open-loop generator

class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer


async def read_response(reader):
    """One HTTP/1.1 response: (status, body, server wants close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
        elif k == b"connection" and b"close" in v.lower():
            close = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(length) if length else b""
    return status, body, close


async def open_loop_run(port, make_request, expect, rate, seconds, conns, timeout, alive):
    """Send rate requests/s for seconds s; each request i is due at t0 + i/rate whatever
    happened to the ones before it, and waits for an idle keep-alive connection when all
    are busy (that wait is part of its latency). Returns one record per request:
    (due, sent, done, status) in loop-time seconds (done None when it failed)."""
    loop = asyncio.get_running_loop()
    idle = asyncio.LifoQueue()  # a warm connection is reused first, as a client pool does
    opened = []

    async def connect():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(r, w)
        opened.append(c)
        return c

    for _ in range(conns):
        idle.put_nowait(await connect())
    n = int(rate * seconds)
    interval = 1.0 / rate
    records = [None] * n
    stats = {"reconnects": 0, "errors": [], "bad": {}}
    tasks = set()

    async def one(i, due):
        c = await idle.get()
        sent = loop.time()
        data = make_request(i)
        status = None
        for attempt in (0, 1):
            try:
                c.writer.write(data)
                status, body, close = await asyncio.wait_for(read_response(c.reader), timeout)
                break
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                # An idle connection the server closed: it never saw the request; retry once
                # on a new connection (the reconnect is part of this request's latency).
                c.writer.close()
                stats["reconnects"] += 1
                if attempt:
                    stats["errors"].append(f"{type(e).__name__}: {e}")
                try:
                    c = await connect()
                except OSError as e2:
                    stats["errors"].append(f"connect: {e2}")
                    c = None
                    break
            except asyncio.TimeoutError:
                stats["errors"].append(f"no answer within {timeout} s")
                c.writer.close()
                try:
                    c = await connect()
                except OSError as e2:
                    stats["errors"].append(f"connect: {e2}")
                    c = None
                break
        done = loop.time()
        if c is not None and status is not None and close:
            c.writer.close()
            try:
                c = await connect()
            except OSError as e2:
                stats["errors"].append(f"connect: {e2}")
                c = None
        if c is not None:
            idle.put_nowait(c)
        if status is None:
            records[i] = (due, sent, None, None)
            return
        if status != expect:
            if status not in stats["bad"]:
                stats["bad"][status] = [0, body[:300].decode(errors="replace")]
            stats["bad"][status][0] += 1
        records[i] = (due, sent, done, status)

    t0 = loop.time() + 0.05
    i = 0
    next_check = t0
    while i < n:
        t = loop.time()
        if t >= next_check:
            next_check = t + 0.1
            if not alive():
                break
        due = t0 + i * interval
        if due > t:
            await asyncio.sleep(due - t)
            continue
        while i < n and t0 + i * interval <= t:
            task = asyncio.ensure_future(one(i, t0 + i * interval))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
    if tasks:
        await asyncio.wait(list(tasks), timeout=timeout + 5 if alive() else 1)
    for c in opened:
        c.writer.close()
    return t0, records, stats


def run_precise(coro):
    """Run coro on an event loop whose timers keep to tens of microseconds: the default
    (epoll) loop rounds every wait up to whole milliseconds, which would make most sends
    late by up to 1 ms; select() takes microseconds (and there are only a few sockets)."""
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        return loop.run_until_complete(coro)
    finally:
        pending = asyncio.all_tasks(loop)
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def open_loop(port, make_request, expect, rate, seconds, conns=32, timeout=10.0, alive=lambda: True):
    t0, records, stats = run_precise(open_loop_run(port, make_request, expect, rate, seconds, conns, timeout, alive))
    done = [r for r in records if r and r[2] is not None]
    ok = [r for r in done if r[3] == expect]
    lat = summary([(r[2] - r[0]) * 1000 for r in ok])        # from the scheduled time
    service = summary([(r[2] - r[1]) * 1000 for r in ok])    # from the actual send
    lag = summary([(r[1] - r[0]) * 1000 for r in records if r])
    last = max((r[2] for r in done), default=t0)
    return {
        "scheduled": len(records), "answered": len(done), "ok": len(ok),
        "failed": sum(1 for r in records if r and r[2] is None),
        "unanswered": sum(1 for r in records if r is None),
        "bad": stats["bad"], "errors": stats["errors"], "reconnects": stats["reconnects"],
        "lat": lat, "service": service, "lag": lag,
        "rate": len(ok) / max(last - t0, 1e-9),
        "slow": sorted(((r[2] - r[0]) * 1000, r[0] - t0) for r in ok)[-5:],
    }


# ---------------------------------------------------------------- wrk

WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
    "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d," ..
    "\"p50\":%d,\"p90\":%d,\"p99\":%d,\"p999\":%d,\"max\":%d,\"mean\":%f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""

# Unique connector names: a per-thread counter and the thread's number (set in setup(),
# which wrk runs once per thread before it starts), plus a tag per run.
WRK_POST = r"""
local next_thread = 0
function setup(thread)
  thread:set("tid", next_thread)
  next_thread = next_thread + 1
end
local counter = 0
function init(args)
  env_id = args[1]
  tag = args[2]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local body = string.format('{"name":"wrk-%s-%d-%d","environment_id":"%s","type":"postgres-source",' ..
    '"config":{"host":"127.0.0.1","port":5432,"user":"postgres","database":"app","password":"bench-secret"}}',
    tag, tid, counter, env_id)
  return wrk.format(nil, nil, nil, body)
end
""" + WRK_DONE


class Runner(ClusterTools):
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.pgbin = args.pgbin
        self.procs = []
        self.problems = []
        self.notes = []
        self.env = dict(os.environ)
        for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGOPTIONS", "PGPASSFILE", "PGSSLMODE"):
            self.env.pop(k, None)
        self.env["PGCONNECT_TIMEOUT"] = "10"
        self.env["PGSSLMODE"] = "disable"
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.pg = None
        self.compute_port = free_port()
        self.server = None
        self.load_before = os.getloadavg()
        os.makedirs(os.path.join(self.work, "logs"), exist_ok=True)

    # ---------------------------------------------------------------- processes

    def forget(self, p):
        """Drop a reaped process from the pids file the wrapper's trap signals."""
        self.procs = [q for q in self.procs if q is not p]
        with open(os.path.join(self.work, "pids"), "w") as f:
            for q in self.procs:
                if q.poll() is None:
                    f.write(f"{q.pid}\n")

    def stop(self, p, what, timeout=15):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)
                self.problems.append(f"{what}: did not stop within {timeout} s of SIGTERM (killed)")
        self.forget(p)
        return p.returncode

    def run(self, cmd, timeout, input=None, check=True, what=None, env=None):
        try:
            r = subprocess.run(cmd, env=env or self.env, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Broken(f"{what or cmd[0]} did not finish within {timeout:.0f} s")
        if check and r.returncode != 0:
            raise Broken(f"{what or ' '.join(cmd[:3])} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}")
        return r

    def sql(self, db, text):
        r = self.run(self.psql_cmd(self.pg["port"], db) + ["-c", text], 60, what=f"psql: {text[:60]}")
        return [ln.split("|") for ln in r.stdout.splitlines() if ln]

    def pg_cpu(self):
        """CPU seconds of the cluster: the postmaster, its live children, what it reaped."""
        st = read_stat(self.pg["pm"])
        total = (st[1] + st[2]) if st else 0.0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                s = read_stat(entry)
                if s and s[0] == self.pg["pm"]:
                    total += s[1]
        return total

    # ---------------------------------------------------------------- setup

    def start_cluster(self):
        # Named "source" so that the wrapper's trap (bench/common.sh) stops it if this
        # script cannot.
        d = os.path.join(self.work, "source")
        os.makedirs(d)
        logdir = os.path.join(self.work, "logs")
        if self.as_pg:
            shutil.chown(d, "postgres", "postgres")
            os.chmod(logdir, 0o777)
        self.run(self.as_pg + [os.path.join(self.pgbin, "initdb"), "-D", d, "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--locale=C"], 300, what="initdb")
        port = free_port()
        opts = " ".join(PG_SETTINGS + [f"-p {port}", f"-c unix_socket_directories={d}"])
        self.run(self.as_pg + [os.path.join(self.pgbin, "pg_ctl"), "-D", d, "-l", os.path.join(logdir, "postgres.log"),
                               "-o", opts, "-w", "-t", "120", "start"], 180, what="pg_ctl start")
        with open(os.path.join(d, "postmaster.pid")) as f:
            pm = int(f.readline())
        self.pg = {"name": "control store", "dir": d, "port": port, "pm": pm}

    def handler_env(self, port=None):
        env = dict(self.env)
        env["CULVERT_CONTROL_STORE"] = f"host=127.0.0.1 port={self.pg['port']} user=postgres dbname=control"
        env["CULVERT_SEALING_PUBLIC_KEY"] = self.sealing_pub
        # Configuration is sealed at rest; a local key file (created on first use) stands in
        # for the Key Vault secret.
        env["CULVERT_MASTER_KEY_FILE"] = os.path.join(self.work, "master-keys.json")
        env.pop("CULVERT_MASTER_KEY_SECRET_URL", None)
        env.pop("CULVERT_LOG", None)
        # `local` environments need a compute provider; nothing here runs the provision job,
        # so it is never called (nothing listens there).
        env["CULVERT_LOCAL_COMPUTE_URL"] = f"http://127.0.0.1:{self.compute_port}"
        if port:
            env["FUNCTIONS_CUSTOMHANDLER_PORT"] = str(port)
        return env

    def request(self, method, path, body=None, key=True, headers=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        if key:
            req.add_header("Authorization", f"Bearer {self.admin}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with self.opener.open(req, timeout=timeout) as r:
                raw = r.read()
                try:
                    return r.status, json.loads(raw or b"null")
                except ValueError:
                    return r.status, raw.decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def setup(self):
        a = self.args
        self.start_cluster()
        self.sql("postgres", "CREATE DATABASE control")
        # The sealing key connector secrets of `local` environments are sealed with (SPKI PEM,
        # 3072-bit like culvert_sealing::OpeningKey::generate).
        priv = os.path.join(self.work, "sealing.pem")
        self.sealing_pub = os.path.join(self.work, "sealing.pub.pem")
        self.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072", "-out", priv], 120,
                 what="openssl genpkey")
        self.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", self.sealing_pub], 60, what="openssl pkey")
        key_file = os.path.join(self.work, "admin.key")
        t = now()
        self.run([a.functions, "create-admin-key", "--out", key_file], 120, env=self.handler_env(),
                 what="culvert-functions create-admin-key")
        log(f"control store migrated and admin key created in {now() - t:.2f} s")
        with open(key_file) as f:
            self.admin = f.read().strip()

        self.start_server()

        # Environments are created only through the payload path (the function has a queue output).
        inv = {"Data": {"req": {
            "Url": f"http://127.0.0.1:7071/api/environments", "Method": "POST", "Query": "{}",
            "Headers": {"Authorization": [f"Bearer {self.admin}"], "Content-Type": ["application/json"]},
            "Params": {}, "Identities": [], "Body": json.dumps({"name": "bench", "provider": "local"})}},
            "Metadata": {"sys": {"MethodName": "environments"}}}
        s, out = self.request("POST", "/environments", inv, key=False,
                              headers={"X-Azure-Functions-InvocationId": "7f1d8a4c-0000-4000-8000-00000000be01"})
        if s != 200:
            raise Broken(f"POST /environments (payload) answered {s}: {out}")
        res = out["Outputs"]["res"]
        env = json.loads(res["body"])
        if res["statusCode"] != 201:
            raise Broken(f"creating the environment answered {res['statusCode']}: {env}")
        self.env_id = env["id"]

        ids = {}
        for name, kind, port in (("src", "postgres-source", 5432), ("dst", "postgres-target", 5433)):
            body = {"name": name, "environment_id": self.env_id, "type": kind,
                    "config": {"host": "127.0.0.1", "port": port, "user": "postgres", "database": "app",
                               "password": "bench-secret"}}
            s, c = self.request("POST", "/api/v1/connectors", body)
            if s != 201:
                raise Broken(f"POST /api/v1/connectors answered {s}: {c}")
            ids[name] = c["id"]
        s, p = self.request("POST", "/api/v1/pipelines", {"name": "orders", "source_id": ids["src"],
                                                          "target_id": ids["dst"], "tables": ["public.*"]})
        if s != 201:
            raise Broken(f"POST /api/v1/pipelines answered {s}: {p}")
        self.pipeline_id = p["id"]
        for path in ("/api/openapi.json", f"/api/v1/pipelines/{self.pipeline_id}", "/api/v1/pipelines"):
            s, body = self.request("GET", path)
            if s != 200:
                raise Broken(f"GET {path} answered {s}: {body}")
        log(f"handler on port {self.port}: environment {self.env_id}, pipeline {self.pipeline_id}")

    def start_server(self):
        """The long-lived handler the load runs use (a new port each time)."""
        if self.server is not None:
            self.stop(self.server, "culvert-functions serve")
        self.port = free_port()
        logf = open(os.path.join(self.work, "logs", "handler.log"), "a")
        self.server = self.popen([self.args.functions, "serve"], env=self.handler_env(self.port), stdout=logf,
                                 stderr=subprocess.STDOUT)
        logf.close()
        deadline = now() + 30
        while True:
            if self.server.poll() is not None:
                raise Broken(f"culvert-functions serve exited with status {self.server.returncode}")
            try:
                if self.request("GET", "/", key=False, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if now() > deadline:
                raise Broken("culvert-functions serve did not answer GET / within 30 s")
            time.sleep(0.05)

    def gone(self, p, what):
        """A handler that exited by itself is broken; one stopped by a signal from outside
        (SIGTERM/SIGINT give status 0 through the graceful shutdown) is worth one retry."""
        rc = p.returncode
        text = f"culvert-functions serve exited with status {rc} {what}"
        return ServerGone(text) if rc in (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL) else Broken(text)

    def retried(self, what, body):
        """body(), once more if the handler was stopped from outside meanwhile."""
        try:
            return body()
        except ServerGone as e:
            self.notes.append(f"note: {e}; nothing here stops it, so something else on this machine did "
                              f"(a kill by name?); {what} was repeated")
            log(f"{e}; repeating {what}")
            if self.server is not None and self.server.poll() is not None:
                self.start_server()
            return body()

    # ---------------------------------------------------------------- cold start

    def first_200(self, p, port, req, deadline):
        """Poll every 1 ms (connect, one request, status line) until a 200; its time."""
        refused = 0
        while True:
            if p.poll() is not None:
                raise self.gone(p, "during a cold start")
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(10)
                try:
                    s.connect(("127.0.0.1", port))
                except ConnectionRefusedError:
                    refused += 1
                else:
                    s.sendall(req)
                    buf = b""
                    while b"\r\n" not in buf:
                        chunk = s.recv(256)
                        if not chunk:
                            break
                        buf += chunk
                    t = time.perf_counter()
                    if buf.startswith(b"HTTP/1.1 200 "):
                        return t, refused
            except OSError:
                pass
            finally:
                s.close()
            if time.perf_counter() > deadline:
                raise Broken(f"no 200 within 30 s of spawning culvert-functions serve for {req.split(b' ')[1]!r}")
            time.sleep(0.001)

    def cold_start(self):
        a = self.args
        kinds = [
            ("GET /", f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
            ("GET /api/openapi.json", f"GET /api/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
            ("GET /api/v1/pipelines (authenticated)",
             f"GET /api/v1/pipelines HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.admin}\r\n"
             f"Connection: close\r\n\r\n"),
        ]
        times = {k: [] for k, _ in kinds}
        times["version"] = []
        first = {}
        term_killed = []
        logpath = os.path.join(self.work, "logs", "cold-start.log")
        logf = open(logpath, "a")
        venv = self.handler_env()

        def spawn_version():
            t0 = time.perf_counter()
            p = subprocess.Popen([a.functions, "--version"], env=venv, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            p.wait(timeout=30)
            t1 = time.perf_counter()
            if p.returncode != 0:
                raise Broken(f"culvert-functions --version exited with {p.returncode}")
            return (t1 - t0) * 1000

        def spawn_serve(req):
            return self.retried("a cold start", lambda: spawn_serve_once(req))

        def spawn_serve_once(req):
            port = free_port()
            env = self.handler_env(port)
            t0 = time.perf_counter()
            p = self.popen([a.functions, "serve"], env=env, stdout=logf, stderr=subprocess.STDOUT)
            try:
                t1, _ = self.first_200(p, port, req.encode(), t0 + 30)
            finally:
                rc = self.stop(p, "culvert-functions serve (cold start)")
            if rc == -signal.SIGTERM:
                # Killed by the SIGTERM itself, sent right after the first 200: the handler for
                # it was not installed yet (see the note printed with the results).
                term_killed.append(req.split(" ")[1])
            elif rc not in (0, None):
                self.problems.append(f"culvert-functions serve exited with status {rc} after SIGTERM (cold start)")
            return (t1 - t0) * 1000

        try:
            # One discarded round first: the binary and its libraries come into the page cache.
            first["version"] = spawn_version()
            for k, req in kinds:
                first[k] = spawn_serve(req)
            for i in range(a.runs):
                times["version"].append(spawn_version())
                for k, req in kinds:
                    times[k].append(spawn_serve(req))
        finally:
            logf.close()
        for k in times:
            log(f"cold start {k}: median {pct(sorted(times[k]), 50):.1f} ms over {len(times[k])} runs")
        if term_killed:
            self.notes.append(
                f"note: {len(term_killed)} of {len(kinds) * (a.runs + 1)} cold-started handlers were killed by the "
                f"SIGTERM sent right after their first 200 (exit by signal 15, not the graceful exit 0; after "
                f"{', '.join(sorted(set(term_killed)))}): axum's with_graceful_shutdown polls the shutdown future "
                f"(which registers the SIGTERM handler) in a task it spawns, so a SIGTERM that arrives just after "
                f"readiness finds no handler and ends the process without a graceful shutdown")
        return {k: summary(v) for k, v in times.items()}, first

    # ---------------------------------------------------------------- load

    def measure(self, body):
        """body() with the CPU the handler, the cluster and this process's side used."""
        h0, g0, c0, t0 = read_stat(self.server.pid), self.pg_cpu(), os.times(), now()
        res = body()
        h1, g1, c1, t1 = read_stat(self.server.pid), self.pg_cpu(), os.times(), now()
        res["wall"] = t1 - t0
        res["handler_cpu"] = (h1[1] - h0[1]) if h0 and h1 else None
        res["pg_cpu"] = g1 - g0
        res["client_cpu"] = (c1.user + c1.system - c0.user - c0.system
                             + c1.children_user + c1.children_system - c0.children_user - c0.children_system)
        if self.server.poll() is not None:
            raise self.gone(self.server, "during a load run")
        return res

    def get_request(self, path, auth):
        data = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                + (f"Authorization: Bearer {self.admin}\r\n" if auth else "") + "\r\n").encode()
        return lambda i: data

    def post_request(self, tag):
        head = (f"POST /api/v1/connectors HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Authorization: Bearer {self.admin}\r\nContent-Type: application/json\r\n")
        env_id = self.env_id

        def make(i):
            body = json.dumps({"name": f"ol-{tag}-{i}", "environment_id": env_id, "type": "postgres-source",
                               "config": {"host": "127.0.0.1", "port": 5432, "user": "postgres",
                                          "database": "app", "password": "bench-secret"}}).encode()
            return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        return make

    def open_loop(self, label, make, expect):
        a = self.args
        time.sleep(1)  # let the previous run's stragglers (autovacuum, closing connections) settle
        log(f"open loop {label}: {a.rate} requests/s for {a.seconds} s")
        res = self.retried(f"the open-loop run {label}", lambda: self.measure(
            lambda: open_loop(self.port, make, expect, a.rate, a.seconds, alive=lambda: self.server.poll() is None)))
        res["label"] = label
        l = res["lat"]
        log(f"  ok {res['ok']}/{res['scheduled']}, p50 {fmt(l and l['p50'])} ms, p99 {fmt(l and l['p99'])} ms, "
            f"max {fmt(l and l['max'])} ms")
        return res

    def wrk(self, label, path, script, script_args=()):
        a = self.args
        time.sleep(1)
        spath = os.path.join(self.work, f"wrk-{len(os.listdir(self.work))}.lua")
        with open(spath, "w") as f:
            f.write(script)
        log(f"wrk {label}: -t2 -c16 -d{a.wrk_seconds}s")

        def body():
            cmd = ["wrk", "-t2", "-c16", f"-d{a.wrk_seconds}s", "--latency", "-s", spath,
                   "-H", f"Authorization: Bearer {self.admin}", f"http://127.0.0.1:{self.port}{path}"]
            if script_args:
                cmd += ["--", *script_args]
            p = self.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                out, _ = p.communicate(timeout=a.wrk_seconds + 60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise Broken(f"wrk {label} did not finish")
            finally:
                self.forget(p)
            if p.returncode != 0:
                raise Broken(f"wrk {label} failed ({p.returncode}): {out[-1500:]}")
            with open(os.path.join(self.work, "logs", "wrk.log"), "a") as f:
                f.write(f"== {label}\n{out}\n")
            m = re.search(r"^BENCH_JSON (\{.*\})$", out, re.M)
            if not m:
                raise Broken(f"wrk {label}: no summary in its output:\n{out[-1500:]}")
            j = json.loads(m.group(1))
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
            return {"requests": j["requests"], "seconds": j["duration_us"] / 1e6,
                    "rps": float(rps.group(1)) if rps else j["requests"] / (j["duration_us"] / 1e6),
                    "p50": j["p50"] / 1000, "p90": j["p90"] / 1000, "p99": j["p99"] / 1000,
                    "p999": j["p999"] / 1000, "max": j["max"] / 1000,
                    "non2xx": int(non2xx.group(1)) if non2xx else 0,
                    "sock_errors": j["connect"] + j["read"] + j["write"] + j["timeout"],
                    "sock_detail": ", ".join(f"{k} {j[k]}" for k in ("connect", "read", "write", "timeout") if j[k])}

        res = self.retried(f"the wrk run {label}", lambda: self.measure(body))
        res["label"] = label
        log(f"  {res['rps']:,.0f} requests/s, p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms, "
            f"non-2xx {res['non2xx']}, socket errors {res['sock_errors']}")
        return res


# ---------------------------------------------------------------- report

def verdict(ok):
    return "PASS" if ok else "FAIL"


def report(r, cold, first, ol, wk):
    a = r.args
    print("\n" + "=" * 100)
    print(f"Culvert control plane benchmark   PostgreSQL {a.pg_version}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"handler {a.functions} ({agent_identity(a.functions)})")
    la0, la1 = r.load_before, os.getloadavg()
    print(f"load average (1/5/15 min) before the run {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, after "
          f"{la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}; other work on this machine makes the figures noisy")
    print("=" * 100)

    base = cold["version"]
    print(f"\nCOLD START: spawn of `culvert-functions serve` to the first HTTP 200, {a.runs} runs each, "
          f"interleaved (polled every 1 ms: connect + one request)")
    rows = []
    for k, label in (("version", "baseline: `culvert-functions --version` spawn -> exit"),
                     ("GET /", "GET / (readiness probe)"), ("GET /api/openapi.json", "GET /api/openapi.json"),
                     ("GET /api/v1/pipelines (authenticated)", "GET /api/v1/pipelines (authenticated)")):
        s = cold[k]
        rows.append([label, f"{s['min']:.1f}", f"{s['p50']:.1f}", f"{s['p95']:.1f}", f"{s['max']:.1f}",
                     f"{s['p50'] / base['p50']:.2f}x", f"{first[k]:.1f}"])
    table(rows, [("to", "<"), ("min ms", ">"), ("median ms", ">"), ("p95 ms", ">"), ("max ms", ">"),
                 ("median vs --version", ">"), ("discarded 1st ms", ">")])

    print(f"\nOPEN LOOP: {a.rate} requests/s for {a.seconds} s each on up to 32 keep-alive connections; latency from "
          f"the scheduled send time (service = from the actual send; lag = how late the generator sent)")
    rows = []
    for x in ol:
        l, s, g = x["lat"] or {}, x["service"] or {}, x["lag"] or {}
        rows.append([x["label"], f"{x['ok']}/{x['scheduled']}", f"{x['rate']:.1f}",
                     fmt(l.get("p50")), fmt(l.get("p90")), fmt(l.get("p99")), fmt(l.get("max")),
                     fmt(s.get("p99")), f"{fmt(g.get('p50'))}/{fmt(g.get('p99'))}",
                     fmt(x["handler_cpu"] * 1e6 / max(x["ok"], 1), ".0f"),
                     fmt(x["pg_cpu"] * 1e6 / max(x["ok"], 1), ".0f"),
                     f"{x['client_cpu'] / x['wall']:.2f}"])
    table(rows, [("request", "<"), ("ok/sent", ">"), ("achieved/s", ">"), ("p50 ms", ">"), ("p90 ms", ">"),
                 ("p99 ms", ">"), ("max ms", ">"), ("service p99", ">"), ("lag p50/p99", ">"),
                 ("handler CPU us/req", ">"), ("PG CPU us/req", ">"), ("generator cores", ">")])
    for x in ol:
        for status, (n, sample) in x["bad"].items():
            print(f"  {x['label']}: {n} answers with status {status}, first: {sample}")
        if x["errors"]:
            print(f"  {x['label']}: {len(x['errors'])} failed requests, first: {x['errors'][0]}")
        if x["unanswered"]:
            print(f"  {x['label']}: {x['unanswered']} requests not sent or not answered by the end of the run "
                  f"(waiting for a connection when the generator gave up)")
        if x["reconnects"]:
            print(f"  {x['label']}: {x['reconnects']} reconnects (server closed an idle connection)")
        if x["slow"] and x["slow"][-1][0] > 5 * (x["lat"]["p99"] or 1):
            print(f"  {x['label']}: slowest requests " +
                  ", ".join(f"{ms:.1f} ms at {at:.2f} s" for ms, at in reversed(x["slow"])))

    print(f"\nCLOSED LOOP: wrk -t2 -c16 -d{a.wrk_seconds}s (max throughput; wrk's latencies are from the actual "
          f"send, so they understate waits)")
    rows = []
    for x in wk:
        rows.append([x["label"], f"{x['requests']:,}", f"{x['rps']:,.0f}", f"{x['p50']:.2f}", f"{x['p90']:.2f}",
                     f"{x['p99']:.2f}", f"{x['max']:.2f}", str(x["non2xx"]), str(x["sock_errors"]),
                     fmt(x["handler_cpu"] / x["wall"], ".2f"), f"{x['pg_cpu'] / x['wall']:.2f}",
                     f"{x['client_cpu'] / x['wall']:.2f}"])
    table(rows, [("request", "<"), ("requests", ">"), ("req/s", ">"), ("p50 ms", ">"), ("p90 ms", ">"),
                 ("p99 ms", ">"), ("max ms", ">"), ("non-2xx", ">"), ("sock err", ">"), ("handler cores", ">"),
                 ("PG cores", ">"), ("wrk cores", ">")])
    for x in wk:
        if x["sock_errors"]:
            print(f"  {x['label']}: socket errors: {x['sock_detail']} (wrk's timeout is 2 s)")

    # The final table.
    ob = {x["key"]: x for x in ol}
    wb = {x["key"]: x for x in wk}
    rows = []

    def row(metric, value, baseline, ratio, target, ok):
        rows.append([metric, value, baseline, ratio, target, "" if ok is None else verdict(ok)])

    for k, label, tgt in (("GET /", "cold start -> 200 GET /, median", True),
                          ("GET /api/openapi.json", "cold start -> 200 GET /api/openapi.json, median", False),
                          ("GET /api/v1/pipelines (authenticated)",
                           "cold start -> 200 GET /api/v1/pipelines (auth), median", False)):
        v = cold[k]["p50"]
        row(label, f"{v:.1f} ms", f"{base['p50']:.1f} ms (--version)", f"{v / base['p50']:.2f}x",
            f"< {COLD_TARGET_MS:.0f} ms" if tgt else "", (v < COLD_TARGET_MS) if tgt else None)
    root = ob["root"]
    for key, label in (("get", f"open loop {a.rate}/s GET /api/v1/pipelines/{{id}}"),
                       ("post", f"open loop {a.rate}/s POST /api/v1/connectors"),
                       ("openapi", f"open loop {a.rate}/s GET /api/openapi.json")):
        x = ob[key]
        complete = x["ok"] == x["scheduled"]
        for p in ("p50", "p99"):
            v, b = (x["lat"] or {}).get(p), (root["lat"] or {}).get(p)
            is_target = p == "p99" and key in ("get", "post")
            row(f"{label}, {p}", f"{fmt(v)} ms", f"{fmt(b)} ms (GET /)",
                f"{v / b:.2f}x" if v and b else "-",
                f"< {P99_TARGET_MS:.0f} ms, all {x['scheduled']} ok" if is_target else "",
                (v is not None and v < P99_TARGET_MS and complete) if is_target else None)
    wroot = wb["root"]
    for key, label in (("get", "wrk GET /api/v1/pipelines/{id}"), ("post", "wrk POST /api/v1/connectors")):
        x = wb[key]
        row(f"{label}, throughput", f"{x['rps']:,.0f} req/s", f"{wroot['rps']:,.0f} req/s (GET /)",
            f"{x['rps'] / wroot['rps']:.2f}x", "", None)
        row(f"{label}, p99", f"{x['p99']:.2f} ms", f"{wroot['p99']:.2f} ms (GET /)",
            f"{x['p99'] / wroot['p99']:.2f}x" if wroot["p99"] else "-", "", None)
    print("\nSUMMARY (ratio = value / baseline, measured in this run)")
    table(rows, [("metric", "<"), ("value", ">"), ("baseline", ">"), ("ratio", ">"), ("target", "<"),
                 ("result", "<")])
    for note in r.notes:
        print(note)


def handler_log_findings(r):
    out = []
    for name in ("handler.log", "cold-start.log"):
        path = os.path.join(r.work, "logs", name)
        try:
            with open(path, errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        bad = [ln.rstrip() for ln in lines if re.search(r"\b(WARN|ERROR|panicked)\b", ln)]
        if bad:
            out.append(f"{name}: {len(bad)} warning/error lines, first: " + " | ".join(bad[:3]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--pgbin", required=True)
    ap.add_argument("--pg-version", required=True)
    ap.add_argument("--functions", required=True)
    args = ap.parse_args()
    try:
        args.runs = int(os.environ.get("RUNS", "20"))
        args.rate = int(os.environ.get("RATE", "500"))
        args.seconds = int(os.environ.get("DURATION", "20"))
        args.wrk_seconds = int(os.environ.get("WRK_SECONDS", "15"))
    except ValueError as e:
        print(f"bad setting: {e}", file=sys.stderr)
        return 2
    if args.runs < 1 or args.rate < 1 or args.seconds < 1 or args.wrk_seconds < 1:
        print("RUNS, RATE, DURATION and WRK_SECONDS must be at least 1", file=sys.stderr)
        return 2

    catch_signals()

    r = Runner(args)
    status = 0
    try:
        t_start = now()
        r.setup()
        cold, first = r.cold_start()
        ol = []
        for key, label, make, expect in (
                ("root", "GET / (baseline)", r.get_request("/", False), 200),
                ("openapi", "GET /api/openapi.json (baseline)", r.get_request("/api/openapi.json", False), 200),
                ("get", "GET /api/v1/pipelines/{id}", r.get_request(f"/api/v1/pipelines/{r.pipeline_id}", True), 200),
                ("post", "POST /api/v1/connectors", r.post_request("a"), 201)):
            res = r.open_loop(label, make, expect)
            res["key"] = key
            ol.append(res)
        wk = []
        for key, label, path, script, sargs in (
                ("root", "GET / (baseline)", "/", WRK_DONE, ()),
                ("get", "GET /api/v1/pipelines/{id}", f"/api/v1/pipelines/{r.pipeline_id}", WRK_DONE, ()),
                ("post", "POST /api/v1/connectors", "/api/v1/connectors", WRK_POST, (r.env_id, "b"))):
            res = r.wrk(label, path, script, sargs)
            res["key"] = key
            wk.append(res)
        n = r.sql("control", "SELECT count(*) FROM connectors")[0][0]
        r.notes.append(f"\ncontrol store after the run: {n} connectors; whole run {now() - t_start:.0f} s")
        r.notes += handler_log_findings(r)
        report(r, cold, first, ol, wk)
    except Broken as e:
        print(f"\nBROKEN: {e}", file=sys.stderr, flush=True)
        for line in handler_log_findings(r):
            print(line, file=sys.stderr)
        status = 1
    except Interrupted as e:
        print(f"\ninterrupted ({e}); cleaning up", file=sys.stderr, flush=True)
        status = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in list(r.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
            r.forget(p)
        if r.pg:
            r.stop_cluster(r.pg)
    if status == 0 and r.problems:
        status = 1
    if r.problems:
        print("\nPROBLEMS")
        for p in r.problems:
            print(f"  - {p}")
    return status


if __name__ == "__main__":
    sys.exit(main())
