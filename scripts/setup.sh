#!/usr/bin/env bash
# Installs what building and testing Culvert needs, when it is missing:
# PostgreSQL server binaries, the wasm32-wasip2 Rust target, and a `postgres` system user.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }

if ! have_pg || ! command -v psql >/dev/null || ! command -v pg_recvlogical >/dev/null || ! command -v openssl >/dev/null; then
    log "installing PostgreSQL"
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # Only the binaries are needed: tests start their own throwaway clusters.
    $sudo_cmd mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo_cmd tee /etc/postgresql-common/createcluster.conf >/dev/null
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq postgresql postgresql-client openssl python3 >/dev/null
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
log "ready"
