"""Fencing, standby takeover, the one-name guard, poison rows and signals,
end to end on the real PostgreSQL and the real Kafka broker."""
import re
import signal
import threading
import time

import psycopg2
import pytest

from conftest import ckpt_topic, create_topics, header, read_all, wait_for, write_config
from test_relay import (assert_positions_agree, check_exactly_once, connect, drained, insert_rows,
                        scalar)

# Run alone (scripts/test runs the "serial" tests after the others,
# one at a time): takeovers timed against 2 s leases.
pytestmark = pytest.mark.serial


class Writer(threading.Thread):
    """Inserts rows in small transactions until stopped; knows how many."""

    def __init__(self, url, topics, per_txn=20, pause=0.01):
        super().__init__(daemon=True)
        self.conn = connect(url)
        self.topics, self.per_txn, self.pause = topics, per_txn, pause
        self.count = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            insert_rows(self.conn, self.topics, self.count, self.per_txn, per_txn=self.per_txn)
            self.count += self.per_txn
            time.sleep(self.pause)

    def finish(self):
        self.halt.set()
        self.join(30)
        self.conn.close()
        return self.count


def checkpoints(topic, isolation):
    """(generation, batch sequence) of every checkpoint record in topic."""
    out = []
    for m in read_all([topic], isolation):
        f = dict(kv.split("=", 1) for kv in m.value().decode().split()[1:])
        out.append((int(f["gen"]), int(f["seq"])))
    return out


def stopped(proc):
    """True when the process is stopped (state T in /proc)."""
    with open(f"/proc/{proc.pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_zombie_is_fenced(outbox_db, topics, relays, tmp_path):
    """A leader frozen inside a Kafka transaction, with its batch produced
    (flushed to the broker) and not committed, loses the lease; when it wakes
    it must exit 3 and its open transaction must never become visible. The
    relay freezes itself (SIGSTOP) at the after-produce point of its third
    batch: a timed SIGSTOP from outside hits that window only now and then,
    and each miss costs frozen time out of the lease (so a slow host lost
    the lease on a miss)."""
    tps = topics(3, partitions=2)
    conn = connect(outbox_db)
    ckpt = ckpt_topic(outbox_db, "r-zombie")
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-zombie",
                       **{"batch.max_rows": 2000, "relay.lease_ttl_ms": 4000,
                          "log.level": "debug"})
    backlog = 10000  # full batches: the third is 2000 rows too
    insert_rows(conn, tps, 0, backlog, per_txn=2000)
    a = relays(cfg, env={"OUTBOX_RELAY_CRASH_AT": "after-produce:3",
                         "OUTBOX_RELAY_CRASH_ACTION": "stop"})
    a.wait_log("publishing")
    b = relays(cfg)
    b.wait_log("standby")
    writer = Writer(outbox_db, tps)
    writer.count = backlog
    writer.start()

    a.wait_log('crash point "after-produce" reached: stopping myself', timeout=60)
    wait_for(lambda: stopped(a.proc), 10, "the relay to stop itself")
    produced = set(checkpoints(ckpt, "read_uncommitted"))
    committed = set(checkpoints(ckpt, "read_committed"))
    assert produced - committed == {(1, 3)}, (produced, committed)
    seq = 3
    assert f"batch {seq}: " not in a.text(), a.text()

    b.wait_log("publishing", timeout=30)  # the lease expired: B took over
    time.sleep(1.0)
    a.proc.send_signal(signal.SIGCONT)
    rc = a.wait_exit(60)
    assert rc == 3, f"zombie exit code {rc}:\n{a.text()}"
    assert 'crash point "after-produce": continued' in a.text(), a.text()
    assert re.search(r"fenced|lease of relay \"r-zombie\" lost", a.text()), a.text()
    assert f"batch {seq}: " not in a.text(), a.text()

    total = writer.finish()
    wait_for(drained(conn), 120, "the outbox to drain")
    assert b.stop() == 0, b.text()
    check_exactly_once(read_all(tps), range(total))
    assert_positions_agree(conn, "r-zombie")
    # the frozen transaction reached the log and was aborted, never committed
    assert (1, seq) in checkpoints(ckpt, "read_uncommitted")
    assert (1, seq) not in checkpoints(ckpt, "read_committed")


def test_lease_kept_while_kafka_is_away(outbox_db, topics, relays, tmp_path):
    """A leader that cannot reach Kafka keeps renewing its lease between
    short init_transactions calls: a standby (which reaches Kafka) must not
    take over behind its back, since the leader's initialization, once the
    broker answers, would fence the standby's producer."""
    tps = topics(3)
    conn = connect(outbox_db)
    away = write_config(tmp_path / "away.conf", outbox_db, "r-away",
                        **{"kafka.bootstrap_servers": "127.0.0.1:9"})  # nothing listens
    a = relays(away)
    a.wait_log("could not initialize transactions")
    b = relays(write_config(tmp_path / "good.conf", outbox_db, "r-away"))
    b.wait_log("standby")
    insert_rows(conn, tps, 0, 300, per_txn=100)
    time.sleep(3 * 2.0)  # three lease TTLs, each longer than one init call
    assert a.proc.poll() is None, a.text()
    assert "publishing" not in b.text(), b.text()
    assert a.text().count("could not initialize transactions") >= 3, a.text()

    # a clean stop releases the lease (test_clean_stop_releases_the_lease
    # bounds that handover); here B must then publish what A could not
    assert a.stop() == 0, a.text()
    assert "lease released" in a.text(), a.text()
    b.wait_log("publishing", timeout=30)
    wait_for(drained(conn), 60, "the outbox to drain")
    assert b.stop() == 0, b.text()
    check_exactly_once(read_all(tps), range(300))
    assert_positions_agree(conn, "r-away")


def wait_generation(conn, name, generation, timeout):
    """Poll the lease until it reaches generation; returns the time.time()
    it was first seen there (within 20 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scalar(conn, "SELECT generation FROM outbox.relay_state WHERE name = %s",
                  (name,)) >= generation:
            return time.time()
        time.sleep(0.02)
    raise AssertionError(f"lease of {name} not at generation {generation} after {timeout}s")


def test_leader_killed_standby_takes_over(outbox_db, topics, relays, tmp_path):
    """README: a standby takes over at most lease_ttl_ms after the leader
    stopped renewing, plus one poll (at most half the TTL) and its producer
    start. Measured from the kill to the lease's new generation in the
    database (the lease part, bounded both ways) and from there to the
    standby's "publishing" line (the producer start, reported)."""
    tps = topics(3, partitions=2)
    conn = connect(outbox_db)
    ttl = 2.0
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-failover",
                       **{"batch.max_rows": 300, "relay.lease_ttl_ms": int(ttl * 1000)})
    a = relays(cfg)
    a.wait_log("publishing")
    b = relays(cfg)
    b.wait_log("standby")
    writer = Writer(outbox_db, tps)
    writer.start()
    time.sleep(1.5)

    killed = time.time()
    a.proc.kill()
    taken = wait_generation(conn, "r-failover", 2, 30)
    a.wait_exit(10)
    b.wait_log("publishing", timeout=30)
    publishing = b.log_time(r'relay "r-failover" publishing', after=taken - 0.05)
    assert publishing is not None, b.text()
    # A renewed at least every TTL/3, so its lease ran at least 2/3 TTL past
    # the kill: an earlier takeover would not be an expiry. The latest: the
    # expiry (at most one TTL after the kill), then the standby's next poll
    # (at most TTL/2), plus 1 s for a query on a loaded machine.
    lease_part = taken - killed
    assert 2 * ttl / 3 - 0.1 <= lease_part <= ttl + ttl / 2 + 1.0, \
        f"lease taken {lease_part:.2f}s after the kill (TTL {ttl}s)\n{b.text()}"
    producer_start = publishing - taken
    print(f"takeover: lease {lease_part:.2f}s after the kill, producer start {producer_start:.2f}s")

    time.sleep(1.0)
    total = writer.finish()
    wait_for(drained(conn), 120, "the outbox to drain")
    assert b.stop() == 0, b.text()
    check_exactly_once(read_all(tps), range(total))
    assert_positions_agree(conn, "r-failover")


def test_clean_stop_releases_the_lease(outbox_db, topics, relays, tmp_path):
    """SIGTERM releases the lease, so a standby takes it without waiting for
    the expiry. With a 30 s TTL the expiry would come at least 20 s after the
    stop (the leader renews every TTL/3); the standby polls at least every
    TTL/2 (15 s), so a takeover within TTL/2 + 2 s of the release can only
    be the release."""
    tps = topics(1)
    conn = connect(outbox_db)
    ttl = 30.0
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-release",
                       **{"relay.lease_ttl_ms": int(ttl * 1000)})
    a = relays(cfg)
    a.wait_log("publishing")
    b = relays(cfg)
    b.wait_log("standby")
    insert_rows(conn, tps, 0, 100, per_txn=100)
    wait_for(drained(conn), 30, "the first rows")

    signalled = time.time()  # the release comes after this, the expiry 2/3 TTL after at least
    assert a.stop() == 0, a.text()
    taken = wait_generation(conn, "r-release", 2, ttl / 2 + 5)
    assert taken - signalled <= ttl / 2 + 2.0, f"taken {taken - signalled:.2f}s after SIGTERM"
    b.wait_log("publishing", timeout=30)
    insert_rows(conn, tps, 100, 100, per_txn=100)
    wait_for(drained(conn), 30, "rows after the handover")
    assert b.stop() == 0, b.text()
    check_exactly_once(read_all(tps), range(200))
    assert_positions_agree(conn, "r-release")


def test_second_relay_name_refused(outbox_db, topics, relays, tmp_path):
    topics(1)
    first = relays(write_config(tmp_path / "a.conf", outbox_db, "r-first"))
    first.wait_log("publishing")
    second = relays(write_config(tmp_path / "b.conf", outbox_db, "r-second"))
    assert second.wait_exit(30) == 1
    assert 'r-first' in second.text() and "refusing to start" in second.text()
    # explicitly allowed: it starts
    third = relays(write_config(tmp_path / "c.conf", outbox_db, "r-third",
                                **{"relay.allow_other_names": True}))
    third.wait_log("publishing")
    assert third.stop() == 0 and first.stop() == 0


def _poison_setup(outbox_db, topics, limit=4000):
    (tp,) = topics(1)
    small = tp + "-small"
    create_topics([small], 1, {"max.message.bytes": str(limit)})
    conn = connect(outbox_db)
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        for n in range(5):
            cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) VALUES "
                        "(%s, 'k', %s, jsonb_build_object('n', %s::text))", (small, f"row-{n}", n))
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) VALUES "
                    "(%s, 'k', repeat('x', 10000)::bytea, '{\"n\": \"5\"}') RETURNING id", (small,))
        poison_id = cur.fetchone()[0]
        for n in range(6, 10):
            cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) VALUES "
                        "(%s, 'k', %s, jsonb_build_object('n', %s::text))", (small, f"row-{n}", n))
        cur.execute("COMMIT")
    return conn, small, poison_id


# max_rows 2: every batch is full, so the next one is read ahead while the
# current one travels, and the poison row is met in a batch read ahead.
READ_AHEAD = [pytest.param({}, id="default"),
              pytest.param({"batch.max_rows": 2, "log.level": "debug"}, id="read-ahead")]


def _assert_read_ahead(relay, opts, poison_id):
    """With 2-row batches, the batch holding the poison row was read ahead:
    some "read N rows ahead (after_id X)" read the rows after X, which are
    consecutive ids here (one inserting transaction), poison_id among them."""
    if opts:
        ahead = [(int(n), int(x)) for n, x in
                 re.findall(r"read (\d+) rows ahead \(after_id (\d+)\)", relay.text())]
        assert any(x < poison_id <= x + n for n, x in ahead), (poison_id, ahead, relay.text())


@pytest.mark.sanitizer
@pytest.mark.parametrize("opts", READ_AHEAD)
def test_poison_row_stop_then_fixed(outbox_db, topics, relays, tmp_path, opts):
    conn, small, poison_id = _poison_setup(outbox_db, topics)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-poison-stop",
                       **{"relay.poison_retry_ms": 1000}, **opts)
    relay = relays(cfg)
    relay.wait_log(f"stopped on outbox row {poison_id}")
    assert "max.message.bytes" in relay.text()
    time.sleep(3)  # several retries: still stopped, no spin, nothing after it
    assert [int(header(m, "n")) for m in read_all([small])] == [0, 1, 2, 3, 4]
    assert relay.text().count(f"stopped on outbox row {poison_id}") == 1
    assert relay.proc.poll() is None

    with conn.cursor() as cur:  # the operator removes the row
        cur.execute("DELETE FROM outbox.event WHERE id = %s", (poison_id,))
    wait_for(drained(conn), 30, "the rest to be published")
    relay.wait_log(f"outbox row {poison_id} no longer blocks publishing")
    assert [int(header(m, "n")) for m in read_all([small])] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert relay.stop() == 0
    _assert_read_ahead(relay, opts, poison_id)


@pytest.mark.sanitizer
@pytest.mark.parametrize("opts", READ_AHEAD)
def test_poison_row_dead_letter(outbox_db, topics, relays, tmp_path, opts):
    conn, small, poison_id = _poison_setup(outbox_db, topics)
    with conn.cursor() as cur:  # and a row for a topic that does not exist
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) VALUES "
                    "(%s, 'k', 'lost?', '{\"n\": \"10\"}') RETURNING id", (small + "-missing",))
        missing_id = cur.fetchone()[0]
    dlq = small + "-dlq"
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-poison-dlq",
                       **{"relay.poison_policy": "dead-letter", "kafka.dead_letter_topic": dlq},
                       **opts)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the outbox to drain")
    assert relay.stop() == 0, relay.text()
    _assert_read_ahead(relay, opts, poison_id)
    assert [int(header(m, "n")) for m in read_all([small])] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    dead = read_all([dlq])
    assert sorted(int(header(m, "outbox-id")) for m in dead) == [poison_id, missing_id]
    by_id = {int(header(m, "outbox-id")): m for m in dead}
    assert b"max.message.bytes" in header(by_id[poison_id], "outbox-error")
    assert header(by_id[poison_id], "outbox-topic") == small.encode()
    assert by_id[poison_id].value() == b"x" * 10000
    assert b"does not exist" in header(by_id[missing_id], "outbox-error")
    assert by_id[missing_id].value() == b"lost?"


def transaction_sizes(tp):
    """Records per Kafka transaction in a one-partition topic, in order: a
    transaction's records sit at consecutive offsets, and its commit marker
    takes the next offset."""
    sizes, last = [], None
    for m in sorted(read_all([tp]), key=lambda m: m.offset()):
        if last is None or m.offset() != last + 1:
            sizes.append(0)
        sizes[-1] += 1
        last = m.offset()
    return sizes


def test_sighup_reload(outbox_db, topics, relays, tmp_path):
    """SIGHUP: an invalid file keeps the running configuration, a valid one
    changes batch.max_rows for the batches that follow (read from the
    transactions in Kafka), and a non-reloadable change waits for a restart."""
    (tp,) = topics(1)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-hup")
    relay = relays(cfg)
    relay.wait_log("publishing")
    good = cfg.read_text()
    assert "max_rows" not in good  # the default, 10000

    def relay_one_transaction(start, n):
        insert_rows(conn, [tp], start, n, per_txn=n)
        wait_for(drained(conn), 30, f"rows {start}..{start + n - 1}")

    relay_one_transaction(0, 1000)
    assert transaction_sizes(tp) == [1000]

    cfg.write_text(good.replace("batch = {", "batch = {\n  max_rows = 0;"))
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log("could not reload configuration, keeping the running one: .*"
                   "batch.max_rows: 0 is out of range")
    assert relay.proc.poll() is None
    relay_one_transaction(1000, 300)
    assert transaction_sizes(tp) == [1000, 300]  # still the default

    cfg.write_text(good.replace("batch = {", "batch = {\n  max_rows = 77;")
                   .replace('bootstrap_servers = "', 'bootstrap_servers = "127.0.0.2:1,'))
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log("kafka.bootstrap_servers changed: it takes effect at the next start")
    relay.wait_log("configuration option batch.max_rows reloaded")
    relay_one_transaction(1300, 1000)
    assert transaction_sizes(tp) == [1000, 300] + [77] * 12 + [76]
    assert relay.stop() == 0
    check_exactly_once(read_all([tp]), range(2300))


def test_sd_notify(outbox_db, topics, relays, tmp_path):
    import socket
    topics(1)
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    relay = relays(write_config(tmp_path / "relay.conf", outbox_db, "r-notify"),
                   env={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=publishing"
    relay.proc.send_signal(signal.SIGTERM)
    assert sock.recv(4096) == b"STOPPING=1"
    assert relay.wait_exit(30) == 0
    sock.close()
