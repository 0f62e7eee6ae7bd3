#!/usr/bin/env bash
# The local demo: two throwaway PostgreSQL clusters, sample data, culvert-agent with the
# WebAssembly connectors, an exact initial copy, then live changes flowing for a while.
#   DEMO_SECONDS=N   how long to show live changes (default 20; 0 = until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "[demo] building (first build compiles wasmtime and the connectors; later ones are quick)" >&2
cargo build --release -p culvert-agent-host >&2

WORK="${DEMO_DIR:-/tmp/culvert-demo}"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
AS_PG=()
[ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

AGENT_PID=""
cleanup() {
    [ -n "$AGENT_PID" ] && kill -TERM "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
    for c in source target; do
        [ -d "$WORK/$c" ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/$c" -m fast -w stop >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

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

METRICS_PORT=$(free_port)
cat > "$WORK/pipeline.toml" <<EOF2
name = "shop"

[source]
connector = "postgres-source"
host = "127.0.0.1"
port = $SRC_PORT
user = "postgres"
database = "shop"
tables = ["public.*"]
sslmode = "disable"

[target]
connector = "postgres-target"
host = "127.0.0.1"
port = $DST_PORT
user = "postgres"
database = "replica"
sslmode = "disable"

[buffer]
url = "file://$WORK/buffer"
EOF2
echo "[demo] pipeline file: $WORK/pipeline.toml; metrics: http://127.0.0.1:$METRICS_PORT/metrics" >&2
./target/release/culvert-agent run --pipeline "$WORK/pipeline.toml" \
    --metrics-addr "127.0.0.1:$METRICS_PORT" 2>"$WORK/agent.log" &
AGENT_PID=$!

start=$(date +%s.%N)
for _ in $(seq 1 600); do
    n=$(dst -c "SELECT count(*) FROM orders" 2>/dev/null || echo 0)
    [ "$n" = 200000 ] && break
    kill -0 "$AGENT_PID" 2>/dev/null || { echo "[demo] the agent stopped:" >&2; cat "$WORK/agent.log" >&2; exit 1; }
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
        lag=$(python3 -c "import urllib.request,sys; print(next((l.split()[-1] for l in urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().splitlines() if l.startswith('culvert_replication_lag_bytes')), 0))" "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null || echo 0)
        echo "[demo] source orders=$(src -c 'SELECT count(*) FROM orders') target orders=$(dst -c 'SELECT count(*) FROM orders') lag=${lag:-0} bytes" >&2
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
    echo "[demo] replica differs from the source; agent log: $WORK/agent.log" >&2
    exit 1
fi
tail -n 3 "$WORK/agent.log" >&2
