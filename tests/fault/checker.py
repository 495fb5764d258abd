"""The exactly-once checker: reads every partition of the relay's topics
read_committed from the start to the end (assign, no consumer group) and
compares with the audit table the writers filled in the same transactions as
their outbox rows. Prints a table; exit status 1 on any violation.

    python3 checker.py --db URL --topics t1,t2,t3 --relay NAME --checkpoint-topic T
"""
import argparse
import collections
import sys

import psycopg2
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

QUIET = {"log_level": 0}


def read_topics(bootstrap, topics, isolation):
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "checker-unused",
                     "isolation.level": isolation, "enable.auto.commit": False,
                     "enable.partition.eof": True, "fetch.wait.max.ms": 50, **QUIET})
    md = cons.list_topics(timeout=10)
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md.topics[t].partitions]
    pending = {(tp.topic, tp.partition) for tp in parts}
    cons.assign(parts)
    out = []
    while pending:
        for m in cons.consume(50000, 1.0):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard((m.topic(), m.partition()))
                    continue
                raise RuntimeError(f"consume error: {m.error()}")
            out.append(m)
    cons.close()
    return out


def hdr(m, name):
    for k, v in m.headers() or []:
        if k == name:
            return v.decode()
    return None


def last_checkpoint(bootstrap, topic, relay):
    recs = [m for m in read_topics(bootstrap, [topic], "read_committed") if m.key() == relay.encode()]
    return recs[-1].value().decode() if recs else None


def check(db_url, bootstrap, topics, relay, ckpt_topic, expect_aborted=False):
    """Returns (report dict, list of violation strings)."""
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT outbox_id, key, seq, txn, nrows FROM fault.audit")
        audit = {r[0]: r[1:] for r in cur.fetchall()}
        cur.execute("SELECT batch_seq, pos_done, pos_next, pos_after_id FROM outbox.position_get(%s)",
                    (relay,))
        db_pos = cur.fetchone()
        cur.execute("SELECT count(*) FROM outbox.event")
        left_in_outbox = cur.fetchone()[0]
    conn.close()

    msgs = read_topics(bootstrap, topics, "read_committed")
    raw_count = len(read_topics(bootstrap, topics, "read_uncommitted"))

    seen = collections.Counter()
    by_key = collections.defaultdict(list)
    txn_seen = collections.Counter()
    phantom = []
    for m in sorted(msgs, key=lambda m: (m.topic(), m.partition(), m.offset())):
        oid = int(hdr(m, "outbox-id"))
        seen[oid] += 1
        if oid not in audit:
            phantom.append(oid)
            continue
        by_key[hdr(m, "k")].append(int(hdr(m, "s")))
        txn_seen[hdr(m, "t")] += 1
    lost = [oid for oid in audit if oid not in seen]
    dups = [oid for oid, c in seen.items() if c > 1]
    order = []
    for key, seqs in by_key.items():
        for a, b in zip([0] + seqs, seqs):
            if b != a + 1:
                order.append((key, a, b))
    txn_rows = {}
    for oid, (key, seq, txn, nrows) in audit.items():
        txn_rows[txn] = nrows
    atomicity = [t for t, n in txn_seen.items() if n != txn_rows.get(t, -1)]

    ck = last_checkpoint(bootstrap, ckpt_topic, relay)
    pos_ok = False
    if ck and db_pos:
        f = dict(x.split("=", 1) for x in ck.split()[1:])
        pos_ok = (int(f["seq"]), f["done"], None if f["next"] == "-" else f["next"],
                  int(f["after"])) == tuple(db_pos)

    report = collections.OrderedDict([
        ("rows committed (audit)", len(audit)),
        ("rows seen read_committed", len(msgs)),
        ("records in the log (read_uncommitted)", raw_count),
        ("lost", len(lost)),
        ("duplicated", len(dups)),
        ("phantom (rolled back or aborted, yet visible)", len(phantom)),
        ("per-key order violations", len(order)),
        ("transaction atomicity violations", len(atomicity)),
        ("rows left in outbox.event", left_in_outbox),
        ("database position == last checkpoint", "yes" if pos_ok else "NO"),
        ("database batch_seq", db_pos[0] if db_pos else None),
    ])
    violations = []
    if lost:
        violations.append(f"lost rows, e.g. {sorted(lost)[:10]}")
    if dups:
        violations.append(f"duplicated rows, e.g. {sorted(dups)[:10]}")
    if phantom:
        violations.append(f"phantom rows, e.g. {sorted(phantom)[:10]}")
    if order:
        violations.append(f"order violations, e.g. {order[:10]}")
    if atomicity:
        violations.append(f"atomicity violations, e.g. {atomicity[:10]}")
    if left_in_outbox:
        violations.append(f"{left_in_outbox} rows still in outbox.event")
    if not pos_ok:
        violations.append(f"database position {db_pos} differs from checkpoint {ck!r}")
    if expect_aborted and raw_count <= len(msgs):
        violations.append("no aborted record in the log: the faults did not hit a transaction "
                          "(the run proves nothing about aborts)")
    return report, violations


def print_report(report, violations, out=sys.stdout):
    width = max(len(k) for k in report)
    print("| check | value |", file=out)
    print("| --- | --- |", file=out)
    for k, v in report.items():
        print(f"| {k.ljust(width)} | {v} |", file=out)
    for v in violations:
        print(f"VIOLATION: {v}", file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--topics", required=True)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--checkpoint-topic", required=True)
    args = ap.parse_args()
    report, violations = check(args.db, args.bootstrap, args.topics.split(","), args.relay,
                               args.checkpoint_topic)
    print_report(report, violations)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
