"""The scale-out layout of README's "Scaling out": outbox shards, each a
database of its own with its own relay name, publishing into the same
topics and sharing one checkpoint topic, each key written by one shard
only, the shards' outbox ids kept apart by their identity ranges. A kill -9
of one shard's relay in the middle of its drain; then every row of both
shards exactly once, ids rising per key along each partition, and
`outbox-relay verify` clean for each shard."""
import json
import uuid

from conftest import WAITING, create_topics, read_all, relay_cmd, wait_for, write_config
from test_relay import check_exactly_once, connect, drained, insert_rows, scalar

ROWS = 3000
# Shard s gives outbox ids from s * ID_RANGE on (README, "Scaling out").
ID_RANGE = 10**12


def test_two_shards_share_topics_and_checkpoint_topic(outbox_dbs, topics, relays, tmp_path):
    tps = topics(3, partitions=3)
    ckpt = f"ckpt-shards-{uuid.uuid4().hex[:8]}"
    create_topics([ckpt])
    shards = []
    for s in range(2):
        url = outbox_dbs()
        conn = connect(url)
        conn.cursor().execute(f"ALTER TABLE outbox.event ALTER COLUMN id RESTART WITH {s * ID_RANGE + 1}")
        cfg = write_config(tmp_path / f"shard-{s}.conf", url, f"orders-shard-{s}",
                           **{"kafka.checkpoint_topic": ckpt, "batch.max_rows": 200})
        # each shard writes its own keys: row n of shard s is ROWS * s + n
        insert_rows(conn, tps, s * ROWS, ROWS // 2, per_txn=100, key_prefix=f"s{s}-k")
        shards.append((conn, cfg))
    running = [relays(cfg) for _, cfg in shards]
    # shard 0's relay dies by kill -9 in the middle of its drain ...
    wait_for(lambda: scalar(shards[0][0], WAITING) < ROWS // 2, 60,
             "shard 0's relay to publish")
    running[0].kill()
    for s, (conn, _) in enumerate(shards):  # ... while both shards keep writing
        insert_rows(conn, tps, s * ROWS + ROWS // 2, ROWS // 2, per_txn=100, key_prefix=f"s{s}-k")
    running[0] = relays(shards[0][1])
    for conn, _ in shards:
        wait_for(drained(conn), 120, "both shards to drain")
    for r in running:
        assert r.stop() == 0, r.text()

    msgs = read_all(tps)
    check_exactly_once(msgs, range(2 * ROWS), partitions=3)
    ids = [int(dict(m.headers())["outbox-id"]) for m in msgs]
    assert len(set(ids)) == len(ids), "outbox ids of the two shards overlap"
    for s, (_, cfg) in enumerate(shards):
        res = relay_cmd("verify", "-c", cfg, "--topics", ",".join(tps), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        summary = json.loads(res.stdout)
        assert all(k["count"] == 0 for k in summary["kinds"].values()), summary
        print(f"\nverify shard {s}: { {k: v for k, v in summary.items() if k != 'kinds'} }")
