# Shared by the bench wrappers: finds PostgreSQL and the agent, makes a work directory,
# and runs the Python side so that an interrupt still stops every cluster and process.
# The caller sets BENCH_NAME (work directory prefix), BENCH_TOOLS (extra PostgreSQL
# programs it needs), `here`, `root`, and defines die().

if [[ -z "${PGBIN:-}" ]]; then
    ver="$(ls /usr/lib/postgresql 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)"
    [[ -n "$ver" ]] || die "no PostgreSQL under /usr/lib/postgresql; set PGBIN"
    PGBIN="/usr/lib/postgresql/$ver/bin"
fi
for tool in initdb pg_ctl psql "${BENCH_TOOLS[@]}"; do
    [[ -x "$PGBIN/$tool" ]] || die "$PGBIN/$tool not found"
done
pg_version="$("$PGBIN/pg_ctl" --version | sed -E 's/.*\(PostgreSQL\) ([0-9.]+).*/\1/')"

AGENT="${AGENT:-$root/target/release/culvert-agent}"
if [[ ! -x "$AGENT" ]]; then
    echo "building culvert-agent (cargo build --release)"
    (cd "$root" && cargo build --release)
    [[ -x "$AGENT" ]] || die "cargo build did not produce $AGENT"
fi

if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a postgres user to run the clusters"
fi

workdir="$(mktemp -d "${WORKDIR_BASE:-${TMPDIR:-/tmp}}/culvert-${BENCH_NAME}.XXXXXX")"
chmod 755 "$workdir"
pypid=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n "$pypid" ]] && kill -0 "$pypid" 2>/dev/null; then
        kill -TERM "$pypid" 2>/dev/null || true
        for _ in $(seq 1 120); do
            kill -0 "$pypid" 2>/dev/null || break
            sleep 1
        done
        kill -KILL "$pypid" 2>/dev/null || true
    fi
    # Whatever the Python side could not stop: its children, then the clusters.
    if [[ -f "$workdir/pids" ]]; then
        while read -r pid; do
            kill -TERM "$pid" 2>/dev/null || true
        done <"$workdir/pids"
    fi
    for d in "$workdir/source" "$workdir/target"; do
        if [[ -f "$d/postmaster.pid" ]]; then
            if [[ "$(id -u)" == 0 ]]; then
                timeout 60 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
            else
                timeout 60 "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
            fi
        fi
    done
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "work directory kept: $workdir"
    else
        rm -rf "$workdir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Run the Python side with the arguments given; exits with its status.
run_python() {
    python3 -u "$@" &
    pypid=$!
    set +e
    wait "$pypid"
    status=$?
    set -e
    pypid=""
    exit "$status"
}
