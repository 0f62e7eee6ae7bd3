#!/usr/bin/env bash
# Installs what building and testing Culvert needs, when it is missing:
# PostgreSQL server binaries, the wasm32-wasip2 Rust target, a `postgres` system user,
# Azurite (Azure Storage emulator), wrk and schemathesis (API load and schema checks).
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

apt_updated=""
apt_install() { # packages...
    local sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$apt_updated" ]; then
        $sudo_cmd apt-get update -qq
        apt_updated=1
    fi
    $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}

have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }

if ! have_pg || ! command -v psql >/dev/null || ! command -v pg_recvlogical >/dev/null || ! command -v openssl >/dev/null; then
    log "installing PostgreSQL"
    # Only the binaries are needed: tests start their own throwaway clusters.
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo_cmd tee /etc/postgresql-common/createcluster.conf >/dev/null
    apt_install postgresql postgresql-client openssl python3
fi
have_pg || { log "PostgreSQL server binaries are still missing under /usr/lib/postgresql"; exit 1; }

if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    log "creating the postgres system user (initdb refuses to run as root)"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

if ! command -v cargo >/dev/null; then
    log "cargo is missing: install Rust with rustup first"
    exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    log "adding the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

# Azurite (the Azure Storage emulator): queues of the local Functions runtime.
azurite_cached="$HOME/.cache/culvert/npm/node_modules/.bin/azurite"
if [ -z "${AZURITE_BIN:-}" ] && ! command -v azurite >/dev/null && [ ! -x "$azurite_cached" ]; then
    command -v npm >/dev/null || { log "installing Node.js and npm"; apt_install nodejs npm; }
    log "installing Azurite under ~/.cache/culvert/npm"
    npm install --prefix "$HOME/.cache/culvert/npm" azurite@3 >/dev/null
fi
[ -n "${AZURITE_BIN:-}" ] || command -v azurite >/dev/null || [ -x "$azurite_cached" ] || { log "Azurite is still missing"; exit 1; }

# Node.js builds and tests the JavaScript connector SDK, templates and example.
command -v npm >/dev/null || { log "installing Node.js and npm"; apt_install nodejs npm; }

# wrk drives the closed-loop half of bench/control_plane.sh.
command -v wrk >/dev/null || { log "installing wrk"; apt_install wrk; }
command -v wrk >/dev/null || { log "wrk is still missing"; exit 1; }

# schemathesis checks the served OpenAPI document (tests/tests/e2e/api_schema.rs).
venv="$HOME/.cache/culvert/venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -c 'import venv, ensurepip' 2>/dev/null || { log "installing python3-venv"; apt_install python3-venv; }
    log "installing schemathesis under ~/.cache/culvert/venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q schemathesis
fi
# pyarrow checks the Arrow IPC the Python and JavaScript connector SDKs write (tests only).
if ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
    log "installing pyarrow under ~/.cache/culvert/venv"
    "$venv/bin/pip" install -q pyarrow
fi
log "ready"
