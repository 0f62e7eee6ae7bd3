"""Pieces shared by the benchmarks: errors, logging, signals, ports, process CPU, tables,
a long-lived psql session, and the identity of the agent binary being measured."""

import os
import select
import signal
import socket
import subprocess
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")


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


class ClusterTools:
    """Process and cluster helpers both benchmark runners use (they provide the
    attributes these read)."""

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
