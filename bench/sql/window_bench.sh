#!/usr/bin/env bash
# window_bench.sh: how fast the relay's window functions read the outbox,
# as ratios against a plain primary-key keyset scan over the same rows, in
# the same run (issue 3; figures in bench/sql/RESULTS.md). Not a test.
#
#   bench/sql/window_bench.sh            # 1M-row backlog, 1000 steady windows
#   ROWS=200000 WINDOWS=300 bench/sql/window_bench.sh   # quicker
#
# Backlog: ROWS rows (256-byte payloads, 16 keys) committed in 1000-row
# transactions into a fresh database, then paged PAGE rows at a time
#   relay:    outbox.fetch_page(done, next, after_id, PAGE, 1e9)
#   baseline: SELECT ... FROM outbox.event WHERE id > $after ORDER BY id LIMIT PAGE
# Steady state: the ROWS rows stay (retention keep, already relayed); each
# round commits WINDOW_ROWS new rows, then
#   relay:    outbox.window_open() + outbox.fetch_page(done, next, 0, PAGE, 1e9)
#   baseline: the same keyset SELECT from the last id seen
# Both sides are driven by pgbench (one client, extended protocol like the
# relay's PQexecParams), which receives every row of every page. Each side
# runs ROUNDS times, interleaved; the best run of each is compared.
#
# Connection: OUTBOX_PG_URL (a superuser; its database is left alone), the
# benchmark database is BENCH_DB (default outbox_bench, dropped at the end).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
url=${OUTBOX_PG_URL:-postgresql://postgres@127.0.0.1:55432/outbox}
db=${BENCH_DB:-outbox_bench}
rows=${ROWS:-1000000}
page=${PAGE:-10000}
windows=${WINDOWS:-1000}
window_rows=${WINDOW_ROWS:-100}
rounds=${ROUNDS:-3}
keep=${KEEP_DB:-0}

# The same server, another database: swap the database of a URL or a
# key=value connection string.
with_db() {
    case $1 in
    postgres://* | postgresql://*)
        printf '%s\n' "$1" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\\1/$2#" ;;
    *) printf '%s dbname=%s\n' "$1" "$2" ;;
    esac
}
bench_url=$(with_db "$url" "$db")
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

work=$(mktemp -d)
cleanup() {
    rm -rf "$work"
    if [ "$keep" != 1 ]; then
        psql_q -d "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

echo "window_bench: $rows backlog rows, pages of $page, $windows steady windows of $window_rows rows, best of $rounds" >&2
psql_q -d "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" 2>/dev/null
psql_q -d "$bench_url" -f "$root/sql/install.sql" >/dev/null

# Rows as an application writes them: 16 keys, 256-byte payloads, no headers.
insert_rows() {
    printf "INSERT INTO outbox.event (topic, key, payload)
    SELECT 'bench', convert_to('key-' || (g %% 16), 'UTF8'), convert_to(repeat(md5(g::text), 8), 'UTF8')
    FROM generate_series(1, %s) AS g" "$1"
}

echo "window_bench: loading $rows rows" >&2
psql_q -d "$bench_url" <<SQL
DO \$\$
BEGIN
    FOR i IN 1 .. ceil($rows / 1000.0)::int LOOP
        $(insert_rows "least(1000, $rows - (i - 1) * 1000)");
        COMMIT;
    END LOOP;
END
\$\$;
SQL
# No ANALYZE and no VACUUM: the relay meets a fresh backlog before autovacuum
# does, and the window functions must not depend on statistics being fresh.

psql_q -d "$bench_url" -At -c "SELECT acquired FROM outbox.lease_acquire('bench', 'bench', 3600000)" >/dev/null
next=$(psql_q -d "$bench_url" -At -c "SELECT outbox.window_open('bench')")
max_id=$(psql_q -d "$bench_url" -At -c "SELECT max(id) FROM outbox.event")
pages=$(( (rows + page - 1) / page ))

cat >"$work/backlog_relay.sql" <<SQL
SELECT id AS after, topic, key, payload, header_names, header_values, created_ms FROM outbox.fetch_page(:done, :next, :after, $page, 1000000000) \aset
SQL
cat >"$work/backlog_plain.sql" <<SQL
SELECT id AS after, topic, key, payload, headers, created_at FROM outbox.event WHERE id > :after ORDER BY id LIMIT $page \aset
SQL

# pgbench: one client, PAGES transactions; prints the run's tps and, with -r,
# per-statement latencies in ms.
run_pgbench() {
    local script=$1 tx=$2
    shift 2
    pgbench -n -M extended -c 1 -j 1 -t "$tx" -r -f "$script" "$@" "$bench_url" 2>&1
}
tps_of() { awk '/^tps = /{print $3; exit}'; }

best_tps() { sort -g | tail -1; }

: >"$work/b_relay"
: >"$work/b_plain"
for r in $(seq 1 "$rounds"); do
    echo "window_bench: backlog round $r" >&2
    run_pgbench "$work/backlog_plain.sql" "$pages" -D after=0 | tps_of >>"$work/b_plain"
    run_pgbench "$work/backlog_relay.sql" "$pages" -D after=0 -D done=1:1: -D next="$next" \
        | tps_of >>"$work/b_relay"
done
b_plain=$(best_tps <"$work/b_plain")
b_relay=$(best_tps <"$work/b_relay")

# Steady state: the backlog counts as relayed and stays (retention keep).
psql_q -d "$bench_url" -At \
    -c "SELECT outbox.advance('bench', 1, 1, '$next', NULL, 0, 86400000)" >/dev/null

cat >"$work/steady_relay.sql" <<SQL
$(insert_rows "$window_rows");
SELECT outbox.window_open('bench') AS next \gset
SELECT id AS after, topic, key, payload, header_names, header_values, created_ms FROM outbox.fetch_page(:done, :next, 0, $page, 1000000000) \aset
SELECT CAST(:next AS text) AS done \gset
SQL
cat >"$work/steady_plain.sql" <<SQL
$(insert_rows "$window_rows");
SELECT id AS after, topic, key, payload, headers, created_at FROM outbox.event WHERE id > :after ORDER BY id LIMIT $page \aset
SQL

# Per-statement latency (ms) of the statement whose text contains $1.
latency_of() { awk -v pat="$1" 'index($0, pat) && $1 ~ /^[0-9.]+$/ {print $1; exit}'; }

: >"$work/s_relay_open"
: >"$work/s_relay_fetch"
: >"$work/s_plain"
for r in $(seq 1 "$rounds"); do
    echo "window_bench: steady round $r" >&2
    last=$(psql_q -d "$bench_url" -At -c "SELECT coalesce(max(id), 0) FROM outbox.event")
    run_pgbench "$work/steady_plain.sql" "$windows" -D after="$last" >"$work/out"
    latency_of "FROM outbox.event WHERE id" <"$work/out" >>"$work/s_plain"
    # Everything committed so far is relayed: start from the current snapshot.
    done_snap=$(psql_q -d "$bench_url" -At -c "SELECT pg_current_snapshot()")
    run_pgbench "$work/steady_relay.sql" "$windows" -D done="$done_snap" >"$work/out"
    latency_of "outbox.window_open" <"$work/out" >>"$work/s_relay_open"
    latency_of "outbox.fetch_page" <"$work/out" >>"$work/s_relay_fetch"
done
s_plain=$(sort -g "$work/s_plain" | head -1)
s_fetch=$(sort -g "$work/s_relay_fetch" | head -1)
s_open=$(sort -g "$work/s_relay_open" | head -1)

mem_gb=$(awk '/^MemTotal:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
pg_version=$(psql_q -d "$bench_url" -At -c "SHOW server_version")

awk -v rows="$rows" -v page="$page" -v windows="$windows" -v wrows="$window_rows" \
    -v b_plain="$b_plain" -v b_relay="$b_relay" \
    -v s_plain="$s_plain" -v s_fetch="$s_fetch" -v s_open="$s_open" \
    -v cpus="$(nproc)" -v mem="$mem_gb" -v pgv="$pg_version" 'BEGIN {
    printf "machine: %s CPUs, %s GB RAM, PostgreSQL %s\n\n", cpus, mem, pgv
    printf "| case | plain keyset rows/s | relay rows/s | ratio |\n"
    printf "| --- | ---: | ---: | ---: |\n"
    printf "| backlog %d rows, pages of %d: fetch_page | %.0f | %.0f | %.2f |\n",
        rows, page, b_plain * page, b_relay * page, b_relay / b_plain
    printf "| steady, %d-row windows over %d kept rows: fetch_page | %.0f | %.0f | %.2f |\n",
        wrows, rows, wrows * 1000 / s_plain, wrows * 1000 / s_fetch, s_plain / s_fetch
    printf "| steady, same: window_open + fetch_page | %.0f | %.0f | %.2f |\n",
        wrows * 1000 / s_plain, wrows * 1000 / (s_open + s_fetch), s_plain / (s_open + s_fetch)
    printf "\nlatency per window (ms): plain %.3f, fetch_page %.3f, window_open %.3f\n",
        s_plain, s_fetch, s_open
}'
