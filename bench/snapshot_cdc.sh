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

BENCH_NAME=bench
BENCH_TOOLS=(pg_recvlogical)
# shellcheck source=bench/common.sh
source "$here/common.sh"

run_python "$here/snapshot_cdc.py" --workdir "$workdir" --pgbin "$PGBIN" --pg-version "$pg_version" \
    --agent "$AGENT"
