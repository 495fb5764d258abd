# env.sh: settings shared by deploy/local/{up,down,status}; sourced, not run.
# Every value can be overridden from the environment.
LOCAL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LOCAL_ROOT/../.." && pwd)

# The state directory holds both services' data and logs; `down` removes it.
# It lives outside the checkout because the postgres user must be able to
# reach it, and a checkout under /root is not reachable for that user.
STATE=${OUTBOX_LOCAL_STATE:-/var/tmp/outbox-relay-local}
PG_PORT=${OUTBOX_PG_PORT:-55432}
PG_DB=${OUTBOX_PG_DB:-outbox}
KAFKA_PORT=${OUTBOX_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${OUTBOX_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_PROXIED_PORT=${OUTBOX_KAFKA_PROXIED_PORT:-19094}
KAFKA_PROXY_PORT=${OUTBOX_KAFKA_PROXY_PORT:-19095}
# The broker's secured listeners (tests/e2e/test_security.py): SASL_SSL with
# SCRAM-SHA-512, and SSL with client certificates (mTLS). Derived from the
# PLAINTEXT port like the others, so two environments whose PLAINTEXT ports
# are apart by 6 or more never share a port.
KAFKA_SASL_PORT=${OUTBOX_KAFKA_SASL_PORT:-$((KAFKA_PORT + 4))}
KAFKA_MTLS_PORT=${OUTBOX_KAFKA_MTLS_PORT:-$((KAFKA_PORT + 5))}
KAFKA_HEAP=${OUTBOX_KAFKA_HEAP:-512m}
# Two PgBouncer processes in front of PostgreSQL, one per pool mode. The
# offsets keep environments whose PostgreSQL ports lie side by side (55432,
# 55433, ...) apart: +100 and +200, not +100 and +101.
PGBOUNCER_SESSION_PORT=${OUTBOX_PGBOUNCER_SESSION_PORT:-$((PG_PORT + 100))}
PGBOUNCER_TRANSACTION_PORT=${OUTBOX_PGBOUNCER_TRANSACTION_PORT:-$((PG_PORT + 200))}

# Jars are cached per pom.xml content, outside $STATE, so `down` keeps them
# and a second `up` downloads nothing.
CACHE=${OUTBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay}
POM="$LOCAL_ROOT/kafka/pom.xml"
KAFKA_JARS="$CACHE/kafka-jars-$(sha256sum "$POM" | cut -c1-16)"

PG_BIN=/usr/lib/postgresql/15/bin
PG_DATA="$STATE/pg-data"
PG_SOCK="$STATE/pg-run"
PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/$PG_DB"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
PGBOUNCER_BIN=/usr/sbin/pgbouncer
PGBOUNCER_DIR="$STATE/pgbouncer"
PGBOUNCER_MODES="session transaction"
KAFKA_PIDFILE="$STATE/kafka.pid"
# Certificates and keys made by deploy/local/tls; the user the tests log in
# as on the SASL_SSL listener (its password: $TLS_DIR/kafka-password).
TLS_DIR="$STATE/tls"
KAFKA_SASL_USER=outbox-relay
# Debian's python3, which has the Debian-packaged confluent_kafka and psycopg2
# (a python3 earlier on PATH, e.g. from pyenv, may have neither).
PY=/usr/bin/python3

as_postgres() {
	if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

pg_running() {
	[ -f "$PG_DATA/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

kafka_pid() {
	local pid
	[ -f "$KAFKA_PIDFILE" ] || return 1
	pid=$(cat "$KAFKA_PIDFILE")
	# The pid must still be our broker, not a recycled number.
	grep -q 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

pgbouncer_port() { # mode
	if [ "$1" = session ]; then echo "$PGBOUNCER_SESSION_PORT"; else echo "$PGBOUNCER_TRANSACTION_PORT"; fi
}

pgbouncer_url() { # mode
	echo "postgresql://postgres@127.0.0.1:$(pgbouncer_port "$1")/$PG_DB"
}

pgbouncer_pid() { # mode
	local pid file="$PGBOUNCER_DIR/$1.pid"
	[ -f "$file" ] || return 1
	pid=$(cat "$file")
	grep -q pgbouncer "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}
