#!/usr/bin/env bash
# look_micro.sh [PROBE.sql ...]: what one look (the relay's
# outbox_relay_look statement, relay/outbox.c) costs the server, on the
# schema as sql/install.sql installs it and with each probe file run after
# the install (e.g. probe_no_set.sql), under each plan_cache_mode in MODES.
# pgbench, one client, prepared (the look's five values sent as parameters,
# as the relay sends them), 5 s per measurement, REPEAT measurements each,
# the variants taking turns. ROWS relayed rows are left in the outbox (a
# partition's block before its rotation) and the window is empty: the cost
# of a look that finds nothing new.
# Needs OUTBOX_PG_URL (a superuser; source /var/tmp/outbox-relay-local/env).
# Creates databases look_micro_0, look_micro_1, ... and drops them at the end.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/lib/pg.sh"  # with_db
: "${OUTBOX_PG_URL:?source /var/tmp/outbox-relay-local/env first}"
ROWS=${ROWS:-30000}
REPEAT=${REPEAT:-3}
MODES=${MODES:-auto force_generic_plan force_custom_plan}
tmp=$(mktemp -d)


# the look's text, as relay/outbox.c has it, with pgbench variables for $1..$5
sed -n '/^	{"outbox_relay_look",/,/^	 5},/p' "$root/relay/outbox.c" | grep -o '"[^"]*"' | sed -n '2,$p' |
	sed 's/^"//; s/"$//' | tr -d '\n' |
	sed 's/\$1/:snap/g; s/\$2/:after/g; s/\$3/:rows/g; s/\$4/:bytes/g; s/\$5/:name/g' > "$tmp/look.sql"
grep -q 'read_page(:snap::pg_snapshot' "$tmp/look.sql" || { echo "look_micro.sh: could not extract the look from relay/outbox.c" >&2; exit 1; }
echo ";" >> "$tmp/look.sql"

variants=(installed "$@")
urls=()
snaps=()
trap 'rm -rf "$tmp"; for i in "${!variants[@]}"; do psql -X -q -d "$OUTBOX_PG_URL" -c "DROP DATABASE IF EXISTS look_micro_$i"; done' EXIT
for i in "${!variants[@]}"; do
	db=look_micro_$i
	psql -X -q -d "$OUTBOX_PG_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
	url=$(with_db "$OUTBOX_PG_URL" "$db")
	urls+=("$url")
	psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$root/sql/install.sql" >/dev/null
	[ "$i" -gt 0 ] && psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "${variants[$i]}"
	psql -X -q -v ON_ERROR_STOP=1 -d "$url" >/dev/null <<SQL
SELECT * FROM outbox.lease_acquire('micro', 'look_micro', 600000);
INSERT INTO outbox.event (topic, key, payload)
SELECT 't' || (g % 3), 'k', repeat('x', 256)::bytea FROM generate_series(1, $ROWS) AS g;
UPDATE outbox.relay_state SET pos_done = pg_current_snapshot(), pos_next = NULL, pos_after_id = 0
WHERE name = 'micro';
VACUUM ANALYZE outbox.event;
SQL
	snaps+=("$(psql -X -At -d "$url" -c "SELECT pos_done FROM outbox.relay_state WHERE name = 'micro'")")
done
for mode in $MODES; do
	for r in $(seq 1 "$REPEAT"); do
		for i in "${!variants[@]}"; do
			ms=$(PGOPTIONS="-c plan_cache_mode=$mode" pgbench -n -M prepared -T 5 -c 1 \
				-D snap="${snaps[$i]}" -D after=0 -D rows=10000 -D bytes=16777216 -D name=micro \
				-f "$tmp/look.sql" "${urls[$i]}" | awk '/latency average/ {print $4}')
			echo "$(basename "${variants[$i]}"), $ROWS relayed rows, plan_cache_mode $mode: $ms ms a look"
		done
	done
done
