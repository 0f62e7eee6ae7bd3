#!/usr/bin/env bash
# Sets up what is missing, builds everything (connectors included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace
cargo test --release --workspace -- --test-threads="${TEST_THREADS:-2}"
