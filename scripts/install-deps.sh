#!/usr/bin/env bash
# install-deps.sh: install, as root on Debian 12, every system package that the
# build, the tests and the local PostgreSQL + Kafka environment need.
# Idempotent: it does nothing (and prints nothing) when all is present.
set -euo pipefail

packages=(
	build-essential cmake pkg-config git ca-certificates curl procps iproute2
	libpq-dev librdkafka-dev libconfig-dev libmicrohttpd-dev libcmocka-dev
	postgresql-15 postgresql-contrib postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
	openjdk-17-jre-headless maven kcat valgrind prometheus
	python3 python3-pytest python3-psycopg2 python3-confluent-kafka
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The Debian postgresql package would create and start a default cluster on
# 5432; the project runs its own throwaway cluster instead, so skip that one.
mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ] || ! grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf; then
	echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
fi
# Packages with a daemon (prometheus, for its promtool) must not start it:
# tell invoke-rc.d that no service may start while we install.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	own_policy=true
fi
rc=0
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
if $own_policy; then rm -f "$policy"; fi
[ $rc -eq 0 ] || exit $rc
echo "install-deps: done"
