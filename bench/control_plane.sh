#!/usr/bin/env bash
# Cold start and API latency of the control plane's custom handler (`culvert-functions`),
# spoken to directly as the Functions host does, on one throw-away PostgreSQL control store
# on 127.0.0.1:
#   1. cold start: spawn of `culvert-functions serve` to the first HTTP 200 on GET / (the
#      host's readiness probe; target: median < 50 ms), GET /api/openapi.json and an
#      authenticated GET /api/v1/pipelines, RUNS times each; baseline: spawn to exit of
#      `culvert-functions --version` (what the process itself costs)
#   2. open loop: RATE requests/s for DURATION s at fixed intervals, latency from the scheduled
#      send time, for GET /api/v1/pipelines/{id} and POST /api/v1/connectors (target: p99
#      < 20 ms with every request answered); baselines GET / and GET /api/openapi.json
#   3. closed loop: wrk -t2 -c16 for WRK_SECONDS s on the same GET and POST; baseline GET /
# and a summary table (metric, value, baseline, ratio, target, PASS/FAIL).
#
# Usage:
#   bench/control_plane.sh              # about 3 minutes
#   RUNS=5 DURATION=5 WRK_SECONDS=5 bench/control_plane.sh   # quick run
#
# Environment:
#   RUNS          cold starts per endpoint (default 20)
#   RATE          open-loop requests per second (default 500)
#   DURATION      seconds of each open-loop run (default 20)
#   WRK_SECONDS   seconds of each wrk run (default 15)
#   PGBIN         PostgreSQL server binaries (default: highest /usr/lib/postgresql/*/bin)
#   FUNCTIONS     culvert-functions binary (default: target/release/culvert-functions, built
#                 with `cargo build --release --workspace` if missing)
#   WORKDIR_BASE  where the work directory is created (default ${TMPDIR:-/tmp})
#   KEEP=1        keep the work directory (cluster log, handler logs, wrk output and scripts)
#
# Needs python3, openssl, wrk (scripts/setup.sh installs them), PostgreSQL server binaries, and
# root (the cluster runs as `postgres` through runuser) or a user that can run initdb itself.
# Exit status: 0 when every run completed, 1 when something broke, 2 on bad usage. A missed
# target shows as a FAIL line but does not fail.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

die() { echo "control_plane.sh: $*" >&2; exit 2; }

[[ $# -eq 0 ]] || die "no arguments expected (settings come from the environment; see the header of $0)"
command -v python3 >/dev/null || die "python3 is required"
command -v openssl >/dev/null || die "openssl is required (scripts/setup.sh installs it)"
command -v wrk >/dev/null || die "wrk is required (scripts/setup.sh installs it)"

# No Python packages: the open-loop load generator is part of control_plane.py (see the note at
# its top for why none from PyPI is used), so there is no venv to make.

FUNCTIONS="${FUNCTIONS:-$root/target/release/culvert-functions}"
if [[ ! -x "$FUNCTIONS" ]]; then
    echo "building culvert-functions (cargo build --release --workspace)"
    (cd "$root" && cargo build --release --workspace)
    [[ -x "$FUNCTIONS" ]] || die "cargo build did not produce $FUNCTIONS"
fi
# common.sh builds $AGENT when it is missing; this benchmark does not run the agent.
AGENT="$FUNCTIONS"

BENCH_NAME=control-plane
BENCH_TOOLS=()
# shellcheck source=bench/common.sh
source "$here/common.sh"

run_python "$here/control_plane.py" --workdir "$workdir" --pgbin "$PGBIN" --pg-version "$pg_version" \
    --functions "$FUNCTIONS"
