#!/usr/bin/env bash
# Builds dist/{{name}}.wasm, a WebAssembly component (wasm32-wasip2) for the Culvert agent.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust with rustup, then run ./build.sh again" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        echo "adding the wasm32-wasip2 target (one time)" >&2
        rustup target add wasm32-wasip2
    fi
else
    echo "note: rustup not found; the Rust toolchain must already have the wasm32-wasip2 target" >&2
fi

cargo build --release --target wasm32-wasip2
mkdir -p dist
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{name_snake}}.wasm" "dist/{{name}}.wasm"
echo "built dist/{{name}}.wasm"
