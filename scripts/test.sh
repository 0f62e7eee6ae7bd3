#!/usr/bin/env bash
# Sets up what is missing, builds everything (connectors included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
# Connector unit tests run natively; the components themselves are exercised by the end-to-end tests.
(cd connectors-wasm && cargo test --release --target "$(rustc -vV | sed -n 's/^host: //p')") 2>&1 | tee -a "$log" || status=1
cargo test --release --workspace -- --test-threads="${TEST_THREADS:-2}" 2>&1 | tee -a "$log" || status=1
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
