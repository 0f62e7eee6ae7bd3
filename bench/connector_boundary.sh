#!/usr/bin/env bash
# What the connector sandbox boundary costs, per SDK language: rows/s and Arrow IPC bytes/s
# through a no-op source and a no-op destination made from the `culvert connector new`
# templates (the source generates `rows` rows of demo.items; the destination, with
# `discard = true`, drops every batch and keeps the position in memory), run by the real
# `culvert-agent run`. For each language L of --langs it measures
#   rust -> rust   the baseline every row is compared with
#   L -> L         both sides in L
#   L -> rust      the cost of an L source (the Rust destination is the cheapest sink)
#   rust -> L      the cost of an L destination
# each --repeat times (rounds interleave the pairs so load drift hits them alike), and
# reports medians: seconds from the agent's start until the destination applied the last
# position, rows/s, MiB/s, agent CPU seconds, peak RSS, the agent's CPU once idle, ratios to
# rust -> rust, and per language the extra time and CPU per row of its source and of its
# destination. It also reports each component's size and first-load compile time (measured
# apart; the runs use a warm component cache, as a deployed agent does).
#
# Usage:
#   bench/connector_boundary.sh                          # 1,000,000 rows, 3 rounds
#   bench/connector_boundary.sh --rows 300000 --repeat 1 --langs python
#
# Options (each also from the environment variable named):
#   --rows N          rows the source produces (ROWS; default 1000000)
#   --batch-rows N    rows per batch: the pipeline's batch_rows and the source's (BATCH_ROWS;
#                     default 10000)
#   --repeat N        rounds over all pairs; medians are reported (REPEAT; default 3)
#   --langs LIST      comma-separated of rust,python,js (LANGS; default rust,python,js);
#                     rust is always built, it is the baseline
#   --timeout S       seconds one run may take (TIMEOUT; default max(120, rows/2000))
#   --workdir DIR     where the work directory is made (WORKDIR_BASE; default ${TMPDIR:-/tmp})
#   --buffer-dir DIR  where the runs' [buffer] directories go (BUFFER_DIR; default /dev/shm when
#                     writable, so that the buffer's fsyncs do not hide the boundary, else the
#                     work directory)
#   --keep            keep the work directory: projects, components, pipelines, logs (KEEP=1)
#   --agent PATH      culvert-agent (AGENT; default target/release/culvert-agent)
#   --culvert PATH    culvert, for `connector new` (CULVERT; default target/release/culvert)
#   --no-build        skip `cargo build --release -p culvert-agent-host -p culvert-cli`
#                     (NO_BUILD=1); the six template projects are always created and built
#   CONNECTOR_TARGET_DIR  CARGO_TARGET_DIR of the Rust projects (default target/connector-projects,
#                     shared so their dependencies compile once)
#
# Needs python3, cargo with the wasm32-wasip2 target (the Rust build.sh adds it), and for the
# other languages what their build.sh needs: python3 with venv (componentize-py is installed
# into ~/.cache/culvert/tools) and node + npm.
# Exit status: 0 when every run completed and delivered every row, 1 when something broke
# or a run misbehaved (listed under PROBLEMS), 2 on bad usage.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

die() { echo "connector_boundary.sh: $*" >&2; exit 2; }

py_args=()
NO_BUILD="${NO_BUILD:-0}"
[[ -n "${ROWS:-}" ]] && py_args+=(--rows "$ROWS")
[[ -n "${BATCH_ROWS:-}" ]] && py_args+=(--batch-rows "$BATCH_ROWS")
[[ -n "${REPEAT:-}" ]] && py_args+=(--repeat "$REPEAT")
[[ -n "${TIMEOUT:-}" ]] && py_args+=(--timeout "$TIMEOUT")
LANGS="${LANGS:-rust,python,js}"
while [[ $# -gt 0 ]]; do
    opt="$1"
    case "$opt" in
        --rows|--batch-rows|--repeat|--timeout)
            [[ $# -ge 2 ]] || die "$opt needs a value"
            [[ "$2" =~ ^[0-9]+$ ]] || die "$opt needs a whole number, got '$2'"
            py_args+=("$opt" "$2"); shift 2 ;;
        --langs) [[ $# -ge 2 ]] || die "$opt needs a value"; LANGS="$2"; shift 2 ;;
        --workdir) [[ $# -ge 2 ]] || die "$opt needs a value"; WORKDIR_BASE="$2"; shift 2 ;;
        --buffer-dir) [[ $# -ge 2 ]] || die "$opt needs a value"; BUFFER_DIR="$2"; shift 2 ;;
        --agent) [[ $# -ge 2 ]] || die "$opt needs a value"; AGENT="$2"; shift 2 ;;
        --culvert) [[ $# -ge 2 ]] || die "$opt needs a value"; CULVERT="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-build) NO_BUILD=1; shift ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$opt' (see --help)" ;;
    esac
done
IFS=',' read -ra lang_list <<<"$LANGS"
[[ ${#lang_list[@]} -gt 0 ]] || die "--langs is empty; name some of rust,python,js"
for l in "${lang_list[@]}"; do
    case "$l" in
        rust|python|js) ;;
        *) die "--langs: unknown language '$l'; use a comma-separated list of rust,python,js" ;;
    esac
done
if [[ -n "${WORKDIR_BASE:-}" ]]; then
    [[ -d "$WORKDIR_BASE" ]] || die "--workdir $WORKDIR_BASE is not a directory"
fi
if [[ -n "${BUFFER_DIR:-}" ]]; then
    [[ -d "$BUFFER_DIR" && -w "$BUFFER_DIR" ]] || die "--buffer-dir $BUFFER_DIR is not a writable directory"
fi

command -v python3 >/dev/null || die "python3 is required"
command -v cargo >/dev/null || die "cargo is required (install Rust with rustup)"
for l in "${lang_list[@]}"; do
    if [[ "$l" == js ]]; then
        command -v node >/dev/null && command -v npm >/dev/null \
            || die "node and npm are required for --langs js (the JS template builds with componentize-js)"
    fi
done

# The agent and the CLI are rebuilt first (a no-op when current): the templates come out
# of the CLI binary, so a stale one would measure old templates.
if [[ "$NO_BUILD" != 1 ]]; then
    echo "building culvert-agent and culvert (cargo build --release -p culvert-agent-host -p culvert-cli)"
    (cd "$root" && cargo build --release -p culvert-agent-host -p culvert-cli) || die "cargo build failed"
fi
AGENT="${AGENT:-$root/target/release/culvert-agent}"
CULVERT="${CULVERT:-$root/target/release/culvert}"
[[ -x "$AGENT" ]] || die "$AGENT not found (build it, or drop --no-build)"
[[ -x "$CULVERT" ]] || die "$CULVERT not found (build it, or drop --no-build)"
"$CULVERT" connector new --help >/dev/null 2>&1 \
    || die "$CULVERT has no \`connector new\`; rebuild it from this tree (drop --no-build)"

BENCH_NAME=connector-boundary
bufdir=""
bench_cleanup() {
    [[ -z "$bufdir" ]] || rm -rf "$bufdir"
}
# shellcheck source=bench/workdir.sh
source "$here/workdir.sh"
if [[ -z "${BUFFER_DIR:-}" ]]; then
    if [[ -d /dev/shm && -w /dev/shm ]]; then BUFFER_DIR=/dev/shm; else BUFFER_DIR="$workdir"; fi
fi
bufdir="$(mktemp -d "$BUFFER_DIR/culvert-boundary-buffers.XXXXXX")"

run_python "$here/connector_boundary.py" --workdir "$workdir" --buffer-dir "$bufdir" --root "$root" \
    --agent "$AGENT" --culvert "$CULVERT" --langs "$LANGS" \
    --cargo-target-dir "${CONNECTOR_TARGET_DIR:-$root/target/connector-projects}" "${py_args[@]}"
