#!/usr/bin/python3
"""kafka_probe.py: proves that a Kafka broker is ready for transactions.

Creates the probe topic if it is missing, commits one transactional record with
a fresh value and reads it back with a read_committed consumer. Retries until
the deadline; exits 0 when the record was read back, 1 otherwise.
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "_outbox_relay_probe"
# Connection refusals while the broker starts are expected; stay quiet.
QUIET = {"log_level": 0}


def ensure_topic(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    md = admin.list_topics(timeout=5)
    if TOPIC in md.topics and md.topics[TOPIC].error is None:
        return
    fut = admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])[TOPIC]
    try:
        fut.result(10)
    except KafkaException as e:
        if e.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS
            raise


def probe_once(bootstrap):
    ensure_topic(bootstrap)
    value = uuid.uuid4().hex.encode()
    prod = Producer({"bootstrap.servers": bootstrap,
                     "transactional.id": "outbox-relay-probe",
                     "transaction.timeout.ms": 10000, **QUIET})
    prod.init_transactions(20)
    prod.begin_transaction()
    prod.produce(TOPIC, value=value)
    prod.commit_transaction(20)

    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                     "isolation.level": "read_committed",
                     "enable.auto.commit": False, "enable.partition.eof": True, **QUIET})
    try:
        low, high = cons.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
        # The committed record and its marker are the last two offsets.
        cons.assign([TopicPartition(TOPIC, 0, max(low, high - 2))])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = cons.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.value() == value:
                return True
        return False
    finally:
        cons.close()


def main():
    bootstrap = sys.argv[1]
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 60
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            if probe_once(bootstrap):
                return 0
            last = "committed record not read back"
        except Exception as e:  # broker still starting: retry until the deadline
            last = str(e)
        time.sleep(0.5)
    print(f"kafka_probe: broker at {bootstrap} not ready after {timeout:.0f}s: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
