#!/usr/bin/env bash
# planted.sh [NAME...]: the fault run must catch real bugs. For each patch in
# tests/fault/planted/ (or the ones named), build a relay with that
# deliberate defect in a scratch directory and run a short fault run against
# it (relay faults only: kill -9, crash points, zombie; never the broker or
# PostgreSQL faults). The run must FAIL, with a checker violation naming the
# defect (not a timeout, not a harness error). Prints each run's verdict
# lines and a last line "planted defects: N caught, N missed".
#
# Needs the local environment (deploy/local/up; . $OUTBOX_LOCAL_STATE/env).
# The patches are small diffs against relay/*.c; after a rewrite of the code
# they touch, refresh them (git apply --check says which).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

# name | plan of the short fault run | what the verdict must name (grep -E)
cases=(
	"a-reconcile-keeps-db-position|crash_point=5,kill=1|VIOLATION: checkpoint chain: batch [0-9]+ committed again|VIOLATION: duplicated rows"
	"b-zombie-republishes-without-lease|zombie=3,kill=1|VIOLATION: checkpoint chain: .*published without the lease"
	"c-window-skips-open-transactions|kill=3|VIOLATION: lost rows"
	"d-batch-sent-backwards|kill=2|VIOLATION: per-key order violations"
	"e-payload-loses-last-byte|kill=1|VIOLATION: content mismatches"
	"f-batch-sent-in-key-order|kill=1|VIOLATION: cross-transaction order"
	"g-batch-sequence-skips|kill=1|VIOLATION: checkpoint chain: batches [0-9]+\\.\\.[0-9]+ have no checkpoint"
)

want=("$@")
caught=0
missed=0
scratch=$(mktemp -d /tmp/outbox-planted-XXXXXX)
for c in "${cases[@]}"; do
	IFS='|' read -r name plan expect1 expect2 <<<"$c"
	if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then
		continue
	fi
	patch="$root/tests/fault/planted/$name.patch"
	dir="$scratch/$name"
	mkdir -p "$dir"
	git ls-files -z | tar --null -T - -cf - | tar -C "$dir" -xf -
	if ! (cd "$dir" && git apply "$patch"); then
		echo "planted $name: the patch no longer applies: refresh it"
		missed=$((missed + 1))
		continue
	fi
	if ! (cd "$dir" && bash scripts/build.sh build >"$dir/build.log" 2>&1); then
		echo "planted $name: the patched relay does not build: see $dir/build.log"
		missed=$((missed + 1))
		continue
	fi
	echo "planted $name: fault run with plan $plan"
	OUTBOX_RELAY_BIN="$dir/build/relay/outbox-relay" /usr/bin/python3 tests/fault/run.py --quick \
		--plan "$plan" --max-seconds 150 --drain-seconds 60 --seed 17 >"$dir/run.log" 2>&1
	rc=$?
	grep -E '^(VIOLATION|CHECK FAILED|fault run:)' "$dir/run.log" | sed "s/^/  /"
	if [ $rc -ne 0 ] && grep -Eq "$expect1" "$dir/run.log" &&
		{ [ -z "${expect2:-}" ] || grep -Eq "$expect2" "$dir/run.log"; }; then
		echo "planted $name: CAUGHT"
		caught=$((caught + 1))
	else
		echo "planted $name: MISSED (exit $rc; wanted /$expect1/${expect2:+ and /$expect2/}); log $dir/run.log"
		missed=$((missed + 1))
	fi
done
echo "planted defects: $caught caught, $missed missed"
[ $missed -eq 0 ]
