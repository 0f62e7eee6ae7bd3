#!/usr/bin/env bash
# Resilience of Culvert against PostgreSQL's own logical replication, in one run on the same
# two throw-away clusters (source and target, both on 127.0.0.1), under a steady light write
# load on table a:
#   1. resume after a source restart (pg_ctl restart -m fast), RESTARTS times, median
#   2. backfill of a new table b (ROWS rows) added to the running pipeline, and a's lag meanwhile
#      (bound: a's lag stays below 5 s during the backfill; printed as PASS/FAIL)
#   3. the replicas of a and b compared with the source (md5 of every row)
# The baseline is a native subscription (CREATE SUBSCRIPTION; ALTER PUBLICATION ADD TABLE +
# REFRESH PUBLICATION for b) on the same source in the same run; ratios are culvert / native.
#
# Usage:
#   bench/resilience.sh                  # b with 500,000 rows
#   ROWS=200000 bench/resilience.sh      # quicker run
#
# Environment:
#   ROWS          rows in b (default 500000; pad = repeat('x', 100))
#   RESTARTS      source restarts to time (default 3)
#   LOAD_TPS      single-row insert transactions per second on a (default 100)
#   SETTLE        seconds of steady load before each step (default 3)
#   TIMEOUT       seconds any one wait may take (default max(300, ROWS/2000))
#   PGBIN         PostgreSQL server binaries (default: highest /usr/lib/postgresql/*/bin)
#   AGENT         culvert-agent binary (default: target/release/culvert-agent, built if missing)
#   CACHE_DIR     compiled component cache for the agent (default /tmp/culvert-test-cache, shared
#                 with the tests so the first start does not recompile the components)
#   WORKDIR_BASE  where the work directory is created (default ${TMPDIR:-/tmp})
#   KEEP=1        keep the work directory (cluster logs, agent logs, load log, pipeline file)
#
# Needs python3 and PostgreSQL server binaries, and root (clusters run as `postgres` through
# runuser) or a user that can run initdb itself.
# Exit status: 0 when all steps completed and the replicas match the source, 1 when
# something broke, 2 on bad usage. A missed bound shows as a FAIL line but does not fail.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

die() { echo "resilience.sh: $*" >&2; exit 2; }

command -v python3 >/dev/null || die "python3 is required"

BENCH_NAME=resilience
BENCH_TOOLS=()
[[ $# -eq 0 ]] || die "no arguments expected (settings come from the environment; see the header of $0)"

CACHE_DIR="${CACHE_DIR:-/tmp/culvert-test-cache}"
mkdir -p "$CACHE_DIR" || die "cannot create $CACHE_DIR"

# shellcheck source=bench/common.sh
source "$here/common.sh"

run_python "$here/resilience.py" --workdir "$workdir" --pgbin "$PGBIN" --pg-version "$pg_version" \
    --agent "$AGENT" --cache-dir "$CACHE_DIR"
