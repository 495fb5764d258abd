#!/usr/bin/env bash
# look_micro.sh: what one look (the relay's outbox_relay_look statement,
# relay/outbox.c) costs the server, with 8 partitions and with 4
# (probe_four_partitions.sql), under each plan_cache_mode. pgbench, one
# client, prepared (the look's five values sent as parameters, as the relay
# sends them), 5 s per measurement, REPEAT measurements each. ROWS relayed
# rows are left in the outbox (a partition's block before its rotation) and
# the window is empty: the cost of a look that finds nothing new.
# Needs OUTBOX_PG_URL (a superuser; source /var/tmp/outbox-relay-local/env).
# Creates databases look_micro_p8 and look_micro_p4 and drops them at the end.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
: "${OUTBOX_PG_URL:?source /var/tmp/outbox-relay-local/env first}"
ROWS=${ROWS:-30000}
REPEAT=${REPEAT:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# the look's text, as relay/outbox.c has it, with pgbench variables for $1..$5
sed -n '/^	{"outbox_relay_look",/,/^	 5},/p' "$root/relay/outbox.c" | grep -o '"[^"]*"' | sed -n '2,$p' |
	sed 's/^"//; s/"$//' | tr -d '\n' |
	sed 's/\$1/:snap/g; s/\$2/:after/g; s/\$3/:rows/g; s/\$4/:bytes/g; s/\$5/:name/g' > "$tmp/look.sql"
grep -q 'read_page(:snap::pg_snapshot' "$tmp/look.sql" || { echo "look_micro.sh: could not extract the look from relay/outbox.c" >&2; exit 1; }
echo ";" >> "$tmp/look.sql"

for parts in 8 4; do
	db=look_micro_p$parts
	psql -X -q -d "$OUTBOX_PG_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
	url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$OUTBOX_PG_URL" "$db")
	psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$root/sql/install.sql" >/dev/null
	[ "$parts" = 4 ] && psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$here/probe_four_partitions.sql"
	psql -X -q -v ON_ERROR_STOP=1 -d "$url" >/dev/null <<SQL
SELECT * FROM outbox.lease_acquire('micro', 'look_micro', 600000);
INSERT INTO outbox.event (topic, key, payload)
SELECT 't' || (g % 3), 'k', repeat('x', 256)::bytea FROM generate_series(1, $ROWS) AS g;
UPDATE outbox.relay_state SET pos_done = pg_current_snapshot(), pos_next = NULL, pos_after_id = 0
WHERE name = 'micro';
VACUUM ANALYZE outbox.event;
SQL
	snap=$(psql -X -At -d "$url" -c "SELECT pos_done FROM outbox.relay_state WHERE name = 'micro'")
	for mode in auto force_generic_plan force_custom_plan; do
		for i in $(seq 1 "$REPEAT"); do
			ms=$(PGOPTIONS="-c plan_cache_mode=$mode" pgbench -n -M prepared -T 5 -c 1 \
				-D snap="$snap" -D after=0 -D rows=10000 -D bytes=16777216 -D name=micro \
				-f "$tmp/look.sql" "$url" | awk '/latency average/ {print $4}')
			echo "partitions $parts, $ROWS relayed rows, plan_cache_mode $mode: $ms ms a look"
		done
	done
	psql -X -q -d "$OUTBOX_PG_URL" -c "DROP DATABASE $db"
done
