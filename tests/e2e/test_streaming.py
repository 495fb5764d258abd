"""Transactions that take rows while open (issue 16), the wake-up on demand
(issue 13) and the in-place upgrade from schema versions 1, 2 and 4: on the real
PostgreSQL and the real Kafka broker."""
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import (BOOTSTRAP, QUIET, ROOT, psql, read_all, wait_for, write_config)
from test_relay import check_exactly_once, connect, drained, insert_rows, scalar


def feed(url, topics, start, count, every_s):
    """Insert rows start.. one per transaction every every_s seconds, in a
    thread; returns the thread (join it)."""
    def run():
        conn = connect(url)
        for n in range(start, start + count):
            insert_rows(conn, topics, n, 1)
            time.sleep(every_s)
        conn.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def uncommitted_then_committed(topic, wait_s):
    """Records of topic that a read_uncommitted consumer sees within wait_s,
    and how many of them a read_committed one sees at that moment."""
    def count(isolation):
        c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "unused", "enable.auto.commit": False,
                      "isolation.level": isolation, **QUIET})
        c.assign([TopicPartition(topic, 0, 0)])
        n, deadline = 0, time.monotonic() + wait_s
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                n += 1
        c.close()
        return n
    return count("read_uncommitted"), count("read_committed")


def test_open_transaction_takes_rows_as_they_commit(outbox_db, topics, relays, tmp_path):
    """With batch.max_wait_ms, a transaction stays open while rows keep
    coming and hands each to Kafka at once: rows are in the broker's log
    (read_uncommitted sees them) before the transaction commits (read_committed
    does not yet); then all arrive exactly once, in far fewer transactions
    than rows. Before: rows waited in the relay until the batch closed."""
    names = topics(3)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-stream", **{
        "relay.lease_ttl_ms": 6000, "batch.max_wait_ms": 8000, "batch.poll_interval_ms": 200,
        "batch.look_interval_ms": 200,
        "batch.max_rows": 100000})
    relay = relays(cfg)
    relay.wait_log("publishing")
    t = feed(outbox_db, names, 0, 60, 0.1)  # 10 rows/s for 6 s: one transaction of up to 8 s
    time.sleep(1.5)
    seen, committed = uncommitted_then_committed(names[0], 1.0)
    assert seen > 0, "no row reached the broker's log while the transaction was open"
    assert committed == 0, f"{committed} rows were visible before the transaction committed"
    t.join()
    conn = connect(outbox_db)
    wait_for(drained(conn), timeout=60, what="the rows to be published")
    check_exactly_once(read_all(names), range(60))
    batches = scalar(conn, "SELECT batch_seq FROM outbox.relay_state")
    assert batches <= 4, f"{batches} transactions for 60 rows arriving within 6 s"
    assert relay.stop() == 0


def test_open_transaction_ends_when_rows_stop(outbox_db, topics, relays, tmp_path):
    """A lone row does not wait out batch.max_wait_ms: after two looks find
    nothing the transaction commits."""
    names = topics(3)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-lone", **{
        "batch.max_wait_ms": 20000, "batch.poll_interval_ms": 100,
        "batch.look_interval_ms": 100})
    relay = relays(cfg)
    relay.wait_log("publishing")
    conn = connect(outbox_db)
    t0 = time.monotonic()
    insert_rows(conn, names, 0, 1)
    wait_for(drained(conn), timeout=30, what="the row to be published")
    took = time.monotonic() - t0
    assert took < 5, f"a lone row took {took:.1f} s (batch.max_wait_ms is 20 s)"
    check_exactly_once(read_all(names), range(1))
    assert relay.stop() == 0


def test_poison_row_in_open_transaction_waits_for_next_batch(outbox_db, topics, relays, tmp_path):
    """Stop policy: a row that can never be published arriving while a
    transaction is open is left out of it; the rows before it are committed,
    and the relay stops on it as the first row of the next batch."""
    names = topics(3)
    # poison_retry_ms short: once the row is deleted the relay resumes at
    # its next retry, not up to 30 s (the default) later
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-spoison", **{
        "batch.max_wait_ms": 3000, "batch.poll_interval_ms": 100,
        "batch.look_interval_ms": 100, "relay.poison_retry_ms": 1000})
    relay = relays(cfg)
    relay.wait_log("publishing")
    conn = connect(outbox_db)
    insert_rows(conn, names, 0, 1)
    time.sleep(0.05)
    insert_rows(conn, names, 1, 1)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, payload) VALUES ('no-such-topic-xyz', 'p') RETURNING id")
        bad = cur.fetchone()[0]
    insert_rows(conn, names, 2, 1)
    relay.wait_log(f"stopped on outbox row {bad}", timeout=60)
    check_exactly_once(read_all(names, timeout=30), range(2))
    with conn.cursor() as cur:
        cur.execute("DELETE FROM outbox.event WHERE id = %s", (bad,))
    wait_for(drained(conn), timeout=90, what="the rows after the poison row")
    check_exactly_once(read_all(names), range(3))
    assert relay.stop() == 0


def notifications_during(url, action):
    """NOTIFYs on outbox_event a listener receives while action() runs (plus
    a short grace for delivery)."""
    listener = connect(url)
    with listener.cursor() as cur:
        cur.execute("LISTEN outbox_event")
    action()
    time.sleep(0.3)
    listener.poll()
    n = len(listener.notifies)
    listener.close()
    return n


@pytest.mark.serial  # a wake-up under 2.5 s; NOTIFYs counted over 5 ms inserts
def test_writers_do_not_notify_while_the_relay_is_awake(outbox_db, topics, relays, tmp_path):
    """With the NOTIFY trigger on, a steady stream of single-row writers
    sends (almost) no NOTIFY while the relay publishes: it holds the "relay
    awake" lock. Idle, the relay sleeps and the next insert wakes it at once.
    Before schema version 3 every inserting transaction notified."""
    names = topics(3)
    psql(outbox_db, "-c", "SELECT outbox.notify_enable()")
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-awake", **{
        "batch.notify": True, "batch.max_wait_ms": 500, "batch.poll_interval_ms": 5000,
        "batch.look_interval_ms": 50})
    relay = relays(cfg)
    relay.wait_log("publishing")
    conn = connect(outbox_db)

    def burst():
        feed(outbox_db, names, 0, 200, 0.005).join()
    n = notifications_during(outbox_db, burst)
    wait_for(drained(conn), timeout=60, what="the burst to be published")
    assert n < 20, f"{n} notifications for 200 single-row transactions while the relay was awake"
    # idle now (the poll interval is 5 s): a new row wakes the relay at once
    time.sleep(1.5)
    t0 = time.monotonic()
    insert_rows(conn, names, 200, 1)
    wait_for(drained(conn), timeout=30, what="the row after the idle period", interval=0.02)
    took = time.monotonic() - t0
    assert took < 2.5, f"the relay woke only after {took:.2f} s (poll interval 5 s): no NOTIFY?"
    check_exactly_once(read_all(names), range(201))
    assert relay.stop() == 0


# Every grant on outbox.event, its columns and its id sequence but the
# owner's (%% for psycopg's parameters).
EVENT_ACL = """
SELECT array_agg(g ORDER BY g) FROM (
    SELECT format('%%s %%s %%s %%s', c.relname, x.grantee::regrole, x.privilege_type, x.is_grantable) AS g
    FROM pg_class AS c, aclexplode(c.relacl) AS x
    WHERE c.oid IN ('outbox.event'::regclass, 'outbox.event_id_seq'::regclass) AND x.grantee <> c.relowner
    UNION ALL
    SELECT format('%%s.%%s %%s %%s %%s', c.relname, a.attname, x.grantee::regrole, x.privilege_type, x.is_grantable)
    FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid, aclexplode(a.attacl) AS x
    WHERE c.oid = 'outbox.event'::regclass AND a.attnum > 0) AS t
"""


@pytest.mark.parametrize("version", [1, 2, 4, 5, 6])
def test_upgrade_in_place(version, outbox_db, topics, relays, tmp_path):
    """A schema version 1, 2, 4, 5 or 6 install with rows waiting, rows relayed
    and the NOTIFY trigger on upgrades with install.sql in place: rows (ids,
    transaction ids, contents) and relay state kept, the trigger runs the
    current function, the id sequence goes on, and the relay then publishes
    every waiting row exactly once and none of the relayed ones."""
    # outbox_db already has the current schema: start from a fresh one
    names = topics(3)
    v2 = tmp_path / f"install_v{version}.sql"
    text = (ROOT / "sql/install.sql").read_text()
    text = text[:text.index(f"\\set migration {version + 1:04d}")] + "SELECT outbox.version();\n"
    v2.write_text(text.replace("\\ir lib/", f"\\ir {ROOT}/sql/lib/"))
    db = outbox_db.rsplit("/", 1)[0] + "/" + outbox_db.rsplit("/", 1)[1] + f"_v{version}"
    admin = connect(outbox_db.rsplit("/", 1)[0] + "/postgres")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db.rsplit('/', 1)[1]}")
    try:
        psql(db, "-f", str(v2))
        conn = connect(db)
        assert scalar(conn, "SELECT outbox.version()") == version
        psql(db, "-c", "SELECT outbox.notify_enable()")
        scalar(conn, "SELECT acquired FROM outbox.lease_acquire('r-up', 'someone', 1)")
        # 30 rows relayed by an earlier relay (the position is past them;
        # with retention they stay; sending them again would show as rows
        # 100..129 in the topics), then 50 waiting
        insert_rows(conn, names, 100, 30, per_txn=10)
        snap = scalar(conn, "SELECT pg_current_snapshot()::text")
        gen = scalar(conn, "SELECT generation FROM outbox.status('r-up')")
        scalar(conn, "SELECT outbox.advance('r-up', %s, 1, %s, NULL, 0, 3600000)", (gen, snap))
        insert_rows(conn, names, 0, 50, per_txn=10)
        next_id = scalar(conn, "SELECT nextval(pg_get_serial_sequence('outbox.event', 'id'))")
        before = scalar(conn, "SELECT array_agg(e ORDER BY id)::text FROM outbox.event AS e")
        state = scalar(conn, "SELECT array_agg(s)::text FROM outbox.relay_state AS s")
        # an operator's grants (table and column level) and, on a
        # partitioned table, an operator's index
        psql(db, "-c", "DO $$ BEGIN CREATE ROLE outbox_test_auditor; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$",
             "-c", "GRANT SELECT (id, topic) ON outbox.event TO outbox_test_auditor",
             "-c", "GRANT SELECT ON outbox.event TO PUBLIC")
        if version >= 5:
            psql(db, "-c", "CREATE INDEX event_created_idx ON outbox.event (created_at)",
                 "-c", "ALTER TABLE outbox.event_p2 SET (fillfactor = 90)")
        acl = scalar(conn, EVENT_ACL)
        assert any("outbox_test_auditor" in g for g in acl) and any(g.startswith("event - ") for g in acl), acl
        out = psql(db, "-f", str(ROOT / "sql/install.sql"))
        assert "version 7" in out.stdout, out.stdout + out.stderr
        # storage options set by hand on a partition are not carried, and
        # the upgrade says so (from 5 and 6, which had partitions)
        carried = "the storage options of outbox.event_p2 are not carried over"
        assert (carried in out.stderr) == (version >= 5), out.stderr
        assert scalar(conn, "SELECT outbox.version()") == 7
        # (0005 revokes PUBLIC's privileges on the table it creates: an
        # upgrade across it keeps every grant but those, docs/sql.md)
        assert scalar(conn, EVENT_ACL) == (acl if version >= 5 else [g for g in acl if " - " not in g])
        assert scalar(conn, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'outbox.event'::regclass") == 4
        # nothing of the old table is left (0005 named it event_v4, 0007
        # event_v6 and its partitions and indexes v6_*)
        assert scalar(conn, r"""SELECT string_agg(relname, ', ') FROM pg_class
                                WHERE relnamespace = 'outbox'::regnamespace
                                  AND (relname LIKE 'event\_v_%%' OR relname LIKE 'v6\_%%')""") is None
        if version >= 5:
            assert scalar(conn, """SELECT count(*) FROM pg_inherits AS i JOIN pg_index AS x ON x.indexrelid = i.inhrelid
                                   WHERE i.inhparent = 'outbox.event_created_idx'::regclass
                                     AND x.indisvalid""") == 4
        assert scalar(conn, "SELECT array_agg(e ORDER BY id)::text FROM outbox.event AS e") == before
        assert scalar(conn, "SELECT array_agg(s)::text FROM outbox.relay_state AS s") == state
        assert scalar(conn, "SELECT outbox.notify_enabled()")
        assert "pg_try_advisory_xact_lock" in scalar(
            conn, "SELECT prosrc FROM pg_proc WHERE oid = 'outbox.notify_event()'::regprocedure")
        # no checkpoint in Kafka for this name: the database's position is
        # the one to trust (the earlier relay's checkpoint topic is gone)
        cfg = write_config(tmp_path / "r.conf", db, "r-up", **{"batch.notify": True,
                                                              "relay.on_database_ahead": "trust-database"})
        relay = relays(cfg)
        relay.wait_log("publishing")
        insert_rows(conn, names, 50, 10)
        assert scalar(conn, "SELECT min(id) FROM outbox.event WHERE payload = 'row-50'") > next_id
        wait_for(drained(conn), timeout=60, what="the rows to be published after the upgrade")
        check_exactly_once(read_all(names), range(60))
        assert relay.stop() == 0
        conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        (db.rsplit("/", 1)[1],))
            cur.execute(f"DROP DATABASE IF EXISTS {db.rsplit('/', 1)[1]}")
        admin.close()
