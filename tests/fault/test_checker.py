"""The checker's pure parts on hand-made chains and orders (no broker, no
database): each rule must flag the defect it names and pass a sound case.

    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/fault/test_checker.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checker  # noqa: E402


def ck(offset, seq, gen, done, nxt="-", after=0):
    return checker.Checkpoint(offset, f"v1 seq={seq} gen={gen} after={after} done={done} next={nxt}")


SOUND = [ck(0, 1, 1, "1:1:", "10:20:12", 105), ck(1, 2, 1, "10:20:12"), ck(2, 3, 2, "10:20:12", "15:30:", 300)]


def test_sound_chain_passes():
    assert checker.chain_violations(SOUND) == []


def test_chain_repeat_gap_and_generation():
    repeat = SOUND[:2] + [ck(2, 2, 2, "10:20:12", "15:30:", 300)]
    assert any("batch 2 committed again" in v for v in checker.chain_violations(repeat))
    gap = SOUND[:1] + [ck(1, 3, 1, "10:20:12")]
    assert any("batches 2..2 have no checkpoint" in v for v in checker.chain_violations(gap))
    back = [SOUND[0], ck(1, 2, 3, "10:20:12"), ck(2, 3, 2, "10:20:12", "15:30:", 300)]
    assert any("generation 2 after generation 3" in v and "without the lease" in v
               for v in checker.chain_violations(back))
    stuck = [SOUND[0], ck(1, 2, 1, "1:1:", "10:20:12", 105)]
    assert any("does not move past" in v for v in checker.chain_violations(stuck))


def test_rows_map_to_the_first_covering_checkpoint():
    # txid 11: done in window (1:1:, 10:20:12]; ids <= 105 in batch 1
    assert checker.first_covering(SOUND, 100, 11) == 0
    assert checker.first_covering(SOUND, 106, 11) == 1
    # txid 12 was in progress at 10:20:12: a later window
    assert checker.first_covering(SOUND, 50, 12) == 2
    assert checker.first_covering(SOUND, 301, 25) is None


def test_cross_transaction_order():
    num = lambda s: int(s)  # noqa: E731
    # A finished (done ticket 5) before B started (ticket 6): A's rows first
    ok = {"A": (1, 5, "3", "4"), "B": (6, 9, "4", "7")}
    assert checker.order_violations(ok, num, "batches") == []
    bad = {"A": (1, 5, "3", "8"), "B": (6, 9, "4", "7")}
    v = checker.order_violations(bad, num, "batches")
    assert len(v) == 1 and "A committed before transaction B started" in v[0]
    # overlapping (A's done ticket after B's start): no certain order, not checked
    overlap = {"A": (1, 7, "3", "8"), "B": (6, 9, "4", "7")}
    assert checker.order_violations(overlap, num, "batches") == []
    # A's done ticket lost: not checked
    lost = {"A": (1, None, "3", "8"), "B": (6, 9, "4", "7")}
    assert checker.order_violations(lost, num, "batches") == []


# -- two histories: a failover to a replica that missed commits ------------------

def test_chain_across_a_reset():
    # batches 1, 2 of the old history; the operator's position_reset stored
    # batch 4 (Kafka's last was 3); the new history's first batch is 5, of a
    # lower generation, its window back at the replica's ids
    chain = SOUND + [ck(3, 5, 1, "1:1:", "8:9:", 40), ck(4, 6, 1, "8:9:")]
    assert checker.chain_violations(chain, resets={4}) == []
    assert [s for s, _ in checker.segments(chain, {4})] == [0, 3]
    # without the reset, the same chain is a gap and a generation going back
    v = checker.chain_violations(chain)
    assert any("batches 4..4 have no checkpoint" in x for x in v)
    assert any("without the lease" in x for x in v)
    # a batch published again after the reset, or one skipped, still fails
    again = chain + [ck(5, 6, 1, "8:9:")]
    assert any("batch 6 committed again" in x for x in checker.chain_violations(again, {4}))
    skip = SOUND + [ck(3, 6, 1, "1:1:", "8:9:", 40)]
    assert any("have no checkpoint" in x for x in checker.chain_violations(skip, {4}))


def test_rows_of_the_new_history_map_to_its_own_batches():
    # the new history's ids begin at 8 (the promoted standby's xmax)
    chain = SOUND + [ck(3, 5, 1, "1:1:", "8:14:", 40), ck(4, 6, 1, "8:14:")]
    segs = checker.segments(chain, {4})
    # txid 11 is reused by the new history: batch 5 or 6, not the old
    # history's batch 1 whose position covers txid 11 (of the lost rows)
    assert checker.first_covering(chain, 30, 11) == 0
    assert checker.batch_index(segs, 1, 30, 11) == 3
    assert checker.batch_index(segs, 1, 50, 11) == 4
    # a row the replica kept, which the old chain never published (its
    # transaction, 12, was open at every old position): the reset's
    # 'relay' publishes it in a batch of the new history
    assert checker.batch_index(segs, 0, 500, 12) == 4
    assert checker.batch_index(segs, 0, 100, 11) == 0


def test_key_order_with_a_lost_branch():
    ok = {"a": [(1, False), (2, False), (3, True), (4, True), (3, False), (4, False)]}
    assert checker.key_order_violations(ok) == []
    # a lost record out of order, a gap in the database's history
    assert checker.key_order_violations({"a": [(1, False), (3, True)]}) == [("a", 1, 3, "lost")]
    assert checker.key_order_violations({"a": [(1, False), (2, True), (3, False)]}) == \
        [("a", 1, 3)]
    # reordering within the database's history
    assert checker.key_order_violations({"a": [(2, False), (1, False)]}) == [("a", 0, 2), ("a", 2, 1)]


def lost(where, state="lost"):
    return {"topic": where[0], "partition": where[1], "offset": where[2], "state": state}


def test_records_the_database_lost_against_verify():
    gone = {("t", 0, 7): (40, "x1", "key-001", 5, None), ("t", 1, 3): (41, "x1", "key-002", 9, None)}
    found = {("t", 0, 6), ("t", 1, 2)}
    listed = [lost(("t", 0, 7)), lost(("t", 1, 3)), lost(("t", 1, 2), "published")]
    assert checker.lost_violations(gone, found, listed, span_acks={"x1"}) == []
    # a transaction acknowledged before the standby stopped receiving (or
    # never): the database should have it; its record is a phantom
    v = checker.lost_violations(gone, found, listed, span_acks={"x0"})
    assert len(v) == 2 and all("not acknowledged in a failover's lost span" in x for x in v)
    # verify's list short of a record, or naming one with a row
    v = checker.lost_violations(gone, found, listed[1:], span_acks={"x1"})
    assert len(v) == 1 and "did not list it as lost" in v[0]
    v = checker.lost_violations(gone, found, listed + [lost(("t", 0, 6))], span_acks={"x1"})
    assert len(v) == 1 and "the database has its row" in v[0]
    v = checker.lost_violations(gone, found, [lost(("t", 0, 7), "published")] + listed[1:],
                                span_acks={"x1"})
    assert any("did not list it as lost" in x for x in v)
    # a lost row published twice (the same transaction and key at two offsets)
    dup = {**gone, ("t", 0, 9): (40, "x1", "key-001", 5, None)}
    v = checker.lost_violations(dup, found, listed + [lost(("t", 0, 9))], span_acks={"x1"})
    assert len(v) == 1 and "duplicated" in v[0]


def test_acknowledged_transactions_missing_only_in_a_lost_span():
    acked = {"a", "b", "c", "d"}
    # c and d acknowledged after the standby stopped receiving: c was lost
    assert checker.acks_missing(acked, {"a", "b", "d"}, span_acks={"c", "d"}) == (["c"], [])
    # b acknowledged before: the replica had it, the database must too
    assert checker.acks_missing(acked, {"a", "d"}, span_acks={"c", "d"}) == (["b", "c"], ["b"])
    # no failover lost anything: every acknowledged transaction must be there
    assert checker.acks_missing(acked, {"a", "b", "c"}, span_acks=set()) == (["d"], ["d"])
