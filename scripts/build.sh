#!/usr/bin/env bash
# build.sh [DIR] [cmake args...]: configure (once) and build the relay and its
# unit tests. DIR defaults to build/.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
# Quiet when it works; the whole output (compiler errors) when it does not.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
quiet() { "$@" >"$out" 2>&1 || { cat "$out" >&2; echo "build.sh: failed: $*" >&2; exit 1; }; }
if [ ! -f "$dir/CMakeCache.txt" ]; then
	quiet cmake -S . -B "$dir" "${gen[@]}" "$@"
fi
quiet cmake --build "$dir" -j "$(nproc)"
