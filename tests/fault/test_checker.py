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
