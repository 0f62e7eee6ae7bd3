#!/usr/bin/env python3
"""Cost of the Azure Blob buffer against the local directory buffer, on Culvert's snapshot.

Started by bench/buffer_store.sh, which picks the PostgreSQL binaries, builds the agent and
the Azure stand-ins, finds Azurite, creates the work directory and cleans up behind this script.

One table (events, --rows rows, the same shape as in snapshot_cdc) is copied from a source
cluster to a target cluster (both on 127.0.0.1) by `culvert-agent run`, with two buffers:

  A  directory    [buffer] url = "file:///WORK/buffer-aN", segments encrypted under data keys
                  wrapped by a local keyring file (key = "file:///WORK/keys/keyring.json")
  B  Azure Blob   [buffer] url = "http://127.0.0.1:PORT/devstoreaccount1/bench-buffers/bN" on
                  Azurite, data keys wrapped by the RSA 3072 key culvert-buffer in a vault of
                  culvert-azure-local (key = "https://127.0.0.1:VAULTPORT/keys/culvert-buffer", the
                  stand-in's CA trusted through CULVERT_AZURE_CA_FILE), the agent signing in
                  through the stand-in's managed-identity token endpoint

Runs alternate A B A B ... for --repeat rounds, so that a drift of the machine's load hits
both alike; every run starts the agent on a fresh target database and is timed from the
agent's start until the target stage has committed every row (metrics polled every 0.25 s).
Each run is then checked against the source (count and hash of every row).

Exit status: 0 when every run completed and matched the source (a missed target is reported
as FAIL, not an error); 1 when something broke.
"""

import argparse
import json
import os
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from benchlib import (MIB, POLL, SNAPSHOT_PG_SETTINGS, AgentTools, Broken, ClusterTools,  # noqa: E402
                      Session, agent_identity, agent_log_findings, catch_signals, free_port, log, now, pipeline_toml,
                      proc_status, read_stat, run_to_status, table)

CONTAINER = "bench-buffers"
VAULT = "bench-kv"
KEY_NAME = "culvert-buffer"
VAULT_API = "7.5"
VAULT_RESOURCE = "https://vault.azure.net"
TARGET_OVERHEAD = 0.15
CONFIGS = {
    "A": "directory buffer, local keyring",
    "B": "Azure Blob (Azurite), Key Vault key (stand-in)",
}
# Variables that would change how the agent signs in to Azure; A runs without any of them so
# that the directory buffer cannot reach for an identity by accident.
AZURE_VARS = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT",
              "MSI_SECRET", "CULVERT_AZURE_CREDENTIAL", "CULVERT_AZURE_CLIENT_ID", "CULVERT_AZURE_CA_FILE",
              "CULVERT_KEY_VAULT", "CULVERT_BUFFER_URL")


def median(values):
    return statistics.median(values) if values else None


class Runner(ClusterTools, AgentTools):
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.pgbin = args.pgbin
        self.procs = []
        self.problems = []
        self.env = dict(os.environ)
        for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGOPTIONS", "PGPASSFILE", "PGSSLMODE"):
            self.env.pop(k, None)
        for k in AZURE_VARS:
            self.env.pop(k, None)
        self.env["PGCONNECT_TIMEOUT"] = "10"
        self.env["PGSSLMODE"] = "disable"
        self.pg_settings = SNAPSHOT_PG_SETTINGS
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # Everything here is on loopback; a proxy from the environment must not see it.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.agent_logs = []
        self.src = self.tgt = None
        self.azurite = self.azure_local = None
        self.load_before = os.getloadavg()

    # ---------------------------------------------------------------- helpers

    def wait_for(self, what, p, logpath, cond, timeout=60):
        deadline = now() + timeout
        while not cond():
            if p.poll() is not None:
                raise Broken(f"{what} exited with status {p.returncode}:\n{self.tail(logpath)}")
            if now() > deadline:
                raise Broken(f"{what} not ready within {timeout} s:\n{self.tail(logpath)}")
            time.sleep(0.1)

    def http_json(self, method, url, headers, body=None, opener=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with (opener or self.opener).open(req, timeout=60) as r:
                return json.loads(r.read().decode() or "{}")
        except urllib.error.HTTPError as e:
            raise Broken(f"{method} {url.split('?')[0]}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}")
        except (urllib.error.URLError, OSError) as e:
            raise Broken(f"{method} {url.split('?')[0]}: {e}")

    def helper_cpu(self):
        """CPU seconds of Azurite and the stand-in so far (they share the machine with the agent)."""
        total = 0.0
        for p in (self.azurite, self.azure_local):
            st = read_stat(p.pid) if p else None
            if st:
                total += st[1]
        return total

    def vault_ops(self):
        """(wrapkey, unwrapkey) requests the stand-in has answered with 200 so far, from its log."""
        wrap = unwrap = 0
        try:
            with open(self.azure_local_log, errors="replace") as f:
                for line in f:
                    if "vault request" not in line or "status=200" not in line:
                        continue
                    if "op=wrapkey" in line:
                        wrap += 1
                    elif "op=unwrapkey" in line:
                        unwrap += 1
        except OSError:
            pass
        return wrap, unwrap

    # ---------------------------------------------------------------- Azure stand-ins

    def start_azurite(self, ports):
        blob, queue, tbl = ports
        loc = os.path.join(self.work, "azurite")
        os.makedirs(loc)
        self.azurite_log = os.path.join(self.work, "logs", "azurite.log")
        # The same arguments as `culvert local` (cli/src/local/azurite.rs::args): every service
        # on loopback, no API version check so newer SDKs are accepted.
        cmd = [self.args.azurite, "--silent", "--location", loc, "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
               "--tableHost", "127.0.0.1", "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(tbl),
               "--skipApiVersionCheck", "--loose"]
        with open(self.azurite_log, "w") as lf:
            self.azurite = self.popen(cmd, stdout=lf, stderr=subprocess.STDOUT)

        def listening():
            try:
                with socket.create_connection(("127.0.0.1", blob), timeout=1):
                    return True
            except OSError:
                return False

        self.wait_for("Azurite", self.azurite, self.azurite_log, listening)
        self.blob_port = blob

    def start_azure_local(self, token_port, vault_port):
        d = os.path.join(self.work, "azure-local")
        os.makedirs(os.path.join(d, "state"))
        self.identity_header = secrets.token_hex(16)
        self.agent_id = {"name": "agent", "client_id": str(uuid.uuid4()), "object_id": str(uuid.uuid4())}
        self.bootstrap_id = {"name": "bootstrap", "client_id": str(uuid.uuid4()), "object_id": str(uuid.uuid4())}
        config = {
            "tenant_id": str(uuid.uuid4()),
            "identities": [self.agent_id, self.bootstrap_id],
            "token_endpoint": {"listen": f"127.0.0.1:{token_port}", "header": self.identity_header},
            "vaults": [{
                "name": VAULT,
                "listen": f"127.0.0.1:{vault_port}",
                "access_policies": [
                    # What an agent needs for buffer data keys, and no more.
                    {"object_id": self.agent_id["object_id"], "keys": ["get", "decrypt", "wrapKey", "unwrapKey"]},
                    {"object_id": self.bootstrap_id["object_id"], "keys": ["all"]},
                ],
            }],
        }
        cfg_path = os.path.join(d, "config.json")
        with open(cfg_path, "w") as f:
            json.dump(config, f, indent=2)
        ready = os.path.join(d, "ready.json")
        self.azure_local_log = os.path.join(self.work, "logs", "azure-local.log")
        env = dict(self.env)
        # Debug on the vault module logs one line per request, which is how the runs below count
        # the wrapkey/unwrapkey calls of configuration B.
        env["RUST_LOG"] = "info,culvert_azure_local::vault=debug"
        with open(self.azure_local_log, "w") as lf:
            self.azure_local = self.popen([self.args.azure_local, "--state-dir", os.path.join(d, "state"),
                                           "--config", cfg_path, "--ready-file", ready],
                                          env=env, stdout=lf, stderr=subprocess.STDOUT)

        def is_ready():
            try:
                with open(ready) as f:
                    self.endpoints = json.load(f)
                return True
            except (OSError, ValueError):
                return False

        self.wait_for("culvert-azure-local", self.azure_local, self.azure_local_log, is_ready)
        self.identity_endpoint = self.endpoints["identity_endpoint"]
        # Key Vault clients send tokens over TLS only, so the agent gets the stand-in's https
        # address and trusts its CA through CULVERT_AZURE_CA_FILE (honoured for loopback only).
        # A stand-in without https (older builds) leaves the plain http address.
        https = (self.endpoints.get("vaults_https") or {}).get(VAULT)
        self.ca_file = self.endpoints.get("ca_certificate") if https else None
        self.vault_url = (https or self.endpoints["vaults"][VAULT]).rstrip("/")
        handlers = [urllib.request.ProxyHandler({})]
        if self.ca_file:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.ca_file)))
        self.vault_opener = urllib.request.build_opener(*handlers)

    def create_vault_key(self):
        """The buffer's key-encryption key, made the way an operator would: with a token of an
        identity that has every key permission (the agent's own may not create keys)."""
        q = urllib.parse.urlencode({"api-version": "2019-08-01", "resource": VAULT_RESOURCE,
                                    "client_id": self.bootstrap_id["client_id"]})
        tok = self.http_json("GET", f"{self.identity_endpoint}?{q}",
                             {"X-IDENTITY-HEADER": self.identity_header, "metadata": "true"})
        if not tok.get("access_token"):
            raise Broken(f"token endpoint answered without access_token: {sorted(tok)}")
        key = self.http_json("POST", f"{self.vault_url}/keys/{KEY_NAME}/create?api-version={VAULT_API}",
                             {"Authorization": f"Bearer {tok['access_token']}"}, {"kty": "RSA", "key_size": 3072},
                             opener=self.vault_opener)
        kid = (key.get("key") or {}).get("kid")
        if not kid:
            raise Broken(f"creating the vault key returned no kid: {key}")
        self.key_url = f"{self.vault_url}/keys/{KEY_NAME}"
        log(f"vault key created: {kid}")

    # ---------------------------------------------------------------- setup

    def setup(self):
        a = self.args
        taken = set()
        sp, tp, self.metrics_port = free_port(taken), free_port(taken), free_port(taken)
        azurite_ports = (free_port(taken), free_port(taken), free_port(taken))
        token_port, vault_port = free_port(taken), free_port(taken)
        log(f"PostgreSQL {a.pg_version} from {self.pgbin}; source port {sp}, target port {tp}; work dir {self.work}")
        self.src = self.init_cluster("source", sp)
        self.tgt = self.init_cluster("target", tp)
        self.sql(sp, "postgres", "CREATE DATABASE app")
        log(f"generating {a.rows} rows")
        self.gen_seconds = self.generate_events(sp, "app", a.rows)
        self.size_total = int(self.one(sp, "app", "SELECT pg_total_relation_size('events')"))
        self.size_heap = int(self.one(sp, "app", "SELECT pg_table_size('events')"))
        self.source_sum = self.checksum(sp, "app")
        log(f"generated in {self.gen_seconds:.1f} s: pg_total_relation_size {self.size_total / MIB:.0f} MiB "
            f"(heap+toast {self.size_heap / MIB:.0f} MiB)")

        self.start_azurite(azurite_ports)
        log(f"Azurite ({a.azurite}) blob service on 127.0.0.1:{self.blob_port}")
        self.start_azure_local(token_port, vault_port)
        log(f"culvert-azure-local: token endpoint {self.identity_endpoint}, vault {self.vault_url}")
        self.create_vault_key()

        os.makedirs(os.path.join(self.work, "keys"))
        self.keyring = os.path.join(self.work, "keys", "keyring.json")
        # Compile the components once, outside the measurements (a deployed agent has a warm
        # cache), and let both pipeline files be validated before anything is timed.
        self.fresh_db("bench_check")
        t = now()
        for cfg in CONFIGS:
            path, env = self.pipeline_for(cfg, "check", "bench_check")
            self.compile_components(path, env)
        self.compile_seconds = now() - t
        self.drop_db("bench_check")
        log(f"culvert-agent check ok for A and B ({self.compile_seconds:.1f} s including component compilation)")

    # ---------------------------------------------------------------- runs

    def pipeline_for(self, cfg, tag, db):
        """(pipeline path, agent environment) of configuration cfg for run `tag`."""
        a = self.args
        if cfg == "A":
            buffer = {"url": f"file://{os.path.join(self.work, f'buffer-{tag}')}", "key": f"file://{self.keyring}"}
            env = self.agent_env()
        else:
            buffer = {"url": f"http://127.0.0.1:{self.blob_port}/devstoreaccount1/{CONTAINER}/{tag}",
                      "key": self.key_url}
            # NO_PROXY as well: the Azure SDK honours proxy variables, and a proxy cannot reach
            # the loopback stand-ins.
            no_proxy = ",".join(x for x in (self.env.get("NO_PROXY"), "127.0.0.1,localhost") if x)
            extra = {
                "IDENTITY_ENDPOINT": self.identity_endpoint,
                "IDENTITY_HEADER": self.identity_header,
                "CULVERT_AZURE_CREDENTIAL": "managed-identity",
                "CULVERT_AZURE_CLIENT_ID": self.agent_id["client_id"],
                "NO_PROXY": no_proxy,
                "no_proxy": no_proxy,
            }
            if self.ca_file:
                extra["CULVERT_AZURE_CA_FILE"] = self.ca_file
            env = self.agent_env(extra)
        buffer["max_bytes"] = a.buffer_bytes
        if a.segments_per_key:
            buffer["segments_per_key"] = a.segments_per_key
        path = os.path.join(self.work, f"pipeline-{tag}.toml")
        with open(path, "w") as f:
            f.write(pipeline_toml(f"bench-{tag}", self.src["port"], self.tgt["port"], db, buffer))
        return path, env

    def sample(self, pid):
        st = read_stat(pid)
        m = self.metrics() or {}
        return {
            "t": now(),
            "agent_cpu": st[1] if st else None,
            "tgt_rows": m.get(("culvert_rows_total", "target")),
            "src_bytes": m.get(("culvert_bytes_total", "source")),
        }

    def drop_source_objects(self, pipeline):
        """Drop the slot and publication the run's agent made on the source (named after the pipeline)."""
        name = "culvert_" + pipeline.replace("-", "_").lower()
        sp = self.src["port"]
        deadline = now() + 60
        while self.one(sp, "app", f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}' AND active") != "0":
            if now() > deadline:
                raise Broken(f"replication slot {name} still active 60 s after the agent stopped")
            time.sleep(POLL)
        self.sql(sp, "app", f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                            f"WHERE slot_name = '{name}';\nDROP PUBLICATION IF EXISTS {name}")

    def snapshot(self, cfg, rnd):
        a = self.args
        tag = f"{cfg.lower()}{rnd}"
        pipeline, db = f"bench-{tag}", f"run_{tag}"
        self.fresh_db(db)
        path, env = self.pipeline_for(cfg, tag, db)
        self.checkpoint()
        marks = {}
        samples = []
        helper0, ops0 = self.helper_cpu(), self.vault_ops()
        log(f"run {tag}: {CONFIGS[cfg]}")
        t0 = now()
        p, logpath = self.start_agent(tag, path, env)

        def done(s):
            if s["tgt_rows"] is not None and s["tgt_rows"] >= a.rows:
                marks["tgt"] = s["t"]
                marks["agent_cpu"] = s["agent_cpu"]
                marks["bytes"] = s["src_bytes"]
                marks["hwm"] = proc_status(p.pid, "VmHWM")
                marks["helper"] = self.helper_cpu() - helper0
                return True
            return False

        try:
            self.watch_agent(p, logpath, done, f"run {tag}", samples)
            # Let the agent commit its first change position before stopping it, so that the
            # stop is the ordinary one of a streaming pipeline (an error there is a problem).
            deadline = now() + 120
            probe = Session(self, self.tgt["port"], db)
            try:
                while self.position_kind(probe, pipeline) != 1:
                    if p.poll() is not None or now() > deadline:
                        raise Broken(f"run {tag}: the agent did not switch to streaming after its snapshot:\n"
                                     f"{self.tail(logpath)}")
                    time.sleep(POLL)
            finally:
                probe.close()
            hwm = max(marks.get("hwm") or 0, proc_status(p.pid, "VmHWM") or 0)
        finally:
            self.stop_agent(p, f"run {tag}")
        ops1 = self.vault_ops()
        res = {"cfg": cfg, "tag": tag, "seconds": marks["tgt"] - t0, "agent_cpu": marks["agent_cpu"],
               "rss": hwm or None, "bytes": marks["bytes"], "helper_cpu": marks["helper"],
               "wrap": ops1[0] - ops0[0], "unwrap": ops1[1] - ops0[1]}
        got = self.checksum(self.tgt["port"], db)
        if got != self.source_sum:
            raise Broken(f"run {tag}: the target differs from the source: (count, hash) {got}, source {self.source_sum}")
        log(f"run {tag}: {res['seconds']:.2f} s, verified (count and row hash equal the source)")
        if cfg == "B" and res["wrap"] == 0:
            raise Broken(f"run {tag}: the vault saw no wrapkey request; the blob buffer did not use the vault key")
        self.drop_db(db)
        self.drop_source_objects(pipeline)
        shutil.rmtree(os.path.join(self.work, f"buffer-{tag}"), ignore_errors=True)
        return res


# -------------------------------------------------------------------- report


def report(r, runs):
    a = r.args
    print("\n" + "=" * 100)
    print(f"Culvert buffer store benchmark   PostgreSQL {a.pg_version}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"agent {a.agent} ({agent_identity(a.agent)})")
    la0, la1 = r.load_before, os.getloadavg()
    print(f"load average (1/5/15 min) before the run {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, after "
          f"{la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}; other work on this machine makes the figures noisy")
    print(f"events: {a.rows} rows, pg_total_relation_size {r.size_total / MIB:.0f} MiB (heap {r.size_heap / MIB:.0f} MiB); "
          f"[buffer] max_bytes {a.buffer_bytes}, segments_per_key {a.segments_per_key or 'default'}; "
          f"{a.repeat} round(s) A B")
    print("=" * 100)

    rows = []
    for x in runs:
        mib = x["bytes"] / MIB if x["bytes"] else None
        rows.append([x["tag"], x["cfg"], f"{x['seconds']:.2f}", f"{a.rows / x['seconds']:,.0f}",
                     "-" if mib is None else f"{mib / x['seconds']:.1f}", f"{x['agent_cpu']:.1f}",
                     "-" if x["rss"] is None else f"{x['rss']:.0f}",
                     f"{x['helper_cpu']:.1f}" if x["cfg"] == "B" else "-",
                     f"{x['wrap']}/{x['unwrap']}" if x["cfg"] == "B" else "-"])
    print("\nRUNS (in the order they ran)")
    table(rows, [("run", "<"), ("config", "<"), ("seconds", ">"), ("rows/s", ">"), ("MiB/s", ">"),
                 ("agent CPU s", ">"), ("peak RSS MiB", ">"), ("Azurite+vault CPU s", ">"), ("wrap/unwrap", ">")])

    med = {}
    rows = []
    for cfg, label in CONFIGS.items():
        xs = [x for x in runs if x["cfg"] == cfg]
        sec = median([x["seconds"] for x in xs])
        mib = median([x["bytes"] / MIB for x in xs if x["bytes"]])
        cpu = median([x["agent_cpu"] for x in xs])
        rss = max((x["rss"] for x in xs if x["rss"]), default=None)
        helper = median([x["helper_cpu"] for x in xs])
        med[cfg] = sec
        rows.append([f"{cfg}  {label}", str(len(xs)), f"{sec:.2f}", f"{a.rows / sec:,.0f}",
                     "-" if mib is None else f"{mib / sec:.1f}", f"{cpu:.1f}",
                     "-" if rss is None else f"{rss:.0f}", f"{helper:.1f}" if cfg == "B" else "-"])
    ratio = med["B"] / med["A"]
    print("\nSNAPSHOT BY BUFFER (medians over the runs; peak RSS is the highest VmHWM of any run)")
    table(rows, [("configuration", "<"), ("runs", ">"), ("seconds", ">"), ("rows/s", ">"), ("MiB/s", ">"),
                 ("agent CPU s", ">"), ("peak RSS MiB", ">"), ("Azurite+vault CPU s", ">")])
    print("seconds = agent start until the target committed every row; MiB/s = Arrow IPC MiB the source stage "
          "wrote into the buffer (culvert_bytes_total) per second; Azurite+vault CPU = the two stand-ins, "
          "which share the machine with the agent in B; wrap/unwrap = the vault's wrapkey/unwrapkey requests")
    print(f"(culvert-agent check before the runs, which compiles the connector components into the cache: "
          f"{r.compile_seconds:.1f} s; not included above)")

    overhead = ratio - 1
    print("\nOVERHEAD OF B AGAINST A")
    print(f"  B / A median seconds = {med['B']:.2f} / {med['A']:.2f} = {ratio:.3f}x ({overhead:+.1%})")
    print("\nTARGETS")
    print(f"  [{'PASS' if overhead < TARGET_OVERHEAD else 'FAIL'}] blob buffer + vault key overhead on the snapshot "
          f"< {TARGET_OVERHEAD:.0%}: {overhead:+.1%}")
    for line in agent_log_findings(r):
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="an empty work directory (buffer_store.sh makes one)")
    ap.add_argument("--pgbin", required=True)
    ap.add_argument("--pg-version", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--azure-local", required=True, help="the culvert-azure-local binary")
    ap.add_argument("--azurite", required=True, help="the azurite executable")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of A then B")
    ap.add_argument("--buffer-bytes", type=int, default=256 * MIB, help="[buffer] max_bytes")
    ap.add_argument("--segments-per-key", type=int, default=None,
                    help="[buffer] segments_per_key (default: not set, the agent's default)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds one run may take (default max(300, rows/4000))")
    args = ap.parse_args()
    if args.timeout is None:
        args.timeout = max(300.0, args.rows / 4000)
    if args.rows < 1000 or args.repeat < 1 or args.buffer_bytes < MIB:
        print("--rows must be >= 1000, --repeat >= 1 and --buffer-bytes >= 1048576", file=sys.stderr)
        return 2

    catch_signals()

    r = Runner(args)

    def body():
        r.setup()
        runs = []
        for rnd in range(1, args.repeat + 1):
            for cfg in CONFIGS:
                runs.append(r.snapshot(cfg, rnd))
        report(r, runs)

    return run_to_status(r, body)


if __name__ == "__main__":
    sys.exit(main())
