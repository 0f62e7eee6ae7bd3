#!/usr/bin/env bash
# Builds dist/{{name}}.wasm, a WebAssembly component for the Culvert agent, with
# componentize-py (installed on first use into its own virtual environment).
set -euo pipefail
cd "$(dirname "$0")"

WORLD=source
APP=app
SDK_DIR="${CULVERT_PYTHON_SDK:-culvert-sdk}"
WIT_DIR="${CULVERT_WIT_DIR:-wit}"
COMPONENTIZE_PY_VERSION=0.25.1
TOOLS="${CULVERT_TOOLS_DIR:-$HOME/.cache/culvert/tools}"
VENV="$TOOLS/componentize-py"
CPY="$VENV/bin/componentize-py"

if [ ! -d "$SDK_DIR/culvert_connector" ]; then
    echo "error: the Python SDK is missing: expected $SDK_DIR/culvert_connector (set CULVERT_PYTHON_SDK to the directory holding culvert_connector/)" >&2
    exit 1
fi
if [ ! -e "$WIT_DIR/connector.wit" ]; then
    echo "error: the connector WIT is missing: expected $WIT_DIR/connector.wit (set CULVERT_WIT_DIR)" >&2
    exit 1
fi

installed() {
    [ -x "$CPY" ] && [ "$("$CPY" --version 2>/dev/null)" = "componentize-py $COMPONENTIZE_PY_VERSION" ]
}

install() {
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 not found; install Python 3.10 or newer, then run ./build.sh again" >&2
        exit 1
    fi
    echo "installing componentize-py $COMPONENTIZE_PY_VERSION into $VENV (one time)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" || {
        echo "error: cannot create a virtual environment; install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    }
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
}

if ! installed; then
    mkdir -p "$TOOLS"
    if command -v flock >/dev/null 2>&1; then
        # Builds of several projects may start at once; one installs, the others wait.
        exec 9>"$TOOLS/componentize-py.lock"
        flock 9
        installed || install
        flock -u 9
    else
        install
    fi
fi

# The interpreter that componentize-py runs writes __pycache__ next to the modules it imports:
# it imports a copy of the SDK, so a build leaves the SDK as it found it.
rm -rf dist/.sdk && mkdir -p dist/.sdk && cp -R "$SDK_DIR/culvert_connector" dist/.sdk/
"$CPY" -d "$WIT_DIR" -w "$WORLD" componentize -p . -p dist/.sdk "$APP" -o "dist/{{name}}.wasm.tmp"
mv "dist/{{name}}.wasm.tmp" "dist/{{name}}.wasm"
echo "built dist/{{name}}.wasm"
