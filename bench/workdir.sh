# Shared by the bench wrappers: a work directory, and the Python side run so that an
# interrupt still stops every process it started. The caller sets BENCH_NAME (work
# directory prefix) and may define bench_cleanup, run before the work directory goes.

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
    # Whatever the Python side could not stop: its children, then the caller's own.
    if [[ -f "$workdir/pids" ]]; then
        while read -r pid; do
            kill -TERM "$pid" 2>/dev/null || true
        done <"$workdir/pids"
    fi
    if declare -F bench_cleanup >/dev/null; then
        bench_cleanup
    fi
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
