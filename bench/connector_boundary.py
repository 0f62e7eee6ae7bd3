#!/usr/bin/env python3
"""Cost of the connector sandbox boundary, per SDK language, through no-op connectors.

Started by bench/connector_boundary.sh, which builds the agent and the CLI, makes the work
directory and the buffer directory, and cleans up behind this script.

For rust and every language of --langs, `culvert connector new` writes a source and a
destination project from the templates and their `./build.sh` builds them. The source
generates `rows` rows of demo.items (id bigint, name text, amount double) in batches of
--batch-rows; the destination runs with `discard = true`, so it does no I/O and keeps the
position in memory. The pairs

    rust -> rust      baseline
    L -> L            both sides in L
    L -> rust         L's source (against the cheapest destination)
    rust -> L         L's destination (against the cheapest source)

run through `culvert-agent run --pipeline FILE`, --repeat rounds, each round every pair once.
The buffer is a directory, by default on tmpfs so that its fsyncs do not hide the boundary,
with room for about four batches ([buffer] max_bytes), so that a fast source keeps pace with
a slow destination rather than finishing early and sitting idle beside it.

A run is timed from just before the agent is started until the destination applied the last
position. The agent's metrics (`culvert_rows_total{stage="target"}`, counted after `apply`
returned and the batch was released from the buffer) are polled every 50 ms over one
keep-alive connection to see that moment; the end is then refined to the modification time
of the buffer's released-segment mark, which the agent rewrites as it releases each applied
batch (used only when it falls between the last two polls; otherwise the poll time stands).
The bytes are `culvert_bytes_total`: Arrow IPC bytes that left the source and entered the
destination (each crosses the boundary twice). Agent CPU seconds (/proc/PID/stat) and peak
RSS (VmHWM) are read at that moment too, and the agent's CPU over the next 0.5 s, when
nothing is left to move, shows what an idle source costs. Start-up is the time until the
agent logs `resuming` (components loaded from the cache, the destination's writer opened,
the buffer recovered), after which the source's reader opens and data flows.

First-load compile time: before the runs, each component is compiled on its own by
`culvert-agent check` with a cache that holds only its Rust partner; the time of that check
minus the time of the same check once the cache is warm is the compile time. The runs then
use a warm cache, as a deployed agent does.

Exit status: 0 when every run delivered every row; 1 when something broke or a run
misbehaved (listed under PROBLEMS).
"""

import argparse
import hashlib
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime

from benchlib import (MIB, Broken, parse_metrics, agent_identity, catch_signals, free_port, log, now, proc_status, read_stat,
                      run_to_status, table)

LANGS = ("rust", "python", "js")
KINDS = ("source", "destination")
BASE = ("rust", "rust")
POLL = 0.05
# Seconds the agent's CPU is watched after the last batch, with nothing left to move.
IDLE_WINDOW = 0.5
# Bytes per row of demo.items in Arrow IPC (about 31 in every SDK), to size the buffer.
ROW_BYTES = 32
# The mark the directory buffer rewrites after each release (agent-host/src/buffer: the
# released-segment mark is segment 0 of the store).
RELEASED_MARK = "00000000000000000000.seg"
# The destination templates log this once per open on purpose; it is not a problem here.
EXPECTED_WARNINGS = ("discard is set",)
PLACEHOLDER_CONTAINER = "http://127.0.0.1:9/devstoreaccount1/unused"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class MetricsClient:
    """GET /metrics over one keep-alive connection, so that polling every 50 ms stays cheap."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def get(self):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                self.conn.request("GET", "/metrics")
                r = self.conn.getresponse()
                body = r.read().decode()
                if r.status == 200:
                    return parse_metrics(body)
                return None
            except (OSError, http.client.HTTPException):
                self.close()
        return None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def log_time(line):
    """Seconds since the epoch of a text log line of the agent (RFC 3339 UTC), or None."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", line)
    if not m:
        return None
    t = datetime.strptime(m.group(1) + "+0000", "%Y-%m-%dT%H:%M:%S%z").timestamp()
    return t + (float(m.group(2)) if m.group(2) else 0.0)


def pair_name(pair):
    return f"{pair[0]} -> {pair[1]}"


def measures(pair):
    s, d = pair
    if pair == BASE:
        return "baseline"
    if s == d:
        return f"{s} both sides"
    return f"{s} source" if d == "rust" else f"{d} destination"


class Runner:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.procs = []
        self.problems = []
        self.agent_logs = []
        self.env = dict(os.environ)
        self.load_before = os.getloadavg()
        self.langs = ["rust"] + [x for x in args.langs if x != "rust"]
        self.components = {}
        self.cache = os.path.join(self.work, "component-cache")
        os.makedirs(os.path.join(self.work, "logs"))
        os.makedirs(os.path.join(self.work, "pipelines"))
        os.makedirs(self.cache)

    # ---------------------------------------------------------------- processes

    def popen(self, cmd, **kw):
        # A session of its own, so that stopping a build also stops the compilers it started.
        p = subprocess.Popen(cmd, env=kw.pop("env", self.env), start_new_session=True, **kw)
        self.procs.append(p)
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def run_measured(self, cmd, logpath, timeout, cwd=None, env=None):
        """Run cmd to its end with output to logpath: (status, wall seconds, CPU seconds)."""
        with open(logpath, "w") as lf:
            t = now()
            p = self.popen(cmd, cwd=cwd, env=env or self.env, stdout=lf, stderr=subprocess.STDOUT)
            deadline = t + timeout
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if now() > deadline:
                    signal_group(p, signal.SIGKILL)
                    p.wait()
                    raise Broken(f"{' '.join(cmd[:3])} did not finish within {timeout:.0f} s; see {logpath}")
                time.sleep(0.02)
        wall = now() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        return p.returncode, wall, ru.ru_utime + ru.ru_stime

    def shut_down(self):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in self.procs:
            if p.poll() is None:
                signal_group(p, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    signal_group(p, signal.SIGKILL)
                    p.wait(timeout=30)

    def tail(self, path, n=15):
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # ---------------------------------------------------------------- projects

    def build_projects(self):
        a = self.args
        env = dict(self.env)
        env["CARGO_TARGET_DIR"] = a.cargo_target_dir
        for lang in self.langs:
            for kind in KINDS:
                name = f"boundary-{lang}-{kind}"
                d = os.path.join(self.work, "projects", name)
                r = subprocess.run([a.culvert, "connector", "new", name, "--lang", lang, "--kind", kind, "--dir", d],
                                   capture_output=True, text=True, timeout=120)
                if r.returncode != 0:
                    raise Broken(f"culvert connector new {name} --lang {lang} --kind {kind} failed "
                                 f"({r.returncode}): {(r.stderr or r.stdout).strip()[-1500:]}")
                logpath = os.path.join(self.work, "logs", f"build-{name}.log")
                log(f"building {name} ({lang} {kind}) with ./build.sh")
                status, wall, cpu = self.run_measured(["./build.sh"], logpath, 1800, cwd=d, env=env)
                if status != 0:
                    raise Broken(f"./build.sh of the {lang} {kind} template failed ({status}):\n{self.tail(logpath, 25)}")
                wasm = os.path.join(d, "dist", f"{name}.wasm")
                if not os.path.isfile(wasm):
                    raise Broken(f"./build.sh of the {lang} {kind} template did not write dist/{name}.wasm")
                with open(wasm, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                self.components[(lang, kind)] = {"name": name, "wasm": wasm, "size": os.path.getsize(wasm),
                                                 "digest": digest, "build_s": wall, "build_cpu": cpu}
                log(f"  {name}.wasm {os.path.getsize(wasm) / MIB:.2f} MiB, build {wall:.1f} s")

    # ---------------------------------------------------------------- pipelines

    def pipeline(self, tag, pair, bufdir):
        a = self.args
        src, dst = self.components[(pair[0], "source")], self.components[(pair[1], "destination")]
        path = os.path.join(self.work, "pipelines", f"{tag}.toml")
        with open(path, "w") as f:
            f.write(f"""name = "boundary-{tag}"
batch_rows = {a.batch_rows}

[source]
connector = "{src['wasm']}"
rows = {a.rows}
batch_rows = {a.batch_rows}

[target]
connector = "{dst['wasm']}"
# Required by the destination's spec; with discard = true nothing is contacted.
container_url = "{PLACEHOLDER_CONTAINER}"
sas = "unused"
discard = true

[buffer]
url = "file://{bufdir}"
max_bytes = {self.buffer_bytes()}
""")
        return path

    def buffer_bytes(self):
        """[buffer] max_bytes: room for about four batches. The source then keeps pace with the
        destination instead of finishing early and idling beside it (an idle source that does
        not wait in `next` keeps a core busy, which would be charged to the destination)."""
        return max(MIB, 4 * self.args.batch_rows * ROW_BYTES)

    def agent_env(self, cache):
        env = dict(self.env)
        env["CULVERT_CACHE_DIR"] = cache
        return env

    def cached_file(self, cache, comp):
        for f in os.listdir(cache):
            if f.startswith(comp["digest"]) and f.endswith(".cwasm"):
                return os.path.join(cache, f)
        return None

    def check(self, tag, pair, cache):
        """`culvert-agent check` of pair with cache dir `cache`: (wall s, CPU s)."""
        path = self.pipeline(f"check-{tag}", pair, os.path.join(self.args.buffer_dir, "unused"))
        logpath = os.path.join(self.work, "logs", f"check-{tag}.log")
        status, wall, cpu = self.run_measured([self.args.agent, "check", "--pipeline", path], logpath, 900,
                                              env=self.agent_env(cache))
        if status != 0:
            text = self.tail(logpath, 20)
            hint = ""
            if re.search(r"^FAIL\s+target", text, re.M):
                hint = (f"\n(the {pair[1]} destination's check failed with discard = true: the benchmark needs the "
                        f"template's `discard` option, which skips all I/O; see templates/{pair[1]}/destination)")
            raise Broken(f"culvert-agent check of {pair_name(pair)} failed ({status}):\n{text}{hint}")
        return wall, cpu

    def compile_components(self):
        """First-load compile time of every component, each on its own (see the module doc)."""
        boot = os.path.join(self.work, "cache-bootstrap")
        os.makedirs(boot)
        log("compiling the Rust pair once, to have partners for the measurements")
        self.check("bootstrap", BASE, boot)
        for lang in self.langs:
            for kind in KINDS:
                comp = self.components[(lang, kind)]
                pair = (lang, "rust") if kind == "source" else ("rust", lang)
                partner = self.components[("rust", "destination" if kind == "source" else "source")]
                d = os.path.join(self.work, f"cache-{comp['name']}")
                os.makedirs(d)
                src = self.cached_file(boot, partner)
                if src is None:
                    raise Broken(f"culvert-agent check left no compiled {partner['name']} in {boot}")
                link_or_copy(src, os.path.join(d, os.path.basename(src)))
                cold, cold_cpu = self.check(f"cold-{lang}-{kind}", pair, d)
                warm, warm_cpu = self.check(f"warm-{lang}-{kind}", pair, d)
                compiled = self.cached_file(d, comp)
                if compiled is None:
                    raise Broken(f"culvert-agent check left no compiled {comp['name']} in {d}")
                comp["compile_s"] = max(0.0, cold - warm)
                comp["compile_cpu"] = max(0.0, cold_cpu - warm_cpu)
                comp["cwasm_size"] = os.path.getsize(compiled)
                link_or_copy(compiled, os.path.join(self.cache, os.path.basename(compiled)))
                log(f"  {comp['name']}: compile {comp['compile_s']:.2f} s ({comp['compile_cpu']:.2f} CPU s), "
                    f"native code {comp['cwasm_size'] / MIB:.1f} MiB")
        for comp in self.components.values():
            shutil.rmtree(os.path.join(self.work, f"cache-{comp['name']}"), ignore_errors=True)
        shutil.rmtree(boot, ignore_errors=True)

    # ---------------------------------------------------------------- runs

    def run_pair(self, pair, rnd):
        a = self.args
        tag = f"{pair[0]}-{pair[1]}-{rnd}"
        bufdir = os.path.join(a.buffer_dir, tag)
        path = self.pipeline(tag, pair, bufdir)
        port = free_port()
        logpath = os.path.join(self.work, "logs", f"agent-{tag}.log")
        self.agent_logs.append(logpath)
        load1 = os.getloadavg()[0]
        client = MetricsClient(port)
        with open(logpath, "w") as lf:
            t0w, t0 = time.time(), now()
            p = self.popen([a.agent, "run", "--pipeline", path, "--metrics-addr", f"127.0.0.1:{port}",
                            "--progress-every", "0"], env=self.agent_env(self.cache), stdout=lf,
                           stderr=subprocess.STDOUT)
        try:
            prev_w = t0w
            deadline = t0 + a.timeout
            while True:
                if p.poll() is not None:
                    raise Broken(f"run {tag}: the agent exited with status {p.returncode}:\n{self.tail(logpath)}")
                m = client.get()
                tw = time.time()
                if m and m.get(("culvert_rows_total", "target"), 0) >= a.rows:
                    st = read_stat(p.pid)
                    cpu = st[1] if st else None
                    hwm = proc_status(p.pid, "VmHWM")
                    # What the pipeline costs with nothing to move (the source being idle).
                    t1 = now()
                    time.sleep(IDLE_WINDOW)
                    st2 = read_stat(p.pid)
                    idle = (st2[1] - cpu) / (now() - t1) if st and st2 else None
                    break
                if now() > deadline:
                    raise Broken(f"run {tag}: not finished within {a.timeout:.0f} s "
                                 f"({int((m or {}).get(('culvert_rows_total', 'target'), 0))} of {a.rows} rows "
                                 f"applied):\n{self.tail(logpath)}")
                prev_w = tw
                time.sleep(POLL)
        finally:
            client.close()
            self.stop_agent(p, tag)
        end, refined = tw, False
        try:
            mark = os.stat(os.path.join(bufdir, RELEASED_MARK)).st_mtime
            # The kernel stamps files with a coarse clock (a few ms behind time.time()).
            if prev_w - 0.02 <= mark <= tw + 0.02:
                end, refined = min(mark, tw), True
        except OSError:
            pass
        resumed = None
        with open(logpath, errors="replace") as f:
            for line in f:
                if "resuming" in line:
                    resumed = log_time(line)
                    break
        src_rows, tgt_rows = m.get(("culvert_rows_total", "source"), 0), m.get(("culvert_rows_total", "target"), 0)
        src_bytes, tgt_bytes = m.get(("culvert_bytes_total", "source"), 0), m.get(("culvert_bytes_total", "target"), 0)
        errors = m.get(("culvert_errors_total", "source"), 0) + m.get(("culvert_errors_total", "target"), 0)
        if tgt_rows != a.rows or src_rows != a.rows:
            self.problems.append(f"run {tag}: the source read {src_rows:.0f} rows and the destination applied "
                                 f"{tgt_rows:.0f}, expected {a.rows}")
        if src_bytes != tgt_bytes:
            self.problems.append(f"run {tag}: {src_bytes:.0f} IPC bytes left the source, {tgt_bytes:.0f} "
                                 f"reached the destination")
        if errors:
            self.problems.append(f"run {tag}: {errors:.0f} stage errors (culvert_errors_total); see {logpath}")
        shutil.rmtree(bufdir, ignore_errors=True)
        res = {"pair": pair, "tag": tag, "seconds": end - t0w, "refined": refined,
               "startup": (resumed - t0w) if resumed else None, "cpu": cpu, "rss": hwm, "bytes": tgt_bytes,
               "batches": m.get(("culvert_batches_total", "target"), 0), "load": load1, "idle": idle}
        log(f"run {tag}: {res['seconds']:.2f} s, {a.rows / res['seconds']:,.0f} rows/s, "
            f"{int(res['batches'])} batches, {tgt_bytes / MIB:.1f} MiB IPC, agent CPU {fmt(cpu, '.2f')} s")
        return res

    def stop_agent(self, p, tag):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)
                self.problems.append(f"run {tag}: the agent did not stop within 30 s of SIGTERM (killed)")
                return
        if p.returncode not in (0, -signal.SIGTERM):
            self.problems.append(f"run {tag}: the agent exited with status {p.returncode} after SIGTERM")


def signal_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def log_findings(r):
    """Warning and error lines of the agents' logs, apart from the expected ones."""
    out = []
    for path in r.agent_logs:
        try:
            with open(path, errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        bad = [ln.rstrip() for ln in lines if re.search(r"\b(WARN|ERROR|error|panicked)\b", ln)
               and not any(w in ln for w in EXPECTED_WARNINGS)]
        if bad:
            out.append(f"{os.path.basename(path)}: {len(bad)} warning/error lines, first: " + " | ".join(bad[:3]))
    return out


# -------------------------------------------------------------------- report


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def ratio(v, base):
    return None if v is None or not base else v / base


def per_row(v, base, rows):
    """(v - base) / rows in microseconds, or None when either is unknown."""
    return None if v is None or base is None else (v - base) / rows * 1e6


def report(r, runs, pairs):
    a = r.args
    print("\n" + "=" * 110)
    print(f"Culvert connector boundary benchmark   {os.cpu_count()} CPUs ({cpu_model()}), "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"agent {a.agent} ({agent_identity(a.agent)})")
    la0, la1 = r.load_before, os.getloadavg()
    print(f"load average (1/5/15 min) before the benchmark {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, after "
          f"{la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}; other work on this machine makes the figures noisy")
    print(f"{a.rows} rows of demo.items (id bigint, name text, amount double) in batches of {a.batch_rows}; "
          f"{a.repeat} round(s) over {len(pairs)} pairs; buffer under {os.path.dirname(a.buffer_dir)}; "
          f"components from a warm cache")
    print("=" * 110)

    print("\nCOMPONENTS (template projects from `culvert connector new`, built by their ./build.sh)")
    rows = []
    for lang in r.langs:
        for kind in KINDS:
            c = r.components[(lang, kind)]
            rows.append([lang, kind, f"{c['size'] / MIB:.2f}", fmt(c.get("cwasm_size", 0) / MIB, ".1f"),
                         fmt(c.get("compile_s"), ".2f"), fmt(c.get("compile_cpu"), ".2f"), f"{c['build_s']:.1f}"])
    table(rows, [("language", "<"), ("kind", "<"), ("wasm MiB", ">"), ("native MiB", ">"),
                 ("first-load compile s", ">"), ("compile CPU s", ">"), ("project build s", ">")])
    print("first-load compile = `culvert-agent check` with only this component missing from the cache minus the "
          "same check with a warm cache;\nnative = the compiled code cached for later loads; project build includes "
          "tool installs and dependency builds not cached before")

    print("\nRUNS (in the order they ran)")
    rows = []
    for x in runs:
        rows.append([x["tag"], f"{x['seconds']:.3f}", fmt(x["startup"], ".3f"), f"{a.rows / x['seconds']:,.0f}",
                     f"{x['bytes'] / MIB / x['seconds']:.1f}", fmt(x["cpu"], ".2f"), fmt(x["rss"], ".0f"),
                     fmt(x["idle"], ".0%"), f"{x['load']:.2f}"])
    table(rows, [("run", "<"), ("seconds", ">"), ("start-up s", ">"), ("rows/s", ">"), ("MiB/s", ">"),
                 ("agent CPU s", ">"), ("peak RSS MiB", ">"), ("idle CPU", ">"), ("load 1 min", ">")])

    med = {}
    for pair in pairs:
        xs = [x for x in runs if x["pair"] == pair]
        med[pair] = {
            "n": len(xs),
            "seconds": median([x["seconds"] for x in xs]),
            "spread": (max(x["seconds"] for x in xs) - min(x["seconds"] for x in xs)) / median([x["seconds"] for x in xs]),
            "startup": median([x["startup"] for x in xs]),
            "cpu": median([x["cpu"] for x in xs]),
            "bytes": median([x["bytes"] for x in xs]),
            "rss": max((x["rss"] for x in xs if x["rss"]), default=None),
            "idle": median([x["idle"] for x in xs]),
        }
    base = med[BASE]
    print(f"\nPAIRS (medians of {a.repeat} run(s); peak RSS is the highest of the runs; ratios against rust -> rust)")
    rows = []
    for pair in pairs:
        m = med[pair]
        rows.append([pair_name(pair), measures(pair), f"{m['seconds']:.3f}",
                     f"{m['spread']:.0%}" if m["n"] > 1 else "-", fmt(m["startup"], ".3f"),
                     f"{a.rows / m['seconds']:,.0f}", f"{m['bytes'] / MIB / m['seconds']:.1f}",
                     f"{m['bytes'] / a.rows:.1f}", fmt(m["cpu"], ".2f"),
                     fmt(per_row(m["cpu"], 0.0, a.rows), ".2f"), fmt(m["rss"], ".0f"), fmt(m["idle"], ".0%"),
                     f"{m['seconds'] / base['seconds']:.2f}x", fmt(ratio(m["cpu"], base["cpu"]), ".2f") + "x"])
    table(rows, [("source -> destination", "<"), ("measures", "<"), ("seconds", ">"), ("spread", ">"), ("start-up s", ">"),
                 ("rows/s", ">"), ("MiB/s", ">"), ("IPC B/row", ">"), ("agent CPU s", ">"), ("CPU us/row", ">"),
                 ("peak RSS MiB", ">"), ("idle CPU", ">"), ("time ratio", ">"), ("CPU ratio", ">")])
    print("seconds = agent start until the destination applied the last position (start-up included: until the "
          "agent logs `resuming`);\nMiB/s = Arrow IPC MiB out of the source and into the destination per second "
          "(culvert_bytes_total; each byte crosses the boundary twice);\nspread = (slowest - fastest) / median of "
          "the pair's runs; agent CPU = the whole agent process (both connectors, the buffer, the host) until that "
          f"moment;\nidle CPU = the agent's CPU in the {IDLE_WINDOW} s after it, with nothing left to move (100% = "
          "one core)")
    refined = sum(1 for x in runs if x["refined"])
    print(f"(the end of {refined} of {len(runs)} runs is the buffer's released mark"
          + (f", of the other {len(runs) - refined} the 50 ms metric poll that saw it)" if refined < len(runs) else ")"))

    others = [lang for lang in r.langs if lang != "rust"]
    if others:
        print("\nPER SIDE (extra over rust -> rust per row: the source cost from L -> rust, the destination cost "
              "from rust -> L)")
        rows = []
        for lang in r.langs:
            s, d, both = med[(lang, "rust")], med[("rust", lang)], med[(lang, lang)]
            rows.append([lang] + [v for side in (s, d) for v in (
                f"{side['seconds'] / base['seconds']:.2f}x", fmt(per_row(side["seconds"], base["seconds"], a.rows), "+.2f"),
                fmt(per_row(side["cpu"], base["cpu"], a.rows), "+.2f"))]
                + [f"{both['seconds'] / base['seconds']:.2f}x", f"{a.rows / both['seconds']:,.0f}"])
        table(rows, [("language", "<"), ("source time", ">"), ("source +us/row", ">"), ("source +CPU us/row", ">"),
                     ("dest time", ">"), ("dest +us/row", ">"), ("dest +CPU us/row", ">"), ("both sides time", ">"),
                     ("both sides rows/s", ">")])
        print("source and destination run concurrently, so a pair's time follows the slower side while its CPU "
              "adds both;\nthe extra per row is the median of the pair minus that of rust -> rust; see the "
              "spread above for how far to trust it")
    for lang in r.langs:
        busy = med[(lang, "rust")]["idle"]
        if busy is not None and busy > 0.5:
            print(f"\nNOTE: with an idle {lang} source the agent keeps {busy:.0%} of a core busy: its `next` answers "
                  "none at once instead of waiting\nabout a second for data (wit/connector.wit, reader.next), so the "
                  "agent calls it again and again (the Python SDK waits: Reader.idle_seconds).")
    for line in log_findings(r):
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="an empty work directory (connector_boundary.sh makes one)")
    ap.add_argument("--buffer-dir", required=True, help="an empty directory for the runs' buffers")
    ap.add_argument("--root", required=True, help="the repository")
    ap.add_argument("--agent", required=True)
    ap.add_argument("--culvert", required=True, help="the culvert CLI, for `connector new`")
    ap.add_argument("--cargo-target-dir", required=True, help="CARGO_TARGET_DIR of the Rust projects")
    ap.add_argument("--langs", default="rust,python,js")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=None, help="seconds one run may take (default max(120, rows/2000))")
    args = ap.parse_args()
    args.langs = [x.strip() for x in args.langs.split(",") if x.strip()]
    bad = [x for x in args.langs if x not in LANGS]
    if bad or not args.langs:
        print(f"--langs: use a comma-separated list of {', '.join(LANGS)} (got {','.join(args.langs) or 'nothing'})",
              file=sys.stderr)
        return 2
    if args.rows < 1 or args.repeat < 1 or not 1 <= args.batch_rows <= 10_000_000:
        print("--rows and --repeat must be at least 1, --batch-rows between 1 and 10000000", file=sys.stderr)
        return 2
    if args.timeout is None:
        args.timeout = max(120.0, args.rows / 2000)

    catch_signals()
    r = Runner(args)
    pairs = [BASE]
    for lang in r.langs[1:]:
        pairs += [(lang, lang), (lang, "rust"), ("rust", lang)]

    def body():
        log(f"{os.cpu_count()} CPUs, load average {r.load_before[0]:.2f}/{r.load_before[1]:.2f}/"
            f"{r.load_before[2]:.2f}; work dir {r.work}")
        r.build_projects()
        r.compile_components()
        runs = []
        for rnd in range(1, args.repeat + 1):
            for pair in pairs:
                runs.append(r.run_pair(pair, rnd))
        report(r, runs, pairs)

    return run_to_status(r, body)


if __name__ == "__main__":
    sys.exit(main())
