"""README "Health and metrics" claims with no other test, end to end on the
real PostgreSQL and the real Kafka broker: /healthz 503 on a stalled loop and
its limit, /readyz on lag (rows and seconds), starting, stopping and an
unreachable database, and the metrics that move on their events."""
import re
import signal
import time

import psycopg2
import pytest

from claims_util import get, http_config, metric, metrics, ready, status
from conftest import WAITING, PG_URL, read_all, wait_for
from test_relay import check_exactly_once, connect, db_position, drained, insert_rows, scalar


PUBLISHING = {"ready": True, "role": "leader", "reason": "publishing"}


def hold_relay_row(url, name):
    """Another session locks the relay's state row: the relay's next lease
    renewal (an UPDATE of that row) waits for the lock."""
    holder = psycopg2.connect(url)
    with holder.cursor() as cur:
        cur.execute("SELECT 1 FROM outbox.relay_state WHERE name = %s FOR UPDATE", (name,))
        assert cur.fetchone() == (1,)
    return holder


def relay_waits_for_lock(conn, dbname):
    def check():
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                        "application_name = 'outbox-relay' AND wait_event_type = 'Lock'",
                        (dbname,))
            return cur.fetchone()[0] > 0
    return check


@pytest.mark.serial  # 503 due within a window of seconds
def test_healthz_503_on_a_stalled_loop(outbox_db, topics, relays, tmp_path):
    """README: /healthz answers 503 when the loop has been stuck longer than
    transaction timeout + two commit timeouts + 10 s, and 200 before that.
    The loop is stuck in a database call (its lease renewal waits for a row
    lock another session holds) while the HTTP thread keeps answering."""
    tps = topics(1)
    name = "r-stall"
    conn = connect(outbox_db)
    dbname = conn.get_dsn_parameters()["dbname"]
    stall_s = 3 + 2 * 3 + 10  # the formula with these timeouts: 19 s
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, name,
                            **{"kafka.transaction_timeout_ms": 3000,
                               "kafka.commit_timeout_ms": 3000,
                               "relay.lease_ttl_ms": 9000,
                               "postgres.statement_timeout_ms": 0})
    relay = relays(cfg)
    relay.wait_log("publishing")
    wait_for(lambda: ready(port)[0] == 200, 10, "ready")
    holder = hold_relay_row(outbox_db, name)
    try:
        wait_for(relay_waits_for_lock(conn, dbname), 10, "the relay to wait for the lock")
        blocked = time.monotonic()
        # well inside the limit: alive
        time.sleep(stall_s - 5)
        assert get(port, "/healthz") == (200, "ok\n")
        wait_for(lambda: get(port, "/healthz")[0] == 503, 10, "/healthz to say stalled")
        took = time.monotonic() - blocked
        assert stall_s - 1 <= took <= stall_s + 4, f"503 after {took:.1f}s, limit {stall_s}s"
        assert get(port, "/healthz") == (503, "relay loop stalled\n")
        code, body = ready(port)
        assert code == 503 and re.fullmatch(r"relay loop stalled for \d+ ms", body["reason"]), body
        assert relay.proc.poll() is None
    finally:
        holder.rollback()
        holder.close()
    wait_for(lambda: get(port, "/healthz")[0] == 200, 10, "/healthz to recover")
    insert_rows(conn, tps, 0, 100, per_txn=100)
    wait_for(drained(conn), 30, "rows after the stall")
    wait_for(lambda: ready(port)[0] == 200, 10, "ready after the stall")
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all(tps), range(100))


@pytest.mark.parametrize("kind", ["rows", "seconds"])
def test_readyz_on_lag_while_draining_a_backlog(kind, outbox_db, topics, relays, tmp_path):
    """README: /readyz is not ready while the lag exceeds
    http.ready_max_lag_rows / http.ready_max_lag_seconds; ready again once
    the backlog is drained. The lag is measured while busy too."""
    tps = topics(1)
    name = f"r-lag-{kind}"
    conn = connect(outbox_db)
    opts = ({"http.ready_max_lag_rows": 1000} if kind == "rows"
            else {"http.ready_max_lag_seconds": 600})
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, name,
                            **{"batch.max_rows": 20}, **opts)
    relay = relays(cfg)
    relay.wait_log("publishing")
    wait_for(lambda: ready(port) == (200, PUBLISHING),
             10, "ready with an empty outbox")
    # one transaction of 30000 rows; for "seconds" an hour old (written, say,
    # while the relay was away)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers, created_at) "
                    "SELECT %s, convert_to('k' || n, 'UTF8'), convert_to('row-' || n, 'UTF8'), "
                    "jsonb_build_object('n', n::text), now() - %s::interval "
                    "FROM generate_series(0, 29999) AS n ORDER BY n",
                    (tps[0], "1 hour" if kind == "seconds" else "0"))
    seen = []

    def not_ready_for_lag():
        code, body = ready(port)
        seen.append(body["reason"])
        return code == 503
    wait_for(not_ready_for_lag, 30, "/readyz to report the lag", interval=0.1)
    reason = seen[-1]
    if kind == "rows":
        m = re.fullmatch(r"lag of (\d+) rows exceeds 1000", reason)
        assert m and int(m.group(1)) > 1000, reason
    else:
        m = re.fullmatch(r"oldest unrelayed row is ([\d.]+) s old, over 600 s", reason)
        assert m and float(m.group(1)) >= 3600, reason
    assert scalar(conn, WAITING) > 0, "drained before the check"
    wait_for(drained(conn), 300, "the backlog to drain")
    wait_for(lambda: ready(port) == (200, PUBLISHING),
             10, "ready once drained")
    # the lag is counted every few seconds, also right after a drain
    wait_for(lambda: metric(port, "lag_rows") == 0, 10, "lag_rows 0 once drained")
    assert relay.stop() == 0, relay.text()


def test_readyz_starting_while_kafka_is_unreachable(outbox_db, relays, tmp_path):
    """README: not ready while the relay is starting. A leader whose producer
    cannot start (nothing listens at the bootstrap address) stays "starting",
    with kafka_up 0 and kafka_errors_total counting the attempts."""
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, "r-starting",
                            **{"kafka.bootstrap_servers": "127.0.0.1:9"})
    relay = relays(cfg)
    relay.wait_log("could not initialize transactions")
    wait_for(lambda: metric(port, "kafka_errors_total") >= 2, 30, "a second failed attempt")
    assert ready(port) == (503, {"ready": False, "role": "starting", "reason": "starting"})
    m = metrics(port)
    assert m["outbox_relay_kafka_up"] == 0
    assert m["outbox_relay_postgres_up"] == 1
    assert m["outbox_relay_leader"] == 0
    assert m["outbox_relay_lease_generation"] == 1
    assert status(port)["last_error"] is not None
    assert relay.stop() == 0, relay.text()


def test_readyz_stopping(outbox_db, topics, relays, tmp_path):
    """README: not ready while the relay is stopping. The stop is held up in
    its lease release (the relay's state row is locked by another session,
    statement timeout 4 s): /readyz says "stopping" meanwhile; the relay
    still exits 0 once the lock goes, and releases its lease."""
    topics(1)
    name = "r-stopping"
    conn = connect(outbox_db)
    dbname = conn.get_dsn_parameters()["dbname"]
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, name,
                            **{"postgres.statement_timeout_ms": 4000,
                               "relay.lease_ttl_ms": 60000})
    relay = relays(cfg)
    relay.wait_log("publishing")
    wait_for(lambda: ready(port)[0] == 200, 10, "ready")
    holder = hold_relay_row(outbox_db, name)
    try:
        relay.proc.send_signal(signal.SIGTERM)

        def stopping():
            assert relay.proc.poll() is None, \
                f"the relay exited without /readyz saying stopping:\n{relay.text()}"
            return ready(port) == (503, {"ready": False, "role": "stopping",
                                         "reason": "stopping"})
        wait_for(stopping, 20, "/readyz to say stopping", interval=0.1)
        # The role says stopping just before the release's UPDATE is sent:
        # the wait for the row lock shows a moment later (well within the
        # 4 s statement timeout).
        wait_for(relay_waits_for_lock(conn, dbname), 3, "the lease release to wait for the lock",
                 interval=0.05)
    finally:
        holder.rollback()
        holder.close()
    assert relay.wait_exit(30) == 0, relay.text()


def test_postgres_up_and_errors_follow_an_outage(outbox_db, topics, relays, tmp_path):
    """postgres_up drops to 0 and postgres_errors_total rises while the relay
    cannot reach its database (its sessions are terminated and the database
    refuses new connections), /readyz says so, and all of it comes back."""
    tps = topics(1)
    conn = connect(outbox_db)
    dbname = conn.get_dsn_parameters()["dbname"]
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, "r-pg-outage")
    relay = relays(cfg)
    relay.wait_log("publishing")
    wait_for(lambda: ready(port)[0] == 200, 10, "ready")
    assert metric(port, "postgres_up") == 1
    errors_before = metric(port, "postgres_errors_total")
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND application_name = 'outbox-relay'", (dbname,))
        wait_for(lambda: metric(port, "postgres_up") == 0, 20, "postgres_up 0")
        wait_for(lambda: metric(port, "postgres_errors_total") >= errors_before + 2, 20,
                 "failed reconnects counted")
        assert ready(port) == (503, {"ready": False, "role": "leader",
                                     "reason": "postgresql unreachable"})
        assert "could not connect to PostgreSQL" in status(port)["last_error"]["message"]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        admin.close()
    wait_for(lambda: metric(port, "postgres_up") == 1, 30, "postgres_up 1")
    wait_for(lambda: ready(port)[0] == 200, 30, "ready again")
    insert_rows(conn, tps, 0, 100, per_txn=100)
    wait_for(drained(conn), 30, "rows after the outage")
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all(tps), range(100))


def test_commit_metrics_move(outbox_db, topics, relays, tmp_path):
    """start_time_seconds, last_commit_timestamp_seconds,
    position_batch_sequence, batches_committed_total and
    rows_published_total: each where its event puts it."""
    tps = topics(1)
    name = "r-commit-metrics"
    conn = connect(outbox_db)
    before = time.time()
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, name, **{"batch.max_rows": 50})
    relay = relays(cfg)
    relay.wait_log("publishing")
    after = time.time()
    m = metrics(port)
    assert before - 1 <= m["outbox_relay_start_time_seconds"] <= after + 1
    assert m["outbox_relay_last_commit_timestamp_seconds"] == 0  # nothing committed yet
    assert m["outbox_relay_position_batch_sequence"] == 0
    assert m["outbox_relay_batches_committed_total"] == 0

    written = time.time()
    insert_rows(conn, tps, 0, 200, per_txn=200)
    wait_for(drained(conn), 30, "rows to be relayed")
    m = metrics(port)
    seq = db_position(conn, name)[0]
    assert seq >= 4
    assert m["outbox_relay_position_batch_sequence"] == seq
    assert m["outbox_relay_batches_committed_total"] == seq
    assert m["outbox_relay_rows_published_total"] == 200
    assert m["outbox_relay_kafka_up"] == 1 and m["outbox_relay_postgres_up"] == 1
    assert written - 1 <= m["outbox_relay_last_commit_timestamp_seconds"] <= time.time() + 1
    assert m["outbox_relay_start_time_seconds"] <= after + 1  # unchanged by work
    # the histograms count the same commits and rows
    assert m["outbox_relay_batch_rows_count"] == seq and m["outbox_relay_batch_rows_sum"] == 200
    assert m["outbox_relay_commit_duration_seconds_count"] == seq
    # info{relay,owner}: the owner label is the lease owner in the database
    _, text = get(port, "/metrics")
    info = re.search(r'^outbox_relay_info\{relay="([^"]*)",owner="([^"]*)"\} 1$', text, re.M)
    assert info, text
    owner = scalar(conn, "SELECT owner FROM outbox.relay_state WHERE name = %s", (name,))
    assert info.groups() == (name, owner)
    # /status says the same
    st = status(port)
    assert st["position"]["batch_seq"] == seq and st["rows_published"] == 200
    assert st["last_commit_time"] == pytest.approx(m["outbox_relay_last_commit_timestamp_seconds"],
                                                   abs=0.01)
    assert relay.stop() == 0, relay.text()

    # a new process: a new start time, the position where the last one left it
    relay = relays(cfg)
    relay.wait_log("publishing")
    m = metrics(port)
    assert m["outbox_relay_start_time_seconds"] > after
    assert m["outbox_relay_position_batch_sequence"] == seq
    assert relay.stop() == 0, relay.text()

