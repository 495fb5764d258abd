"""The fault suite's workload: writer processes that commit outbox rows the
way applications do, and record the truth for the checker.

Each transaction takes 1-5 keys, locks each key's sequence row, bumps it, and
inserts one outbox row per key with headers k (key), s (the key's sequence
number) and t (a transaction id), plus one audit row per outbox row, in the
same transaction. The audit row holds what the checker compares with Kafka:
the row's topic, key and payload, its transaction id (txid, to place it in
the relay's snapshot windows) and the transaction's start ticket.

Commit order facts, for the README's "if A committed before B started, A's
rows are published before B's": fault.ticket is a sequence (CACHE 1, so its
values are handed out in call order). A transaction's first statement takes
its start ticket, before it writes anything (so before it has a transaction
id). After its COMMIT has returned, the writer takes a done ticket in a
statement of its own and records it in fault.txn_done. A.done < B.start then
means A's COMMIT had returned before B took its start ticket: A committed
before B started, for certain. A writer that loses its connection between
COMMIT and that insert records no done ticket, and the checker skips that
transaction (it only checks pairs whose order is certain). Some transactions roll back; some stay open for seconds
(their ids commit out of order with everyone else's); those write a key of
their writer's own, so they delay nobody's locks, only their own rows. A key always goes to
the same topic, so per key the sequence must rise by one along its partition.

Acknowledged transactions: after its COMMIT has returned (before the done
ticket), a writer appends the transaction id to a file of its own outside
the database (`ack_dir`). The audit table fails over and rewinds with the
outbox; these files do not, so the checker can tell a transaction the
database acknowledged and then lost (an asynchronous standby promoted)
from one that never committed.
"""
import multiprocessing as mp
import random
import time
import uuid
from pathlib import Path

import psycopg2

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS fault;
CREATE TABLE IF NOT EXISTS fault.key_seq(key text PRIMARY KEY, topic text NOT NULL,
                                         seq bigint NOT NULL DEFAULT 0);
CREATE SEQUENCE IF NOT EXISTS fault.ticket CACHE 1;
CREATE TABLE IF NOT EXISTS fault.audit(outbox_id bigint PRIMARY KEY, key text NOT NULL,
                                       seq bigint NOT NULL, txn text NOT NULL, nrows int NOT NULL,
                                       topic text NOT NULL, payload text NOT NULL,
                                       txid xid8 NOT NULL, start_ticket bigint NOT NULL);
CREATE TABLE IF NOT EXISTS fault.txn_done(txn text PRIMARY KEY, ticket bigint NOT NULL);
"""


def setup(url, topics, nkeys):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
        for i in range(nkeys):
            cur.execute("INSERT INTO fault.key_seq(key, topic) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (f"key-{i:03d}", topics[i % len(topics)]))
    conn.close()


def _one_txn(cur, rng, nkeys, long_txn_prob, rollback_prob, slow_key, acks):
    long_txn = rng.random() < long_txn_prob
    if long_txn:
        # A long transaction writes this writer's own key, so it holds no
        # lock another writer waits for: it only holds an early id open.
        keys = [slow_key]
    else:
        keys = [f"key-{k:03d}" for k in sorted(rng.sample(range(nkeys), rng.randint(1, min(5, nkeys))))]
    txn = uuid.uuid4().hex[:16]
    cur.execute("BEGIN")
    cur.execute("SELECT nextval('fault.ticket')")  # before any write: the start ticket
    start_ticket = cur.fetchone()[0]
    for key in keys:
        cur.execute("UPDATE fault.key_seq SET seq = seq + 1 WHERE key = %s RETURNING seq, topic",
                    (key,))
        seq, topic = cur.fetchone()
        payload = f'{{"key":"{key}","seq":{seq},"txn":"{txn}","pad":"{"x" * rng.randint(0, 96)}"}}'
        cur.execute(
            "INSERT INTO outbox.event(topic, key, payload, headers) VALUES "
            "(%s, convert_to(%s, 'UTF8'), convert_to(%s, 'UTF8'), "
            " jsonb_build_object('k', %s::text, 's', %s::text, 't', %s::text)) RETURNING id, txid",
            (topic, key, payload, key, str(seq), txn))
        oid, txid = cur.fetchone()
        cur.execute("INSERT INTO fault.audit(outbox_id, key, seq, txn, nrows, topic, payload, txid, "
                    "start_ticket) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (oid, key, seq, txn, len(keys), topic, payload, txid, start_ticket))
    if long_txn:
        time.sleep(rng.uniform(0.5, 3.0))  # holds an early id while others commit
    if rng.random() < rollback_prob:
        cur.execute("ROLLBACK")
        return 0
    cur.execute("COMMIT")
    if acks is not None:
        acks.write(txn + "\n")  # acknowledged (line-buffered: written at once)
    # after COMMIT returned: the done ticket (see the module's comment)
    cur.execute("INSERT INTO fault.txn_done(txn, ticket) VALUES (%s, nextval('fault.ticket'))", (txn,))
    return len(keys)


def writer(url, nkeys, stop, target, counter, seed, long_txn_prob, rollback_prob, ack_dir):
    rng = random.Random(seed)
    slow_key = f"slow-{seed}"
    conn = None
    acks = open(f"{ack_dir}/acked-{seed}.txt", "a", buffering=1) if ack_dir else None
    while not stop.is_set() and counter.value < target:
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(url, connect_timeout=5)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("INSERT INTO fault.key_seq(key, topic) SELECT %s, topic FROM "
                            "fault.key_seq WHERE key = 'key-000' ON CONFLICT DO NOTHING", (slow_key,))
                n = _one_txn(cur, rng, nkeys, long_txn_prob, rollback_prob, slow_key, acks)
            with counter.get_lock():
                counter.value += n
        except psycopg2.Error:
            # the database restarted or our backend was terminated: the
            # transaction is gone (or committed: the audit table knows)
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.2)
    if acks is not None:
        acks.close()


class Workload:
    """`writers` fast writer processes, plus `slow_writers` whose transactions
    are often long (half of them stay open 0.5-3 s), until `target` rows are
    committed or stop(). With `ack_dir`, each writer records the
    transactions whose COMMIT returned there (acked())."""

    def __init__(self, url, nkeys, writers=4, slow_writers=1, target=10**12, rollback_prob=0.1,
                 seed=1, ack_dir=None):
        self.ack_dir = ack_dir
        self.stop_ev = mp.Event()
        self.counter = mp.Value("q", 0)
        self.procs = [mp.Process(target=writer, daemon=True,
                                 args=(url, nkeys, self.stop_ev, target, self.counter, seed + i,
                                       0.5 if i >= writers else 0.0, rollback_prob, ack_dir))
                      for i in range(writers + slow_writers)]

    def start(self):
        for p in self.procs:
            p.start()
        return self

    @property
    def committed(self):
        return self.counter.value

    def alive(self):
        return any(p.is_alive() for p in self.procs)

    def stop(self):
        self.stop_ev.set()
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()

    def ack_mark(self):
        """Where each writer's file of acknowledged transactions ends now
        (for acked_between)."""
        return {f.name: f.stat().st_size for f in Path(self.ack_dir).glob("acked-*.txt")}

    def acked_between(self, start, end):
        """The transactions acknowledged between two ack_mark()s."""
        out = set()
        for name, stop in end.items():
            with open(Path(self.ack_dir) / name, "rb") as f:
                f.seek(start.get(name, 0))
                out.update(f.read(stop - start.get(name, 0)).decode().split())
        return out

    def acked(self):
        """The ids of every transaction whose COMMIT returned (after stop())."""
        out = set()
        for f in Path(self.ack_dir).glob("acked-*.txt"):
            out.update(f.read_text().split())
        return out
