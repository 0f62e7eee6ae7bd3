#!/usr/bin/env bash
# Sets up what is missing, builds everything (connectors included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Seconds each phase took, printed at the end: CI time is budgeted.
timings=()
phase_started=$SECONDS
phase() { timings+=("$(printf '%5ds  %s' $((SECONDS - phase_started)) "$1")"); phase_started=$SECONDS; }
./scripts/setup.sh
phase "setup"
log="$(mktemp)"
# Marks the start, so only scratch this run leaves in /tmp is counted at the end.
started="$(mktemp)"
trap 'rm -f "$log" "$started"' EXIT
status=0
# The connector SDKs and examples in Python and JavaScript, natively. They run before the
# build: `npm install` writes sdk/js/node_modules, and the CLI's build script watches sdk/
# (it embeds the SDKs), so installing after the build would make cargo test rebuild the CLI.
py="$HOME/.cache/culvert/venv/bin/python"
for suite in "sdk/python/tests test_*.py" "examples/connectors/http-json-source test_app.py"; do
    set -- $suite
    PYTHONDONTWRITEBYTECODE=1 "$py" -m unittest discover -s "$1" -p "$2" 2>&1 | tee -a "$log" || status=1
done
npm_quiet=(--no-audit --no-fund --no-package-lock --loglevel=error)
(cd sdk/js && npm install "${npm_quiet[@]}" && node --test test/) 2>&1 | tee -a "$log" || status=1
(cd examples/connectors/blob-ndjson-destination && npm install --omit=dev "${npm_quiet[@]}" && npm test) 2>&1 | tee -a "$log" || status=1
phase "Python and JavaScript SDK tests"
# Tests included: a build without them resolves dependency features differently, and the
# test build would then compile wasmtime, cranelift and the Azure SDK a second time.
cargo build --release --workspace --all-targets
phase "build (workspace and first-party components)"
# Connector, SDK and example unit tests run natively, unoptimized (a handful of tests: the
# compile is the cost) and in one target directory, so their shared dependencies build once.
# The components themselves are exercised by the end-to-end tests.
host_triple="$(rustc -vV | sed -n 's/^host: //p')"
for crate in connectors-wasm sdk/rust examples/connectors/datagen-source; do
    (cd "$crate" && CARGO_TARGET_DIR="$OLDPWD/target/connector-projects" CARGO_PROFILE_DEV_DEBUG=line-tables-only \
        cargo test --target "$host_triple") 2>&1 | tee -a "$log" || status=1
done
phase "connector, Rust SDK and datagen unit tests"
cargo test --release --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" 2>&1 | tee -a "$log" || status=1
phase "workspace tests"
# Slowest test binaries, from cargo's "finished in" lines.
while read -r secs bin; do
    timings+=("$(printf '%5.0fs    %s' "$secs" "$bin")")
done < <(awk '/^     Running /{bin=$2} /finished in/{sub(/s$/,"",$NF); print $NF, bin}' "$log" | sort -rn | head -8)
# cargo: "test result: ok. N passed; M failed"; unittest: "Ran N tests" (failures included) then
# "FAILED (failures=M)"; node: "# pass N" / "# fail M".
passed=$(
    {
        grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{print $4}'
        grep -Eo '^Ran [0-9]+ tests?' "$log" | awk '{print $2}'
        grep -Eo '^# pass [0-9]+' "$log" | awk '{print $3}'
    } | awk '{s += $1} END {print s + 0}'
)
failed=$(
    {
        grep -Eo '[0-9]+ failed;' "$log" | awk '{print $1}'
        grep -Eo '^FAILED \(.*\)' "$log" | grep -Eo '[0-9]+'
        grep -Eo '^# fail [0-9]+' "$log" | awk '{print $3}'
    } | awk '{s += $1} END {print s + 0}'
)
printf '%s\n' "time per phase:" "${timings[@]}"
# Disk is budgeted like time: what the build and the tests leave behind.
echo "disk used by build output:"
du -sh target 2>/dev/null | sed 's/^/    /' || true
df -h . | sed 's/^/    /'
# Failed end-to-end tests keep theirs on purpose; anything else left is a leak to fix.
# (culvert-test-cache is the compiled-component cache the tests share between runs.)
leftover() { find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'culvert-*' -newer "$started" ! -name culvert-test-cache "$@" 2>/dev/null | wc -l; }
echo "scratch left in ${TMPDIR:-/tmp} by this run: $(leftover \( -name 'culvert-e2e-*' -o -name 'culvert-pg-*' \)) kept by failed tests, $(leftover ! -name 'culvert-e2e-*' ! -name 'culvert-pg-*') other"
echo "tests: $passed passed, $failed failed"
exit "$status"
