#!/usr/bin/env python3
"""Snapshot and CDC throughput of Culvert against PostgreSQL's own tools.

Started by bench/snapshot_cdc.sh, which picks the PostgreSQL binaries, builds the
agent if needed, creates the work directory and cleans up behind this script.

Everything runs on two throw-away clusters on 127.0.0.1 (source and target) with the
same settings for every method:

  snapshot  source COPY to /dev/null (read ceiling), COPY binary pipe into a keyed table,
            the same into a table without key plus ADD PRIMARY KEY, pgcopydb (when
            installed), Culvert's snapshot
  CDC       a burst of inserts and updates written while every reader is stopped, then
            read by pg_recvlogical (decoding ceiling), applied by native logical
            replication (CREATE SUBSCRIPTION, enabled after the burst) and by Culvert

Exit status: 0 when every run completed and the replicas match the source (missed
targets are reported, not failures); 1 when something broke.
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

from benchlib import (MIB, POLL, SNAPSHOT_PG_SETTINGS, AgentTools, Broken, ClusterTools,  # noqa: E402
                      Session, agent_identity, agent_log_findings, catch_signals, events_ddl, free_port, log, now,
                      pipeline_toml, proc_status, read_stat, rows_select, run_to_status, table)

PIPELINE = "bench"


def proc_io(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k.strip()] = int(v)
    except OSError:
        pass
    return out


def children_cpu():
    t = os.times()
    return t.children_user + t.children_system


ACTIVITY_SQL = """
SELECT c, coalesce(nullif(application_name, ''), backend_type),
       CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
            WHEN state IS NULL THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
            ELSE state END
  FROM pg_stat_activity, (SELECT '{cluster}'::text AS c) k
 WHERE pid <> pg_backend_pid()
   AND backend_type IN ('client backend', 'walsender', 'logical replication worker')
   AND coalesce(application_name, '') NOT LIKE 'bench%'
"""


class ActivitySampler:
    """Samples pg_stat_activity of both clusters every POLL s in a thread: what each
    backend of interest is doing (CPU, a wait event, idle in transaction, idle)."""

    def __init__(self, runner):
        self.sessions = [("source", Session(runner, runner.src["port"], "postgres")),
                         ("target", Session(runner, runner.tgt["port"], "postgres"))]
        self.counts = {}
        self.stop_event = threading.Event()
        self.thread = None
        self.error = None

    def start(self):
        self.counts = {}
        self.stop_event.clear()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop_event.is_set():
            t = now()
            try:
                for name, sess in self.sessions:
                    for c, who, what in sess.query(ACTIVITY_SQL.format(cluster=name), timeout=10):
                        per = self.counts.setdefault((c, who), {})
                        per[what] = per.get(what, 0) + 1
            except Exception as e:
                self.error = e
                return
            self.stop_event.wait(max(0.0, POLL - (now() - t)))

    def stop(self):
        self.stop_event.set()
        if self.thread:
            self.thread.join(timeout=15)
        return dict(self.counts)

    def close(self):
        self.stop()
        for _, sess in self.sessions:
            sess.close()


class Runner(ClusterTools, AgentTools):
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
        self.pg_settings = SNAPSHOT_PG_SETTINGS
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.agent_logs = []
        self.compile_seconds = 0.0
        self.sampler = None
        self.load_before = os.getloadavg()

    # ---------------------------------------------------------------- agent

    def pipeline_file(self, db):
        path = os.path.join(self.work, "pipeline.toml")
        with open(path, "w") as f:
            f.write(pipeline_toml(PIPELINE, self.src["port"], self.tgt["port"], db,
                                  {"url": f"file://{self.buffer_dir}", "max_bytes": self.args.buffer_bytes}))
        return path

    def sample(self, pid):
        st = read_stat(pid) if pid else None
        m = self.metrics() if pid else None
        g = (lambda name, stage="": (m or {}).get((name, stage)))
        return {
            "t": now(),
            "agent_cpu": st[1] if st else None,
            "rss": proc_status(pid, "VmRSS") if pid else None,
            "src_cpu": self.cluster_cpu(self.src),
            "tgt_cpu": self.cluster_cpu(self.tgt),
            "src_rows": g("culvert_rows_total", "source"),
            "tgt_rows": g("culvert_rows_total", "target"),
            "buffer": g("culvert_buffer_bytes"),
            "lag": g("culvert_replication_lag_bytes"),
        }

    # ---------------------------------------------------------------- setup

    def setup(self):
        a = self.args
        self.buffer_dir = os.path.join(self.work, "buffer")
        sp, tp, self.metrics_port = free_port(), free_port(), free_port()
        while tp == sp:
            tp = free_port()
        while self.metrics_port in (sp, tp):
            self.metrics_port = free_port()
        log(f"PostgreSQL {a.pg_version} from {self.pgbin}; source port {sp}, target port {tp}; work dir {self.work}")
        self.src = self.init_cluster("source", sp)
        self.tgt = self.init_cluster("target", tp)
        self.sql(sp, "postgres", "CREATE DATABASE app")
        log(f"generating {a.rows} rows")
        self.gen_seconds = self.generate_events(sp, "app", a.rows)
        self.size_total = int(self.one(sp, "app", "SELECT pg_total_relation_size('events')"))
        self.size_heap = int(self.one(sp, "app", "SELECT pg_table_size('events')"))
        self.source_sum = self.checksum(sp, "app")
        self.checkpoint()
        log(f"generated in {self.gen_seconds:.1f} s: pg_total_relation_size {self.size_total / MIB:.0f} MiB "
            f"(heap+toast {self.size_heap / MIB:.0f} MiB, {self.size_total / a.rows:.0f} B/row)")

    # ---------------------------------------------------------------- snapshot methods

    def measure(self, label, body):
        """Run body() between CPU snapshots; returns the result dict with wall and CPU figures."""
        self.checkpoint()
        if self.sampler is None:
            self.sampler = ActivitySampler(self)
        self.sampler.start()
        c0, s0, g0, t0 = children_cpu(), self.cluster_cpu(self.src), self.cluster_cpu(self.tgt), now()
        try:
            res = body() or {}
        finally:
            activity = self.sampler.stop()
        t1 = now()
        res["activity"] = activity
        res.setdefault("seconds", t1 - t0)
        res.setdefault("client_cpu", children_cpu() - c0)
        res["src_cpu"] = self.cluster_cpu(self.src) - s0
        res["tgt_cpu"] = self.cluster_cpu(self.tgt) - g0
        res["label"] = label
        log(f"{label}: {res['seconds']:.2f} s")
        return res

    def copy_pipe(self, db, sink=None):
        """COPY binary out of the source into db's events (or into sink, a path)."""
        out_cmd = self.psql_cmd(self.src["port"], "app") + ["-c", "COPY events TO STDOUT (FORMAT binary)"]
        env = dict(self.env)
        env["PGAPPNAME"] = "copy pipe"
        if sink:
            with open(sink, "wb") as f:
                p1 = self.popen(out_cmd, env=env, stdout=f, stderr=subprocess.PIPE)
                p1.wait(timeout=self.args.timeout)
            if p1.returncode != 0:
                raise Broken(f"COPY TO STDOUT failed: {p1.stderr.read().decode()[-500:]}")
            return
        p1 = self.popen(out_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p2 = self.popen(self.psql_cmd(self.tgt["port"], db) + ["-c", "COPY events FROM STDIN (FORMAT binary)"],
                        env=env, stdin=p1.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p1.stdout.close()
        try:
            p2.wait(timeout=self.args.timeout)
            p1.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise Broken(f"COPY pipe into {db} did not finish within {self.args.timeout} s")
        if p1.returncode != 0 or p2.returncode != 0:
            raise Broken(f"COPY pipe into {db} failed: {p1.stderr.read().decode()[-500:]} {p2.stderr.read().decode()[-500:]}")

    def snapshot_read_ceiling(self):
        return self.measure("source COPY binary -> /dev/null", lambda: self.copy_pipe(None, sink="/dev/null"))

    def snapshot_pipe_keyed(self):
        self.fresh_db("pipe_keyed")
        self.sql(self.tgt["port"], "pipe_keyed", events_ddl(True))
        res = self.measure("COPY binary pipe -> keyed table", lambda: self.copy_pipe("pipe_keyed"))
        n = int(self.one(self.tgt["port"], "pipe_keyed", "SELECT count(*) FROM events"))
        if n != self.args.rows:
            raise Broken(f"keyed pipe copied {n} rows, expected {self.args.rows}")
        return res

    def snapshot_pipe_nokey(self):
        self.fresh_db("pipe_nokey")
        self.sql(self.tgt["port"], "pipe_nokey", events_ddl(False))
        split = {}

        def body():
            t = now()
            self.copy_pipe("pipe_nokey")
            split["copy"] = now() - t
            t = now()
            self.sql(self.tgt["port"], "pipe_nokey", "ALTER TABLE events ADD PRIMARY KEY (id)")
            split["index"] = now() - t

        res = self.measure("COPY binary pipe -> no key, then ADD PRIMARY KEY", body)
        res["detail"] = f"copy {split['copy']:.1f} s + primary key {split['index']:.1f} s"
        n = int(self.one(self.tgt["port"], "pipe_nokey", "SELECT count(*) FROM events"))
        if n != self.args.rows:
            raise Broken(f"no-key pipe copied {n} rows, expected {self.args.rows}")
        self.drop_db("pipe_nokey")
        return res

    def snapshot_pgcopydb(self):
        exe = shutil.which("pgcopydb")
        if not exe:
            log("pgcopydb: not installed (skipped)")
            return {"label": "pgcopydb clone", "skipped": "not installed (skipped)"}
        self.fresh_db("pgcopydb_t")
        d = os.path.join(self.work, "pgcopydb")
        shutil.rmtree(d, ignore_errors=True)
        logpath = os.path.join(self.work, "logs", "pgcopydb.log")
        cmd = [exe, "clone",
               "--source", f"postgres://postgres@127.0.0.1:{self.src['port']}/app?sslmode=disable",
               "--target", f"postgres://postgres@127.0.0.1:{self.tgt['port']}/pgcopydb_t?sslmode=disable",
               "--dir", d, "--table-jobs", "2", "--index-jobs", "2", "--no-owner", "--no-acl"]

        def body():
            with open(logpath, "w") as lf:
                p = self.popen(cmd, stdout=lf, stderr=subprocess.STDOUT)
                try:
                    p.wait(timeout=self.args.timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=30)
                if p.returncode != 0:
                    raise Broken(f"pgcopydb failed ({p.returncode}); see {logpath}:\n{self.tail(logpath)}")

        try:
            res = self.measure("pgcopydb clone", body)
        except Broken as e:
            self.problems.append(f"pgcopydb: {e}")
            return {"label": "pgcopydb clone", "skipped": "failed (see problems)"}
        n = int(self.one(self.tgt["port"], "pgcopydb_t", "SELECT count(*) FROM events"))
        if n != self.args.rows:
            self.problems.append(f"pgcopydb copied {n} rows, expected {self.args.rows}")
        self.drop_db("pgcopydb_t")
        return res

    def snapshot_culvert(self):
        a = self.args
        self.fresh_db("culvert")
        shutil.rmtree(self.buffer_dir, ignore_errors=True)
        os.makedirs(self.buffer_dir)
        self.pipeline_path = self.pipeline_file("culvert")
        # Compile the components once, outside the measurement (a deployed agent has a warm cache).
        self.compile_seconds = self.compile_components(self.pipeline_path)
        log(f"culvert-agent check ok ({self.compile_seconds:.1f} s including component compilation)")
        samples = []
        marks = {}

        def body():
            t0 = now()
            p, logpath = self.start_agent("snapshot")
            marks["t0"] = t0

            def done(s):
                if s["tgt_rows"] and "first" not in marks:
                    marks["first"] = s["t"]
                if s["src_rows"] is not None and s["src_rows"] >= a.rows and "src" not in marks:
                    marks["src"] = s["t"]
                if s["tgt_rows"] is not None and s["tgt_rows"] >= a.rows:
                    marks.setdefault("tgt", s["t"])
                    marks["hwm"] = proc_status(p.pid, "VmHWM")
                    marks["io"] = proc_io(p.pid)
                    return True
                return False

            self.watch_agent(p, logpath, done, "culvert snapshot", samples)
            res = {"seconds": marks["tgt"] - t0}
            # Wait for the switch to streaming (the committed position becomes a change
            # position) so the restart below resumes the stream instead of copying again.
            deadline = now() + 120
            probe = Session(self, self.tgt["port"], "culvert")
            try:
                while self.position_kind(probe, PIPELINE) != 1:
                    if p.poll() is not None or now() > deadline:
                        raise Broken(f"culvert did not switch to streaming after its snapshot:\n{self.tail(logpath)}")
                    time.sleep(POLL)
            finally:
                probe.close()
            marks["streaming"] = now() - t0
            last = self.sample(p.pid)
            samples.append(last)
            res["agent_cpu"] = last["agent_cpu"]
            res["client_cpu"] = last["agent_cpu"]
            res["rss"] = max(marks.get("hwm") or 0, proc_status(p.pid, "VmHWM") or 0)
            self.stop_agent(p, "culvert snapshot")
            return res

        res = self.measure("culvert snapshot", body)
        res["samples"], res["marks"] = samples, marks
        res["detail"] = f"streaming position committed at {marks['streaming']:.1f} s"
        got = self.checksum(self.tgt["port"], "culvert")
        if got != self.source_sum:
            raise Broken(f"culvert snapshot differs from the source: target (count, hash) {got}, source {self.source_sum}")
        log("culvert snapshot verified: count and row hash equal the source")
        return res

    # ---------------------------------------------------------------- CDC

    def prepare_cdc(self):
        sp = self.src["port"]
        self.sql(sp, "app", "CREATE PUBLICATION nat_pub FOR TABLE events")
        self.sql(self.tgt["port"], "pipe_keyed",
                 f"CREATE SUBSCRIPTION nat_sub CONNECTION 'host=127.0.0.1 port={sp} user=postgres dbname=app sslmode=disable' "
                 "PUBLICATION nat_pub WITH (copy_data = false, enabled = false, create_slot = true, slot_name = 'nat_sub')")
        self.recv_plugin = "pgoutput"
        self.sql(sp, "app", "SELECT pg_create_logical_replication_slot('recv_slot', 'pgoutput')")

    def write_burst(self):
        a = self.args
        n, step = a.burst, a.txn_rows
        stmts = []
        for lo in range(1, n + 1, step):
            hi = min(n, lo + step - 1)
            stmts.append(f"INSERT INTO events {rows_select(a.rows + lo, a.rows + hi)};")
            stmts.append(f"UPDATE events SET amount = amount + 1, kind = 'updated' WHERE id BETWEEN {lo} AND {hi};")
        sp = self.src["port"]
        lsn0 = self.one(sp, "app", "SELECT pg_current_wal_lsn()")
        t = now()
        self.sql(sp, "app", "\n".join(stmts))
        self.burst_seconds = now() - t
        self.burst_txns = len(stmts)
        self.end_lsn = self.one(sp, "app", "SELECT pg_current_wal_lsn()")
        self.burst_wal = int(self.one(sp, "app", f"SELECT pg_wal_lsn_diff('{self.end_lsn}', '{lsn0}')"))
        self.final_sum = self.checksum(sp, "app")
        self.checkpoint()
        log(f"burst: {n} inserts + {n} updates in {self.burst_txns} transactions, {self.burst_seconds:.1f} s, "
            f"WAL {self.burst_wal / MIB:.0f} MiB")

    def caught_up(self, probe):
        a = self.args
        rows = probe.query(f"SELECT coalesce((SELECT kind FROM events WHERE id = {a.burst}) = 'updated', false) "
                           f"AND EXISTS (SELECT 1 FROM events WHERE id = {a.rows + a.burst})")
        return rows[0][0] == "t"

    def verify_cdc(self, db, what):
        got = self.checksum(self.tgt["port"], db)
        upd = int(self.one(self.tgt["port"], db, "SELECT count(*) FROM events WHERE kind = 'updated'"))
        if got != self.final_sum or upd != self.args.burst:
            raise Broken(f"{what}: target differs from the source after catch-up: (count, hash) {got} vs "
                         f"{self.final_sum}, updated rows {upd} vs {self.args.burst}")
        log(f"{what} verified: count, row hash and updated rows equal the source")

    def cdc_recvlogical(self):
        cmd = [os.path.join(self.pgbin, "pg_recvlogical"), "-h", "127.0.0.1", "-p", str(self.src["port"]),
               "-U", "postgres", "-d", "app", "-S", "recv_slot", "--start", "--no-loop", "-f", "/dev/null",
               "-E", self.end_lsn, "-o", "proto_version=1", "-o", "publication_names=nat_pub", "-o", "binary=true"]
        logpath = os.path.join(self.work, "logs", "pg_recvlogical.log")

        def body():
            with open(logpath, "w") as lf:
                p = self.popen(cmd, stdout=lf, stderr=subprocess.STDOUT)
                try:
                    p.wait(timeout=self.args.timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=30)
                    raise Broken(f"pg_recvlogical did not reach {self.end_lsn} within {self.args.timeout} s")
            if p.returncode != 0:
                raise Broken(f"pg_recvlogical failed ({p.returncode}):\n{self.tail(logpath)}")

        res = self.measure(f"pg_recvlogical ({self.recv_plugin}) -> /dev/null", body)
        res["detail"] = "decoding only, one slot"
        return res

    def cdc_native(self):
        port = self.tgt["port"]
        probe = Session(self, port, "pipe_keyed")

        def body():
            probe.query("ALTER SUBSCRIPTION nat_sub ENABLE")
            deadline = now() + self.args.timeout
            while not self.caught_up(probe):
                if now() > deadline:
                    raise Broken(f"native logical replication did not catch up within {self.args.timeout} s")
                time.sleep(POLL)

        try:
            res = self.measure("native logical replication", body)
        finally:
            probe.close()
        self.sql(port, "pipe_keyed", "ALTER SUBSCRIPTION nat_sub DISABLE")
        self.verify_cdc("pipe_keyed", "native logical replication")
        return res

    def cdc_culvert(self):
        samples, marks = [], {}
        probe = Session(self, self.tgt["port"], "culvert")

        def body():
            t0 = now()
            p, logpath = self.start_agent("cdc")
            marks["t0"] = t0
            changes = 2 * self.args.burst
            state = {"next_probe": 0.0}

            def done(s):
                if s["tgt_rows"] and "first" not in marks:
                    marks["first"] = s["t"]
                if s["src_rows"] is not None and s["src_rows"] >= changes and "src" not in marks:
                    marks["src"] = s["t"]
                if s["t"] >= state["next_probe"]:
                    state["next_probe"] = s["t"] + POLL
                    if self.caught_up(probe):
                        marks["tgt"] = now()
                        marks["hwm"] = proc_status(p.pid, "VmHWM")
                        return True
                return False

            self.watch_agent(p, logpath, done, "culvert catch-up", samples)
            last = self.sample(p.pid)
            samples.append(last)
            res = {"seconds": marks["tgt"] - t0, "agent_cpu": last["agent_cpu"], "client_cpu": last["agent_cpu"],
                   "rss": max(marks.get("hwm") or 0, proc_status(p.pid, "VmHWM") or 0)}
            self.stop_agent(p, "culvert catch-up")
            return res

        try:
            res = self.measure("culvert catch-up", body)
        finally:
            probe.close()
        res["samples"], res["marks"] = samples, marks
        self.verify_cdc("culvert", "culvert catch-up")
        return res


# -------------------------------------------------------------------- report


def fmt(v, spec, missing="-"):
    return missing if v is None else format(v, spec)




def window(samples, t_from, t_to, key):
    """Rate of a cumulative sample field between two times (per second)."""
    inside = [s for s in samples if s[key] is not None and t_from <= s["t"] <= t_to]
    if len(inside) < 2 or inside[-1]["t"] - inside[0]["t"] < 0.5:
        return None
    return (inside[-1][key] - inside[0][key]) / (inside[-1]["t"] - inside[0]["t"])


def value_at(samples, t, key):
    best = None
    for s in samples:
        if s[key] is not None and s["t"] <= t:
            best = s[key]
    return best


WAIT_HINTS = {
    "Client:ClientRead": "waiting for data from its client",
    "Client:ClientWrite": "blocked sending to its client",
    "idle in transaction": "in a transaction, waiting for its client",
    "idle": "no work",
}


def activity_lines(res, indent):
    """What the backends of interest were doing, from pg_stat_activity samples."""
    out = []
    for (cluster, who), per in sorted((res.get("activity") or {}).items()):
        n = sum(per.values())
        if n == 0 or set(per) <= {"idle"}:
            continue
        parts = sorted(per.items(), key=lambda kv: -kv[1])
        text = ", ".join(f"{what} {cnt / n:.0%}" for what, cnt in parts[:6])
        out.append(f"{indent}{cluster} {who!r} ({n} samples): {text}")
    return out


def share(res, cluster, who, states):
    per = (res.get("activity") or {}).get((cluster, who)) or {}
    n = sum(per.values())
    return None if n == 0 else sum(v for k, v in per.items() if k in states) / n


def verdict(res, buffer_bytes):
    """One line naming the slower stage of a Culvert run, from the samples."""
    s, m = res["samples"], res["marks"]
    t0, end, src_done = m["t0"], m["tgt"], m.get("src")
    wall = end - t0
    reading = [x for x in s if x["buffer"] is not None and t0 <= x["t"] <= (src_done or end)]
    full = sum(1 for x in reading if x["buffer"] >= 0.9 * buffer_bytes) / len(reading) if reading else 0
    empty = sum(1 for x in reading if x["buffer"] < MIB) / len(reading) if reading else 0
    tail = (end - src_done) / wall if src_done else 0
    if full >= 0.3 or tail >= 0.2:
        stage = (f"the target stage is the bottleneck (source finished {tail:.0%} of the run before the target; "
                 f"buffer full in {full:.0%} of samples)")
    elif empty >= 0.5:
        stage = f"the source stage is the bottleneck (buffer nearly empty in {empty:.0%} of samples)"
    else:
        stage = "source and target stages keep pace with each other"
    waits = share(res, "target", "culvert apply", {"idle", "idle in transaction", "Client:ClientRead"})
    if waits is not None:
        stage += (f"; the target backend waited for the agent in {waits:.0%} of samples "
                  "(agent-side work of the target stage not overlapped with PostgreSQL)")
    blocked = share(res, "source", "culvert snapshot 0", {"Client:ClientWrite"})
    if blocked:
        stage += f"; the source COPY backend was blocked on the agent in {blocked:.0%} of samples"
    return stage


def where_time_goes(title, res, units, total, ref, buffer_bytes):
    """Print the stage breakdown of one Culvert run."""
    s, m = res["samples"], res["marks"]
    t0 = m["t0"]
    end = m["tgt"]
    wall = end - t0
    print(f"\n{title}: {wall:.1f} s for {total} {units}")
    print(f"  verdict       {verdict(res, buffer_bytes)}")
    first = m.get("first")
    if first:
        print(f"  start-up      first {units[:-1]} committed at the target after {first - t0:.1f} s "
              f"(connect, slot/publication, first batch)")
    src_done = m.get("src")
    if src_done:
        print(f"  source read   all {total} {units} read by the source stage at {src_done - t0:.1f} s "
              f"({total / max(src_done - t0, 1e-9):,.0f} {units}/s)")
    else:
        print(f"  source read   source stage had not counted all {units} when the target finished")
    print(f"  target write  all committed at {wall:.1f} s ({total / max(wall, 1e-9):,.0f} {units}/s); "
          f"tail after the source finished: {(end - src_done) if src_done else 0:.1f} s")
    busy = [x for x in s if x["buffer"] is not None and t0 <= x["t"] <= (src_done or end)]
    if busy:
        full = sum(1 for x in busy if x["buffer"] >= 0.9 * buffer_bytes) / len(busy)
        empty = sum(1 for x in busy if x["buffer"] < 1 * MIB) / len(busy)
        peak = max(x["buffer"] for x in busy)
        print(f"  buffer        while reading: >=90% full in {full:.0%} of samples (source waits for the target), "
              f"<1 MiB in {empty:.0%} (target waits for the source); peak {peak / MIB:.0f} MiB of "
              f"{buffer_bytes / MIB:.0f} MiB")
        io = m.get("io") or {}
        if io.get("write_bytes") is not None:
            print(f"                agent wrote {io.get('write_bytes', 0) / MIB:.0f} MiB to storage "
                  f"({io.get('wchar', 0) / MIB:.0f} MiB through write calls) during the snapshot")
    a_cpu, s_cpu, g_cpu = res.get("agent_cpu") or 0, res["src_cpu"], res["tgt_cpu"]
    print(f"  CPU           agent {a_cpu:.1f} s ({a_cpu / wall:.2f} cores), source PostgreSQL {s_cpu:.1f} s "
          f"({s_cpu / wall:.2f} cores), target PostgreSQL {g_cpu:.1f} s ({g_cpu / wall:.2f} cores); "
          f"{(a_cpu + s_cpu + g_cpu) / wall:.2f} of {os.cpu_count()} cores busy")
    if ref:
        print(f"                {ref['label']} for comparison: client {ref['client_cpu']:.1f} s, source PostgreSQL "
              f"{ref['src_cpu']:.1f} s, target PostgreSQL {ref['tgt_cpu']:.1f} s in {ref['seconds']:.1f} s")
    if src_done and end - src_done >= 2:
        tail_rows = total - (value_at(s, src_done, "tgt_rows") or 0)
        ra = window(s, src_done, end, "agent_cpu")
        rt = window(s, src_done, end, "tgt_cpu")
        if tail_rows > 0.05 * total and ra is not None:
            per_row = ra * (end - src_done) / tail_rows
            tgt_stage = per_row * total
            print(f"  split         after the source finished only the target stage runs: agent {ra:.2f} cores, "
                  f"target PostgreSQL {fmt(rt, '.2f')} cores; extrapolated agent CPU of the target stage "
                  f"{tgt_stage:.1f} s, of the source stage {max(a_cpu - tgt_stage, 0):.1f} s")
    lines = activity_lines(res, "                ")
    if lines:
        print("  backends      sampled pg_stat_activity (CPU = active without a wait event; "
              + "; ".join(f"{k} = {v}" for k, v in WAIT_HINTS.items()) + ")")
        print("\n".join(lines))
    if ref:
        lines = activity_lines(ref, "                ")
        if lines:
            print(f"                {ref['label']} for comparison:")
            print("\n".join(lines))
    rss = [x["rss"] for x in s if x["rss"]]
    if rss:
        print(f"  memory        agent RSS mean {sum(rss) / len(rss):.0f} MiB, peak (VmHWM) {res.get('rss', 0):.0f} MiB")


def report(r, snap, cdc):
    a = r.args
    mb = r.size_total / 1e6
    print("\n" + "=" * 100)
    print(f"Culvert snapshot + CDC benchmark   PostgreSQL {a.pg_version}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"agent {a.agent} ({agent_identity(a.agent)})")
    la0, la1 = r.load_before, os.getloadavg()
    print(f"load average (1/5/15 min) before the run {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, after "
          f"{la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}; other work on this machine makes the figures noisy")
    print(f"events: {a.rows} rows, pg_total_relation_size {r.size_total / MIB:.0f} MiB "
          f"({r.size_total / 1e9:.2f} GB; heap {r.size_heap / MIB:.0f} MiB); MB/s below = {mb:.0f} MB / seconds")
    print("=" * 100)
    by = {x["label"]: x for x in snap}
    keyed = by.get("COPY binary pipe -> keyed table")
    nokey = by.get("COPY binary pipe -> no key, then ADD PRIMARY KEY")
    rows = []
    for x in snap:
        if x.get("skipped"):
            rows.append([x["label"], x["skipped"]] + [""] * 9)
            continue
        sec = x["seconds"]
        rows.append([x["label"], f"{sec:.2f}", f"{a.rows / sec:,.0f}", f"{mb / sec:.1f}",
                     f"{x['src_cpu']:.1f}", f"{x['tgt_cpu']:.1f}", f"{x['client_cpu']:.1f}",
                     fmt(x.get("rss"), ".0f"),
                     f"{keyed['seconds'] / sec:.2f}x" if keyed else "-",
                     f"{nokey['seconds'] / sec:.2f}x" if nokey else "-", x.get("detail", "")])
    print("\nSNAPSHOT (higher ratio = faster than the baseline)")
    table(rows, [("method", "<"), ("seconds", ">"), ("rows/s", ">"), ("MB/s", ">"), ("src CPU s", ">"),
                 ("tgt CPU s", ">"), ("client CPU s", ">"), ("peak RSS MiB", ">"), ("vs keyed pipe", ">"),
                 ("vs no-key pipe", ">"), ("notes", "<")])
    if not shutil.which("pgcopydb"):
        print("pgcopydb: not installed (skipped)")
    print(f"(culvert-agent check before the run, which compiles the connector components into the cache: "
          f"{r.compile_seconds:.1f} s; not included above)")

    changes = 2 * a.burst
    wmb = r.burst_wal / 1e6
    cby = {x["label"].split(" (")[0]: x for x in cdc}
    native = cby.get("native logical replication")
    recv = cby.get("pg_recvlogical")
    rows = []
    for x in cdc:
        sec = x["seconds"]
        rows.append([x["label"], f"{sec:.2f}", f"{changes / sec:,.0f}", f"{wmb / sec:.1f}",
                     f"{x['src_cpu']:.1f}", f"{x['tgt_cpu']:.1f}", f"{x['client_cpu']:.1f}",
                     fmt(x.get("rss"), ".0f"),
                     f"{native['seconds'] / sec:.2f}x" if native else "-",
                     f"{recv['seconds'] / sec:.2f}x" if recv else "-", x.get("detail", "")])
    print(f"\nCDC CATCH-UP: {a.burst} inserts + {a.burst} updates = {changes} changes in {r.burst_txns} transactions "
          f"of <= {a.txn_rows} rows, written in {r.burst_seconds:.1f} s while every reader was stopped; "
          f"WAL {r.burst_wal / MIB:.0f} MiB (MB/s below = WAL MB / seconds)")
    table(rows, [("method", "<"), ("seconds", ">"), ("changes/s", ">"), ("WAL MB/s", ">"), ("src CPU s", ">"),
                 ("tgt CPU s", ">"), ("client CPU s", ">"), ("peak RSS MiB", ">"), ("vs native", ">"),
                 ("vs recvlogical", ">"), ("notes", "<")])
    print("client CPU = psql processes, pg_recvlogical, pgcopydb or the agent; src/tgt CPU = every process of "
          "that cluster (backends, walsender, apply worker, checkpointer, ...)")

    cs, cc = by["culvert snapshot"], cby["culvert catch-up"]
    targets = []
    if keyed:
        ratio = keyed["seconds"] / cs["seconds"]
        targets.append((ratio >= 0.9, f"snapshot throughput >= 0.9x the keyed pipe: {ratio:.2f}x "
                                      f"({a.rows / cs['seconds']:,.0f} vs {a.rows / keyed['seconds']:,.0f} rows/s)"))
    if native:
        ratio = native["seconds"] / cc["seconds"]
        targets.append((ratio >= 1.5, f"CDC catch-up >= 1.5x native logical replication: {ratio:.2f}x "
                                      f"({changes / cc['seconds']:,.0f} vs {changes / native['seconds']:,.0f} changes/s)"))
    peak = max(cs.get("rss") or 0, cc.get("rss") or 0)
    targets.append((peak < 256, f"peak agent RSS < 256 MiB: {peak:.0f} MiB (snapshot {cs.get('rss', 0):.0f}, "
                                f"catch-up {cc.get('rss', 0):.0f})"))
    print("\nTARGETS")
    for ok, text in targets:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")

    print("\nWHERE THE TIME GOES")
    where_time_goes("culvert snapshot", cs, "rows", a.rows, keyed, a.buffer_bytes)
    where_time_goes("culvert catch-up", cc, "changes", changes, native, a.buffer_bytes)
    if recv:
        print(f"  decoding      pg_recvlogical decodes the same changes in {recv['seconds']:.1f} s "
              f"({changes / recv['seconds']:,.0f} changes/s, one slot): the source-side ceiling")
    for note in r.notes:
        print(note)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--pgbin", required=True)
    ap.add_argument("--pg-version", required=True)
    ap.add_argument("--agent", required=True)
    args = ap.parse_args()
    args.rows = int(os.environ.get("ROWS", "5000000"))
    args.burst = int(os.environ.get("BURST", str(min(1_000_000, args.rows // 5))))
    args.txn_rows = int(os.environ.get("TXN_ROWS", str(max(1000, min(100_000, args.burst // 10)))))
    args.buffer_bytes = int(os.environ.get("BUFFER_BYTES", str(256 * MIB)))
    args.timeout = float(os.environ.get("TIMEOUT", str(max(300, args.rows / 4000))))
    if args.rows < 1000 or not (1 <= args.burst <= args.rows) or args.txn_rows < 1:
        print("ROWS must be >= 1000 and 1 <= BURST <= ROWS", file=sys.stderr)
        return 2

    catch_signals()

    r = Runner(args)
    r.src = r.tgt = None

    def body():
        r.setup()
        snap = [r.snapshot_read_ceiling(), r.snapshot_pipe_keyed(), r.snapshot_pipe_nokey(), r.snapshot_pgcopydb(),
                r.snapshot_culvert()]
        r.prepare_cdc()
        r.write_burst()
        cdc = [r.cdc_recvlogical(), r.cdc_native(), r.cdc_culvert()]
        r.notes = agent_log_findings(r)
        report(r, snap, cdc)

    return run_to_status(r, body)


if __name__ == "__main__":
    sys.exit(main())
