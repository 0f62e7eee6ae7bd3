#!/usr/bin/env python3
"""Resilience of Culvert against PostgreSQL's own logical replication, in one run.

Started by bench/resilience.sh, which picks the PostgreSQL binaries, creates the work
directory and cleans up behind this script.

Two throw-away clusters on 127.0.0.1: source (database app) and target (database
replica for Culvert, database native for a native subscription on the same source).
A steady light write load (~LOAD_TPS single-row transactions/s from one persistent psql)
runs on table a for the whole run; both replicas read the same source at the same time.

  1. source restart   `pg_ctl restart -m fast -w` of the source, RESTARTS times. Resume time
                      = seconds from pg_ctl returning (server ready) until a marker row,
                      inserted right after, shows up in replica.a (Culvert) and native.a
                      (subscription). Also the agent's culvert_source_resume_seconds.
  2. backfill of b    b (ROWS rows) is added to the running pipeline (SIGTERM, tables += b,
                      restart); timed from the SIGTERM until the agent logs "background copy
                      of public.b done" (or the counts match). Meanwhile a marker row goes
                      into a every second and its arrival in the replica is timed, and
                      culvert_replication_lag_seconds is sampled every 250 ms. Then, after the
                      Culvert backfill has finished (one at a time, so they do not share the
                      two CPUs), the same for native: ALTER PUBLICATION ADD TABLE b +
                      ALTER SUBSCRIPTION REFRESH PUBLICATION until b is 'r' and counts match.
  3. verification     load stopped, both replicas caught up, md5 of a and b equal to the source.

Exit status: 0 when every step completed and the replicas match the source (a missed
bound is reported as FAIL, not an error); 1 when something broke.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from benchlib import Broken, ClusterTools, Interrupted, Session, agent_identity, catch_signals, free_port, log, now  # noqa: E402

PIPELINE = "bench"
MARKER_BASE = 1_000_000_000_000  # marker ids; load rows use small ids
LAG_BOUND = 5.0

PG_SETTINGS = [
    "-c listen_addresses=127.0.0.1",
    "-c wal_level=logical",
    "-c max_wal_senders=20",
    "-c max_replication_slots=20",
    "-c fsync=off",
    "-c synchronous_commit=off",
]




def pct(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-q * len(v) // 100)) - 1))
    return v[k]


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


class Load:
    """~tps single-row INSERT transactions into a through one persistent psql fed on stdin.
    When the server goes away psql exits; a new one is started until the server is back."""

    def __init__(self, runner, tps):
        self.r = runner
        self.tps = tps
        self.stop_event = threading.Event()
        self.next_id = 1_000_000  # seed rows use 1..n
        self.sent = 0
        self.respawns = 0
        self.p = None
        self.errlog = open(os.path.join(runner.work, "logs", "load.log"), "ab")
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def spawn(self):
        env = dict(self.r.env)
        env["PGAPPNAME"] = "bench load"
        cmd = [os.path.join(self.r.pgbin, "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(self.r.src["port"]),
               "-U", "postgres", "-d", "app"]
        self.p = self.r.popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.errlog)

    def loop(self):
        period = 1.0 / self.tps
        t = now()
        while not self.stop_event.is_set():
            if self.p is None or self.p.poll() is not None:
                if self.p is not None:
                    self.respawns += 1
                    self.p = None
                    time.sleep(0.2)
                self.spawn()
            i = self.next_id
            self.next_id += 1
            try:
                self.p.stdin.write(f"INSERT INTO a (id, v) VALUES ({i}, 'load {i}');\n".encode())
                self.p.stdin.flush()
                self.sent += 1
            except (BrokenPipeError, OSError):
                try:
                    self.p.kill()
                except OSError:
                    pass
                continue
            t += period
            d = t - now()
            if d > 0:
                self.stop_event.wait(d)
            elif d < -1:
                t = now()

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=15)
        if self.p is not None and self.p.poll() is None:
            try:
                self.p.stdin.close()
                self.p.wait(timeout=30)
            except Exception:
                self.p.kill()
        self.errlog.close()


class Markers:
    """Inserts a marker row into source a every second (and on demand) and times its arrival in
    replica.a and native.a, polled every 100 ms through persistent sessions on the target."""

    def __init__(self, runner):
        self.r = runner
        self.k = 0
        self.lock = threading.Lock()
        self.rows = {}  # id -> {"t": insert returned, "replica": seen, "native": seen}
        self.stop_event = threading.Event()
        self.sessions = {}
        self.error = None
        self.periodic = threading.Event()  # set: insert one marker a second
        self.threads = [threading.Thread(target=self.insert_loop, daemon=True),
                        threading.Thread(target=self.watch_loop, daemon=True)]

    def insert(self, retry_for=0.0):
        """Insert one marker; returns its id and the time the INSERT returned, or (None, None)."""
        with self.lock:
            self.k += 1
            mid = MARKER_BASE + self.k
        deadline = now() + retry_for
        while True:
            r = subprocess.run(self.r.psql_cmd(self.r.src["port"], "app")
                               + ["-c", f"INSERT INTO a (id, v) VALUES ({mid}, 'marker')"],
                               env=self.r.env, capture_output=True, text=True, timeout=20)
            t = now()
            if r.returncode == 0:
                with self.lock:
                    self.rows[mid] = {"t": t}
                return mid, t
            if now() >= deadline:
                return None, None
            time.sleep(0.02)

    def insert_loop(self):
        t = now()
        while not self.stop_event.is_set():
            if self.periodic.is_set():
                try:
                    self.insert()
                except subprocess.TimeoutExpired:
                    pass
            t += 1.0
            d = t - now()
            if d > 0:
                self.stop_event.wait(d)
            else:
                t = now()

    def watch_loop(self):
        while not self.stop_event.is_set():
            try:
                for db in ("replica", "native"):
                    with self.lock:
                        pending = [m for m, v in self.rows.items() if db not in v]
                    if not pending:
                        continue
                    if db not in self.sessions:
                        self.sessions[db] = Session(self.r, self.r.tgt["port"], db)
                    try:
                        rows = self.sessions[db].query(
                            f"SELECT id FROM a WHERE id IN ({','.join(map(str, pending[:500]))})", timeout=10)
                    except Broken:
                        self.sessions.pop(db).close()  # a not there yet, or the session died
                        continue
                    t = now()
                    with self.lock:
                        for (i,) in rows:
                            self.rows[int(i)].setdefault(db, t)
            except Exception as e:  # noqa: BLE001 - reported by the main thread
                self.error = e
                return
            self.stop_event.wait(0.1)

    def wait_seen(self, mid, db, timeout):
        deadline = now() + timeout
        while now() < deadline:
            if self.error:
                raise Broken(f"marker watcher failed: {self.error}")
            with self.lock:
                v = self.rows.get(mid, {})
                if db in v:
                    return v[db]
            time.sleep(0.05)
        return None

    def latencies(self, db, t0, t1):
        """Latencies (s) of markers inserted in [t0, t1] into db; unseen ones count until now."""
        out, unseen = [], 0
        with self.lock:
            for m, v in self.rows.items():
                if t0 <= v["t"] <= t1:
                    if db in v:
                        out.append(v[db] - v["t"])
                    else:
                        out.append(now() - v["t"])
                        unseen += 1
        return out, unseen

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)
        for s in self.sessions.values():
            s.close()


class Runner(ClusterTools):
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.pgbin = args.pgbin
        self.procs = []
        self.problems = []
        self.env = dict(os.environ)
        for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGOPTIONS", "PGPASSFILE", "PGSSLMODE",
                  "PGAPPNAME"):
            self.env.pop(k, None)
        self.env["PGCONNECT_TIMEOUT"] = "10"
        self.env["PGSSLMODE"] = "disable"
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.agent = None
        self.agent_logs = []
        self.src = self.tgt = None
        self.load = None
        self.markers = None
        self.lag_samples = []  # (t, lag_seconds, resume_seconds)
        self.lag_stop = threading.Event()
        self.load_before = os.getloadavg()
        self.control_restart = None

    # ---------------------------------------------------------------- processes


    def run(self, cmd, timeout, input=None, check=True, what=None):
        try:
            r = subprocess.run(cmd, env=self.env, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Broken(f"{what or cmd[0]} did not finish within {timeout:.0f} s")
        if check and r.returncode != 0:
            raise Broken(f"{what or ' '.join(cmd[:3])} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        return r


    def sql(self, port, db, text, timeout=None, check=True):
        r = self.run(self.psql_cmd(port, db) + ["-f", "-"], timeout or self.args.timeout, input=text, check=check,
                     what=f"psql on port {port}/{db}: {text.strip().splitlines()[0][:80]}")
        if r.returncode != 0:
            return None
        return [line.split("|") for line in r.stdout.splitlines() if line != ""]

    def one(self, port, db, text, timeout=None, check=True):
        rows = self.sql(port, db, text, timeout, check)
        return rows[-1][0] if rows else None

    # ---------------------------------------------------------------- clusters

    def pg_ctl(self, c, *args, timeout=180, what=None):
        return self.run(self.as_pg + [os.path.join(self.pgbin, "pg_ctl"), "-D", c["dir"], *args], timeout,
                        what=what or f"pg_ctl {args[-1]} {c['name']}")

    def init_cluster(self, name, port):
        d = os.path.join(self.work, name)
        os.makedirs(d)
        logdir = os.path.join(self.work, "logs")
        if self.as_pg:
            shutil.chown(d, "postgres", "postgres")
        self.run(self.as_pg + [os.path.join(self.pgbin, "initdb"), "-D", d, "-U", "postgres", "-A", "trust",
                               "-E", "UTF8", "--locale=C"], 300, what=f"initdb {name}")
        c = {"name": name, "dir": d, "port": port, "log": os.path.join(logdir, f"{name}.log")}
        opts = " ".join(PG_SETTINGS + [f"-p {port}", f"-c unix_socket_directories={d}"])
        self.pg_ctl(c, "-l", c["log"], "-o", opts, "-w", "-t", "120", "start")
        return c


    # ---------------------------------------------------------------- agent

    def metrics(self):
        try:
            with self.opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except Exception:
            return None
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
            if labels.get("pipeline", PIPELINE) != PIPELINE:
                continue
            try:
                out[(m.group(1), labels.get("stage", ""))] = float(m.group(4))
            except ValueError:
                pass
        return out

    def write_pipeline(self, tables):
        listed = ", ".join(f'"{t}"' for t in tables)
        with open(self.pipeline_path, "w") as f:
            f.write(f"""name = "{PIPELINE}"
batch_rows = 5000

[source]
connector = "postgres-source"
host = "127.0.0.1"
port = {self.src['port']}
user = "postgres"
database = "app"
tables = [{listed}]
sslmode = "disable"
heartbeat_seconds = 5

[target]
connector = "postgres-target"
host = "127.0.0.1"
port = {self.tgt['port']}
user = "postgres"
database = "replica"
sslmode = "disable"

[buffer]
url = "file://{self.buffer_dir}"
""")

    def start_agent(self, tag):
        logpath = os.path.join(self.work, "logs", f"agent-{tag}.log")
        self.agent_logs.append(logpath)
        env = dict(self.env)
        env["CULVERT_CACHE_DIR"] = self.args.cache_dir
        with open(logpath, "w") as logf:
            self.agent = self.popen([self.args.agent, "run", "--pipeline", self.pipeline_path,
                                     "--metrics-addr", f"127.0.0.1:{self.metrics_port}", "--progress-every", "0"],
                                    env=env, stdout=logf, stderr=subprocess.STDOUT)
        self.agent_log = logpath
        return self.agent

    def stop_agent(self, what):
        p = self.agent
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
            self.problems.append(f"{what}: agent did not stop within 60 s of SIGTERM (killed)")
            return
        if p.returncode != 0:
            self.problems.append(f"{what}: agent exited with status {p.returncode} after SIGTERM")

    def check_agent(self):
        if self.agent is not None and self.agent.poll() is not None:
            raise Broken(f"the agent exited with status {self.agent.returncode}; last log lines:\n"
                         + tail(self.agent_log))

    def log_has(self, text):
        try:
            with open(self.agent_log, errors="replace") as f:
                return text in f.read()
        except OSError:
            return False

    def lag_loop(self):
        while not self.lag_stop.is_set():
            t = now()
            m = self.metrics()
            if m is not None:
                self.lag_samples.append((t, m.get(("culvert_replication_lag_seconds", "")),
                                         m.get(("culvert_source_resume_seconds", ""))))
            self.lag_stop.wait(max(0.0, 0.25 - (now() - t)))

    def wait_until(self, what, cond, timeout=None, every=0.25):
        deadline = now() + (timeout or self.args.timeout)
        while now() < deadline:
            self.check_agent()
            if self.markers and self.markers.error:
                raise Broken(f"marker watcher failed: {self.markers.error}")
            v = cond()
            if v:
                return v
            time.sleep(every)
        raise Broken(f"{what}: not reached within {timeout or self.args.timeout:.0f} s")

    # ---------------------------------------------------------------- steps

    def setup(self):
        a = self.args
        taken = set()
        sp, tp, self.metrics_port = free_port(taken), free_port(taken), free_port(taken)
        self.buffer_dir = os.path.join(self.work, "buffer")
        self.pipeline_path = os.path.join(self.work, "pipeline.toml")
        os.makedirs(os.path.join(self.work, "logs"), exist_ok=True)
        if self.as_pg:
            shutil.chown(os.path.join(self.work, "logs"), "postgres", "postgres")
        log(f"PostgreSQL {a.pg_version} from {self.pgbin}; source port {sp}, target port {tp}, metrics port "
            f"{self.metrics_port}; work dir {self.work}")
        self.src = self.init_cluster("source", sp)
        self.tgt = self.init_cluster("target", tp)
        self.sql(sp, "postgres", "CREATE DATABASE app")
        self.sql(tp, "postgres", "CREATE DATABASE replica")
        self.sql(tp, "postgres", "CREATE DATABASE native")
        ddl = ("CREATE TABLE a (id bigint PRIMARY KEY, v text, at timestamptz DEFAULT now());\n"
               "CREATE TABLE b (id bigint PRIMARY KEY, v text, pad text);\n")
        log(f"creating a (1000 rows) and b ({a.rows} rows) on the source")
        t = now()
        self.sql(sp, "app", ddl
                 + "INSERT INTO a (id, v) SELECT g, 'seed ' || g FROM generate_series(1, 1000) g;\n"
                 + f"INSERT INTO b SELECT g, 'b ' || g, repeat('x', 100) FROM generate_series(1, {a.rows}) g;\n"
                 + "VACUUM ANALYZE a; VACUUM ANALYZE b; CHECKPOINT;\n")
        self.b_bytes = int(self.one(sp, "app", "SELECT pg_total_relation_size('b')"))
        log(f"generated in {now() - t:.1f} s; b is {self.b_bytes / 2**20:.0f} MiB")
        # Native subscription for a.
        self.sql(tp, "native", ddl)
        self.sql(sp, "app", "CREATE PUBLICATION native_pub FOR TABLE a")
        self.sql(tp, "native", f"CREATE SUBSCRIPTION native_sub CONNECTION 'host=127.0.0.1 port={sp} dbname=app "
                               "user=postgres' PUBLICATION native_pub")
        # Culvert pipeline for a.
        self.write_pipeline(["public.a"])
        log(f"starting the agent (component cache {a.cache_dir})")
        self.start_agent("1")
        self.wait_until("native initial sync of a", lambda: self.one(
            tp, "native", "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate <> 'r'") == "t")
        self.markers = Markers(self)
        self.markers.start()
        mid, _ = self.markers.insert()
        if mid is None:
            raise Broken("could not insert the first marker")
        self.wait_until("the first marker in replica.a (agent start-up and snapshot of a)",
                        lambda: self.markers.wait_seen(mid, "replica", 0.01))
        self.wait_until("the first marker in native.a", lambda: self.markers.wait_seen(mid, "native", 0.01))
        log("both replicas stream a; starting the load")
        self.load = Load(self, a.load_tps)
        self.load.start()
        threading.Thread(target=self.lag_loop, daemon=True).start()
        self.markers.periodic.set()
        time.sleep(a.settle)
        self.steady = (now() - a.settle, now())

    def restarts(self):
        a = self.args
        out = []
        for i in range(1, a.restarts + 1):
            time.sleep(a.settle)
            log(f"restart {i}/{a.restarts}: pg_ctl restart -m fast -w")
            t0 = now()
            self.pg_ctl(self.src, "-l", self.src["log"], "-m", "fast", "-w", "-t", "120", "restart",
                        what="pg_ctl restart of the source")
            ready = now()
            mid, tins = self.markers.insert(retry_for=30)
            if mid is None:
                raise Broken("could not insert a marker within 30 s of the restart")
            seen_r = self.markers.wait_seen(mid, "replica", a.timeout)
            seen_n = self.markers.wait_seen(mid, "native", a.timeout)
            if seen_r is None or seen_n is None:
                raise Broken(f"restart {i}: marker not seen in {'replica' if seen_r is None else 'native'} "
                             f"within {a.timeout:.0f} s")
            self.check_agent()
            time.sleep(0.5)
            m = self.metrics() or {}
            res = {"restart": ready - t0, "culvert": seen_r - ready, "native": seen_n - ready,
                   "insert": tins - ready, "metric": m.get(("culvert_source_resume_seconds", ""))}
            log(f"  restart took {res['restart']:.2f} s; marker insert {res['insert']:.2f} s after ready; "
                f"culvert {res['culvert']:.2f} s, native {res['native']:.2f} s after ready; "
                f"culvert_source_resume_seconds {fmt(res['metric'])}")
            out.append(res)
        # Control: the same restart with the agent stopped (only the native subscriber connected),
        # to see how much of the restart's own duration the agent's connection accounts for.
        time.sleep(a.settle)
        self.stop_agent("stop for the control restart")
        t0 = now()
        self.pg_ctl(self.src, "-l", self.src["log"], "-m", "fast", "-w", "-t", "120", "restart",
                    what="pg_ctl restart of the source (control)")
        self.control_restart = now() - t0
        log(f"control restart with the agent stopped: {self.control_restart:.2f} s")
        self.start_agent("1b")
        mid, _ = self.markers.insert(retry_for=30)
        if mid is None or self.markers.wait_seen(mid, "replica", a.timeout) is None:
            raise Broken("the agent did not catch up after the control restart")
        return out

    def count_b(self, db):
        v = self.one(self.tgt["port"], db, "SELECT count(*) FROM b", check=False, timeout=60)
        return int(v) if v is not None else None

    def backfill_culvert(self):
        a = self.args
        time.sleep(a.settle)
        log("adding b to the pipeline: SIGTERM, tables = [a, b], start")
        t0 = now()
        self.stop_agent("stop before adding b")
        stopped = now()
        self.write_pipeline(["public.a", "public.b"])
        self.start_agent("2")
        started = now()
        seen = {"log": None, "count": 0.0}

        def done():
            # The log line marks the end of the source-side copy; b counts as copied when all its
            # rows are in the replica (b gets no writes, so the row count is exact).
            if seen["log"] is None and self.log_has("background copy of public.b: last chunk read"):
                seen["log"] = now()
                seen["rows_at_log"] = self.count_b("replica")
                if seen["rows_at_log"] == a.rows:
                    return True
            if now() - seen["count"] >= (0.5 if seen["log"] else 3):
                seen["count"] = now()
                return self.count_b("replica") == a.rows
            return False

        self.wait_until("Culvert backfill of b (all rows in replica.b)", done)
        t1 = now()
        t_log = seen["log"]
        how = "rows in replica" + ("" if t_log else ", no log line")
        log(f"culvert: all {a.rows} rows of b in the replica {t1 - t0:.1f} s after the SIGTERM (agent stop "
            f"{stopped - t0:.1f} s, {t1 - started:.1f} s from the new agent's start); 'background copy of public.b "
            f"done' logged {fmt(t_log - t0 if t_log else None, '.1f')} s after the SIGTERM")
        lags = [(t, lag) for t, lag, _ in self.lag_samples if started <= t <= t1 and lag is not None]
        return {"t0": t0, "stopped": stopped, "started": started, "t1": t1, "how": how, "t_log": t_log,
                "rows_at_log": seen.get("rows_at_log"),
                "seconds": t1 - t0, "copy_seconds": t1 - started, "lags": [x for _, x in lags]}

    def backfill_native(self):
        a = self.args
        time.sleep(a.settle)
        log("native: ALTER PUBLICATION native_pub ADD TABLE b; ALTER SUBSCRIPTION native_sub REFRESH PUBLICATION")
        t0 = now()
        self.sql(self.src["port"], "app", "ALTER PUBLICATION native_pub ADD TABLE b")
        self.sql(self.tgt["port"], "native", "ALTER SUBSCRIPTION native_sub REFRESH PUBLICATION")
        state = self.wait_until("native sync of b", lambda: self.one(
            self.tgt["port"], "native", "SELECT srsubstate FROM pg_subscription_rel WHERE srrelid = 'b'::regclass "
                                        "AND srsubstate = 'r'"))
        t_ready = now()
        n = self.count_b("native")
        if n != a.rows:
            self.wait_until("native.b count", lambda: self.count_b("native") == a.rows, every=1)
        t1 = now()
        log(f"native: b in state '{state}' after {t_ready - t0:.1f} s, counts match after {t1 - t0:.1f} s")
        return {"t0": t0, "t1": t1, "seconds": t1 - t0}

    def md5(self, port, db, table):
        return self.one(port, db, f"SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, ',' ORDER BY id)), '') "
                                  f"FROM {table} t", check=False, timeout=300)

    def verify(self):
        log("stopping the load; waiting for both replicas to match the source")
        self.markers.periodic.clear()
        self.load.stop()
        time.sleep(1)
        result = {}
        deadline = now() + self.args.timeout
        for table in ("a", "b"):
            want = self.md5(self.src["port"], "app", table)
            for db in ("replica", "native"):
                got = None
                while now() < deadline:
                    got = self.md5(self.tgt["port"], db, table)
                    if got == want:
                        break
                    self.check_agent()
                    time.sleep(2)
                ok = got == want
                result[(db, table)] = ok
                log(f"  {db}.{table}: {'matches' if ok else 'DIFFERS'} (source {want}, {db} {got})")
                if not ok:
                    self.problems.append(f"{db}.{table} does not match the source: source {want}, {db} {got}")
        return result


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def agent_log_findings(r):
    out = []
    for path in r.agent_logs:
        try:
            with open(path, errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        bad = [ln.rstrip() for ln in lines if re.search(r"\b(WARN|ERROR|panicked)\b", ln)]
        kinds = {}
        for ln in bad:
            key = re.sub(r"^\S+\s+", "", ln)
            key = re.sub(r"\d+(\.\d+)?", "N", key)[:260]
            kinds[key] = kinds.get(key, 0) + 1
        if bad:
            out.append(f"{os.path.basename(path)}: {len(bad)} warning/error lines")
            for k, cnt in sorted(kinds.items(), key=lambda kv: -kv[1])[:6]:
                out.append(f"    {cnt} x {k}")
    return out


def report(r, rs, bc, bn):
    a = r.args
    mk = r.markers
    print("\n" + "=" * 92)
    print(f"Culvert resilience benchmark   PostgreSQL {a.pg_version}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"agent {a.agent} ({agent_identity(a.agent)})")
    la0, la1 = r.load_before, os.getloadavg()
    print(f"load average before {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, after {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f} "
          f"(other work on this machine makes the figures noisy)")
    print(f"write load on a: ~{a.load_tps} single-row transactions/s ({r.load.sent} sent, psql restarted "
          f"{r.load.respawns} times); b: {a.rows} rows, {r.b_bytes / 2**20:.0f} MiB")
    print("=" * 92)

    med = lambda k: statistics.median(x[k] for x in rs) if rs else None  # noqa: E731
    metric_vals = [x["metric"] for x in rs if x["metric"] is not None]
    c_lat, c_unseen = mk.latencies("replica", bc["started"], bc["t1"])
    gap_lat, _ = mk.latencies("replica", bc["t0"], bc["started"])
    n_lat, n_unseen = mk.latencies("native", bn["t0"], bn["t1"])
    sc, _ = mk.latencies("replica", *r.steady)
    sn, _ = mk.latencies("native", *r.steady)
    lags = bc["lags"]
    rows = [
        ("source restart, pg_ctl (s)", fmt(med("restart")), fmt(med("restart")), "", "same restart for both"),
        ("  same restart, agent stopped (s)", "-", fmt(r.control_restart), "",
         "control: only the native subscriber connected"),
        ("resume after restart (s)", fmt(med("culvert")), fmt(med("native")), ratio(med("culvert"), med("native")),
         "ready -> marker in replica, median of " + str(len(rs))),
        ("  culvert_source_resume_seconds", fmt(statistics.median(metric_vals)) if metric_vals else "-", "-", "",
         "agent metric, median"),
        ("backfill b (s)", fmt(bc["seconds"], ".1f"), fmt(bn["seconds"], ".1f"), ratio(bc["seconds"], bn["seconds"]),
         f"culvert: from SIGTERM, incl. {bc['started'] - bc['t0']:.1f} s stop+start"),
        ("  'background copy ... done' logged (s)", fmt(bc["t_log"] - bc["t0"] if bc["t_log"] else None, ".1f"),
         "-", "", "after the SIGTERM; rows still missing in the replica then: "
         + (str(a.rows - bc["rows_at_log"]) if bc.get("rows_at_log") is not None else "?")),
        ("backfill rate (rows/s)", fmt(a.rows / bc["seconds"], ",.0f"), fmt(a.rows / bn["seconds"], ",.0f"),
         ratio(bn["seconds"], bc["seconds"]), "ratio = culvert rate / native rate"),
        ("a lag during backfill max", fmt(max(c_lat) if c_lat else None), fmt(max(n_lat) if n_lat else None),
         ratio(max(c_lat) if c_lat else None, max(n_lat) if n_lat else None), "marker latency (s)"),
        ("a lag during backfill p95", fmt(pct(c_lat, 95) if c_lat else None), fmt(pct(n_lat, 95) if n_lat else None),
         ratio(pct(c_lat, 95) if c_lat else None, pct(n_lat, 95) if n_lat else None), "marker latency (s)"),
        ("  lag metric max / p95 (s)", f"{fmt(max(lags) if lags else None)} / {fmt(pct(lags, 95) if lags else None)}",
         "-", "", f"culvert_replication_lag_seconds, {len(lags)} samples"),
        ("  markers in window", f"{len(c_lat)}", f"{len(n_lat)}", "",
         "inserted during the backfill (1/s)"),
        ("a lag before backfill p95", fmt(pct(sc, 95) if sc else None), fmt(pct(sn, 95) if sn else None),
         ratio(pct(sc, 95) if sc else None, pct(sn, 95) if sn else None), "steady state, marker latency (s)"),
        ("a lag, markers during agent stop/start max", fmt(max(gap_lat) if gap_lat else None), "-", "",
         f"{len(gap_lat)} markers, not in the backfill window"),
    ]
    w0 = max(len(x[0]) for x in rows)
    print(f"\n{'':<{w0}}  {'culvert':>12} {'native':>12} {'ratio':>7}  notes")
    for name, c, n, q, note in rows:
        print(f"{name:<{w0}}  {c:>12} {n:>12} {q:>7}  {note}")
    print("ratio = culvert / native (lower is better for seconds and lag, higher for rows/s)")
    print("\nper restart (s): " + "; ".join(
        f"#{i + 1} restart {x['restart']:.2f}, culvert {x['culvert']:.2f}, native {x['native']:.2f}, "
        f"metric {fmt(x['metric'])}" for i, x in enumerate(rs)))
    print(f"backfill window: culvert from the new agent's start to all rows of b in the replica ({bc['copy_seconds']:.1f} s); "
          f"native from ALTER PUBLICATION to b 'r' with counts matching ({bn['seconds']:.1f} s). The two backfills "
          "ran one after the other (Culvert first), each while the other replica kept streaming a.")
    if min(len(c_lat), len(n_lat)) < 20:
        print(f"few markers fell in the backfill windows (culvert {len(c_lat)}, native {len(n_lat)}, one a second): "
              "p95 is close to the max there; a larger ROWS gives longer windows")
    print("native resume includes the subscription apply worker's restart, which the launcher delays by "
          "wal_retrieve_retry_interval (default 5 s, counted from the worker's exit at the start of the shutdown)")
    if c_unseen or n_unseen:
        print(f"markers not yet seen at the end of the window (counted until now): culvert {c_unseen}, "
              f"native {n_unseen}")

    worst = max(c_lat + lags) if (c_lat or lags) else None
    ok = worst is not None and worst < LAG_BOUND
    print("\nBOUND")
    print(f"  [{'PASS' if ok else 'FAIL'}] a's lag stays below {LAG_BOUND:.0f} s during the backfill: "
          f"max {fmt(worst)} s (marker max {fmt(max(c_lat) if c_lat else None)}, metric max "
          f"{fmt(max(lags) if lags else None)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--pgbin", required=True)
    ap.add_argument("--pg-version", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--cache-dir", required=True)
    args = ap.parse_args()
    try:
        args.rows = int(os.environ.get("ROWS", "500000"))
        args.restarts = int(os.environ.get("RESTARTS", "3"))
        args.load_tps = int(os.environ.get("LOAD_TPS", "100"))
        args.settle = float(os.environ.get("SETTLE", "3"))
        args.timeout = float(os.environ.get("TIMEOUT", str(max(300, args.rows / 2000))))
    except ValueError as e:
        print(f"bad environment value: {e}", file=sys.stderr)
        return 2
    if args.rows < 1000 or args.restarts < 1 or not (1 <= args.load_tps <= 1000) or args.settle < 0:
        print("ROWS must be >= 1000, RESTARTS >= 1, 1 <= LOAD_TPS <= 1000, SETTLE >= 0", file=sys.stderr)
        return 2

    catch_signals()

    r = Runner(args)
    status = 0
    try:
        r.setup()
        rs = r.restarts()
        bc = r.backfill_culvert()
        bn = r.backfill_native()
        r.verify()
        r.check_agent()
        report(r, rs, bc, bn)
    except Broken as e:
        print(f"\nBROKEN: {e}", file=sys.stderr, flush=True)
        status = 1
    except Interrupted as e:
        print(f"\ninterrupted ({e}); cleaning up", file=sys.stderr, flush=True)
        status = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        r.lag_stop.set()
        if r.markers:
            r.markers.periodic.clear()
        if r.load and not r.load.stop_event.is_set():
            r.load.stop()
        if r.markers:
            r.markers.stop()
        if r.agent is not None and r.agent.poll() is None:
            r.stop_agent("final stop")
        for p in r.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        for c in (r.src, r.tgt):
            if c:
                r.stop_cluster(c)
    findings = agent_log_findings(r)
    if findings:
        print("\nAGENT LOG")
        for line in findings:
            print(f"  {line}")
    if status == 0 and r.problems:
        status = 1
    if r.problems:
        print("\nPROBLEMS")
        for p in r.problems:
            print(f"  - {p}")
    return status


if __name__ == "__main__":
    sys.exit(main())
