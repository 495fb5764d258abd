"""Database failover with the relay running: a primary and a physical standby
of their own (deploy/local/standby), the relay on a multi-host conninfo with
target_session_attrs=read-write, the primary stopped with -m immediate and
the standby promoted. The env's main cluster is not touched: the pair lives
in a throwaway state directory on ports of its own."""
import collections
import json
import os
import re
import signal
import sys
import threading
import time

import psycopg2
import pytest

from conftest import (RELAY_BIN, ROOT, WAITING, create_topics, log_time, read_all, relay_cmd,
                      relay_env, wait_for, write_config)
from test_relay import checkpoint_of, check_exactly_once, connect, drained, insert_rows, scalar

sys.path.insert(0, str(ROOT / "tests"))
import or003  # noqa: E402
from pgpair import Pair  # noqa: E402


@pytest.fixture
def pair():
    made = []

    def make(sync):
        made.append(Pair(sync))
        return made[-1]
    yield make
    for p in made:
        p.destroy()


def max_xmax(checkpoint):
    """The larger xmax of a checkpoint value's done and next snapshots."""
    fields = dict(f.split("=", 1) for f in checkpoint.split()[1:])
    return max(int(fields[k].split(":")[1]) for k in ("done", "next") if fields[k] != "-")


def query(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else []


class Writer(threading.Thread):
    """Inserts rows in transactions of per_txn rows through the multi-host
    conninfo, reconnecting after errors. Each attempt takes new row numbers.
    A transaction whose COMMIT succeeded is acknowledged; one whose COMMIT
    failed (the server died under it) is in doubt: it may or may not have
    committed, but all or nothing. Keys are the writer's own ("w<first>-k.."):
    transactions of two writers overlap, and overlapping transactions may be
    published in either order (README, "Ordering")."""

    def __init__(self, conninfo, topics, first, per_txn=10):
        super().__init__(daemon=True)
        self.conninfo, self.topics, self.per_txn = conninfo, topics, per_txn
        self.first = first
        self.next = first
        self.acked, self.in_doubt, self.errors = [], [], 0
        self.halt = threading.Event()

    def run(self):
        conn = None
        while not self.halt.is_set():
            lo = self.next
            self.next += self.per_txn
            committing = False
            try:
                if conn is None:
                    conn = connect(self.conninfo)
                with conn.cursor() as cur:
                    cur.execute("BEGIN")
                    arr = "{" + ",".join(self.topics) + "}"
                    cur.execute(
                        """INSERT INTO outbox.event(topic, key, payload, headers)
                           SELECT (%s::text[])[1 + n %% %s],
                                  convert_to(%s || (n %% 16), 'UTF8'),
                                  convert_to('row-' || n, 'UTF8'),
                                  jsonb_build_object('n', n::text, 'src', 'e2e')
                           FROM generate_series(%s, %s) AS n ORDER BY n""",
                        (arr, len(self.topics), f"w{self.first}-k", lo, lo + self.per_txn - 1))
                    committing = True
                    cur.execute("COMMIT")
                self.acked.append(range(lo, lo + self.per_txn))
            except psycopg2.Error:
                self.errors += 1
                if committing:
                    self.in_doubt.append(range(lo, lo + self.per_txn))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
            time.sleep(0.005)
        if conn is not None:
            conn.close()


def check_failover(msgs, writers):
    """Exactly once and in order per key for every acknowledged row; of each
    in-doubt transaction all rows or none; nothing else (no phantoms)."""
    seen = {int(dict(m.headers())["n"]) for m in msgs}
    expected = set()
    for w in writers:
        for r in w.acked:
            expected.update(r)
        for r in w.in_doubt:
            present = seen & set(r)
            assert present in (set(), set(r)), f"in-doubt transaction {r} partly published"
            expected.update(present)
    check_exactly_once(msgs, expected)
    return len(expected)


def lost_by_database(cfg, tps):
    """outbox-relay verify's report of the events Kafka has that the database
    lost (tests/or003.py): (exit code, the JSON summary, the row numbers "n"
    of the records it lists as lost, in order, and {n: outbox id} of those
    it lists as published with their row still in the table)."""
    code, summary = or003.list_lost(RELAY_BIN, cfg, tps, env=relay_env(None))
    listed = {(e["topic"], e["partition"], e["offset"]): e for e in summary["lost_list"]}
    found = [(int(dict(m.headers())["n"].decode()), listed[(m.topic(), m.partition(), m.offset())])
             for m in read_all(tps) if (m.topic(), m.partition(), m.offset()) in listed]
    assert len(found) == len(listed), "verify listed records that are not in Kafka"
    lost = sorted(n for n, e in found if e["state"] == "lost")
    published = {n: e["outbox_id"] for n, e in found if e["state"] == "published"}
    return code, summary, lost, published


def takeover_time(text, stopped_at):
    """Unix time of the relay's first advance after its first warning (the
    lost connection) at or after stopped_at: its first batch on the new
    primary."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if log_time(line, r"^warning ", after=stopped_at - 0.001):
            for later in lines[i + 1:]:
                t = log_time(later, r"advanced to batch")
                if t is not None:
                    return t
    raise AssertionError(f"no database error then advance after the stop in the log:\n{text}")


def test_synchronous_failover_loses_nothing(pair, topics, relays, tmp_path):
    """Synchronous replication (synchronous_commit = on, the default, with the
    standby in synchronous_standby_names): stop the primary -m immediate while
    two writers and the relay run, promote the standby. The writers and the
    relay find the new primary through the multi-host conninfo by
    themselves; every acknowledged row reaches Kafka exactly once, in order
    per key; the relay never exits."""
    db = pair(sync=True)
    tps = topics(3, partitions=2)
    ckpt = f"ckpt-failover-{db.p1}-{os.getpid()}"
    create_topics([ckpt])
    cfg = write_config(tmp_path / "relay.conf", db.url(db.p1), "r-db-failover",
                       **{"postgres.conninfo": db.multi_host(), "kafka.checkpoint_topic": ckpt,
                          "log.level": "debug", "batch.max_rows": 200,
                          "relay.lease_ttl_ms": 10000})
    relay = relays(cfg)
    relay.wait_log("publishing")
    writers = [Writer(db.multi_host(), tps, first=i * 10_000_000) for i in range(2)]
    for w in writers:
        w.start()
    wait_for(lambda: all(len(w.acked) >= 20 for w in writers), 60, "the writers to write")
    relay.wait_log("advanced to batch")

    stopped_at = time.time()
    db.stop(db.primary)
    db.standby_cmd("promote")
    promoted_at = time.time()
    before = [len(w.acked) for w in writers]
    wait_for(lambda: all(len(w.acked) >= b + 20 for w, b in zip(writers, before)), 60,
             "the writers to write on the new primary")
    for w in writers:
        w.halt.set()
        w.join(30)
    new = connect(db.url(db.p2))
    wait_for(lambda: scalar(new, WAITING) == 0, 60,
             "the relay to drain the new primary")
    assert relay.proc.poll() is None, f"the relay exited:\n{relay.text()}"
    took_over = takeover_time(relay.text(), stopped_at)
    assert relay.stop() == 0
    n = check_failover(read_all(tps), writers)
    assert sum(w.errors for w in writers) > 0, "the writers never saw the failover"
    print(f"\nfailover: promote took {promoted_at - stopped_at:.2f} s; the relay's first batch on "
          f"the new primary {took_over - stopped_at:.2f} s after the stop; {n} rows, "
          f"{sum(len(w.in_doubt) for w in writers)} transactions in doubt")


@pytest.mark.parametrize("relay_during_failover", ["running", "frozen", "restarted"])
def test_asynchronous_replica_that_missed_commits(relay_during_failover, pair, topics, relays,
                                                  tmp_path):
    """An asynchronous standby stops receiving (stopped) while the relay
    publishes a second lot of rows; the primary dies, the standby is promoted
    and writers go on there. The new primary lost transactions that Kafka
    has, its transaction ids restart below the relay's position, and the
    relay's checkpoint is ahead of anything this database has seen: the relay
    must stop with exit code 5 and say so, not skip or resend. "frozen": the
    relay sleeps (SIGSTOP) through the failover while the writers commit
    enough transactions on the new primary to carry its transaction ids past
    the relay's position again, so that only the stored position shows the
    rewind (a window opened there would skip the rows whose ids were reused).
    "restarted": the relay stopped cleanly before the failover and starts
    again on the new primary after its ids passed the checkpoint's; lot B is
    one batch, so the database is exactly one batch behind Kafka, as after a
    stop between a Kafka commit and its advance: only the batch's digest in
    the checkpoint (its rows, their ids) tells the two apart.
    Then the recovery of docs/sql.md ("OR003"), step by step, until it
    publishes again: every row exactly once in Kafka, the lost lot included."""
    db = pair(sync=False)
    tps = topics(3, partitions=2)
    ckpt = f"ckpt-failover-async-{db.p1}-{os.getpid()}"
    create_topics([ckpt])
    opts = {"postgres.conninfo": db.multi_host(), "kafka.checkpoint_topic": ckpt,
            "relay.lease_ttl_ms": 10000, "batch.max_rows": 5000}
    cfg = write_config(tmp_path / "relay.conf", db.url(db.p1), "r-async", **opts)
    relay = relays(cfg)
    relay.wait_log("publishing")
    old = connect(db.url(db.p1))
    # A writer transaction left open on the old primary holds its partition:
    # lot A is relayed but stays in the table (its partition cannot be
    # truncated while the transaction is open), on both servers
    holder = psycopg2.connect(db.url(db.p1))
    with holder.cursor() as cur:
        cur.execute("INSERT INTO outbox.event (topic, key, payload) VALUES (%s, 'hold', 'hold')",
                    (tps[0],))
    insert_rows(old, tps, 0, 1000, per_txn=100)  # lot A: on both servers
    wait_for(drained(old), 60, "the relay to publish lot A")
    running = relay_during_failover == "running"
    survivors = range(2500, 2600) if running else range(0)
    if running:
        # lot S: on both servers, but published (and advanced) only after
        # the standby stopped: after the failover its rows are still in the
        # table, unrelayed, and in Kafka already
        relay.proc.send_signal(signal.SIGSTOP)
        insert_rows(old, tps, survivors.start, len(survivors), per_txn=len(survivors))
    # the standby has lot A (and lot S) and misses everything after
    db.stop_receiving()
    if running:
        relay.proc.send_signal(signal.SIGCONT)
        wait_for(drained(old), 60, "the relay to publish lot S")
    restarted = relay_during_failover == "restarted"
    seq_a = scalar(old, "SELECT batch_seq FROM outbox.status('r-async')")
    # lot B: only on the old primary ("restarted": one transaction, one batch)
    insert_rows(old, tps, 1000, 1000, per_txn=1000 if restarted else 100)
    wait_for(drained(old), 60, "the relay to publish lot B")
    ck_before = checkpoint_of("r-async", ckpt)
    old.close()
    if restarted:
        assert relay.stop() == 0, relay.text()
        assert int(dict(f.split("=", 1) for f in ck_before.split()[1:])["seq"]) == seq_a + 1, \
            "lot B should be exactly one batch"

    frozen = relay_during_failover == "frozen"
    if frozen:
        relay.proc.send_signal(signal.SIGSTOP)
    db.fail_over()  # the standby started again and promoted
    holder.close()  # its transaction died with the old primary
    new = connect(db.url(db.p2))
    # lot C: after the failover; frozen: 50 transactions, more than lot B
    # and the relay's advances took on the old primary
    insert_rows(new, tps, 2000, 500, per_txn=10 if frozen or restarted else 50)
    if frozen or restarted:
        assert scalar(new, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint") > \
            max_xmax(ck_before)
    if frozen:
        relay.proc.send_signal(signal.SIGCONT)
    if restarted:
        relay = relays(cfg)

    assert relay.wait_exit(120) == 5, relay.text()
    log = relay.text()
    print("\nrelay's log after the failover:\n" + "\n".join(
        line for line in log.splitlines() if re.search(r" (warning|error) ", line)))
    assert re.search(r"error relay: .*(the database lost committed work: it stores batch \d+ but "
                     r"had confirmed batch \d+|transaction ids went backwards|the database lost "
                     r"committed work: (other rows in the last batch's span|more than one batch) "
                     r"behind Kafka).*follow "
                     r'"OR003: transaction ids behind the position" in docs/sql.md', log), log

    if restarted:  # neither the ids nor the batch numbers could show it
        assert "other rows in the last batch's span" in log, log
        assert "bringing the database forward" not in log, log

    # The recovery procedure of docs/sql.md, "OR003".
    # 1. Every relay of this name is stopped (it exited). 2. Look at the rows
    # and at Kafka: the table holds lot A (relayed, kept by the open
    # transaction's partition), lot C (and lot S); lot B is gone with the old
    # primary.
    rows = [r[0] for r in query(new, "SELECT convert_from(payload, 'UTF8') FROM outbox.event")]
    assert sorted(rows) == sorted(f"row-{n}" for n in [*range(1000), *range(2000, 2500),
                                                       *survivors])
    in_kafka = read_all(tps)
    assert sorted(int(dict(m.headers())["n"].decode()) for m in in_kafka) == \
        [*range(2000), *survivors]
    # 3. outbox-relay verify --list-lost, before the reset: the events Kafka
    # has that the database lost are exactly lot B, nothing else is wrong;
    # lot S is listed as published, its rows still in the table
    ex, audit_before, lost_by_db, published = lost_by_database(cfg, tps)
    assert ex == 6, audit_before
    assert audit_before["kinds"]["lost_by_database"]["count"] == 1000, audit_before["kinds"]
    assert audit_before["violations"] == 1000, audit_before["kinds"]
    assert lost_by_db == list(range(1000, 2000))
    assert sorted(published) == list(survivors)
    # 4. The rows listed as published are in Kafka already: delete them, so
    # that the reset's 'relay' does not publish them a second time.
    assert or003.delete_published(new, audit_before) == len(published)
    ck_seq = int(dict(f.split("=", 1) for f in ck_before.split()[1:])["seq"])
    assert or003.kafka_batch(audit_before) == ck_seq
    # 5. The current generation, 6. reset: 'unrelayed', which deletes the
    # rows the stored position relayed (lot A, still in the table: 'relay'
    # would publish them again); a batch number above the checkpoint's.
    (gen, seq), row = or003.reset(new, "r-async", ck_seq + 1)
    assert seq < ck_seq, "the promoted standby should hold an older position than Kafka"
    assert row[4] == 1000, row  # rows_deleted: lot A
    # 7. Start the relay once trusting the database's position.
    cfg2 = write_config(tmp_path / "relay-recover.conf", db.url(db.p2), "r-async",
                        **opts, **{"relay.on_database_ahead": "trust-database"})
    again = relays(cfg2)
    again.wait_log("publishing")
    wait_for(drained(new), 60, "the relay to publish lot C")
    assert again.stop() == 0, again.text()

    msgs = read_all(tps)
    by_n = collections.Counter(int(dict(m.headers())["n"].decode()) for m in msgs)
    assert {n for n, c in by_n.items() if c > 1} == set(), "duplicates"
    assert set(by_n) == {*range(2500), *survivors}, "lost or phantom rows"
    ids = collections.defaultdict(set)
    for m in msgs:
        ids[int(dict(m.headers())["outbox-id"].decode())].add(int(dict(m.headers())["n"].decode()))
    reused = sorted(i for i, ns in ids.items() if len(ns) > 1)
    assert reused, "the promoted replica's id sequence should restart below the lost rows' ids"
    pos = audit_before["database_position"]
    assert (pos["batch"], pos["lost"], pos["ids_reused"], pos["rows_present"],
            pos["checkpoint_rows"], pos["digest"]) == \
        (seq, 1000, len(reused), len(survivors), 1000 + len(survivors), "equal"), pos
    # outbox-relay verify tells the operator: the same outbox-id on two records.
    audit = relay_cmd("verify", "-c", cfg2, "--topics", ",".join(tps), "--json")
    assert audit.returncode == 6, audit.stdout + audit.stderr
    kinds = json.loads(audit.stdout)["kinds"]
    assert kinds["duplicate"]["count"] == len(reused), kinds
    # after the reset the database's batch is Kafka's again: the report of
    # what it lost is only there before step 6
    assert kinds["lost_by_database"]["count"] == 0, kinds
    assert json.loads(audit.stdout)["database_position"]["lost_report"] == "not_ahead"
    print(f"verify: { {k: v['count'] for k, v in kinds.items() if v['count']} }")
    print(f"verify before the reset: {len(lost_by_db)} events Kafka has that the database lost "
          f"(rows 1000..1999), {pos['ids_reused']} of them with their id reused; "
          f"{len(reused)} outbox ids were given to two different rows (e.g. {reused[:5]})")
