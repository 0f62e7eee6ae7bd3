#!/usr/bin/env bash
# Sets up what is missing, builds everything (connectors included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace
# Connector unit tests run natively; the components themselves are exercised by the end-to-end tests.
(cd connectors-wasm && cargo test --release --target "$(rustc -vV | sed -n 's/^host: //p')")
cargo test --release --workspace -- --test-threads="${TEST_THREADS:-2}"
