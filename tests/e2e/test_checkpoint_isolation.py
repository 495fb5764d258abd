"""The checkpoint read on the real broker: it reaches the true end of the
checkpoint partition although another producer holds a transaction open on
it, and records that are not this relay's checkpoints (an outbox row aimed at
the checkpoint topic, garbage) are skipped instead of deciding or wedging the
restart (issue 12, items 1 and 3)."""
import re
import signal
import uuid

import pytest
from confluent_kafka import Producer

from conftest import BOOTSTRAP, QUIET, ckpt_topic, header, read_all, wait_for, write_config
from test_relay import (assert_positions_agree, check_exactly_once, connect, db_position,
                        drained, insert_rows)


def foreign_producer():
    """Another transactional producer (its own transactional.id), as another
    service's relay sharing the checkpoint topic would be."""
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"foreign-{uuid.uuid4().hex[:8]}",
                  "transaction.timeout.ms": 300000, **QUIET})
    p.init_transactions(30)
    return p


@pytest.mark.sanitizer
def test_foreign_open_transaction_does_not_hide_checkpoints(outbox_db, topics, relays, tmp_path):
    """Another producer opens a transaction on partition 0 of the relay's
    checkpoint topic; the relay then commits a batch to Kafka and is killed
    before the database advance. A read_committed reader stops at the last
    stable offset, before that checkpoint: the restarted relay used to see
    the database's own position there and publish the batch a second time.
    Now it waits for the foreign transaction, sees the hidden checkpoint and
    brings the database forward: exactly once."""
    tps = topics(2, partitions=2)
    name = "r-iso-held"
    ck = ckpt_topic(outbox_db, name)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name, **{"batch.max_rows": 500})

    # Batches 1..2 committed cleanly; the checkpoint topic exists.
    insert_rows(conn, tps, 0, 1000, per_txn=500)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the first rows to be relayed")
    assert relay.stop() == 0, relay.text()
    seq_before = db_position(conn, name)[0]
    assert seq_before >= 1

    # A relay that has read its checkpoint and publishes ...
    other = foreign_producer()
    crashing = relays(cfg, env={"OUTBOX_RELAY_CRASH_AT": "after-commit:1"})
    crashing.wait_log(f'relay "{name}" publishing', 60)
    # ... then the foreign transaction opens on partition 0 and stays open,
    other.begin_transaction()
    other.produce(ck, key=b"another-service", value=b"v1 seq=1 gen=1 after=0 done=1:1: next=-",
                  partition=0)
    other.flush(30)
    # and the next batch is committed to Kafka behind it; the relay dies
    # before the database learns of it.
    insert_rows(conn, tps, 1000, 500, per_txn=500)
    assert crashing.wait_exit(60) == -9, crashing.text()
    assert 'crash point "after-commit" reached' in crashing.text()
    assert db_position(conn, name)[0] == seq_before  # the database is one batch behind
    # The hidden checkpoint is in the log (read_uncommitted sees it) ...
    raw = [m for m in read_all([ck], "read_uncommitted") if m.key() == name.encode()]
    assert raw and f"seq={seq_before + 1} ".encode() in raw[-1].value()
    # ... and a read_committed reader stops before it, at the database's batch.
    visible = [m for m in read_all([ck]) if m.key() == name.encode()]
    assert f"seq={seq_before} ".encode() in visible[-1].value()

    insert_rows(conn, tps, 1500, 500, per_txn=500)
    relay = relays(cfg)
    held = (r'checkpoint topic "%s" partition 0: last stable offset \d+ is behind the log end '
            r'\d+: another producer holds a transaction open; waiting' % ck)
    # Either it waits (right) or it decides from the stale read (the old
    # reader: it then publishes the batch again, which the check below sees).
    relay.wait_log(f'{held}|relay "{name}" publishing', 60)
    if "another producer holds a transaction open" in relay.text():
        # While it waits, it decides nothing: the database stays behind.
        assert relay.proc.poll() is None, relay.text()
        assert "publishing" not in relay.text()
        assert db_position(conn, name)[0] == seq_before

    other.commit_transaction(30)
    wait_for(drained(conn), 60, "the outbox to drain after the foreign transaction ended")
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all(tps), range(2000))
    assert_positions_agree(conn, name)
    text = relay.text()
    assert re.search(held, text), text
    assert "the other producer's transaction ended" in text
    assert "bringing the database forward" in text
    # the foreign record is reported, not taken for ours
    assert 'record(s) of other keys (first: "another-service"' in text


@pytest.mark.sanitizer
def test_foreign_records_with_our_key_are_skipped(outbox_db, topics, relays, tmp_path):
    """Records with the relay's name as key that its producer did not write
    as checkpoints: an outbox row aimed at the checkpoint topic (it carries
    an outbox-id header), one of them a well-formed checkpoint value far
    ahead, and plain garbage without headers. The old reader failed on the
    first that did not decode, at every restart (or would have taken the
    forged one for the newest checkpoint); now they are skipped with a
    warning and the relay's own newest checkpoint decides."""
    tps = topics(1)
    name = "r-iso-forged"
    ck = ckpt_topic(outbox_db, name)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name, **{"batch.max_rows": 100})
    insert_rows(conn, tps, 0, 300, per_txn=100)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "rows to be relayed")
    assert relay.stop() == 0, relay.text()
    seq = db_position(conn, name)[0]

    # Written straight to Kafka, as the relay published such outbox rows
    # before anything refused them (and as any client with write access can).
    p = Producer({"bootstrap.servers": BOOTSTRAP, **QUIET})
    p.produce(ck, key=name.encode(), value=b"v1 seq=999 gen=1 after=0 done=1:1: next=-",
              partition=0, headers=[("outbox-id", b"12345")])
    p.produce(ck, key=name.encode(), value=b"\x00garbage from an outbox row", partition=0,
              headers=[("outbox-id", b"12346"), ("outbox-relay-checkpoint", name.encode())])
    p.produce(ck, key=name.encode(), value=b"not a checkpoint at all", partition=0)
    assert p.flush(30) == 0

    insert_rows(conn, tps, 300, 200, per_txn=100)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the outbox to drain after the restart")
    assert relay.stop() == 0, relay.text()
    text = relay.text()
    assert "bringing the database forward" not in text
    assert "it is an outbox row (it has an outbox-id header)" in text
    assert "skipped: checkpoint value is not a v1 checkpoint" in text
    assert f"position: batch {seq}," in text
    check_exactly_once(read_all(tps), range(500))
    assert_positions_agree(conn, name)
    # the relay's own checkpoints carry the marker, and no outbox-id
    own = [m for m in read_all([ck]) if m.key() == name.encode() and header(m, "outbox-id") is None
           and header(m, "outbox-relay-checkpoint") is not None]
    assert own and header(own[-1], "outbox-relay-checkpoint") == name.encode()


def test_sighup_to_dead_letter_without_a_topic_keeps_running(outbox_db, topics, relays, tmp_path):
    """Issue 12.10 / 17.16: relay.poison_policy reloaded on SIGHUP while
    kafka.dead_letter_topic (fixed at start) did not, so the next poison row
    became a "dead letter" without a topic and the relay exited 1. Now the
    reload is refused as a whole and the relay keeps its stop policy."""
    (tp,) = topics(1)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-hup-dlq")
    relay = relays(cfg)
    relay.wait_log("publishing")
    cfg.write_text(cfg.read_text().replace("relay = {", 'relay = {\n  poison_policy = "dead-letter";')
                   .replace("kafka = {", f'kafka = {{\n  dead_letter_topic = "{tp}-dlq";'))
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log("could not reload configuration|configuration option relay.poison_policy reloaded")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, payload) VALUES (%s, 'x') RETURNING id",
                    (tp + "-missing",))
        bad = cur.fetchone()[0]
    # the old relay exited 1 here ("could not produce outbox row ...")
    relay.wait_log(f"stopped on outbox row {bad} ", 60)
    assert relay.proc.poll() is None, relay.text()
    assert re.search('could not reload configuration, keeping the running one: .*relay.poison_policy '
                     '"dead-letter" cannot be applied on reload: the running relay has no '
                     'kafka.dead_letter_topic', relay.text()), relay.text()
    assert relay.stop() == 0, relay.text()


def test_checkpoint_found_behind_many_foreign_records(outbox_db, topics, relays, tmp_path):
    """The newest checkpoint is not among the last 1000 records of the
    partition: the read widens its window backwards (through a foreign
    transaction's aborted records too) until it finds it."""
    tps = topics(1)
    name = "r-iso-widen"
    ck = ckpt_topic(outbox_db, name)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name, **{"batch.max_rows": 100})
    insert_rows(conn, tps, 0, 300, per_txn=100)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "rows to be relayed")
    assert relay.stop() == 0, relay.text()
    seq = db_position(conn, name)[0]

    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 50, **QUIET})
    for i in range(2500):
        p.produce(ck, key=b"someone-else", value=b"x", partition=0)
    assert p.flush(30) == 0
    other = foreign_producer()
    other.begin_transaction()
    for i in range(500):
        other.produce(ck, key=name.encode(), value=b"aborted, never read", partition=0)
    other.flush(30)
    other.abort_transaction(30)

    insert_rows(conn, tps, 300, 100, per_txn=100)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the outbox to drain after the restart")
    assert relay.stop() == 0, relay.text()
    text = relay.text()
    assert f"position: batch {seq}," in text
    assert 'holds 2500 record(s) of other keys (first: "someone-else"' in text
    assert "skipped" not in text  # the aborted records are not read at all
    check_exactly_once(read_all(tps), range(400))
    assert_positions_agree(conn, name)
