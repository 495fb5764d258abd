"""The guard that the broker is real and transactional: a committed and an
aborted transaction, read back read_committed and read_uncommitted."""
from confluent_kafka import Producer

from conftest import BOOTSTRAP, QUIET, read_all


def test_committed_visible_aborted_hidden(topics):
    (topic,) = topics(1, partitions=2)
    prod = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"smoke-{topic}", **QUIET})
    prod.init_transactions(30)

    prod.begin_transaction()
    for i in range(5):
        prod.produce(topic, key=f"k{i}", value=f"committed-{i}")
    prod.commit_transaction(30)

    prod.begin_transaction()
    for i in range(5):
        prod.produce(topic, key=f"k{i}", value=f"aborted-{i}")
    prod.flush(30)  # the aborted records really reach the log before the abort
    prod.abort_transaction(30)

    committed = sorted(m.value().decode() for m in read_all([topic], "read_committed"))
    everything = sorted(m.value().decode() for m in read_all([topic], "read_uncommitted"))

    assert committed == [f"committed-{i}" for i in range(5)]
    assert everything == sorted([f"committed-{i}" for i in range(5)] +
                                [f"aborted-{i}" for i in range(5)])
