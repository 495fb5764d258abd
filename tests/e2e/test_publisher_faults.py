"""The publisher against the real broker where the mock cluster cannot stand
in: a topic's max.message.bytes against compressed records, and a
transaction the broker itself aborts after transaction.timeout.ms."""
import re
import signal
import time
import uuid

import pytest

from conftest import WAITING, create_topics, header, read_all, wait_for, write_config
from test_relay import connect, drained, insert_rows, scalar

# Run alone (scripts/test runs the "serial" tests after the others,
# one at a time): a 4 s margin over the broker's abort sweep.
pytestmark = pytest.mark.serial


@pytest.mark.sanitizer
def test_compressed_record_over_topic_limit_is_published(outbox_db, relays, tmp_path):
    """A record larger than the topic's max.message.bytes uncompressed but
    far smaller compressed is accepted by the broker (it judges the batch as
    sent): the relay must not take it for a poison row. Before the fix the
    pre-check compared the uncompressed size and stopped on the row."""
    topic = f"e2e-{uuid.uuid4().hex[:8]}-small"
    create_topics([topic], config={"max.message.bytes": "20000"})
    conn = connect(outbox_db)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) VALUES "
                    "(%s, 'k', convert_to(repeat('z', 200000), 'UTF8'), '{\"n\": \"1\"}')", (topic,))
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-compressed",
                       **{"kafka.properties": ["compression.type=gzip"]})
    relay = relays(cfg)
    stopped = re.compile(r"stopped on outbox row")
    wait_for(lambda: drained(conn)() or stopped.search(relay.text()), 60,
             "the row to be published or refused")
    assert not stopped.search(relay.text()), relay.text()
    assert relay.stop() == 0, relay.text()
    msgs = read_all([topic])
    assert len(msgs) == 1 and msgs[0].value() == b"z" * 200000 and header(msgs[0], "n") == b"1"


@pytest.mark.sanitizer
def test_uncompressed_record_over_topic_limit_is_poison(outbox_db, relays, tmp_path):
    """Without compression the pre-check still names the row (the other
    side of the test above)."""
    topic = f"e2e-{uuid.uuid4().hex[:8]}-small"
    create_topics([topic], config={"max.message.bytes": "20000"})
    conn = connect(outbox_db)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, key, payload) VALUES "
                    "(%s, 'k', convert_to(repeat('z', 200000), 'UTF8')) RETURNING id", (topic,))
        rid = cur.fetchone()[0]
    relay = relays(write_config(tmp_path / "relay.conf", outbox_db, "r-uncompressed"))
    relay.wait_log(rf"stopped on outbox row {rid} .*exceeds max.message.bytes of topic")
    assert relay.stop() == 0, relay.text()


def test_broker_aborted_transaction_is_not_fenced(outbox_db, topics, relays, tmp_path):
    """A relay stopped (SIGSTOP) mid-transaction for longer than its
    transaction.timeout.ms: the broker aborts the transaction and bumps the
    producer's epoch, and librdkafka 2.0.2 reports the next request as
    "fenced". No other relay exists and the lease is still this relay's, so
    it must recreate its producer and go on, not exit 3."""
    tps = topics(3, partitions=2)
    conn = connect(outbox_db)
    total = 200000
    insert_rows(conn, tps, 0, total, per_txn=10000)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-txn-timeout",
                       **{"relay.lease_ttl_ms": 60000, "kafka.transaction_timeout_ms": 2000,
                          "kafka.commit_timeout_ms": 1000, "batch.max_rows": 2000})
    relay = relays(cfg)
    relay.wait_log("publishing")
    hit = re.compile(r"longer than transaction.timeout.ms")
    # A stop lands mid-transaction most of the time while a backlog drains;
    # try until one did (the relay logs the broker's abort when it did).
    for attempt in range(4):
        wait_for(lambda: scalar(conn, WAITING) < total, 60,
                 "publishing to start")
        if scalar(conn, WAITING) == 0:
            break
        relay.proc.send_signal(signal.SIGSTOP)
        # transaction.timeout.ms, then the broker's abort sweep (every 5 s
        # on the local broker), with room to spare
        time.sleep(2 + 5 + 4)
        relay.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: hit.search(relay.text()) or relay.proc.poll() is not None
                 or drained(conn)(), 60, "the relay to meet the aborted transaction")
        assert relay.proc.poll() is None, f"exit {relay.proc.poll()}:\n{relay.text()[-5000:]}"
        if hit.search(relay.text()):
            break
        insert_rows(conn, tps, total, 100000, per_txn=10000)
        total += 100000
    assert hit.search(relay.text()), "no stop landed mid-transaction:\n" + relay.text()[-5000:]
    wait_for(drained(conn), 300, "the outbox to drain")
    assert relay.stop() == 0, relay.text()
    msgs = read_all(tps)
    ns = [int(header(m, "n")) for m in msgs]
    assert sorted(ns) == list(range(total)), "lost or duplicated rows"


def test_record_batch_over_topic_limit_blames_no_row(outbox_db, relays, tmp_path):
    """Rows of 1 KB each to a topic whose max.message.bytes is 20000: each
    row fits, but librdkafka packs many into one record batch (batch.size,
    1 MB by default) and the broker refuses the batch as a whole. No row is
    to blame (the old code poisoned the first row of the request, a healthy
    one): the relay stops and says to lower batch.size; with batch.size
    below the limit every row is published exactly once."""
    topic = f"e2e-{uuid.uuid4().hex[:8]}-small"
    create_topics([topic], config={"max.message.bytes": "20000"})
    conn = connect(outbox_db)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) "
                    "SELECT %s, convert_to('k' || n, 'UTF8'), "
                    "       decode(repeat(md5(n::text), 32), 'hex'), "
                    "       jsonb_build_object('n', n::text) "
                    "FROM generate_series(0, 199) AS n", (topic,))
    relay = relays(write_config(tmp_path / "relay.conf", outbox_db, "r-batch-size"))
    wait_for(lambda: relay.proc.poll() is not None or "stopped on outbox row" in relay.text(), 60,
             "the relay to stop or to halt on a row")
    assert "stopped on outbox row" not in relay.text(), relay.text()
    assert relay.wait_exit(60) == 1, relay.text()
    assert re.search(r"refused a record batch of \d+ rows for size .*batch\.size", relay.text()), \
        relay.text()
    relay = relays(write_config(tmp_path / "relay2.conf", outbox_db, "r-batch-size",
                                **{"kafka.properties": ["batch.size=15000"]}))
    wait_for(drained(conn), 60, "the rows to be published")
    assert relay.stop() == 0, relay.text()
    ns = sorted(int(header(m, "n")) for m in read_all([topic]))
    assert ns == list(range(200))
