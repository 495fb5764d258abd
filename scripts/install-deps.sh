#!/usr/bin/env bash
# install-deps.sh: install, as root on Debian 12, every system package that the
# build, the tests and the local PostgreSQL + Kafka environment need.
# Idempotent: it does nothing (and prints nothing) when all is present.
# Also sets up the virtualenv of the deployment validators (tests/deploy).
set -euo pipefail

# dpkg-dev: dpkg-shlibdeps, for the Debian package's Depends (scripts/package-deb).
# prometheus: promtool, and the server the dashboard test runs (tests/deploy).
# pgbouncer: the pooler deploy/local/up starts in front of PostgreSQL (its own processes,
# never the system service).
# openjdk-17-jdk-headless: runs deploy/local/kafka/SecurityAdmin.java as a
# single source file (SCRAM credentials, ACLs); openssl: the local CA and
# certificates (deploy/local/tls).
packages=(
	build-essential cmake pkg-config git ca-certificates curl procps iproute2 dpkg-dev
	libpq-dev librdkafka-dev libconfig-dev libmicrohttpd-dev libcmocka-dev
	postgresql-15 postgresql-contrib postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
	openjdk-17-jre-headless openjdk-17-jdk-headless openssl maven kcat valgrind prometheus systemd python3-venv pgbouncer
	python3 python3-pytest python3-pytest-xdist python3-psycopg2 python3-confluent-kafka
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
install_packages() {
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
	# Packages with a daemon (prometheus, for promtool and its server binary) must not start it:
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
}
[ ${#missing[@]} -eq 0 ] || install_packages

# The deployment validators (tests/deploy) live in their own virtualenv:
# kubernetes-validate needs a newer jsonschema than Debian ships.
deploy_tools=${OUTBOX_DEPLOY_TOOLS:-/opt/outbox-relay-deploy-tools}
deploy_reqs="$(cd "$(dirname "$0")/.." && pwd)/tests/deploy/requirements.txt"
if ! cmp -s "$deploy_reqs" "$deploy_tools/requirements.txt"; then
	echo "install-deps: installing the deployment validators into $deploy_tools"
	/usr/bin/python3 -m venv "$deploy_tools"
	"$deploy_tools/bin/pip" install -q --disable-pip-version-check -r "$deploy_reqs"
	cp "$deploy_reqs" "$deploy_tools/requirements.txt"
fi
