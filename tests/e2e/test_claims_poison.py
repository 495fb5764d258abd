"""README "Poison rows" claims with no other test, end to end on the real
PostgreSQL and the real Kafka broker: a missing topic under `stop` (the rows
before it published, nothing after it, /readyz and /status naming it, the fix
by creating the topic or by an UPDATE of the row, picked up at the next look
`relay.poison_retry_ms` later), the producer's `message.max.bytes`, a dead
letter exactly once across a crash, and `outbox-payload-omitted-bytes`."""
import re
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from claims_util import http_config, insert, metric, ready, status
from conftest import WAITING, BOOTSTRAP, QUIET, create_topics, header, read_all, wait_for, write_config
from test_relay import check_exactly_once, connect, drained, insert_rows, scalar


def ns_of(msgs):
    return [int(header(m, "n")) for m in msgs]


def rows_around(conn, good, bad_topic, bad_payload=None):
    """Rows n=0..4 to `good`, row 5 to `bad_topic` (with bad_payload), rows
    6..9 to `good`, in one transaction. Returns the id of row 5."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
    for n in range(5):
        insert(conn, good, n)
    poison_id = insert(conn, bad_topic, 5, bad_payload)
    for n in range(6, 10):
        insert(conn, good, n)
    with conn.cursor() as cur:
        cur.execute("COMMIT")
    return poison_id


def wait_halted(relay, poison_id, timeout=60):
    """Wait for the stop on the poison row; returns when it was seen."""
    relay.wait_log(f"stopped on outbox row {poison_id} ", timeout)
    return time.monotonic()


def assert_halted(relay, port, conn, good, poison_id, why):
    """Publishing stopped on the row: the reason on /readyz and /status, the
    rows before it published, none after it, the lease kept."""
    wait_for(lambda: ready(port) == (503, {"ready": False, "role": "leader",
                                           "reason": f"stopped on poison row {poison_id}"}),
             10, "/readyz to name the poison row")
    st = status(port)
    assert st["poison_row"]["id"] == poison_id and why in st["poison_row"]["reason"], st
    assert st["lease_held"] is True, st
    assert metric(port, "poison_stopped") == 1
    assert why in relay.text(), relay.text()
    assert ns_of(read_all([good])) == [0, 1, 2, 3, 4]
    assert scalar(conn, WAITING) == 5


def test_missing_topic_stops_then_creating_it_resumes(outbox_db, topics, relays, tmp_path):
    (good,) = topics(1)
    missing = f"e2e-missing-{uuid.uuid4().hex[:8]}"
    conn = connect(outbox_db)
    poison_id = rows_around(conn, good, missing)
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, "r-missing-stop",
                            **{"relay.poison_retry_ms": 1000})
    relay = relays(cfg)
    wait_halted(relay, poison_id)
    assert_halted(relay, port, conn, good, poison_id, f'topic "{missing}" does not exist')
    # topics.create is off by default: the relay creates nothing itself
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **QUIET})
    assert missing not in admin.list_topics(timeout=10).topics
    assert "topics-check" not in relay.text()

    create_topics([missing])  # the operator creates the topic
    fixed = time.monotonic()
    wait_for(drained(conn), 30, "the rest to be published")
    relay.wait_log(f"outbox row {poison_id} no longer blocks publishing")
    assert time.monotonic() - fixed < 1.0 + 5, "not picked up at the next look"
    assert ns_of(read_all([good])) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert ns_of(read_all([missing])) == [5]
    wait_for(lambda: ready(port)[0] == 200, 10, "ready again")
    assert metric(port, "poison_stopped") == 0
    assert relay.stop() == 0, relay.text()


@pytest.mark.serial  # halt, fix and resume timed in seconds
def test_missing_topic_fixed_by_update_at_the_next_look(outbox_db, topics, relays, tmp_path):
    """The row is fixed by `UPDATE outbox.event SET topic = ...`; the relay
    finds out at its next look, relay.poison_retry_ms after it stopped: not
    before (the fix comes within 7 s of the stop, the period is 10 s) and
    not much later."""
    (good,) = topics(1)
    missing = f"e2e-missing-{uuid.uuid4().hex[:8]}"
    conn = connect(outbox_db)
    poison_id = rows_around(conn, good, missing)
    retry_ms = 10000
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, "r-missing-update",
                            **{"relay.poison_retry_ms": retry_ms})
    relay = relays(cfg)
    halted = wait_halted(relay, poison_id)
    assert_halted(relay, port, conn, good, poison_id, f'topic "{missing}" does not exist')
    assert time.monotonic() - halted < retry_ms / 1000 - 3, "too slow to set up the fix"
    with conn.cursor() as cur:
        cur.execute("UPDATE outbox.event SET topic = %s WHERE id = %s", (good, poison_id))
        assert cur.rowcount == 1
    wait_for(drained(conn), 30, "the rest to be published")
    resumed = time.monotonic() - halted
    assert retry_ms / 1000 - 1.5 <= resumed <= retry_ms / 1000 + 3, \
        f"resumed {resumed:.1f}s after the stop; poison_retry_ms is {retry_ms} ms"
    relay.wait_log(f"outbox row {poison_id} no longer blocks publishing")
    # the fixed row in its place: one topic, the transaction's order
    assert ns_of(read_all([good])) == list(range(10))
    assert relay.stop() == 0, relay.text()


def test_producer_message_max_bytes_stops_then_delete(outbox_db, topics, relays, tmp_path):
    """A row larger than the producer's message.max.bytes (kafka.properties),
    though the topic would take it: a poison row."""
    (good,) = topics(1)
    conn = connect(outbox_db)
    poison_id = rows_around(conn, good, good, b"y" * 30000)
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, "r-client-max",
                            **{"relay.poison_retry_ms": 1000,
                               "kafka.properties": ["message.max.bytes=20000"]})
    relay = relays(cfg)
    wait_halted(relay, poison_id)
    assert_halted(relay, port, conn, good, poison_id, "exceeds the producer's message.max.bytes")
    with conn.cursor() as cur:
        cur.execute("DELETE FROM outbox.event WHERE id = %s", (poison_id,))
    wait_for(drained(conn), 30, "the rest to be published")
    assert ns_of(read_all([good])) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert relay.stop() == 0, relay.text()


def test_dead_letter_too_large_omits_payload(outbox_db, topics, relays, tmp_path):
    """README: "a payload too large for any topic is left out of the dead
    letter and outbox-payload-omitted-bytes gives its size"."""
    (good,) = topics(1)
    dlq = good + "-dlq"
    conn = connect(outbox_db)
    poison_id = rows_around(conn, good, good, b"z" * 30000)
    cfg, port = http_config(tmp_path / "relay.conf", outbox_db, "r-dlq-omit",
                            **{"relay.poison_policy": "dead-letter",
                               "kafka.dead_letter_topic": dlq,
                               "kafka.properties": ["message.max.bytes=20000"]})
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the outbox to drain")
    assert metric(port, "dead_letters_total") == 1
    assert metric(port, "rows_published_total") == 9
    assert relay.stop() == 0, relay.text()
    assert ns_of(read_all([good])) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    (dead,) = read_all([dlq])
    assert int(header(dead, "outbox-id")) == poison_id
    assert header(dead, "outbox-payload-omitted-bytes") == b"30000"
    assert dead.value() is None
    assert dead.key() == b"k"
    assert header(dead, "outbox-topic") == good.encode()
    assert b"exceeds the producer's message.max.bytes" in header(dead, "outbox-error")
    assert header(dead, "n") == b"5"  # the row's own headers travel too


@pytest.mark.parametrize("point", ["after-produce", "after-commit"])
def test_dead_letter_exactly_once_across_a_crash(point, outbox_db, topics, relays, tmp_path):
    """A batch carrying a dead letter, the relay killed -9 before its commit
    (after-produce) or after it and before the database update
    (after-commit): after the restart the dead letter is in the dead-letter
    topic once, as every row is in its topic once."""
    tps = topics(2)
    missing = f"e2e-missing-{uuid.uuid4().hex[:8]}"
    dlq = tps[0] + "-dlq"
    name = f"r-dlq-crash-{point}"
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 150, per_txn=150)
    poison_id = insert(conn, missing, 150)  # in the second batch of 100
    insert_rows(conn, tps, 151, 149, per_txn=149)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name,
                       **{"relay.poison_policy": "dead-letter", "kafka.dead_letter_topic": dlq,
                          "batch.max_rows": 100})
    crashing = relays(cfg, env={"OUTBOX_RELAY_CRASH_AT": f"{point}:2"})
    assert crashing.wait_exit(120) == -9, crashing.text()
    assert f'crash point "{point}" reached' in crashing.text()
    assert re.search(rf"outbox row {poison_id} .*sending it to dead-letter topic", crashing.text())
    raw = read_all([dlq], "read_uncommitted")
    assert [int(header(m, "outbox-id")) for m in raw] == [poison_id]  # the crash met it
    assert len(read_all([dlq])) == (1 if point == "after-commit" else 0)

    relay = relays(cfg)
    wait_for(drained(conn), 60, "the outbox to drain after the crash")
    assert relay.stop() == 0, relay.text()
    if point == "after-commit":
        assert "bringing the database forward" in relay.text(), relay.text()
    dead = read_all([dlq])
    assert [int(header(m, "outbox-id")) for m in dead] == [poison_id]
    assert header(dead[0], "outbox-topic") == missing.encode()
    assert b"does not exist" in header(dead[0], "outbox-error")
    check_exactly_once(read_all(tps), [n for n in range(300) if n != 150])
