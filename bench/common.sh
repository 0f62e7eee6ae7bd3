# Shared by the bench wrappers that run PostgreSQL: finds it and the agent, then makes the
# work directory (workdir.sh) whose cleanup also stops the clusters.
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

# Called by workdir.sh's cleanup: the clusters the Python side could not stop.
bench_cleanup() {
    for d in "$workdir/source" "$workdir/target"; do
        if [[ -f "$d/postmaster.pid" ]]; then
            if [[ "$(id -u)" == 0 ]]; then
                timeout 60 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
            else
                timeout 60 "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
            fi
        fi
    done
}

# shellcheck source=bench/workdir.sh
source "$here/workdir.sh"
