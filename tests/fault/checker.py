"""The exactly-once checker: reads every partition of the relay's topics and
its checkpoint topic from the start to the end (assign, no consumer group),
read_committed and read_uncommitted, and compares with the audit tables the
writers filled in the same transactions as their outbox rows
(tests/fault/workload.py). Prints a table; exit status 1 on any violation.

    python3 checker.py --db URL --topics t1,t2,t3 --relay NAME --checkpoint-topic T

What it checks, and how (a consumer sees no producer or transaction ids, so
every check below is stated in terms of what a consumer can observe):

Reading to the end. Each partition's end is asked of the broker before the
read (ListOffsets: the last stable offset for read_committed, the high
watermark for read_uncommitted) and the read goes on until the consumer's
position reaches it (the position steps over transaction markers, so it
lands exactly on the end); past a deadline the check fails with an error
naming the partitions not reached. After the read the ends are asked again:
an end that moved means something still writes (no check is sound then). A
last stable offset below the high watermark after every relay stopped is a
transaction left hanging.

Rows. A record's row is the audit row of its workload transaction and key
(headers t and k: names no failover hands out again, unlike outbox ids and
transaction ids). Every record must carry an `outbox-id` header, name a
committed row of the audit table (else: phantom), appear once (else:
duplicated), and have that row's outbox id, topic, key and payload, and its
workload header s (else: content mismatch). Every committed row must appear
(else: lost). Per key, the writer's sequence rises by one along the
partition (per-key order). Every transaction the writers saw acknowledged
(COMMIT returned; recorded outside the database, workload.py) must be in the
audit table (else: the database lost acknowledged work, e.g. a promoted
asynchronous standby; the audit table is rewound with the outbox, so only
this shows it).

Two histories (run.py's db_failover_async: a failover to a replica that
missed commits, then the operator's recovery of docs/sql.md "OR003"). Kafka
then has records whose rows the database lost. Such a record (no audit row
of its t and k) is expected only if it is listed `lost` by the `verify
--list-lost` the harness ran before the reset, exactly once, and its
transaction was acknowledged in that failover's lost span (after the
standby stopped receiving, before the primary stopped: writer acks); its
headers, key and payload must agree. verify's list must hold nothing else:
no record with a row, none the read did not find; its `published` entries
must have their rows. An acknowledged transaction missing from the database
is allowed only in a lost span. Per key the lost records branch off the
database's sequence (they rise by one from the last record before them;
the database's sequence then goes on from its own). The checkpoint chain
skips the reset's own batch R (R - 1 is Kafka's last of the old history,
R + 1 the first of the new) and starts its generation and window rules
again there; a row is mapped to its batch within its own history's part of
the chain (its txid at or above a promoted standby's xmax: the new one) or a
later one, never an earlier one, whose positions name reused transaction
ids.

The checkpoint chain. The relay's own records in the checkpoint topic (its
key, no outbox-id header, and the outbox-relay-checkpoint marker header
naming it when there is one: the relay's own rule), read_committed, in
offset order: batch sequence 1, 2, 3, ... with no gap and
no repeat (every committed batch has exactly one committed checkpoint); the
generation never goes back (a checkpoint of generation g after one of g' > g
was published by a relay that had lost the lease); the position moves
forward (inside one window after_id grows; the window start never moves
back); the last checkpoint equals the database's position. The topic is
compacted with min.compaction.lag.ms of an hour and the relay's records sit
in the active segment, which is never compacted, so no checkpoint of a run
can be compacted away.

A batch's rows and its checkpoint are one Kafka transaction. From the chain
alone, every committed row has the batch that must have carried it: the
first checkpoint k whose position covers the row (its txid visible in
`done`, or visible in `next` with id <= after_id), i.e. the rows of
checkpoint k's position delta over checkpoint k-1. In one partition the
committed records of one Kafka transaction are consecutive offsets and two
transactions are always separated by at least their transaction marker, so
the maximal runs of consecutive offsets are (parts of) Kafka transactions.
Checked: every published row is covered by a committed checkpoint (a row
published without its checkpoint, or with a checkpoint that does not cover
it, is a violation); every run holds rows of a single batch; along a
partition the runs' batches strictly rise (a batch in two transactions of a
partition, or published out of batch order, is a violation). With no row
lost or duplicated, batch k's records are then exactly the rows of its
position delta, each partition's share in one transaction. That the records
and the checkpoint commit in the *same* transaction (and not in two
consecutive ones) is not visible to a consumer by itself; its consequence
is: the crash points between produce, commit and the database advance make
any split visible as lost or duplicated rows or as a chain gap.

Database transactions (17.2). The relay reads snapshot windows, and a
window's rows in id order, cut into batches by batch.max_rows and
batch.max_bytes at any row: the design and README do not promise that one
database transaction's rows share a Kafka transaction (a size cut may fall
between them), so that is counted, not asserted. What is promised, and
checked: a transaction's rows keep their insert order (id order: batch index
never falls, and in one partition the offsets rise with the id), a split
transaction is split only inside one window (every checkpoint that cuts it
has the window open); and "if transaction A committed before transaction B
started, A's rows are published before B's": for every pair where that
order is certain from the workload's tickets (A's done ticket, taken after
its COMMIT returned, is below B's start ticket, taken before B wrote
anything), A's last batch is not after B's first batch, and in every
partition holding rows of both, A's last offset is below B's first. Pairs
whose order is not certain (overlapping transactions, or A's done ticket
lost with its connection) are not checked.
"""
import argparse
import bisect
import collections
import json
import sys
import time

import psycopg2
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

QUIET = {"log_level": 0}
READ_TIMEOUT_S = 180


class CheckError(RuntimeError):
    """The check itself could not be done (a read that did not reach the end,
    a broker that did not answer): never a pass."""


def _consumer(bootstrap, isolation):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "checker-unused",
                     "isolation.level": isolation, "enable.auto.commit": False,
                     "enable.partition.eof": True, "fetch.wait.max.ms": 50, **QUIET})


def partition_ends(cons, tps):
    """{(topic, partition): end} for a consumer's isolation level: the last
    stable offset (read_committed) or the high watermark (read_uncommitted)."""
    out = {}
    for t, p in tps:
        try:
            out[(t, p)] = cons.get_watermark_offsets(TopicPartition(t, p), timeout=10, cached=False)[1]
        except Exception as e:  # KafkaException: the broker did not answer
            raise CheckError(f"could not ask the end of {t}[{p}]: {e}") from e
    return out


def read_topics(bootstrap, topics, isolation, keep, timeout=READ_TIMEOUT_S):
    """Reads every partition of `topics` from the start to its end (see the
    module's comment) and returns ({(topic, partition): [keep(m), ...]},
    {(topic, partition): end}). Raises CheckError when a partition's end is
    not reached before the deadline, the position passes the end, or the end
    moves during the read."""
    cons = _consumer(bootstrap, isolation)
    try:
        md = cons.list_topics(timeout=10)
        tps = []
        for t in topics:
            if t not in md.topics or md.topics[t].error is not None:
                raise CheckError(f"topic {t!r} not found: {md.topics.get(t) and md.topics[t].error}")
            tps += [(t, p) for p in sorted(md.topics[t].partitions)]
        ends = partition_ends(cons, tps)
        out = {tp: [] for tp in tps}
        pending = {tp for tp in tps if ends[tp] > 0}
        cons.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in tps])
        deadline = time.monotonic() + timeout
        eof_seen = set()
        while pending:
            if time.monotonic() > deadline:
                pos = {(x.topic, x.partition): x.offset for x in
                       cons.position([TopicPartition(t, p) for t, p in sorted(pending)])}
                raise CheckError(f"{isolation} read did not reach the end within {timeout} s: "
                                 + ", ".join(f"{t}[{p}] at {pos.get((t, p))} of {ends[(t, p)]}"
                                             for t, p in sorted(pending)[:6]))
            for m in cons.consume(10000, 0.5):
                err = m.error()
                if err:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof_seen.add((m.topic(), m.partition()))
                        continue
                    raise CheckError(f"consume error: {err}")
                out[(m.topic(), m.partition())].append(keep(m))
            # An end-of-partition event is only a hint: the position decides.
            check = [TopicPartition(t, p) for t, p in pending if (t, p) in eof_seen
                     or (out[(t, p)] and out[(t, p)][-1][0] + 1 >= ends[(t, p)])]
            for x in cons.position(check) if check else []:
                tp = (x.topic, x.partition)
                if x.offset >= 0 and x.offset > ends[tp]:
                    raise CheckError(f"{isolation} read of {x.topic}[{x.partition}] passed its "
                                     f"end: position {x.offset}, end {ends[tp]}")
                if x.offset == ends[tp]:
                    pending.discard(tp)
            eof_seen.clear()
        again = partition_ends(cons, tps)
        moved = [f"{t}[{p}] {ends[(t, p)]} -> {again[(t, p)]}" for t, p in tps if again[(t, p)] != ends[(t, p)]]
        if moved:
            raise CheckError(f"partition ends moved during the {isolation} read (something still "
                             f"writes): {', '.join(moved[:6])}")
        return out, ends
    finally:
        cons.close()


def _headers(m):
    return {k: v for k, v in (m.headers() or [])}


def _text(b):
    return b.decode(errors="replace") if b is not None else None


def keep_compared(audit, by_row):
    """What to keep of a data record: (offset, outbox id of its row or None,
    mismatch text or None, None or what is known of a record with no row in
    the database). A record's row is found by the workload's own names, its
    transaction (header t) and key (header k), which no failover reuses
    (outbox ids and transaction ids a promoted replica hands out again);
    `by_row` maps (txn, key) to the row's outbox id. The content is compared
    with the audit row as the record is read, so that a million records are
    not held in memory."""
    def keep(m):
        h = _headers(m)
        hid = h.get("outbox-id")
        hid = int(hid) if hid is not None and hid.isdigit() else None
        txn, key = _text(h.get("t")), _text(h.get("k"))
        oid = by_row.get((txn, key))
        where = f"{m.topic()}[{m.partition()}]@{m.offset()}"
        if oid is None:
            return (m.offset(), None, None, beyond_record(m, h, hid, txn, key, where))
        akey, aseq, atxn, _, atopic, apayload, _, _ = audit[oid]
        got = (m.topic(), m.key(), m.value(), h.get("s"), hid)
        want = (atopic, akey.encode(), apayload.encode(), str(aseq).encode(), oid)
        bad = None
        if got != want:
            bad = (f"row {oid} at {where}: {[g for g, w in zip(got, want) if g != w][:2]} where "
                   f"the database has {[w for g, w in zip(got, want) if g != w][:2]}")
        return (m.offset(), oid, bad, None)
    return keep


def beyond_record(m, h, hid, txn, key, where):
    """A record whose row the database does not have (lost by a failover to
    a replica that missed commits, or a phantom): (outbox-id header, txn,
    key, seq, mismatch text or None). With no audit row to compare with, the
    record must agree with itself: the workload writes key, seq and txn
    into the payload too."""
    seq = _text(h.get("s"))
    bad = None
    try:
        body = json.loads(m.value())
        want = (body["key"], str(body["seq"]), body["txn"], body["key"].encode())
    except (ValueError, KeyError, TypeError, AttributeError):
        want = None
    if want != (key, seq, txn, m.key()):
        bad = (f"record at {where} with no row in the database: headers k={key} s={seq} t={txn}, "
               f"key {m.key()!r}, payload {m.value()[:80]!r} do not agree")
    return (hid, txn, key, int(seq) if seq and seq.isdigit() else None, bad)


# The relay marks its checkpoint records with this header (its name); a
# record without it is a checkpoint of an older relay.
CHECKPOINT_MARKER_HEADER = "outbox-relay-checkpoint"


def keep_checkpoint(m):
    h = _headers(m)
    return (m.offset(), m.key(), m.value(), h.get(CHECKPOINT_MARKER_HEADER), "outbox-id" in h)


# -- positions ------------------------------------------------------------------

def parse_snapshot(s):
    xmin, xmax, xip = s.split(":")
    return int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x)


def visible(txid, snap):
    xmin, xmax, xip = snap
    return txid < xmin or (txid < xmax and txid not in xip)


class Checkpoint:
    def __init__(self, offset, value):
        self.offset = offset
        self.raw = value
        f = dict(x.split("=", 1) for x in value.split()[1:])
        self.seq = int(f["seq"])
        self.gen = int(f["gen"])
        self.after = int(f["after"])
        self.done_s = f["done"]
        self.next_s = None if f["next"] == "-" else f["next"]
        self.done = parse_snapshot(self.done_s)
        self.next = parse_snapshot(self.next_s) if self.next_s else None

    def covers(self, oid, txid):
        return visible(txid, self.done) or (self.next is not None and oid <= self.after
                                            and visible(txid, self.next))

    def as_db(self):
        return (self.seq, self.done_s, self.next_s, self.after)


def at_reset(prev, c, resets):
    """True when checkpoint c follows prev across an operator's
    position_reset to batch R (docs/sql.md, "OR003"): prev is Kafka's last
    batch R - 1 of the old history, c the first batch R + 1 of the new one
    (the reset's own batch R has no checkpoint)."""
    return prev is not None and prev.seq + 1 in resets and c.seq == prev.seq + 2


def chain_violations(chain, resets=()):
    """The checkpoint chain's own rules (see the module's comment). `resets`:
    the batch numbers the run's position_reset calls stored (a failover to
    a replica that missed commits): across one, batch R is skipped, and the
    generation and the window start begin again (the new history's lease
    and transaction ids count from the replica's)."""
    out = []
    prev = None
    top_gen = 0
    for c in chain:
        if at_reset(prev, c, resets):
            top_gen = c.gen
            prev = c
            continue
        want = prev.seq + 1 if prev else 1
        if c.seq < want:
            out.append(f"checkpoint chain: batch {c.seq} committed again at offset {c.offset} "
                       f"(generation {c.gen}) after batch {want - 1}: a batch published twice")
        elif c.seq > want:
            out.append(f"checkpoint chain: batches {want}..{c.seq - 1} have no checkpoint "
                       f"(next is batch {c.seq} at offset {c.offset})")
        if c.gen < top_gen:
            out.append(f"checkpoint chain: batch {c.seq} at offset {c.offset} written by generation "
                       f"{c.gen} after generation {top_gen}: published without the lease")
        top_gen = max(top_gen, c.gen)
        if prev:
            if c.done[1] < prev.done[1]:
                out.append(f"checkpoint chain: batch {c.seq}'s window start {c.done_s} is before "
                           f"batch {prev.seq}'s {prev.done_s}")
            elif c.done_s == prev.done_s and c.next_s == prev.next_s and c.after <= prev.after:
                out.append(f"checkpoint chain: batch {c.seq} does not move past batch {prev.seq} "
                           f"(after_id {prev.after} -> {c.after} in one window)")
        prev = c
    return out


def segments(chain, resets):
    """The chain cut at every reset (at_reset): [(index of its first
    checkpoint, its checkpoints), ...], one per database history."""
    out, start = [], 0
    for i in range(1, len(chain)):
        if at_reset(chain[i - 1], chain[i], resets):
            out.append((start, chain[start:i]))
            start = i
    out.append((start, chain[start:]))
    return out


def batch_index(segs, epoch, oid, txid):
    """Index in the chain of the checkpoint that carried a row of database
    history `epoch` (0 before the first reset, ...): the first covering one
    in that history's segment or, for a row the replica kept unrelayed, in a
    later one (the reset's 'relay' publishes it). An earlier history's
    positions say nothing of a later one's rows: their transaction ids may
    be reused ones."""
    for start, seg in segs[epoch:]:
        i = first_covering(seg, oid, txid)
        if i is not None:
            return start + i
    return None


def key_order_violations(by_key):
    """Per key, the workload's sequence along its partition. by_key: {key:
    [(seq, lost), ...]} in partition order, `lost` for a record whose row
    the database lost in a failover. The database's history rises by one;
    a run of lost records is a second history branching off it: it rises by
    one from the last record of the database's before it, which then goes
    on from its own last (the replica hands the lost numbers out again)."""
    out = []
    for key, recs in by_key.items():
        db_last, lost_last = 0, None
        for seq, lost in recs:
            if lost:
                last = db_last if lost_last is None else lost_last
                if seq != last + 1:
                    out.append((key, last, seq, "lost"))
                lost_last = seq
            else:
                if seq != db_last + 1:
                    out.append((key, db_last, seq))
                db_last, lost_last = seq, None
    return out


def lost_violations(beyond, found, listed, span_acks):
    """The records Kafka has whose rows the database lost, against verify's
    report of them. beyond: {(topic, partition, offset): (outbox-id, txn,
    key, seq, mismatch)} of the records with no row in the database; found:
    every (topic, partition, offset) read with a row; listed: verify
    --list-lost's entries (state "lost" or "published") of every failover;
    span_acks: the transactions acknowledged in a failover's lost span
    (after the standby stopped receiving, before the primary stopped).
    Each record with no row must be listed as lost, exactly once, and be of
    a transaction acknowledged in a lost span; each listed lost record must
    be one of them; each listed published one must have its row."""
    out = []
    lost = {}
    for e in listed:
        where = (e["topic"], e["partition"], e["offset"])
        if where in lost:
            out.append(f"verify listed {where} twice")
        lost[where] = e["state"]
    rows = collections.Counter((txn, key) for _, txn, key, _, _ in beyond.values())
    for where, (hid, txn, key, seq, bad) in sorted(beyond.items()):
        what = f"record {where[0]}[{where[1]}]@{where[2]} (outbox-id {hid}, txn {txn}, key {key})"
        if lost.get(where) != "lost":
            out.append(f"{what} has no row in the database and verify did not list it as lost "
                       f"(listed: {lost.get(where)}): a phantom")
        if txn not in span_acks:
            out.append(f"{what} has no row in the database and its transaction was not "
                       f"acknowledged in a failover's lost span: a phantom")
        if rows[(txn, key)] > 1:
            out.append(f"{what}: the lost row appears {rows[(txn, key)]} times: duplicated")
            rows[(txn, key)] = 1  # once per row
    for where, state in sorted(lost.items()):
        if state == "lost" and where not in beyond:
            out.append(f"verify listed {where} as lost, but " + (
                "the database has its row" if where in found else "no such record was read"))
        elif state == "published" and where not in found:
            out.append(f"verify listed {where} as published (row present), but "
                       + ("the database has no row of it" if where in beyond
                          else "no such record was read"))
        elif state not in ("lost", "published"):
            out.append(f"verify listed {where} in an unknown state {state!r}")
    return out


def acks_missing(acked, db_txns, span_acks):
    """The acknowledged transactions the database does not have, and those
    of them acknowledged outside every failover's lost span (violations:
    the standby had them before it stopped receiving, or a failover lost
    nothing)."""
    missing = sorted(acked - db_txns) if acked is not None else []
    return missing, [t for t in missing if t not in span_acks]


def first_covering(chain, oid, txid):
    """Index of the first checkpoint covering the row, or None. Binary search
    (positions only grow in a sound chain), verified, with a linear scan
    when the chain is not monotone."""
    lo, hi = 0, len(chain)
    while lo < hi:
        mid = (lo + hi) // 2
        if chain[mid].covers(oid, txid):
            hi = mid
        else:
            lo = mid + 1
    if lo < len(chain) and (lo == 0 or not chain[lo - 1].covers(oid, txid)):
        return lo
    for i, c in enumerate(chain):
        if c.covers(oid, txid):
            return i
    return None


# -- the check --------------------------------------------------------------------

def load_db(db_url, relay):
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT outbox_id, key, seq, txn, nrows, topic, payload, txid::text::bigint, "
                        "start_ticket FROM fault.audit")
            audit = {r[0]: r[1:] for r in cur.fetchall()}
            cur.execute("SELECT txn, ticket FROM fault.txn_done")
            done = dict(cur.fetchall())
            cur.execute("SELECT batch_seq, pos_done, pos_next, pos_after_id FROM outbox.position_get(%s)",
                        (relay,))
            db_pos = cur.fetchone()
            cur.execute("SELECT count(*) FROM outbox.event")
            left_in_outbox = cur.fetchone()[0]
    finally:
        conn.close()
    return audit, done, db_pos, left_in_outbox


def order_violations(txns, key_fn, what):
    """txns: {txn: (start_ticket, done_ticket or None, first, last)}: for every
    pair A, B with A.done < B.start, A.last must not be after B.first
    (key_fn compares). Sweep: transactions by done ticket, a running maximum
    of `last`, and for each B the maximum over every A that finished before
    B started."""
    finished = sorted((d, last, t) for t, (s, d, first, last) in txns.items() if d is not None)
    tickets = [d for d, _, _ in finished]
    run_max = []
    best = None
    for d, last, t in finished:
        if best is None or key_fn(last) > key_fn(best[0]):
            best = (last, t)
        run_max.append(best)
    out = []
    for t, (s, d, first, last) in txns.items():
        i = bisect.bisect_left(tickets, s)
        if i == 0:
            continue
        a_last, a = run_max[i - 1]
        if key_fn(a_last) > key_fn(first):
            out.append(f"cross-transaction order ({what}): transaction {a} committed before "
                       f"transaction {t} started, yet {t}'s rows come first ({first} before {a_last})")
    return out


def check(db_url, bootstrap, topics, relay, ckpt_topic, expect_aborted=False, timeout=READ_TIMEOUT_S,
          acked=None, failovers=()):
    """Returns (report dict, list of violation strings). Raises CheckError
    when the check could not be made (never a pass). `acked`: the ids of the
    transactions the writers saw committed (COMMIT returned), known outside
    the database; each must be in the audit table, except one acknowledged
    in the lost span of a failover to a replica that missed commits.
    `failovers`: one dict per such failover (tests/fault/run.py,
    db_failover_async): "span_acks" (the transactions acknowledged after
    the standby stopped receiving, before the primary stopped), "xmax" (the
    promoted standby's snapshot xmax: the new history's transaction ids
    begin there), "reset" (the batch number its position_reset stored, or
    None when Kafka was not ahead of the promoted standby) and
    "listed" (verify --list-lost's entries before the reset)."""
    audit, done_ticket, db_pos, left_in_outbox = load_db(db_url, relay)
    violations = []
    span_acks = set().union(*(f["span_acks"] for f in failovers))
    ack_missing, ack_lost = acks_missing(acked, {a[2] for a in audit.values()}, span_acks)
    by_row = {(a[2], a[0]): oid for oid, a in audit.items()}
    # A failover whose relays had published nothing the replica missed
    # needs no reset: one history goes on (the replica's ids are beyond
    # every position it has).
    reset_by = sorted((f for f in failovers if f["reset"] is not None), key=lambda f: f["reset"])
    resets = {f["reset"] for f in reset_by}
    # the transaction ids where each later history begins, by reset
    xmaxes = [f["xmax"] for f in reset_by]
    if xmaxes != sorted(xmaxes):
        violations.append(f"the promoted standbys' transaction ids went back across failovers: "
                          f"{xmaxes}")

    data, lso = read_topics(bootstrap, topics, "read_committed", keep_compared(audit, by_row),
                            timeout)
    raw, hw = read_topics(bootstrap, topics, "read_uncommitted", lambda m: (m.offset(),), timeout)
    ck_c, ck_lso = read_topics(bootstrap, [ckpt_topic], "read_committed", keep_checkpoint, timeout)
    ck_u, ck_hw = read_topics(bootstrap, [ckpt_topic], "read_uncommitted", lambda m: (m.offset(),),
                              timeout)
    hanging = [f"{t}[{p}] last stable offset {lso_} < high watermark {hw_}"
               for ends_c, ends_u in ((lso, hw), (ck_lso, ck_hw))
               for (t, p), lso_ in ends_c.items() for hw_ in [ends_u[(t, p)]] if lso_ != hw_]
    if hanging:
        violations.append("transactions left open after the run: " + "; ".join(hanging[:6]))

    # -- rows ---------------------------------------------------------------
    seen = collections.Counter()
    where = {}  # oid -> (topic, partition, offset)
    by_key = collections.defaultdict(list)
    mismatch, no_id = [], []
    beyond, found = {}, set()  # records with no row in the database; with one
    n_committed = 0
    for (t, p), recs in sorted(data.items()):
        for off, oid, bad, gone in recs:
            n_committed += 1
            if bad:
                mismatch.append(bad)
            if gone is not None:
                if gone[0] is None:
                    no_id.append(f"{t}[{p}]@{off}")
                    continue
                beyond[(t, p, off)] = gone
                if gone[4]:
                    mismatch.append(gone[4])
                by_key[gone[2]].append((gone[3], True))
                continue
            found.add((t, p, off))
            seen[oid] += 1
            where.setdefault(oid, (t, p, off))
            by_key[audit[oid][0]].append((audit[oid][1], False))
    lost = [oid for oid in audit if oid not in seen]
    dups = [oid for oid, c in seen.items() if c > 1]
    order = key_order_violations(by_key)
    listed = [e for f in failovers for e in f["listed"]]
    beyond_v = lost_violations(beyond, found, listed, span_acks)
    raw_count = sum(len(v) for v in raw.values())

    # -- the checkpoint chain --------------------------------------------------
    ck_recs = ck_c[(ckpt_topic, 0)] if (ckpt_topic, 0) in ck_c else []
    chain, bad_ck, foreign = [], [], 0
    for off, key, value, marker, has_id in ck_recs:
        # the relay's own: its key, no outbox-id (an outbox row), and its
        # marker when there is one (the relay decides by the same rule)
        if key != relay.encode() or has_id or (marker is not None and marker != relay.encode()):
            foreign += 1
            continue
        try:
            chain.append(Checkpoint(off, value.decode()))
        except (ValueError, KeyError, AttributeError) as e:
            bad_ck.append(f"offset {off}: {value!r} ({e})")
    if bad_ck:
        violations.append(f"checkpoint chain: unreadable checkpoint records: {bad_ck[:3]}")
    chain_v = chain_violations(chain, resets)
    segs = segments(chain, resets)
    if len(segs) != len(resets) + 1:
        chain_v.append(f"checkpoint chain: {len(resets)} position resets (to batches "
                       f"{sorted(resets)}), but {len(segs) - 1} found in the chain")
        segs = [(0, chain)] + [(len(chain), [])] * len(resets)
    ck = chain[-1] if chain else None
    pos_ok = bool(ck and db_pos and ck.as_db() == tuple(db_pos))

    # -- rows against their batches ------------------------------------------------
    batch_of = {}
    uncovered_published, uncovered_committed = [], []
    for oid, a in audit.items():
        b = batch_index(segs, bisect.bisect_right(xmaxes, a[6]), oid, a[6]) if chain else None
        if b is None:
            (uncovered_published if oid in seen else uncovered_committed).append(oid)
        else:
            batch_of[oid] = b
    txn_struct = []
    for (t, p), recs in sorted(data.items()):
        runs, prev_off = [], None
        for off, oid, *_ in recs:
            if prev_off is None or off != prev_off + 1:
                runs.append([])
            runs[-1].append((off, batch_of.get(oid)))
            prev_off = off
        prev_b = None
        for run in runs:
            bs = {b for _, b in run if b is not None}
            if len(bs) > 1:
                txn_struct.append(f"{t}[{p}] offsets {run[0][0]}..{run[-1][0]}: one Kafka transaction "
                                  f"holds rows of batches {[(chain[b].seq, 'checkpoint at offset', chain[b].offset) for b in sorted(bs)][:4]}")
                continue
            if not bs:
                continue
            b = bs.pop()
            if prev_b is not None and b == prev_b:
                txn_struct.append(f"{t}[{p}] at offset {run[0][0]}: batch {chain[b].seq}'s rows in two "
                                  f"Kafka transactions")
            elif prev_b is not None and b < prev_b:
                txn_struct.append(f"{t}[{p}] at offset {run[0][0]}: batch {chain[b].seq} published after "
                                  f"batch {chain[prev_b].seq}")
            prev_b = b

    # -- database transactions ----------------------------------------------------------
    rows_of = collections.defaultdict(list)
    for oid, a in audit.items():
        rows_of[a[2]].append(oid)
    split, insert_order, split_outside = 0, [], []
    by_batch, by_part = {}, collections.defaultdict(dict)
    for txn, oids in rows_of.items():
        oids.sort()
        bs = [batch_of[o] for o in oids if o in batch_of]
        if bs != sorted(bs):
            insert_order.append(f"transaction {txn}: rows {oids} in batches "
                                f"{[chain[b].seq for b in bs]} (not in insert order)")
        if bs and bs[0] != bs[-1]:
            split += 1
            for b in range(min(bs), max(bs)):
                if chain[b].next is None:
                    split_outside.append(f"transaction {txn} split at batch {chain[b].seq}, "
                                         f"which ends a window")
                    break
        offs = collections.defaultdict(list)
        for o in oids:
            if o in where:
                t, p, off = where[o]
                offs[(t, p)].append(off)
        for tp, lst in offs.items():
            if lst != sorted(lst):
                insert_order.append(f"transaction {txn}: offsets {lst} on {tp[0]}[{tp[1]}] not in "
                                    f"insert order")
            by_part[tp][txn] = (min(lst), max(lst))
        if bs:
            by_batch[txn] = (min(bs), max(bs))
    start_of = {a[2]: a[7] for a in audit.values()}
    checked_pairs_txns = [t for t in by_batch if t in done_ticket]
    cross = order_violations(
        {t: (start_of[t], done_ticket.get(t), f"batch {chain[lo].seq}", f"batch {chain[hi].seq}")
         for t, (lo, hi) in by_batch.items()},
        lambda s: int(s.split()[1]), "batches")
    for (t, p), txns in by_part.items():
        cross += order_violations(
            {x: (start_of[x], done_ticket.get(x), f"{t}[{p}]@{lo}", f"{t}[{p}]@{hi}")
             for x, (lo, hi) in txns.items()},
            lambda s: int(s.rsplit("@", 1)[1]), "offsets")

    report = collections.OrderedDict([
        ("rows committed (audit)", len(audit)),
        ("acknowledged transactions (COMMIT returned)", len(acked) if acked is not None else "not known"),
        ("acknowledged transactions missing from the database", len(ack_missing)),
        ("  of them in a failover's lost span (expected)", len(ack_missing) - len(ack_lost)),
        ("failovers to a replica that missed commits (position resets)",
         f"{len(failovers)} ({len(resets)})"),
        ("records whose row the database lost (listed lost by verify)",
         f"{len(beyond)} ({sum(e['state'] == 'lost' for e in listed)})"),
        ("rows seen read_committed", n_committed),
        ("records in the log (read_uncommitted)", raw_count),
        ("lost", len(lost)),
        ("duplicated", len(dups)),
        ("phantom, or unlike verify's lost list (violations)", len(beyond_v)),
        ("topic/key/payload/header mismatches", len(mismatch) + len(no_id)),
        ("per-key order violations", len(order)),
        ("checkpoints in the chain", len(chain)),
        ("checkpoint chain violations", len(chain_v)),
        ("records of other keys or producers in the checkpoint topic", foreign),
        ("rows published outside a checkpointed batch", len(uncovered_published)),
        ("Kafka transaction / batch violations", len(txn_struct)),
        ("db transactions split across batches (size cut in a window: allowed)", split),
        ("db transaction insert-order / window violations", len(insert_order) + len(split_outside)),
        ("transactions with a certain commit order (done ticket)", len(checked_pairs_txns)),
        ("cross-transaction order violations", len(cross)),
        ("rows left in outbox.event", left_in_outbox),
        ("database position == last checkpoint", "yes" if pos_ok else "NO"),
        ("database batch_seq", db_pos[0] if db_pos else None),
    ])
    if ack_lost:
        violations.append(f"acknowledged transactions missing from the database (and its audit)"
                          f"{OUTSIDE_SPANS if failovers else ''}: "
                          f"{len(ack_lost)}, e.g. {ack_lost[:5]}")
    if lost:
        violations.append(f"lost rows: {len(lost)}, e.g. {sorted(lost)[:10]}")
    if dups:
        violations.append(f"duplicated rows: {len(dups)}, e.g. {sorted(dups)[:10]}")
    if beyond_v:
        violations.append(f"phantom rows or records the database lost unlike verify's list: "
                          f"{len(beyond_v)}, e.g. {beyond_v[:5]}")
    if no_id:
        violations.append(f"records without an outbox-id header: {no_id[:5]}")
    if mismatch:
        violations.append(f"content mismatches: {len(mismatch)}, e.g. {mismatch[:3]}")
    if order:
        violations.append(f"per-key order violations: {len(order)}, e.g. {order[:10]}")
    violations += chain_v[:20]
    if len(chain_v) > 20:
        violations.append(f"checkpoint chain: {len(chain_v) - 20} more violations")
    if uncovered_published:
        violations.append(f"rows published outside a checkpointed batch (no committed checkpoint "
                          f"covers them): {len(uncovered_published)}, e.g. {sorted(uncovered_published)[:10]}")
    if uncovered_committed and not lost:
        violations.append(f"committed rows no checkpoint covers: {sorted(uncovered_committed)[:10]}")
    for v in txn_struct[:10]:
        violations.append(f"Kafka transaction / batch: {v}")
    for v in (insert_order + split_outside)[:10]:
        violations.append(f"database transaction: {v}")
    violations += cross[:10]
    if len(cross) > 10:
        violations.append(f"cross-transaction order: {len(cross) - 10} more violations")
    if left_in_outbox:
        violations.append(f"{left_in_outbox} rows still in outbox.event")
    if not pos_ok:
        violations.append(f"database position {db_pos} differs from the last checkpoint "
                          f"{ck.raw if ck else None!r}")
    if expect_aborted and raw_count <= n_committed:
        violations.append("no aborted record in the log: the faults did not hit a transaction "
                          "(the run proves nothing about aborts)")
    return report, violations


OUTSIDE_SPANS = " outside the lost spans of the failovers"


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
    ap.add_argument("--timeout", type=int, default=READ_TIMEOUT_S)
    args = ap.parse_args()
    try:
        report, violations = check(args.db, args.bootstrap, args.topics.split(","), args.relay,
                                   args.checkpoint_topic, timeout=args.timeout)
    except CheckError as e:
        print(f"CHECK FAILED: {e}")
        return 1
    print_report(report, violations)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
