#!/usr/bin/env bash
# trigger_micro.sh: what the NOTIFY trigger (notify_enable()) costs a
# single-row writer transaction while a relay is awake (holds the "relay
# awake" lock, so the trigger sends nothing), against other ways to write
# the same trigger and against no trigger. One session, synchronous_commit
# off, a procedure that inserts ROWS single-row transactions (INSERT;
# COMMIT) into outbox.event; the wall time of each call, ROUNDS rounds, the
# variants taking turns. Server CPU per transaction is the difference that
# matters: run it on a quiet machine, compare within a round.
#   after        the trigger as notify_enable() creates it
#   after-when   the same with WHEN (pg_try_advisory_xact_lock(...)): the
#                plpgsql function is not called while a relay is awake
#   before       a BEFORE INSERT statement trigger instead of AFTER
#   before-when  both
#   when-false   an AFTER trigger whose WHEN is false: the cost of having
#                a statement trigger at all, without the lock or the call
#   none         no trigger (NOTIFY off)
# Needs OUTBOX_PG_URL (a superuser; source /var/tmp/outbox-relay-local/env).
# Creates database trigger_micro and drops it at the end.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/lib/pg.sh"  # with_db
: "${OUTBOX_PG_URL:?source /var/tmp/outbox-relay-local/env first}"
ROWS=${ROWS:-20000}
ROUNDS=${ROUNDS:-3}
db=trigger_micro
url=$(with_db "$OUTBOX_PG_URL" "$db")
awake=
cleanup() {
	[ -n "$awake" ] && kill "$awake" 2>/dev/null || true
	psql -X -q -d "$OUTBOX_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
}
trap cleanup EXIT
psql -X -q -d "$OUTBOX_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$root/sql/install.sql" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d "$url" >/dev/null <<'SQL'
CREATE PROCEDURE public.insert_rows(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        INSERT INTO outbox.event (topic, key, payload)
        VALUES ('t1', convert_to('k', 'UTF8'), convert_to(repeat('x', 256), 'UTF8'));
        COMMIT;
    END LOOP;
END
$$;
SQL
# A relay awake for the whole run: the session holds the shared lock.
psql -X -q -d "$url" -c "SELECT outbox.relay_awake(true)" -c "SELECT pg_sleep(86400)" >/dev/null 2>&1 &
awake=$!
for _ in $(seq 50); do
	held=$(psql -X -At -d "$url" -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid = 1329745752 AND objid = 1 AND objsubid = 2 AND mode = 'ShareLock' AND granted")
	[ "$held" = 1 ] && break
	sleep 0.1
done
[ "$held" = 1 ] || { echo "trigger_micro.sh: the awake session did not take its lock" >&2; exit 1; }

lock="pg_catalog.pg_try_advisory_xact_lock(1329745752, 1)"
declare -A create=(
	[after]="SELECT outbox.notify_enable()"
	[after-when]="CREATE TRIGGER event_notify AFTER INSERT ON outbox.event FOR EACH STATEMENT WHEN ($lock) EXECUTE FUNCTION outbox.notify_event()"
	[before]="CREATE TRIGGER event_notify BEFORE INSERT ON outbox.event FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_event()"
	[before-when]="CREATE TRIGGER event_notify BEFORE INSERT ON outbox.event FOR EACH STATEMENT WHEN ($lock) EXECUTE FUNCTION outbox.notify_event()"
	[when-false]="CREATE TRIGGER event_notify AFTER INSERT ON outbox.event FOR EACH STATEMENT WHEN (false) EXECUTE FUNCTION outbox.notify_event()"
	[none]="SELECT 1"
)
for r in $(seq 1 "$ROUNDS"); do
	for v in after after-when before before-when when-false none; do
		psql -X -q -v ON_ERROR_STOP=1 -d "$url" -c "DROP TRIGGER IF EXISTS event_notify ON outbox.event" \
			-c "${create[$v]}" -c "TRUNCATE outbox.event" >/dev/null
		ms=$(psql -X -q -v ON_ERROR_STOP=1 -d "$url" -c "SET synchronous_commit = off" -c '\timing on' \
			-c "CALL public.insert_rows($ROWS)" | awk '/^Time:/ {print $2}')
		awk -v r="$r" -v v="$v" -v ms="$ms" -v n="$ROWS" \
			'BEGIN { printf "round %s %-12s %9.1f ms  %6.2f us a transaction\n", r, v, ms, 1000 * ms / n }'
	done
done
