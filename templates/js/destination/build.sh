#!/usr/bin/env bash
# Builds dist/{{name}}.wasm, a WebAssembly component for the Culvert agent, with
# componentize-js (installed into node_modules by `npm install`).
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
if [ ! -f culvert-sdk/culvert-connector.js ] || [ ! -f wit/connector.wit ]; then
    echo "error: culvert-sdk/ or wit/connector.wit is missing; \`culvert connector new\` writes them next to this script" >&2
    exit 1
fi

npm install --no-audit --no-fund --loglevel=error
npm run --silent build
