"""Schema 5's cleanup on the real PostgreSQL and Kafka: relayed rows leave
outbox.event by TRUNCATE of a whole partition, never while a row of that
partition is unrelayed or a writer's transaction is open in it, and every
row is published exactly once across the truncations."""
import signal
import time

from conftest import WAITING, read_all, relay_cmd, wait_for, write_config
from test_relay import check_exactly_once, connect, drained, insert_rows, scalar

BLOCK = 65536


def per_partition(conn):
    """{partition name: committed rows} for the partitions that have rows."""
    with conn.cursor() as cur:
        cur.execute("SELECT tableoid::regclass::text, count(*) FROM outbox.event GROUP BY 1")
        return dict(cur.fetchall())


def relfilenode(conn, part):
    return scalar(conn, "SELECT relfilenode FROM pg_class WHERE oid = %s::regclass", (part,))


def test_open_writer_holds_back_only_its_partition(outbox_db, topics, relays, tmp_path):
    """A writer transaction open in partition 0 keeps it (lot 1, relayed,
    stays) while partition 1 goes once relayed; when the writer commits, its
    row is unrelayed in a block the position has passed: cleanup() must see
    it and keep the partition until the relay has published it."""
    names = topics(3)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-part", **{
        "batch.max_rows": 500, "batch.poll_interval_ms": 100})
    # lot 1 and the held row in block 0 (partition 0), lot 2 in block 1
    insert_rows(conn, names, 0, 1000, per_txn=100)
    holder = connect(outbox_db)
    holder.autocommit = False
    with holder.cursor() as cur:
        cur.execute("INSERT INTO outbox.event (topic, key, payload, headers) "
                    "VALUES (%s, 'k-held', 'row-2000', '{\"n\": \"2000\", \"src\": \"e2e\"}')",
                    (names[2000 % 3],))
    scalar(conn, "SELECT setval(pg_get_serial_sequence('outbox.event', 'id'), %s)", (BLOCK,))
    insert_rows(conn, names, 1000, 1000, per_txn=100)
    p0_before = relfilenode(conn, "outbox.event_p0")
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the relay to publish lots 1 and 2")
    wait_for(lambda: "outbox.event_p1" not in per_partition(conn), 30,
             "partition 1 to be truncated")
    for _ in range(3):  # the idle relay tries again every 3 s; nothing moves
        assert per_partition(conn) == {"outbox.event_p0": 1000}
        assert relfilenode(conn, "outbox.event_p0") == p0_before
        time.sleep(1.5)
    # the relay sleeps; the writer commits: its row is unrelayed, in a block
    # the position has read past
    relay.proc.send_signal(signal.SIGSTOP)
    holder.commit()
    holder.close()
    assert scalar(conn, WAITING) == 1
    assert scalar(conn, "SELECT outbox.cleanup('r-part')") == 0
    assert per_partition(conn) == {"outbox.event_p0": 1001}, "an unrelayed row was truncated"
    relay.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: scalar(conn, WAITING) == 0, 60, "the held row to be published")
    wait_for(lambda: per_partition(conn) == {}, 30, "partition 0 to be truncated")
    assert relfilenode(conn, "outbox.event_p0") != p0_before
    check_exactly_once(read_all(names), range(2001))
    assert relay.stop() == 0, relay.text()


def test_retention_keeps_every_partition(outbox_db, topics, relays, tmp_path):
    """postgres.retention_ms: nothing is truncated; purge() deletes rows
    past their retention as before."""
    names = topics(3)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-keep-parts", **{
        "postgres.retention_ms": 3600000, "batch.poll_interval_ms": 100})
    insert_rows(conn, names, 0, 300, per_txn=100)
    p0 = relfilenode(conn, "outbox.event_p0")
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the relay to publish the rows")
    time.sleep(4)  # past an idle cleanup
    assert scalar(conn, "SELECT count(*) FROM outbox.event") == 300
    assert relfilenode(conn, "outbox.event_p0") == p0
    check_exactly_once(read_all(names), range(300))
    assert relay.stop() == 0, relay.text()


def test_verify_with_partitions_held(outbox_db, topics, relays, tmp_path):
    """verify without retention: relayed rows present are whole partitions
    (two held by open writer transactions, in blocks 1 and 8), with the
    blocks between them truncated; the records of those blocks are not
    "not in the database"."""
    names = topics(3)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-vheld", **{"batch.poll_interval_ms": 100})
    holders = []
    n = 0
    for block in range(1, 9):
        scalar(conn, "SELECT setval(pg_get_serial_sequence('outbox.event', 'id'), %s)", (block * BLOCK,))
        if block in (1, 8):
            h = connect(outbox_db)
            h.autocommit = False
            with h.cursor() as cur:
                cur.execute("INSERT INTO outbox.event (topic, payload) VALUES (%s, 'held')", (names[0],))
            holders.append(h)
        insert_rows(conn, names, n, 10, per_txn=10)
        n += 10
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the relay to publish the rows")
    wait_for(lambda: set(per_partition(conn)) == {"outbox.event_p0", "outbox.event_p1"}, 30,
             "the partitions of blocks 2..7 to be truncated")
    res = relay_cmd("verify", "-c", cfg, "--topics", ",".join(names), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    for h in holders:
        h.rollback()
        h.close()
    check_exactly_once(read_all(names), range(n))
    assert relay.stop() == 0, relay.text()
