#!/usr/bin/env bash
# What keeping Culvert's buffer in Azure Blob storage, with data keys wrapped by a Key Vault
# key, costs against a local directory buffer with a keyring file: the snapshot of one table
# (events, the shape of snapshot_cdc.sh) from a source to a target cluster (both on 127.0.0.1)
# through `culvert-agent run`, alternating
#   A  [buffer] url = "file:///..."  key = "file:///.../keyring.json"
#   B  [buffer] url = "http://127.0.0.1:PORT/devstoreaccount1/bench-buffers/RUN" on Azurite,
#      key = "https://127.0.0.1:VAULTPORT/keys/culvert-buffer" on culvert-azure-local (its CA
#      trusted through CULVERT_AZURE_CA_FILE), the agent signing in with the stand-in's
#      managed-identity endpoint
# for --repeat rounds, each run on a fresh target database and checked against the source
# (count and row hash). Prints per-run and median figures and B's overhead (target < 15%).
#
# Usage:
#   bench/buffer_store.sh                              # 1,000,000 rows, 3 rounds of A B
#   bench/buffer_store.sh --rows 200000 --repeat 1     # quick run
#
# Options (each also from the environment variable named):
#   --rows N              rows in events (default 1000000)
#   --repeat N            rounds of A then B (default 3)
#   --buffer-bytes N      [buffer] max_bytes (default 268435456, as snapshot_cdc.sh)
#   --segments-per-key N  [buffer] segments_per_key (default: not set, the agent's default)
#   --timeout S           seconds one run may take (default max(300, rows/4000))
#   --workdir DIR         where the work directory is made (WORKDIR_BASE; default ${TMPDIR:-/tmp})
#   --keep                keep the work directory: logs, pipeline files, stand-in config (KEEP=1)
#   --agent PATH          culvert-agent (AGENT; default target/release/culvert-agent)
#   --azure-local PATH    culvert-azure-local (AZURE_LOCAL; default target/release/culvert-azure-local)
#   --pgbin DIR           PostgreSQL server binaries (PGBIN; default highest /usr/lib/postgresql/*/bin)
#   --no-build            skip `cargo build --release -p culvert-agent-host -p culvert-azure-local`
#                         (NO_BUILD=1), which otherwise runs first so both binaries match the tree
#   AZURITE_BIN           azurite executable (default: PATH, then
#                         ~/.cache/culvert/npm/node_modules/.bin/azurite as scripts/setup.sh installs it)
#
# Needs python3, node + Azurite (scripts/setup.sh installs them), PostgreSQL server binaries,
# and root (clusters run as `postgres` through runuser) or a user that can run initdb itself.
# Exit status: 0 when all runs completed and every replica matched the source, 1 when something
# broke, 2 on bad usage. A missed target shows as a FAIL line but does not fail.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

die() { echo "buffer_store.sh: $*" >&2; exit 2; }

py_args=()
NO_BUILD="${NO_BUILD:-0}"
[[ -n "${ROWS:-}" ]] && py_args+=(--rows "$ROWS")
[[ -n "${REPEAT:-}" ]] && py_args+=(--repeat "$REPEAT")
[[ -n "${BUFFER_BYTES:-}" ]] && py_args+=(--buffer-bytes "$BUFFER_BYTES")
[[ -n "${SEGMENTS_PER_KEY:-}" ]] && py_args+=(--segments-per-key "$SEGMENTS_PER_KEY")
[[ -n "${TIMEOUT:-}" ]] && py_args+=(--timeout "$TIMEOUT")
while [[ $# -gt 0 ]]; do
    opt="$1"
    case "$opt" in
        --rows|--repeat|--buffer-bytes|--segments-per-key|--timeout)
            [[ $# -ge 2 ]] || die "$opt needs a value"
            [[ "$2" =~ ^[0-9]+$ ]] || die "$opt needs a whole number, got '$2'"
            py_args+=("$opt" "$2"); shift 2 ;;
        --workdir) [[ $# -ge 2 ]] || die "$opt needs a value"; WORKDIR_BASE="$2"; shift 2 ;;
        --agent) [[ $# -ge 2 ]] || die "$opt needs a value"; AGENT="$2"; shift 2 ;;
        --azure-local) [[ $# -ge 2 ]] || die "$opt needs a value"; AZURE_LOCAL="$2"; shift 2 ;;
        --pgbin) [[ $# -ge 2 ]] || die "$opt needs a value"; PGBIN="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-build) NO_BUILD=1; shift ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$opt' (see --help)" ;;
    esac
done
if [[ -n "${WORKDIR_BASE:-}" ]]; then
    [[ -d "$WORKDIR_BASE" ]] || die "--workdir $WORKDIR_BASE is not a directory"
fi

command -v python3 >/dev/null || die "python3 is required"

# Azurite is found the way `culvert local` finds it (cli/src/local/azurite.rs::find).
if [[ -n "${AZURITE_BIN:-}" ]]; then
    [[ -f "$AZURITE_BIN" ]] || die "AZURITE_BIN=$AZURITE_BIN does not exist"
    azurite="$AZURITE_BIN"
elif command -v azurite >/dev/null; then
    azurite="$(command -v azurite)"
elif [[ -n "${HOME:-}" && -f "$HOME/.cache/culvert/npm/node_modules/.bin/azurite" ]]; then
    azurite="$HOME/.cache/culvert/npm/node_modules/.bin/azurite"
else
    die "Azurite was not found (AZURITE_BIN, PATH, ~/.cache/culvert/npm/node_modules/.bin/azurite); install it with scripts/setup.sh"
fi
command -v node >/dev/null || die "node is required to run Azurite (scripts/setup.sh installs it)"

# Both binaries are rebuilt first (a no-op when they are current) because the agent's blob
# buffer and the stand-in change together; a stale one of either would measure the wrong thing.
if [[ "$NO_BUILD" != 1 ]]; then
    echo "building culvert-agent and culvert-azure-local (cargo build --release -p culvert-agent-host -p culvert-azure-local)"
    (cd "$root" && cargo build --release -p culvert-agent-host -p culvert-azure-local) || die "cargo build failed"
fi
AGENT="${AGENT:-$root/target/release/culvert-agent}"
AZURE_LOCAL="${AZURE_LOCAL:-$root/target/release/culvert-azure-local}"
[[ -x "$AGENT" ]] || die "$AGENT not found (build it, or drop --no-build)"
[[ -x "$AZURE_LOCAL" ]] || die "$AZURE_LOCAL not found (build it, or drop --no-build)"

BENCH_NAME=buffer-store
BENCH_TOOLS=()
# shellcheck source=bench/common.sh
source "$here/common.sh"

run_python "$here/buffer_store.py" --workdir "$workdir" --pgbin "$PGBIN" --pg-version "$pg_version" \
    --agent "$AGENT" --azure-local "$AZURE_LOCAL" --azurite "$azurite" "${py_args[@]}"
