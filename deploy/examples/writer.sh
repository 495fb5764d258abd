#!/bin/sh
# writer.sh: the example application. Every WRITER_INTERVAL seconds (default
# 1) it creates an order and its outbox event in one transaction
# (writer.sql), WRITER_COUNT times (default 0: until stopped). Connects with
# libpq's PG* variables, as a member of outbox_writer. Stops at the first
# error, so a supervisor (compose's restart policy) sees it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
interval=${WRITER_INTERVAL:-1}
count=${WRITER_COUNT:-0}
trap 'exit 0' TERM INT
i=0
while :; do
	i=$((i + 1))
	out=$(psql -X -q -A -t -F ' ' -v ON_ERROR_STOP=1 -f "$here/writer.sql")
	echo "writer: order and outbox event: $out"
	if [ "$count" -ne 0 ] && [ "$i" -ge "$count" ]; then
		break
	fi
	sleep "$interval"
done
