"""Pieces shared by the benchmarks: errors, logging, signals, ports, process CPU and memory,
tables, a long-lived psql session, the identity of the agent binary being measured, the
`events` table of the snapshot benchmarks, and cluster and agent helpers of the runners."""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
POLL = 0.25

# Settings of both clusters of the snapshot benchmarks, the same for every method measured.
SNAPSHOT_PG_SETTINGS = [
    "-c listen_addresses=127.0.0.1",
    "-c wal_level=logical",
    "-c max_wal_senders=10",
    "-c max_replication_slots=10",
    "-c shared_buffers=256MB",
    "-c max_wal_size=4GB",
    "-c checkpoint_timeout=30min",
]

EVENTS_COLUMNS = (
    "id bigint{pk}, account_id int, kind text, payload jsonb, amount numeric(12,2), created_at timestamptz"
)


def events_ddl(keyed):
    return "CREATE TABLE events ({})".format(EVENTS_COLUMNS.format(pk=" PRIMARY KEY" if keyed else ""))


def rows_select(lo, hi):
    """SELECT producing rows lo..hi of events; the same ids always give the same rows."""
    return f"""
SELECT g,
       ((g * 7919) % 100000)::int,
       (ARRAY['click','view','purchase','refund','signup'])[(g % 5) + 1],
       jsonb_build_object(
           'channel', (ARRAY['web','ios','android','api'])[(g % 4) + 1],
           'session', md5(g::text),
           'items', (g % 7) + 1,
           'tags', jsonb_build_array('t' || (g % 13), 't' || (g % 17))),
       ((g * 31) % 1000000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
  FROM generate_series({lo}::bigint, {hi}::bigint) AS g"""


CHECKSUM_SQL = "SELECT count(*), coalesce(sum(hashtext(e::text)::bigint), 0) FROM events e"


def pipeline_toml(name, src_port, tgt_port, db, buffer):
    """The pipeline of the snapshot benchmarks: public.events of database app on the source
    cluster into database `db` on the target cluster. `buffer` is the [buffer] section as a
    dict (strings are quoted, integers are not)."""
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in buffer.items())
    return f"""name = "{name}"
batch_rows = 50000

[source]
connector = "postgres-source"
host = "127.0.0.1"
port = {src_port}
user = "postgres"
database = "app"
tables = ["public.events"]
sslmode = "disable"
snapshot_workers = 2

[target]
connector = "postgres-target"
host = "127.0.0.1"
port = {tgt_port}
user = "postgres"
database = "{db}"
sslmode = "disable"

[buffer]
{lines}"""


class Broken(Exception):
    """Something did not work; the run is not valid."""


class Interrupted(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def now():
    return time.monotonic()


def catch_signals():
    """Turn SIGTERM, SIGINT and SIGHUP into `Interrupted`, so cleanup runs."""

    def on_signal(signum, _frame):
        raise Interrupted(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)


def free_port(taken=None):
    """A free loopback port; with `taken`, also one not handed out before (and record it)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if taken is None:
            return p
        if p not in taken:
            taken.add(p)
            return p


def read_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in seconds, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK, (int(rest[13]) + int(rest[14])) / CLK


def proc_status(pid, key):
    """A kB field of /proc/PID/status in MiB (VmRSS, VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def table(rows, cols):
    """Print aligned columns; `cols` are (title, "<" or ">")."""
    widths = [max(len(c[0]), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c[0].ljust(w) if c[1] == "<" else c[0].rjust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) if c[1] == "<" else v.rjust(w) for v, c, w in zip(r, cols, widths)))


class Session:
    """A long-lived psql process for cheap repeated queries."""

    END = "__bench_end__"

    def __init__(self, runner, port, db, app="bench monitor"):
        env = dict(runner.env)
        env["PGAPPNAME"] = app
        self.what = f"psql session on port {port}/{db}"
        self.p = runner.popen(runner.psql_cmd(port, db), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
        self.buf = b""
        self.lock = threading.Lock()

    def query(self, sql, timeout=30):
        with self.lock:
            try:
                self.p.stdin.write(f"{sql.rstrip().rstrip(';')};\n\\echo {self.END}\n".encode())
                self.p.stdin.flush()
            except (BrokenPipeError, OSError):
                raise Broken(f"{self.what} ended")
            deadline = now() + timeout
            fd = self.p.stdout.fileno()
            while True:
                i = self.buf.find(f"{self.END}\n".encode())
                if i >= 0:
                    out, self.buf = self.buf[:i], self.buf[i + len(self.END) + 1:]
                    return [ln.split("|") for ln in out.decode().splitlines() if ln]
                left = deadline - now()
                if left <= 0:
                    raise Broken(f"{self.what}: no answer within {timeout} s to {sql[:80]}")
                ready, _, _ = select.select([fd], [], [], left)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise Broken(f"{self.what} ended (query failed?): {sql[:120]}")
                    self.buf += chunk

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=10)
        except Exception:
            self.p.kill()


def agent_identity(path):
    parts = []
    try:
        v = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        parts.append(v or "version unknown")
        parts.append("built " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path))))
    except (OSError, subprocess.SubprocessError):
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if rev:
            parts.append(f"tree {rev}{' with uncommitted changes' if dirty else ''}")
    except (OSError, subprocess.SubprocessError):
        pass
    return ", ".join(parts)


def agent_log_findings(r):
    """One line per agent log of runner `r` that has warnings or errors."""
    out = []
    for path in r.agent_logs:
        try:
            with open(path, errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        bad = [ln.rstrip() for ln in lines if re.search(r"\b(WARN|ERROR|error|panicked)\b", ln)]
        if bad:
            out.append(f"{os.path.basename(path)}: {len(bad)} warning/error lines, first: " + " | ".join(bad[:3]))
    return out


class ClusterTools:
    """Process and cluster helpers the benchmark runners use (they provide the attributes
    these read: env, work, procs, pgbin, as_pg, args.timeout, pg_settings, src and tgt)."""

    def popen(self, cmd, **kw):
        p = subprocess.Popen(cmd, env=kw.pop("env", self.env), **kw)
        self.procs.append(p)
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def psql_cmd(self, port, db):
        return [os.path.join(self.pgbin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db]

    def stop_cluster(self, c):
        if not os.path.exists(os.path.join(c["dir"], "postmaster.pid")):
            return
        pg_ctl = os.path.join(self.pgbin, "pg_ctl")
        try:
            subprocess.run(self.as_pg + [pg_ctl, "-D", c["dir"], "-m", "fast", "-w", "-t", "60", "stop"],
                           env=self.env, capture_output=True, timeout=90)
        except subprocess.TimeoutExpired:
            pass
        if os.path.exists(os.path.join(c["dir"], "postmaster.pid")):
            subprocess.run(self.as_pg + [pg_ctl, "-D", c["dir"], "-m", "immediate", "-w", "-t", "30", "stop"],
                           env=self.env, capture_output=True, timeout=60)

    def shut_down(self):
        """Stop every process started through popen, then the clusters; signals are ignored
        from here on so that a second interrupt cannot cut the cleanup short."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        for c in (self.src, self.tgt):
            if c:
                self.stop_cluster(c)

    def run(self, cmd, timeout, input=None, check=True, what=None, env=None):
        try:
            r = subprocess.run(cmd, env=env or self.env, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Broken(f"{what or cmd[0]} did not finish within {timeout:.0f} s")
        if check and r.returncode != 0:
            raise Broken(f"{what or ' '.join(cmd[:3])} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        return r

    def sql(self, port, db, text, timeout=None):
        """Run statements (each in its own transaction); rows of the last result as lists."""
        r = self.run(self.psql_cmd(port, db) + ["-f", "-"], timeout or self.args.timeout, input=text,
                     what=f"psql on port {port}/{db}: {text.strip().splitlines()[0][:80]}")
        return [line.split("|") for line in r.stdout.splitlines() if line != ""]

    def one(self, port, db, text, timeout=None):
        rows = self.sql(port, db, text, timeout)
        return rows[-1][0] if rows else None

    def init_cluster(self, name, port):
        d = os.path.join(self.work, name)
        os.makedirs(d)
        logdir = os.path.join(self.work, "logs")
        os.makedirs(logdir, exist_ok=True)
        if self.as_pg:
            shutil.chown(d, "postgres", "postgres")
            shutil.chown(logdir, "postgres", "postgres")
            os.chmod(logdir, 0o777)
        self.run(self.as_pg + [os.path.join(self.pgbin, "initdb"), "-D", d, "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--locale=C"], 300, what=f"initdb {name}")
        opts = " ".join(self.pg_settings + [f"-p {port}", f"-c unix_socket_directories={d}"])
        self.run(self.as_pg + [os.path.join(self.pgbin, "pg_ctl"), "-D", d, "-l", os.path.join(logdir, f"{name}.log"),
                               "-o", opts, "-w", "-t", "120", "start"], 180, what=f"start {name}")
        with open(os.path.join(d, "postmaster.pid")) as f:
            pm = int(f.readline())
        return {"name": name, "dir": d, "port": port, "pm": pm}

    def cluster_cpu(self, c):
        """CPU seconds of a cluster: live children of the postmaster plus everything it reaped."""
        total = 0.0
        pm = read_stat(c["pm"])
        if pm:
            total += pm[1] + pm[2]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            st = read_stat(entry)
            if st and st[0] == c["pm"]:
                total += st[1]
        return total

    def checkpoint(self):
        for c in (self.src, self.tgt):
            self.sql(c["port"], "postgres", "CHECKPOINT")

    def fresh_db(self, name):
        self.sql(self.tgt["port"], "postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.sql(self.tgt["port"], "postgres", f"CREATE DATABASE {name}")

    def drop_db(self, name):
        self.sql(self.tgt["port"], "postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def checksum(self, port, db):
        n, h = self.sql(port, db, CHECKSUM_SQL)[0]
        return int(n), int(h)

    def generate_events(self, port, db, rows):
        """Create and fill events (rows 1..rows) in db, keyed, frozen and analyzed; returns seconds."""
        t = now()
        self.sql(port, db, events_ddl(False) + ";\n"
                 + "ALTER TABLE events SET (autovacuum_enabled = false);\n"
                 + f"INSERT INTO events {rows_select(1, rows)};\n"
                 + "ALTER TABLE events ADD PRIMARY KEY (id);\n"
                 + "ALTER TABLE events RESET (autovacuum_enabled);\n"
                 + "VACUUM (FREEZE, ANALYZE) events;\n")
        return now() - t


def parse_metrics(text):
    """Prometheus text as {(name, stage label): value}, summed over the other labels."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        key = (m.group(1), labels.get("stage", ""))
        try:
            out[key] = out.get(key, 0.0) + float(m.group(4))
        except ValueError:
            pass
    return out


class AgentTools:
    """Helpers for running `culvert-agent run` under measurement (the runner provides args.agent,
    args.timeout, work, env, opener, metrics_port, agent_logs, problems, pipeline_path and a
    sample(pid) method for watch_agent)."""

    def metrics(self):
        """The agent's metrics as {(name, stage label): value}, or None when unreachable."""
        try:
            with self.opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except Exception:
            return None
        return parse_metrics(text)

    def agent_env(self, extra=None):
        env = dict(self.env)
        env["CULVERT_CACHE_DIR"] = os.path.join(self.work, "component-cache")
        env.update(extra or {})
        return env

    def compile_components(self, pipeline, env=None):
        """`culvert-agent check`, which compiles the connector components into the cache (a
        deployed agent has a warm cache, so this stays outside the measurements); returns seconds."""
        t = now()
        r = self.run([self.args.agent, "check", "--pipeline", pipeline], 600, check=False,
                     what="culvert-agent check", env=env or self.agent_env())
        if r.returncode != 0:
            raise Broken(f"culvert-agent check failed:\n{r.stdout}{r.stderr}")
        return now() - t

    def start_agent(self, tag, pipeline=None, env=None):
        logpath = os.path.join(self.work, "logs", f"agent-{tag}.log")
        self.agent_logs.append(logpath)
        logf = open(logpath, "w")
        p = self.popen([self.args.agent, "run", "--pipeline", pipeline or self.pipeline_path,
                        "--metrics-addr", f"127.0.0.1:{self.metrics_port}", "--progress-every", "0"],
                       env=env or self.agent_env(), stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        return p, logpath

    def stop_agent(self, p, what):
        if p.poll() is None:
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

    def tail(self, path, n=15):
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def watch_agent(self, p, logpath, done, what, samples):
        """Sample every POLL s until done(sample) returns a truthy value; returns it."""
        deadline = now() + self.args.timeout
        while True:
            t = now()
            if p.poll() is not None:
                raise Broken(f"{what}: agent exited with status {p.returncode}:\n{self.tail(logpath)}")
            s = self.sample(p.pid)
            samples.append(s)
            r = done(s)
            if r:
                return r
            if t > deadline:
                raise Broken(f"{what}: not finished within {self.args.timeout} s:\n{self.tail(logpath)}")
            time.sleep(max(0.0, POLL - (now() - t)))

    def position_kind(self, probe, pipeline):
        """First byte of the pipeline's committed position at the target (1: a change position,
        i.e. the snapshot is done and streaming began), or None before the first commit."""
        rows = probe.query(f"SELECT get_byte(position, 0) FROM _culvert.positions WHERE pipeline = '{pipeline}'")
        return int(rows[0][0]) if rows else None


def run_to_status(r, body):
    """Run body() for runner r: report a broken or interrupted run the same way in every agent
    benchmark, always shut r down, list r.problems; returns the exit status."""
    status = 0
    try:
        body()
    except Broken as e:
        print(f"\nBROKEN: {e}", file=sys.stderr, flush=True)
        for line in agent_log_findings(r):
            print(line, file=sys.stderr)
        status = 1
    except Interrupted as e:
        print(f"\ninterrupted ({e}); cleaning up", file=sys.stderr, flush=True)
        status = 130
    finally:
        r.shut_down()
    if status == 0 and r.problems:
        status = 1
    if r.problems:
        print("\nPROBLEMS")
        for p in r.problems:
            print(f"  - {p}")
    return status
