#!/usr/bin/env bash
# Builds dist/blob-ndjson-destination.wasm with componentize-js. The SDK is the
# repository's sdk/js (linked, not copied), so its own dependency (apache-arrow) is
# installed there first.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "error: node and npm not found; install Node.js 18 or newer (for example \`apt-get install nodejs npm\`), then run ./build.sh again" >&2
    exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
    echo "error: Node.js $(node --version) is too old; componentize-js needs 18 or newer" >&2
    exit 1
fi

(cd ../../../sdk/js && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
npm install --no-audit --no-fund --no-package-lock --loglevel=error
npm run --silent build
