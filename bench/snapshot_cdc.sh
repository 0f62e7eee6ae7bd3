#!/usr/bin/env bash
# Snapshot and CDC throughput of Culvert against PostgreSQL's own tools, in one run on
# the same two throw-away clusters (source and target, both on 127.0.0.1).
#
# Usage:
#   bench/snapshot_cdc.sh                 # 5,000,000 rows (~1.1 GB), burst of 1M inserts + 1M updates
#   ROWS=200000 bench/snapshot_cdc.sh     # quick run; the burst scales to ROWS/5
#
# Environment:
#   ROWS          rows in events (default 5000000)
#   BURST         inserts and updates each in the CDC burst (default min(1000000, ROWS/5))
#   TXN_ROWS      rows per burst transaction (default min(100000, BURST/10), at least 1000)
#   BUFFER_BYTES  culvert [buffer] max_bytes (default 268435456)
#   TIMEOUT       seconds any one phase may take (default max(300, ROWS/4000))
#   PGBIN         PostgreSQL server binaries (default: highest /usr/lib/postgresql/*/bin)
#   AGENT         culvert-agent binary (default: target/release/culvert-agent, built if missing)
#   WORKDIR_BASE  where the work directory is created (default ${TMPDIR:-/tmp})
#   KEEP=1        keep the work directory (cluster logs, agent logs, pipeline file)
#
# Needs python3, PostgreSQL server binaries, and root (clusters run as `postgres` through
# runuser) or a user that can run initdb itself. pgcopydb is used when it is on PATH.
# Exit status: 0 when all runs completed and the replicas match the source, 1 when
# something broke, 2 on bad usage. Missed targets show as FAIL lines but do not fail.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

die() { echo "snapshot_cdc.sh: $*" >&2; exit 2; }

command -v python3 >/dev/null || die "python3 is required"

if [[ -z "${PGBIN:-}" ]]; then
    ver="$(ls /usr/lib/postgresql 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)"
    [[ -n "$ver" ]] || die "no PostgreSQL under /usr/lib/postgresql; set PGBIN"
    PGBIN="/usr/lib/postgresql/$ver/bin"
fi
for tool in initdb pg_ctl psql pg_recvlogical; do
    [[ -x "$PGBIN/$tool" ]] || die "$PGBIN/$tool not found"
done
pg_version="$("$PGBIN/pg_ctl" --version | sed -E 's/.*\(PostgreSQL\) ([0-9.]+).*/\1/')"

AGENT="${AGENT:-$root/target/release/culvert-agent}"
if [[ ! -x "$AGENT" ]]; then
    echo "building culvert-agent (cargo build --release)"
    (cd "$root" && cargo build --release)
    [[ -x "$AGENT" ]] || die "cargo build did not produce $AGENT"
fi

if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a postgres user to run the clusters"
fi

workdir="$(mktemp -d "${WORKDIR_BASE:-${TMPDIR:-/tmp}}/culvert-bench.XXXXXX")"
chmod 755 "$workdir"
pypid=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n "$pypid" ]] && kill -0 "$pypid" 2>/dev/null; then
        kill -TERM "$pypid" 2>/dev/null || true
        for _ in $(seq 1 120); do
            kill -0 "$pypid" 2>/dev/null || break
            sleep 1
        done
        kill -KILL "$pypid" 2>/dev/null || true
    fi
    # Whatever the Python side could not stop: its children, then the clusters.
    if [[ -f "$workdir/pids" ]]; then
        while read -r pid; do
            kill -TERM "$pid" 2>/dev/null || true
        done <"$workdir/pids"
    fi
    for d in "$workdir/source" "$workdir/target"; do
        if [[ -f "$d/postmaster.pid" ]]; then
            if [[ "$(id -u)" == 0 ]]; then
                timeout 60 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
            else
                timeout 60 "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
            fi
        fi
    done
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "work directory kept: $workdir"
    else
        rm -rf "$workdir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

python3 -u "$here/snapshot_cdc.py" --workdir "$workdir" --pgbin "$PGBIN" --pg-version "$pg_version" \
    --agent "$AGENT" &
pypid=$!
set +e
wait "$pypid"
status=$?
set -e
pypid=""
exit "$status"
