#!/usr/bin/env bash
# run.sh [--quick] [bench.py options]: build the relay (RelWithDebInfo, no
# crash points: the Dockerfile's build) and the benchmark programs into
# build-bench/, make sure the local PostgreSQL and Kafka run, and run every
# scenario, printing the tables. --help lists the options.
# run.sh --only S [steady.py options]: the steady-cost scenario (steady.py)
# instead; run.sh --only S --help lists its options.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BENCH_BUILD:-$root/build-bench}

script=bench.py
args=()
while [ $# -gt 0 ]; do
	if [ "$1" = "--only" ] && [ "${2:-}" = "S" ]; then
		script=steady.py
		shift 2
		continue
	fi
	args+=("$1")
	shift
done
set -- ${args[@]+"${args[@]}"}
case " $* " in *" --help "* | *" -h "*) exec /usr/bin/python3 "$here/$script" --help ;; esac

if [ -z "${OUTBOX_PG_URL:-}" ] || [ -z "${OUTBOX_KAFKA_BOOTSTRAP:-}" ]; then
	if ! "$root/deploy/local/status" 2>/dev/null | grep -q "kafka: *running" ||
		! "$root/deploy/local/status" 2>/dev/null | grep -q "postgresql: *running"; then
		"$root/deploy/local/up"
	fi
	# shellcheck disable=SC1091
	. /var/tmp/outbox-relay-local/env
fi
export OUTBOX_PG_URL OUTBOX_KAFKA_BOOTSTRAP BENCH_BUILD="$build"

bash "$root/scripts/build.sh" "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTBOX_CRASH_POINTS=OFF
if [ ! -f "$build/tools/CMakeCache.txt" ]; then
	cmake -S "$here" -B "$build/tools" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build/tools" -j "$(nproc)" >/dev/null

exec /usr/bin/python3 "$here/$script" "$@"
