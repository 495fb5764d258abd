#!/usr/bin/python3
"""create_topic.py BOOTSTRAP TOPIC [PARTITIONS]: create a topic on the local
broker (which creates none on its own) unless it exists; exit 0 either way,
1 with the broker's error otherwise. scripts/quickstart uses it for "orders"."""
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def main(bootstrap, topic, partitions=3):
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    md = admin.list_topics(timeout=30)
    if topic in md.topics and md.topics[topic].error is None:
        print(f"create_topic: topic \"{topic}\" exists")
        return 0
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                        replication_factor=1)])[topic]
    try:
        fut.result(30)
    except KafkaException as e:
        if e.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: created meanwhile
            print(f"create_topic: could not create topic \"{topic}\": {e}", file=sys.stderr)
            return 1
    print(f"create_topic: topic \"{topic}\" created ({partitions} partitions)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        print(__doc__.split("\n")[0], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:])))
