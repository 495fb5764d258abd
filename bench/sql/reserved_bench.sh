#!/usr/bin/env bash
# reserved_bench.sh: what the reserved-topic triggers (sql/migrations/0002)
# cost writers. pgbench, CLIENTS clients, one-row INSERT transactions into
# outbox.event, SECONDS seconds per run, interleaved runs with the two
# statement-level triggers enabled and disabled (ALTER TABLE ... DISABLE
# TRIGGER), ROUNDS rounds; a relay has reserved two topics. Prints tps per
# run and the best of each side. Results: bench/sql/RESULTS.md.
#
#   source /var/tmp/outbox-relay-local/env
#   CLIENTS=8 SECONDS_PER_RUN=20 ROUNDS=2 bench/sql/reserved_bench.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
url=${OUTBOX_PG_URL:-postgresql://postgres@127.0.0.1:55432/outbox}
db=${BENCH_DB:-outbox_bench_reserved}
clients=${CLIENTS:-8}
secs=${SECONDS_PER_RUN:-20}
rounds=${ROUNDS:-2}
dburl=$(printf '%s\n' "$url" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\\1/$db#")
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

q -d "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
trap 'q -d "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
q -d "$dburl" -f "$root/sql/install.sql" >/dev/null
# Time spent inside the trigger function, per call: a figure that the noise
# of a shared machine moves less than throughput does.
q -d "$url" -c "ALTER DATABASE $db SET track_functions = 'pl'"
q -d "$dburl" -c "SELECT acquired FROM outbox.lease_acquire('bench', 'me', 3600000)" \
  -c "SELECT outbox.reserve_topics('bench', 1, ARRAY['bench.checkpoints', 'bench.dead-letters'])" >/dev/null
script=$(mktemp)
echo "INSERT INTO outbox.event (topic, key, payload) VALUES ('orders', 'k', convert_to(repeat('x', 100), 'UTF8'));" >"$script"

run() {
    pgbench -n -c "$clients" -j 2 -T "$secs" -f "$script" "$dburl" 2>/dev/null |
        sed -nE 's/^tps = ([0-9.]+).*/\1/p'
}
best_on=0 best_off=0
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
    q -d "$dburl" -c "ALTER TABLE outbox.event DISABLE TRIGGER event_refuse_reserved_insert" \
      -c "ALTER TABLE outbox.event DISABLE TRIGGER event_refuse_reserved_update" -c "TRUNCATE outbox.event"
    off=$(run)
    q -d "$dburl" -c "ALTER TABLE outbox.event ENABLE TRIGGER event_refuse_reserved_insert" \
      -c "ALTER TABLE outbox.event ENABLE TRIGGER event_refuse_reserved_update" -c "TRUNCATE outbox.event"
    on=$(run)
    echo "round $r: without triggers $off tps, with triggers $on tps"
    best_off=$(echo "$off $best_off" | awk '{print ($1 > $2) ? $1 : $2}')
    best_on=$(echo "$on $best_on" | awk '{print ($1 > $2) ? $1 : $2}')
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
q -d "$dburl" -At -F ' ' -c "SELECT pg_stat_force_next_flush()" -c "SELECT pg_sleep(1)" >/dev/null
q -d "$dburl" -At -F ' ' -c "
    SELECT format('trigger function: %s calls, %s us per call (total, incl. its query)',
                  calls, round((total_time * 1000 / greatest(calls, 1))::numeric, 1))
    FROM pg_stat_user_functions WHERE funcname = 'event_refuse_reserved'"
echo "best: without $best_off tps, with $best_on tps, ratio $(echo "$best_on $best_off" | awk '{printf "%.3f", $1 / $2}')"
rm -f "$script"
