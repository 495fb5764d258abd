"""Crash-safe window ends (docs/design.md): after a crash PostgreSQL hands out
again every transaction id that no flushed WAL names, such as the id of a
transaction that rolled back just before it. A window's end counts such ids
as completed; rows committed under them after the crash must still reach
Kafka, exactly once, and the relay must not stop.

Each test has a PostgreSQL server of its own (tests/pgpair.py, no standby),
set up so that a rollback's WAL stays in memory until the crash: the WAL
writer is stopped (SIGSTOP) from just before the rollbacks until the crash
(it is then killed, and the server restarted -m immediate), no autovacuum,
no timed checkpoint, and the relay's lease is renewed every 20 s only.
Nothing but a commit flushes WAL then, as on a busy server in the instant
before a crash."""
import os
import re
import signal
import sys

import psycopg2
import pytest

from conftest import ROOT, create_topics, read_all, wait_for, write_config
from test_relay import check_exactly_once, connect, drained, insert_rows, scalar

sys.path.insert(0, str(ROOT / "tests"))
from pgpair import Pair  # noqa: E402

SETTINGS = "autovacuum = off\ncheckpoint_timeout = '1d'\n"
ROLLBACKS = 5


@pytest.fixture
def server():
    made = []

    def make():
        made.append(Pair(sync=False, standby=False, settings=SETTINGS))
        return made[-1]
    yield make
    for p in made:
        p.destroy()


def writer(db):
    """A writer's connection; its commits are flushed whatever the database
    says (synchronous_commit on)."""
    conn = connect(db.url(db.p1))
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = on")
    return conn


def hold_wal_writer(conn):
    """Stop the server's WAL writer (SIGSTOP): from now on only commits
    flush WAL. Returns its pid for crash()."""
    pid = scalar(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
    os.kill(pid, signal.SIGSTOP)
    return pid


def crash(db, walwriter):
    """The crash: the stopped WAL writer killed (the server's crash
    recovery begins), then an immediate stop and a start."""
    os.kill(walwriter, signal.SIGKILL)
    db.restart()


def roll_back(conn, n=ROLLBACKS):
    """n transactions that take a transaction id and roll back: their WAL
    (no commit) is not flushed. Returns their ids."""
    ids = []
    with conn.cursor() as cur:
        for _ in range(n):
            cur.execute("BEGIN")
            cur.execute("SELECT pg_current_xact_id()::text::bigint")
            ids.append(cur.fetchone()[0])
            cur.execute("ROLLBACK")
    return ids


def xmax_now(conn):
    return scalar(conn, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")


def row_txids(conn, first, count):
    """The transaction ids of rows first..first+count-1 (insert_rows' n)."""
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT txid::text::bigint FROM outbox.event "
                    "WHERE (headers->>'n')::int BETWEEN %s AND %s", (first, first + count - 1))
        return sorted(r[0] for r in cur.fetchall())


def checkpoint_xmax(value):
    """The larger xmax of a checkpoint value's done and next snapshots."""
    fields = dict(f.split("=", 1) for f in value.split()[1:])
    return max(int(fields[k].split(":")[1]) for k in ("done", "next") if fields[k] != "-")


def last_checkpoint(ckpt, name):
    recs = [m for m in read_all([ckpt]) if m.key() == name.encode()]
    return recs[-1].value().decode()


def relay_config(tmp_path, db, tps, name):
    ckpt = f"ckpt-{name}-{db.p1}-{os.getpid()}"
    create_topics([ckpt])
    cfg = write_config(tmp_path / f"{name}.conf", db.url(db.p1), name,
                       **{"kafka.checkpoint_topic": ckpt, "relay.lease_ttl_ms": 60000,
                          "log.level": "debug"})
    return cfg, ckpt


def test_a_crash_hands_out_rolled_back_ids_again(server):
    """The premise, PostgreSQL's own behaviour on this setup: ids of
    transactions that rolled back before a snapshot are handed out again
    after a crash, below that snapshot's xmax."""
    db = server()
    conn = connect(db.url(db.p1))
    walwriter = hold_wal_writer(conn)
    ids = roll_back(conn)
    xmax = xmax_now(conn)
    assert xmax == ids[-1] + 1
    conn.close()
    crash(db, walwriter)
    conn = connect(db.url(db.p1))
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_current_xact_id()::text::bigint")
        again = cur.fetchone()[0]
        cur.execute("COMMIT")
    assert again == ids[0], f"id {again} after a crash, the rollbacks before it had {ids}"


@pytest.mark.parametrize("database_default", ["on", "off"])
def test_crash_between_kafka_commit_and_advance(database_default, server, topics, relays,
                                                tmp_path):
    """The relay dies right after the Kafka commit of a batch whose window
    came right after rolled-back transactions; the server crashes before
    anything flushed their WAL; new rows commit under the ids the crash
    gives out. The window is in Kafka's checkpoint, so the ids it counts as
    completed must never come again (the write before the commit, made for
    this): the new rows' ids are above its xmax, the next relay brings the
    database forward without refusing the span (exit 5 before), and every
    row arrives once. With synchronous_commit off as the database's default
    the relay's own commits are still flushed: it sets it on for itself."""
    db = server()
    db.primary_sql(f"ALTER DATABASE outbox SET synchronous_commit = {database_default}")
    tps = topics(3)
    conn = writer(db)
    cfg, ckpt = relay_config(tmp_path, db, tps, "r-crash-safe-commit")
    insert_rows(conn, tps, 0, 10, per_txn=10)
    relay = relays(cfg, env={"OUTBOX_RELAY_CRASH_AT": "after-commit:2"})
    relay.wait_log(r"advanced to batch 1 ")
    # Row 10 commits and the rollbacks follow while the relay cannot look:
    # its next window ends right after them.
    relay.proc.send_signal(signal.SIGSTOP)
    insert_rows(conn, tps, 10, 1, per_txn=1)
    walwriter = hold_wal_writer(conn)
    rolled_back = roll_back(conn)
    relay.proc.send_signal(signal.SIGCONT)
    assert relay.wait_exit(60) == -9, relay.text()
    assert 'crash point "after-commit" reached' in relay.text()
    window_end = checkpoint_xmax(last_checkpoint(ckpt, "r-crash-safe-commit"))
    assert window_end > max(rolled_back), "the window should end after the rollbacks"

    conn.close()
    crash(db, walwriter)
    conn = writer(db)
    insert_rows(conn, tps, 11, 8, per_txn=1)
    reused = [x for x in row_txids(conn, 11, 8) if x < window_end]
    assert not reused, (f"rows committed after the crash under ids {reused}, which the window "
                        f"in Kafka (xmax {window_end}) counts as completed")

    # the killed relay's lease (60 s) given up, as a supervisor would wait it out
    scalar(conn, "SELECT outbox.lease_release(%s, (SELECT generation FROM outbox.position_get(%s)))",
           ("r-crash-safe-commit",) * 2)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the rows after the crash")
    assert relay.stop() == 0, relay.text()
    assert "bringing the database forward" in relay.text()
    check_exactly_once(read_all(tps), range(19))


@pytest.mark.sanitizer
def test_crash_between_look_and_kafka_commit(server, topics, relays, tmp_path):
    """The server crashes while the relay holds a produced batch whose window
    came right after rolled-back transactions, and rows commit under the
    ids the crash gives out (more of them than the rollbacks, so that ids
    pass the window's end again). The relay must not commit that window: it
    sees the server's new life, aborts the transaction and reads again from
    its last checkpoint. Before, the window was committed and the new rows
    were counted as relayed: lost without a word."""
    db = server()
    tps = topics(3)
    conn = connect(db.url(db.p1))
    cfg, ckpt = relay_config(tmp_path, db, tps, "r-crash-safe-look")
    insert_rows(conn, tps, 0, 10, per_txn=10)
    relay = relays(cfg, env={"OUTBOX_RELAY_CRASH_AT": "after-produce:2",
                             "OUTBOX_RELAY_CRASH_ACTION": "stop"})
    relay.wait_log(r"advanced to batch 1 ")
    relay.proc.send_signal(signal.SIGSTOP)
    insert_rows(conn, tps, 10, 1, per_txn=1)
    walwriter = hold_wal_writer(conn)
    rolled_back = roll_back(conn)
    window_end = xmax_now(conn)
    relay.proc.send_signal(signal.SIGCONT)
    relay.wait_log('crash point "after-produce" reached: stopping myself')

    conn.close()
    crash(db, walwriter)
    conn = connect(db.url(db.p1))
    insert_rows(conn, tps, 11, 2 * ROLLBACKS, per_txn=1)
    reused = [x for x in row_txids(conn, 11, 2 * ROLLBACKS) if x < window_end]
    assert reused, (f"the crash should hand out the rolled-back ids {rolled_back} again "
                    f"(rows got {row_txids(conn, 11, 2 * ROLLBACKS)})")

    os.kill(relay.proc.pid, signal.SIGCONT)
    wait_for(drained(conn), 60, "every row relayed")
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all(tps), range(11 + 2 * ROLLBACKS))
    assert "reading from there again" in relay.text(), relay.text()


def test_a_drain_makes_no_extra_write(outbox_db, topics, relays, tmp_path):
    """On a backlog each batch is read ahead while the one before travels,
    and that one's advance comes after the read: it makes the batch's
    windows crash-safe, so a drain writes nothing more than its advances.
    Only a batch that nothing covered yet writes its own mark (the first
    after the start; the last, which takes rows while its transaction is
    open). At a trickle every transaction needs one."""
    tps = topics(3)
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 8000, per_txn=1000)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-marks",
                       **{"batch.max_rows": 1000, "log.level": "debug"})
    relay = relays(cfg)
    wait_for(drained(conn), 120, "the backlog to drain")
    text = relay.text()
    batches = len(re.findall(r"batch \d+: \d+ rows committed", text))
    marks = len(re.findall(r"made crash-safe by transaction", text))
    assert batches >= 8, text
    assert marks <= 2, f"{marks} marks for {batches} batches of a drain:\n{text}"

    for n in range(8000, 8005):
        insert_rows(conn, tps, n, 1, per_txn=1)
        wait_for(drained(conn), 30, f"row {n}")
    assert relay.stop() == 0, relay.text()
    text = relay.text()
    trickle = len(re.findall(r"batch \d+: \d+ rows committed", text)) - batches
    assert trickle >= 5
    assert len(re.findall(r"made crash-safe by transaction", text)) - marks == trickle, text
    check_exactly_once(read_all(tps), range(8005))
