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
# The on-demand Kafka 3.9 broker of deploy/local/scram-broker, where the
# relay's SCRAM-SHA-512 login is tested (tests/e2e/test_scram.py): its
# SASL_SSL listener, its PLAINTEXT listener (the admin's) and its controller,
# at the PLAINTEXT port + 6, 7 and 8. With it, environments whose PLAINTEXT
# ports are apart by 9 or more never share a port.
SCRAM_SASL_PORT=${OUTBOX_KAFKA_SCRAM_PORT:-$((KAFKA_PORT + 6))}
SCRAM_ADMIN_PORT=${OUTBOX_KAFKA_SCRAM_ADMIN_PORT:-$((KAFKA_PORT + 7))}
SCRAM_CONTROLLER_PORT=${OUTBOX_KAFKA_SCRAM_CONTROLLER_PORT:-$((KAFKA_PORT + 8))}
SCRAM_HEAP=${OUTBOX_KAFKA_SCRAM_HEAP:-256m}
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
SCRAM_POM="$LOCAL_ROOT/kafka39/pom.xml"
SCRAM_JARS="$CACHE/kafka-jars-$(sha256sum "$SCRAM_POM" | cut -c1-16)"

PG_BIN=/usr/lib/postgresql/15/bin
PG_DATA="$STATE/pg-data"
PG_SOCK="$STATE/pg-run"
PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/$PG_DB"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
PGBOUNCER_BIN=/usr/sbin/pgbouncer
PGBOUNCER_DIR="$STATE/pgbouncer"
PGBOUNCER_MODES="session transaction"
KAFKA_PIDFILE="$STATE/kafka.pid"
# deploy/local/scram-broker keeps everything of its broker here.
SCRAM_STATE="$STATE/kafka39"
SCRAM_PIDFILE="$SCRAM_STATE/kafka.pid"
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

kafka_pid() { # [pidfile]
	local pid file=${1:-$KAFKA_PIDFILE}
	[ -f "$file" ] || return 1
	pid=$(cat "$file")
	# The pid must still be our broker, not a recycled number.
	grep -q 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

kafka_stop() { # pid: SIGTERM, up to 20 s for a clean shutdown, then SIGKILL
	kill "$1"
	for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.2; done
	kill -9 "$1" 2>/dev/null || true
}

# fetch_jars POM DIR LOG: the jars of POM and their dependencies into DIR
# with Maven, once (DIR/.complete marks a finished copy).
fetch_jars() {
	[ -f "$2/.complete" ] && return
	echo "fetching the Kafka jars of ${1#"$REPO_ROOT"/} with Maven (once; cached in $2)"
	rm -rf "$2"
	mvn -q -B -f "$1" dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$2" >"$3" 2>&1 \
		|| { tail -30 "$3" >&2; return 1; }
	touch "$2/.complete"
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
