"""The relay behind PgBouncer (Debian's 1.18, started by deploy/local/up: one
process in session pooling, one in transaction pooling, both in front of the
local PostgreSQL), with real Kafka: exactly-once through either, a standby
taking over and restarts, what transaction pooling must never leave on a
shared server connection, and the refusal of a relay configured for a direct
connection that finds a pooler instead."""
import os
import re
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import PG_URL, read_all, relay_cmd, wait_for, write_config
from test_ha import Writer
from test_relay import assert_positions_agree, check_exactly_once, connect, drained, insert_rows, scalar

# The ports of deploy/local/up (env.sh): PostgreSQL's + 100 and + 200.
_PG_PORT = urlsplit(PG_URL).port
POOLER = {
    "session": os.environ.get("OUTBOX_PGBOUNCER_SESSION_URL",
                              f"postgresql://postgres@127.0.0.1:{_PG_PORT + 100}/outbox"),
    "transaction": os.environ.get("OUTBOX_PGBOUNCER_TRANSACTION_URL",
                                  f"postgresql://postgres@127.0.0.1:{_PG_PORT + 200}/outbox"),
}
# Sessions holding outbox.relay_awake()'s lock: its advisory key, shared
# (sql/migrations/0003_wake_on_demand.sql; a notifying writer holds it
# exclusive for its transaction).
AWAKE_LOCK = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1329745752 "
              "AND objid = 1 AND objsubid = 2 AND mode = 'ShareLock' AND granted AND database = "
              "(SELECT oid FROM pg_database WHERE datname = current_database())")


def via(mode, db_url):
    """db_url's database through the PgBouncer of pool mode `mode`."""
    pooler = urlsplit(POOLER[mode])
    return urlunsplit(urlsplit(db_url)._replace(netloc=pooler.netloc))


class Watch(threading.Thread):
    """Looks at the server side, on a direct connection, every 10 ms: how
    many sessions hold the "relay awake" lock, whether any server
    connection's last statement was a LISTEN, and which backends served the
    relay (its application_name, which PgBouncer sets on the server
    connection it lends)."""

    def __init__(self, db_url):
        super().__init__(daemon=True)
        self.conn = connect(db_url)
        self.halt = threading.Event()
        self.most_awake = 0
        self.listens = 0
        self.relay_pids = set()

    def run(self):
        while not self.halt.is_set():
            self.most_awake = max(self.most_awake, scalar(self.conn, AWAKE_LOCK))
            with self.conn.cursor() as cur:
                cur.execute("SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = 'outbox-relay'")
                for pid, query in cur.fetchall():
                    self.relay_pids.add(pid)
                    self.listens += query.lstrip().upper().startswith("LISTEN")
            time.sleep(0.01)

    def finish(self):
        self.halt.set()
        self.join(10)
        self.conn.close()


class SessionProbe(threading.Thread):
    """A client of the transaction pool like any writer: it asks each server
    connection it is lent for the session state the relay might have left
    there (settings, LISTEN channels, the awake lock) and notes which
    backend answered."""

    SQL = ("SELECT pg_backend_pid(), current_setting('statement_timeout'), "
           "current_setting('max_parallel_workers_per_gather'), "
           "(SELECT count(*) FROM pg_listening_channels()), "
           "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())")

    def __init__(self, url):
        super().__init__(daemon=True)
        self.conn = connect(url)
        self.halt = threading.Event()
        self.pids = set()
        self.leaks = []

    def run(self):
        while not self.halt.is_set():
            with self.conn.cursor() as cur:
                cur.execute(self.SQL)
                pid, timeout, workers, channels, locks = cur.fetchone()
            self.pids.add(pid)
            if (timeout, workers, channels, locks) != ("0", "2", 0, 0):
                self.leaks.append((pid, timeout, workers, channels, locks))
            time.sleep(0.005)

    def finish(self):
        self.halt.set()
        self.join(10)
        self.conn.close()


def statement_timeout_reaches_the_server(relay, conn, name):
    """Hold the relay's row of relay_state for longer than its
    statement_timeout: its lease renewal or advance must be cancelled by the
    timeout that the relay set through the pooler (PostgreSQL's own default
    here is none), and the relay goes on once the lock is gone."""
    blocker = connect(urlunsplit(urlsplit(PG_URL)._replace(path="/" + conn.info.dbname)))
    with blocker.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1 FROM outbox.relay_state WHERE name = %s FOR UPDATE", (name,))
        relay.wait_log("canceling statement due to statement timeout", 10)
        cur.execute("ROLLBACK")
    blocker.close()


def test_session_pooling(outbox_db, topics, relays, tmp_path):
    """Session pooling: a server connection per client for the client's
    life, so everything works as on a direct connection (LISTEN and the
    awake lock included), and PgBouncer's reset (DISCARD ALL) releases what
    a killed relay held before the connection serves anyone else. Through
    the pooler: exactly-once, a standby's takeover after kill -9, a
    restart."""
    tps = topics(3, partitions=2)
    conn = connect(outbox_db)
    pooled = via("session", outbox_db)
    assert scalar(conn, "SELECT outbox.notify_enable()") is True
    cfg = write_config(tmp_path / "relay.conf", pooled, "r-pgb-session",
                       **{"postgres.pooling": "session", "postgres.statement_timeout_ms": 500,
                          "batch.poll_interval_ms": 5000, "batch.max_rows": 500})
    insert_rows(conn, tps, 0, 2000, per_txn=500)
    watch = Watch(outbox_db)
    watch.start()
    a = relays(cfg)
    a.wait_log("publishing")
    b = relays(cfg)
    b.wait_log("standby")
    wait_for(drained(conn), 60, "the backlog to drain")
    statement_timeout_reaches_the_server(a, conn, "r-pgb-session")

    # LISTEN works through session pooling: a row wakes the sleeping relay
    # long before its 5 s poll.
    wait_for(lambda: scalar(conn, AWAKE_LOCK) == 0, 10, "the relay to go to sleep")
    t0 = time.monotonic()
    insert_rows(conn, tps, 2000, 1, per_txn=1)
    wait_for(drained(conn), 4, "the row, woken by NOTIFY", interval=0.02)
    assert time.monotonic() - t0 < 4

    writer = Writer(pooled, tps)
    writer.count = 2001
    writer.start()
    time.sleep(1.0)
    a.kill()  # SIGKILL, possibly holding the awake lock
    b.wait_log("publishing", 30)
    time.sleep(1.0)
    b.stop()
    c = relays(cfg)  # a restart
    c.wait_log("publishing")
    time.sleep(0.5)
    total = writer.finish()
    wait_for(drained(conn), 60, "the outbox to drain")
    # Asleep, C holds no lock; nor may anything of A's outlive it.
    wait_for(lambda: scalar(conn, AWAKE_LOCK) == 0, 10, "no session to hold the awake lock")
    assert c.stop() == 0, c.text()
    watch.finish()
    assert watch.most_awake == 1, "the awake lock was never seen held: is the watch blind?"
    check_exactly_once(read_all(tps), range(total))
    assert_positions_agree(conn, "r-pgb-session")


@pytest.mark.sanitizer  # the pipeline of every statement: under ASan+UBSan too
def test_transaction_pooling(outbox_db, topics, relays, tmp_path):
    """Transaction pooling: the relay's transactions share three server
    connections with two writers and two probes, all clients of the same
    pool. Exactly-once across a restart; statement_timeout set per
    transaction still cancels; and the probes, lent the very server
    connections that served the relay, find none of its state there: no
    setting outliving a transaction, no LISTEN, no advisory lock."""
    tps = topics(4, partitions=2)
    conn = connect(outbox_db)
    pooled = via("transaction", outbox_db)
    scalar(conn, "SELECT outbox.notify_enable()")  # must not matter: the relay polls
    cfg = write_config(tmp_path / "relay.conf", pooled, "r-pgb-txn",
                       **{"postgres.pooling": "transaction", "postgres.statement_timeout_ms": 500,
                          "relay.lease_ttl_ms": 4000, "batch.max_rows": 500})
    insert_rows(conn, tps[:3], 0, 2000, per_txn=500)
    watch = Watch(outbox_db)
    watch.start()
    probes = [SessionProbe(pooled) for _ in range(2)]
    a = relays(cfg)
    a.wait_log("publishing")
    # Disjoint row numbers and topics: two writers' concurrent transactions
    # commit in any order, and a key's records follow commit order.
    writers = [Writer(pooled, tps[:3]), Writer(pooled, tps[3:])]
    writers[0].count, writers[1].count = 2000, 10**6
    for t in writers + probes:
        t.start()
    time.sleep(1.0)
    statement_timeout_reaches_the_server(a, conn, "r-pgb-txn")
    time.sleep(0.5)
    assert a.stop() == 0, a.text()
    a2 = relays(cfg)  # a restart while the writers go on
    a2.wait_log("publishing")
    time.sleep(1.5)
    counts = [w.finish() for w in writers]
    wait_for(drained(conn), 60, "the outbox to drain")
    assert a2.stop() == 0, a2.text()
    for p in probes:
        p.finish()
    watch.finish()

    assert not any(p.leaks for p in probes), [p.leaks[:5] for p in probes]
    served = set().union(*(p.pids for p in probes)) & watch.relay_pids
    assert served, (f"the probes ({[sorted(p.pids) for p in probes]}) never got a server "
                    f"connection that served the relay ({sorted(watch.relay_pids)})")
    assert watch.most_awake == 0 and watch.listens == 0, (watch.most_awake, watch.listens)
    assert "LISTEN" not in a.text() + a2.text()
    check_exactly_once(read_all(tps), list(range(counts[0])) + list(range(10**6, counts[1])))
    assert_positions_agree(conn, "r-pgb-txn")


@pytest.mark.sanitizer
def test_pooler_without_pooling_option_is_refused(outbox_db, tmp_path):
    """postgres.pooling left at "none" (a direct connection) in front of
    PgBouncer: refused at start, exit code 1, with the option to set,
    whether PgBouncer refuses the relay's startup options (its default, the
    session pooler here) or drops them (ignore_startup_parameters = options,
    the transaction pooler here). Named prepared statements through a
    transaction pooler that does not carry them stop the relay with what to
    change. And batch.notify = true with transaction pooling is a
    configuration error naming file, line and key."""
    for mode, said in (("session", "unsupported startup parameter: options"),
                       ("transaction", "PostgreSQL did not get the relay's startup options")):
        cfg = write_config(tmp_path / f"{mode}.conf", via(mode, outbox_db), "r-pgb-none")
        out = relay_cmd("run", "-c", cfg, timeout=60)
        assert out.returncode == 1, (mode, out.returncode, out.stderr)
        assert said in out.stderr, (mode, out.stderr)
        assert 'set postgres.pooling to "session" or "transaction"' in out.stderr, out.stderr

    # Named prepared statements asked for explicitly under transaction
    # pooling, on a PgBouncer that does not carry them (1.18): as soon as a
    # statement runs on another server connection than the one it was
    # prepared on, the relay stops and says what to change.
    probes = [SessionProbe(via("transaction", outbox_db)) for _ in range(3)]
    for p in probes:
        p.start()
    cfg = write_config(tmp_path / "prepared.conf", via("transaction", outbox_db), "r-pgb-prep",
                       **{"postgres.pooling": "transaction", "postgres.prepared_statements": True})
    out = relay_cmd("run", "-c", cfg, timeout=60)
    for p in probes:
        p.finish()
    assert out.returncode == 1, out.stderr
    assert re.search(r'prepared statement "outbox_relay_\w+" (does not|already) exists?: a '
                     r"transaction-mode pooler runs each transaction on any server connection; "
                     r"set postgres.prepared_statements = false", out.stderr), out.stderr

    cfg = write_config(tmp_path / "notify.conf", via("transaction", outbox_db), "r-pgb-notify",
                       **{"postgres.pooling": "transaction", "batch.notify": True})
    line = next(i for i, ln in enumerate(cfg.read_text().splitlines(), 1) if "notify = " in ln)
    out = relay_cmd("run", "-c", cfg, timeout=60)
    assert out.returncode == 1, out.stderr
    assert f"notify.conf:{line}: batch.notify: true needs a session connection (LISTEN)" in out.stderr, \
        out.stderr
