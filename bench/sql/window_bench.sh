#!/usr/bin/env bash
# window_bench.sh: how fast the relay's window functions read the outbox, as
# ratios against a plain primary-key keyset scan over the same rows, measured
# in the same run. Not a test; figures go to bench/sql/RESULTS.md.
#
#   bench/sql/window_bench.sh                      # 1M-row backlog, 1000 steady windows
#   ROWS=200000 WINDOWS=300 bench/sql/window_bench.sh   # quicker
#
# Backlog: ROWS rows (256-byte payloads, 16 keys, no headers) committed in
# 1000-row transactions into a fresh database (no ANALYZE: the relay meets a
# backlog before autovacuum does), then paged PAGE rows at a time:
#   relay:    SELECT ... FROM outbox.fetch_page(done, next, after_id, PAGE, MAX_BYTES)
#             (and once more with max_bytes NULL: no byte limit, one pass)
#   baseline: SELECT id, topic, key, payload, headers, created_at
#             FROM outbox.event WHERE id > $after ORDER BY id LIMIT PAGE
# Steady state: the ROWS rows stay, already relayed (retention keep); each
# round commits WINDOW_ROWS new rows (not timed), then reads them (timed):
#   relay:    outbox.window_open() + fetch_page() pages until an empty one
#   baseline: the keyset SELECT from the last id seen, until an empty page
# Both loops run in bench/sql/pagebench.c (libpq, PQexecParams, binary
# results: what the relay does), which receives every column of every row.
# The steady state is measured once more with prepared statements on both
# sides (planned once per session instead of on every call).
# Each side runs ROUNDS times, interleaved with the other; the best run of
# each side is compared (the machine may be shared).
#
# Connection: OUTBOX_PG_URL (a superuser; its own database is left alone);
# the benchmark database BENCH_DB (default outbox_bench) is dropped at the end
# unless KEEP_DB=1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
url=${OUTBOX_PG_URL:-postgresql://postgres@127.0.0.1:55432/outbox}
db=${BENCH_DB:-outbox_bench}
rows=${ROWS:-1000000}
page=${PAGE:-10000}
max_bytes=${MAX_BYTES:-16777216}
windows=${WINDOWS:-1000}
window_rows=${WINDOW_ROWS:-100}
rounds=${ROUNDS:-3}
keep=${KEEP_DB:-0}

. "$root/scripts/lib/pg.sh"  # with_db
bench_url=$(with_db "$url" "$db")
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
say() { echo "window_bench: $*" >&2; }

work=$(mktemp -d)
cleanup() {
    rm -rf "$work"
    if [ "$keep" != 1 ]; then
        psql_q -d "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

cc -O2 -Wall -Wextra -Werror -o "$work/pagebench" "$here/pagebench.c" \
    -I"$(pg_config --includedir)" -L"$(pg_config --libdir)" -lpq

say "$rows backlog rows, pages of $page, $windows steady windows of $window_rows rows, best of $rounds"
psql_q -d "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" 2>/dev/null
psql_q -d "$bench_url" -f "$root/sql/install.sql" >/dev/null

say "loading $rows rows"
psql_q -d "$bench_url" <<SQL
DO \$\$
BEGIN
    FOR i IN 1 .. ceil($rows / 1000.0)::int LOOP
        INSERT INTO outbox.event (topic, key, payload)
        SELECT 'bench', convert_to('key-' || (g % 16), 'UTF8'), convert_to(repeat(md5(g::text), 8), 'UTF8')
        FROM generate_series(1, least(1000, $rows - (i - 1) * 1000)) AS g;
        COMMIT;
    END LOOP;
END
\$\$;
SQL

psql_q -d "$bench_url" -At -c "SELECT acquired FROM outbox.lease_acquire('bench', 'bench', 3600000)" >/dev/null
next=$(psql_q -d "$bench_url" -At -c "SELECT outbox.window_open('bench')")
mid=$((rows / 2))
plan_backlog=$(psql_q -d "$bench_url" -At -c "EXPLAIN (ANALYZE, COSTS OFF)
    SELECT * FROM outbox.fetch_page('1:1:', '$next', $mid, $page, $max_bytes)")

best() { sort -g | head -1; }
: >"$work/b_plain"
: >"$work/b_relay"
: >"$work/b_nolimit"
for r in $(seq 1 "$rounds"); do
    say "backlog round $r"
    "$work/pagebench" backlog "$bench_url" plain '1:1:' "$next" "$page" "$max_bytes" >>"$work/b_plain"
    "$work/pagebench" backlog "$bench_url" relay '1:1:' "$next" "$page" "$max_bytes" >>"$work/b_relay"
    "$work/pagebench" backlog "$bench_url" relay '1:1:' "$next" "$page" null >>"$work/b_nolimit"
done
read -r b_rows b_plain _ < <(sort -k2 -g "$work/b_plain" | head -1)
read -r b_rows_relay b_relay _ < <(sort -k2 -g "$work/b_relay" | head -1)
read -r b_rows_nolimit b_nolimit _ < <(sort -k2 -g "$work/b_nolimit" | head -1)
if [ "$b_rows" != "$rows" ] || [ "$b_rows_relay" != "$rows" ] || [ "$b_rows_nolimit" != "$rows" ]; then
    say "backlog: expected $rows rows, plain read $b_rows, relay read $b_rows_relay and $b_rows_nolimit"
    exit 1
fi

# Steady state: the backlog counts as relayed and stays (retention keep).
psql_q -d "$bench_url" -At \
    -c "SELECT outbox.advance('bench', 1, 1, '$next', NULL, 0, 86400000)" >/dev/null

: >"$work/s_plain"
: >"$work/s_relay"
: >"$work/p_plain"
: >"$work/p_relay"
for r in $(seq 1 "$rounds"); do
    say "steady round $r"
    "$work/pagebench" steady "$bench_url" plain "$windows" "$window_rows" "$page" "$max_bytes" >>"$work/s_plain"
    "$work/pagebench" steady "$bench_url" relay "$windows" "$window_rows" "$page" "$max_bytes" >>"$work/s_relay"
    PAGEBENCH_PREPARED=1 "$work/pagebench" steady "$bench_url" plain "$windows" "$window_rows" "$page" \
        "$max_bytes" >>"$work/p_plain"
    PAGEBENCH_PREPARED=1 "$work/pagebench" steady "$bench_url" relay "$windows" "$window_rows" "$page" \
        "$max_bytes" >>"$work/p_relay"
done
# relay: total and window_open's share; compare fetch_page alone and the loop.
best_relay() { awk '{print $1, $2, $3, $2 - $3}' "$1" | sort -k4 -g | head -1; }
read -r s_rows s_plain _ < <(sort -k2 -g "$work/s_plain" | head -1)
read -r s_rows_relay s_relay s_open _ < <(best_relay "$work/s_relay")
read -r p_rows p_plain _ < <(sort -k2 -g "$work/p_plain" | head -1)
read -r p_rows_relay p_relay p_open _ < <(best_relay "$work/p_relay")
expect=$((windows * window_rows))
for n in "$s_rows" "$s_rows_relay" "$p_rows" "$p_rows_relay"; do
    if [ "$n" != "$expect" ]; then
        say "steady: expected $expect rows per run, got $s_rows, $s_rows_relay, $p_rows, $p_rows_relay"
        exit 1
    fi
done

# One steady window's plan, after the runs (rows kept: 1M + the windows').
done_snap=$(psql_q -d "$bench_url" -At -c "SELECT pg_current_snapshot()")
psql_q -d "$bench_url" -c "INSERT INTO outbox.event (topic, key, payload)
    SELECT 'bench', convert_to('k', 'UTF8'), convert_to(repeat('x', 256), 'UTF8') FROM generate_series(1, $window_rows)"
next_snap=$(psql_q -d "$bench_url" -At -c "SELECT pg_current_snapshot()")
plan_steady=$(psql_q -d "$bench_url" -At -c "EXPLAIN (ANALYZE, COSTS OFF)
    SELECT * FROM outbox.fetch_page('$done_snap', '$next_snap', 0, $page, $max_bytes)")
kept=$(psql_q -d "$bench_url" -At -c "SELECT count(*) FROM outbox.event")

# What the optional NOTIFY trigger costs writers: 8 clients committing
# one-row transactions, without and with it.
echo "INSERT INTO outbox.event (topic, key, payload) VALUES ('bench', '\\x6b', '\\x76');" >"$work/writer.sql"
writer_tps() {
    pgbench -n -M prepared -c 8 -j 2 -T "${WRITER_SECONDS:-5}" -f "$work/writer.sql" "$bench_url" 2>/dev/null \
        | awk '/^tps = / {printf "%.0f", $3; exit}'
}
say "writers without NOTIFY"
w_off=$(writer_tps)
psql_q -d "$bench_url" -At -c "SELECT outbox.notify_enable()" >/dev/null
say "writers with NOTIFY"
w_on=$(writer_tps)
psql_q -d "$bench_url" -At -c "SELECT outbox.notify_disable()" >/dev/null

mem_gb=$(awk '/^MemTotal:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
pg_version=$(psql_q -d "$bench_url" -At -c "SHOW server_version")
awk -v rows="$rows" -v page="$page" -v windows="$windows" -v wrows="$window_rows" \
    -v b_plain="$b_plain" -v b_relay="$b_relay" -v b_nolimit="$b_nolimit" -v max_bytes="$max_bytes" \
    -v s_plain="$s_plain" -v s_relay="$s_relay" -v s_open="$s_open" \
    -v p_plain="$p_plain" -v p_relay="$p_relay" -v p_open="$p_open" \
    -v cpus="$(nproc)" -v mem="$mem_gb" -v pgv="$pg_version" -v kept="$kept" \
    -v w_off="$w_off" -v w_on="$w_on" 'BEGIN {
    printf "machine: %s CPUs, %s GB RAM, PostgreSQL %s\n\n", cpus, mem, pgv
    printf "| case | plain keyset rows/s | relay rows/s | ratio |\n"
    printf "| --- | ---: | ---: | ---: |\n"
    printf "| backlog: %d rows in pages of %d, fetch_page (max_bytes %d) | %.0f | %.0f | **%.2f** |\n",
        rows, page, max_bytes, rows / b_plain, rows / b_relay, b_plain / b_relay
    printf "| backlog, same, fetch_page without byte limit (max_bytes NULL) | %.0f | %.0f | %.2f |\n",
        rows / b_plain, rows / b_nolimit, b_plain / b_nolimit
    n = windows * wrows
    f = s_relay - s_open
    printf "| steady: %d windows of %d rows over %d kept rows, fetch_page | %.0f | %.0f | **%.2f** |\n",
        windows, wrows, rows, n / s_plain, n / f, s_plain / f
    printf "| steady, the whole loop: window_open + fetch_page | %.0f | %.0f | %.2f |\n",
        n / s_plain, n / s_relay, s_plain / s_relay
    g = p_relay - p_open
    printf "| steady, prepared statements on both sides: fetch_page | %.0f | %.0f | %.2f |\n",
        n / p_plain, n / g, p_plain / g
    printf "| steady, prepared statements, the whole loop | %.0f | %.0f | %.2f |\n",
        n / p_plain, n / p_relay, p_plain / p_relay
    printf "\nper steady window (unnamed statements): plain %.3f ms, fetch_page %.3f ms, window_open %.3f ms\n",
        s_plain * 1000 / windows, f * 1000 / windows, s_open * 1000 / windows
    printf "per steady window (prepared statements): plain %.3f ms, fetch_page %.3f ms, window_open %.3f ms\n",
        p_plain * 1000 / windows, g * 1000 / windows, p_open * 1000 / windows
    printf "rows in the table at the end: %d\n", kept
    printf "\nwriters (8 clients, one-row transactions): %d tps without NOTIFY, %d tps with it (%.2f)\n",
        w_off, w_on, w_on / w_off
}'
printf '\nplan of a backlog page (after_id %s):\n%s\n' "$mid" "$plan_backlog"
printf '\nplan of a steady-state window:\n%s\n' "$plan_steady"
