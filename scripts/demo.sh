#!/usr/bin/env bash
# The local demo, through the control plane: `culvert local up` (control store, Azurite, the
# Functions runtime with culvert-functions, local compute), two throwaway PostgreSQL
# clusters with sample data, an environment, two connectors, a pipeline deployed to an
# agent running the WebAssembly connectors, an exact initial copy, then live changes.
#   DEMO_SECONDS=N   how long to show live changes (default 20; 0 = until Ctrl-C)
#   DEMO_KEEP=1      leave the local stack running afterwards (stop it with `culvert local down`)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "[demo] building (first build compiles wasmtime and the connectors; later ones are quick)" >&2
cargo build --release --workspace >&2

WORK="${DEMO_DIR:-/tmp/culvert-demo}"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
AS_PG=()
[ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

CULVERT=(./target/release/culvert --state-dir "$WORK/stack")
STACK_UP=""
cleanup() {
    if [ -n "$STACK_UP" ] && [ "${DEMO_KEEP:-0}" != 1 ]; then "${CULVERT[@]}" local down >&2 || true; fi
    for c in source target; do
        [ -d "$WORK/$c" ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/$c" -m fast -w stop >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

# A stack left running by an earlier DEMO_KEEP=1 run lives in $WORK: stop it first.
[ -x ./target/release/culvert ] && [ -d "$WORK/stack" ] && "${CULVERT[@]}" local down >/dev/null 2>&1 || true
rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
start_cluster() { # name port
    mkdir -p "$WORK/$1"; [ "$(id -u)" = 0 ] && chown postgres "$WORK/$1"
    "${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/$1" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/$1" -l "$WORK/$1/server.log" -w start \
        -o "-c listen_addresses=127.0.0.1 -p $2 -c unix_socket_directories=/tmp -c wal_level=logical" >/dev/null
}
SRC_PORT=$(free_port); start_cluster source "$SRC_PORT"
DST_PORT=$(free_port); start_cluster target "$DST_PORT"
src() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d shop "$@"; }
dst() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DST_PORT" -U postgres -d replica "$@"; }
"$PGBIN/psql" -X -q -h 127.0.0.1 -p "$SRC_PORT" -U postgres -c "CREATE DATABASE shop"
"$PGBIN/psql" -X -q -h 127.0.0.1 -p "$DST_PORT" -U postgres -c "CREATE DATABASE replica"
echo "[demo] source PostgreSQL on 127.0.0.1:$SRC_PORT (database shop), target on 127.0.0.1:$DST_PORT (database replica)" >&2

src <<'SQL'
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text, tags text[], created_at timestamptz NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status order_status NOT NULL,
                     total numeric(12,2), items jsonb, placed_at timestamptz NOT NULL);
CREATE TABLE audit_log (at timestamptz, message text);
ALTER TABLE audit_log REPLICA IDENTITY FULL;
INSERT INTO customers SELECT g, 'Customer ' || g, 'c' || g || '@example.com', ARRAY['tier' || (g % 3)],
       timestamptz '2024-01-01' + g * interval '1 minute' FROM generate_series(1, 20000) g;
INSERT INTO orders SELECT g, 1 + g % 20000, (ARRAY['new','paid','shipped']::order_status[])[1 + g % 3],
       (g % 50000) / 100.0, jsonb_build_object('sku', 'SKU-' || g % 97, 'qty', 1 + g % 5),
       timestamptz '2024-06-01' + g * interval '1 second' FROM generate_series(1, 200000) g;
SQL
echo "[demo] loaded 20,000 customers and 200,000 orders" >&2

API_PORT=7071
python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", 7071))' 2>/dev/null || API_PORT=$(free_port)
echo "[demo] starting the local control plane (culvert local up)" >&2
"${CULVERT[@]}" local up --port "$API_PORT" >&2
STACK_UP=1
"${CULVERT[@]}" env create demo --local >&2
"${CULVERT[@]}" env wait demo --state ready --timeout 120 >&2
export DEMO_DB_PASSWORD="demo-password"
for side in source target; do
    if [ $side = source ]; then port=$SRC_PORT; db=shop; else port=$DST_PORT; db=replica; fi
    "${CULVERT[@]}" connector create "shop-$side" --env demo --type "postgres-$side" \
        --set host=127.0.0.1 --set "port=$port" --set user=postgres --set "database=$db" --set sslmode=disable \
        --secret-env password=DEMO_DB_PASSWORD >&2
    "${CULVERT[@]}" connector validate "shop-$side" --wait --timeout 120 >&2
done
"${CULVERT[@]}" pipeline create shop --source shop-source --target shop-target --tables 'public.*' >&2
"${CULVERT[@]}" pipeline deploy shop >&2
echo "[demo] the password is sealed with the Key Vault key culvert-credentials (the control plane may only encrypt);" \
     "the buffer is the Azurite container culvert-buffers, encrypted under data keys wrapped by culvert-buffer" >&2
start=$(date +%s.%N)
"${CULVERT[@]}" pipeline progress shop >&2
for _ in $(seq 1 600); do
    n=$(dst -c "SELECT count(*) FROM orders" 2>/dev/null || echo 0)
    [ "$n" = 200000 ] && break
    sleep 0.5
done
printf '[demo] initial copy done in %.1f s: %s customers, %s orders on the target\n' \
    "$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$start")" "$(dst -c 'SELECT count(*) FROM customers')" "$(dst -c 'SELECT count(*) FROM orders')" >&2

SECONDS_TO_RUN="${DEMO_SECONDS:-20}"
echo "[demo] writing live changes to the source$( [ "$SECONDS_TO_RUN" = 0 ] && echo ' until Ctrl-C' || echo " for $SECONDS_TO_RUN s")" >&2
i=0; t0=$(date +%s)
while [ "$SECONDS_TO_RUN" = 0 ] || [ $(( $(date +%s) - t0 )) -lt "$SECONDS_TO_RUN" ]; do
    i=$((i + 1))
    src -c "BEGIN;
      INSERT INTO orders SELECT 200000 + $i * 10 + g, 1 + ($i + g) % 20000, 'new', $i + g, '{\"sku\": \"LIVE\"}', now() FROM generate_series(1, 10) g;
      UPDATE orders SET status = 'paid', total = total + 1 WHERE id BETWEEN $i * 50 AND $i * 50 + 20;
      DELETE FROM orders WHERE id = $i * 97;
      INSERT INTO audit_log VALUES (now(), 'batch $i');
      COMMIT;"
    if [ $((i % 4)) = 0 ]; then
        lag=$("${CULVERT[@]}" --output json pipeline status shop 2>/dev/null | python3 -c "import json,sys; p=json.load(sys.stdin)['progress']; print(f\"{p['lag_bytes']} bytes, {p['lag_seconds']:.2f} s\")" 2>/dev/null || echo "?")
        echo "[demo] source orders=$(src -c 'SELECT count(*) FROM orders') target orders=$(dst -c 'SELECT count(*) FROM orders') lag=$lag" >&2
    fi
    sleep 0.25
done

echo "[demo] waiting for the target to catch up, then comparing every row" >&2
for _ in $(seq 1 120); do
    same=1
    for t in customers orders audit_log; do
        [ "$(src -c "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM $t x")" = \
          "$(dst -c "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM $t x")" ] || same=0
    done
    [ $same = 1 ] && break
    sleep 0.5
done
if [ $same = 1 ]; then
    echo "[demo] replica is identical to the source (customers, orders, audit_log)" >&2
else
    echo "[demo] replica differs from the source; logs: $WORK/stack/logs" >&2
    exit 1
fi
"${CULVERT[@]}" pipeline status shop >&2
if grep -rlaF -- "$DEMO_DB_PASSWORD" "$WORK/stack" >/dev/null 2>&1; then
    echo "[demo] the password was found in plaintext under $WORK/stack" >&2
    exit 1
fi
echo "[demo] the password is in no file of the stack: control store, Azurite, logs, agent state" >&2
[ "${DEMO_KEEP:-0}" = 1 ] && echo "[demo] the stack keeps running: ./target/release/culvert --state-dir $WORK/stack local down" >&2
true
