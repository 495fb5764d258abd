"""README claims about how the relay ends, end to end on the real PostgreSQL
and the real Kafka broker: exit 5 on a lost or truncated checkpoint topic and
`relay.on_database_ahead = "trust-database"`, exit 5 on a transaction id
regression, SIGINT, a second stop signal, and an abandoned transaction aborted
by the next start."""
import signal
import time
import uuid

import psycopg2
from confluent_kafka.admin import AdminClient

from conftest import (WAITING, BOOTSTRAP, QUIET, SESSION_TOPICS, ckpt_topic, header, read_all, wait_for,
                      write_config)
from test_relay import (assert_positions_agree, check_exactly_once, connect, db_position, drained,
                        insert_rows, scalar)


def delete_topic(name):
    """Delete a topic and wait until the broker no longer lists it."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **QUIET})
    for f in admin.delete_topics([name], operation_timeout=30).values():
        f.result(60)
    wait_for(lambda: name not in admin.list_topics(timeout=10).topics, 60,
             f"topic {name} to disappear")


def ns_of(msgs):
    return sorted(int(header(m, "n")) for m in msgs)


def relay_backends(conn, dbname):
    """(pid, wait_event_type) of the relay's sessions on the test database."""
    with conn.cursor() as cur:
        cur.execute("SELECT pid, wait_event_type FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'outbox-relay'", (dbname,))
        return cur.fetchall()


def hold_relay_row(url, name):
    """Another session locks the relay's state row: the relay's next lease
    renewal (an UPDATE of that row) blocks until the lock goes."""
    holder = psycopg2.connect(url)
    with holder.cursor() as cur:
        cur.execute("SELECT 1 FROM outbox.relay_state WHERE name = %s FOR UPDATE", (name,))
        assert cur.fetchone() == (1,)
    return holder


def expect_refusal(relay, timeout=60):
    """The relay's exit code, failing at once (not at a timeout) when it
    starts publishing instead of refusing."""
    deadline = time.monotonic() + timeout
    while relay.proc.poll() is None:
        assert "publishing" not in relay.text(), \
            f"the relay started publishing instead of refusing:\n{relay.text()}"
        assert time.monotonic() < deadline, f"the relay neither refused nor published:\n" \
            f"{relay.text()}"
        time.sleep(0.1)
    return relay.wait_exit(5)


def blocked_on_lock(conn, dbname):
    return lambda: any(w == "Lock" for _, w in relay_backends(conn, dbname))


# --- exit 5 on a lost or truncated checkpoint topic; trust-database ----------

def test_lost_checkpoint_topic_exits_5_then_trust_database(outbox_db, topics, relays, tmp_path):
    """README "What can break it": losing the checkpoint topic while the
    database keeps its position makes the relay refuse to start (exit 5);
    trust-database then continues from the database position, and nothing is
    lost or published twice."""
    tps = topics(2)
    name = "r-lost-ckpt"
    ck = ckpt_topic(outbox_db, name)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name, **{"batch.max_rows": 100})
    insert_rows(conn, tps, 0, 500, per_txn=100)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the first rows to be relayed")
    assert relay.stop() == 0, relay.text()
    seq = db_position(conn, name)[0]
    assert seq >= 5, seq

    delete_topic(ck)  # the checkpoint topic is lost; the database keeps its position
    insert_rows(conn, tps, 500, 200, per_txn=100)
    refused = relays(cfg)
    rc = expect_refusal(refused)
    assert rc == 5, f"expected exit 5, got {rc}:\n{refused.text()}"
    text = refused.text()
    assert f"database position is at batch {seq} but there is no checkpoint in Kafka" in text, text
    assert "lost or truncated" in text and "trust-database" in text, text
    # refused before publishing anything: the new rows wait in the outbox
    assert scalar(conn, WAITING) == 200
    assert db_position(conn, name)[0] == seq
    assert ns_of(read_all(tps)) == list(range(500))

    trusting = write_config(tmp_path / "trust.conf", outbox_db, name,
                            **{"batch.max_rows": 100, "relay.on_database_ahead": "trust-database"})
    relay = relays(trusting)
    wait_for(drained(conn), 120, "the rows after the loss to be relayed")
    assert relay.stop() == 0, relay.text()
    assert (f"database position is at batch {seq} but there is no checkpoint in Kafka; "
            "continuing from the database position") in relay.text(), relay.text()
    check_exactly_once(read_all(tps), range(700))
    assert db_position(conn, name)[0] > seq

    # The checkpoint topic holds this relay's position again: the default
    # policy starts, and the two copies agree.
    insert_rows(conn, tps, 700, 100, per_txn=100)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "rows after the repair")
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all(tps), range(800))
    assert_positions_agree(conn, name)


def test_truncated_checkpoint_topic_exits_5_then_trust_database(outbox_db, topics, relays,
                                                                tmp_path):
    """A checkpoint topic whose last record for this relay is behind the
    database (truncated, or restored from an older copy): exit 5, naming both
    batches; trust-database continues from the database, exactly once. The
    topic falls behind here because the relay ran for a while on another
    checkpoint topic, which is what the relay sees after a truncation."""
    tps = topics(2)
    name = "r-trunc-ckpt"
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name, **{"batch.max_rows": 100})
    insert_rows(conn, tps, 0, 300, per_txn=100)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the first rows")
    assert relay.stop() == 0, relay.text()
    behind = db_position(conn, name)[0]
    assert behind >= 3

    other = f"ckpt-other-{uuid.uuid4().hex[:8]}"
    SESSION_TOPICS.add(other)
    elsewhere = write_config(tmp_path / "elsewhere.conf", outbox_db, name,
                             **{"batch.max_rows": 100, "kafka.checkpoint_topic": other,
                                "relay.on_database_ahead": "trust-database"})
    insert_rows(conn, tps, 300, 300, per_txn=100)
    relay = relays(elsewhere)
    wait_for(drained(conn), 60, "rows relayed with the other checkpoint topic")
    assert relay.stop() == 0, relay.text()
    ahead = db_position(conn, name)[0]
    assert ahead >= behind + 3

    insert_rows(conn, tps, 600, 100, per_txn=100)
    refused = relays(cfg)  # back on the first topic: its checkpoint is behind
    rc = expect_refusal(refused)
    assert rc == 5, f"expected exit 5, got {rc}:\n{refused.text()}"
    assert (f"database position is at batch {ahead} but the checkpoint in Kafka is at batch "
            f"{behind}") in refused.text(), refused.text()
    assert scalar(conn, WAITING) == 100
    assert ns_of(read_all(tps)) == list(range(600))

    trusting = write_config(tmp_path / "trust.conf", outbox_db, name,
                            **{"batch.max_rows": 100, "relay.on_database_ahead": "trust-database"})
    relay = relays(trusting)
    wait_for(drained(conn), 60, "rows after the truncation")
    assert relay.stop() == 0, relay.text()
    assert "continuing from the database position" in relay.text(), relay.text()
    check_exactly_once(read_all(tps), range(700))
    assert_positions_agree(conn, name)


# --- exit 5 on a transaction id regression -----------------------------------

def test_transaction_id_regression_exits_5(outbox_db, topics, relays, tmp_path):
    """README: `outbox.window_open` detects a current snapshot below the stored
    position and the relay stops with exit code 5. The stored position is
    moved a million transaction ids past the database's current snapshot, as
    a restore or a lossy failover leaves it; the rows written after that are
    not skipped silently: the relay stops and they stay in the outbox."""
    tps = topics(1)
    name = "r-xid-regress"
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name)
    relay = relays(cfg)
    relay.wait_log("publishing")
    insert_rows(conn, tps, 0, 50, per_txn=50)
    wait_for(drained(conn), 30, "the first rows")
    assert relay.proc.poll() is None

    far = scalar(conn, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint") + 1000000
    with conn.cursor() as cur:  # as the schema owner, the way a restore would leave it
        cur.execute("UPDATE outbox.relay_state SET pos_done = %s, pos_next = NULL, "
                    "pos_after_id = 0 WHERE name = %s", (f"{far}:{far}:", name))
        assert cur.rowcount == 1
    last = scalar(conn, "SELECT last_value FROM outbox.event_id_seq")
    insert_rows(conn, tps, 50, 10, per_txn=10)
    rc = relay.wait_exit(60)
    assert rc == 5, f"expected exit 5, got {rc}:\n{relay.text()}"
    text = relay.text()
    assert f"the database's transaction ids are behind the relay position of relay \"{name}\"" \
        in text, text
    assert "Recovery: transaction id regression" in text, text  # the hint points at docs/sql.md
    assert scalar(conn, "SELECT count(*) FROM outbox.event WHERE id > %s", (last,)) == 10
    assert ns_of(read_all(tps)) == list(range(50))


# --- signals ------------------------------------------------------------------

def test_sigint_stops_cleanly_and_releases_the_lease(outbox_db, topics, relays, tmp_path):
    """README: SIGINT, like SIGTERM, releases the lease and exits 0; what was
    in flight is published exactly once by the next start."""
    tps = topics(2, partitions=2)
    name = "r-sigint"
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name,
                       **{"batch.max_rows": 200, "relay.lease_ttl_ms": 60000})
    insert_rows(conn, tps, 0, 20000, per_txn=1000)
    relay = relays(cfg)
    relay.wait_log("publishing")
    wait_for(lambda: scalar(conn, WAITING) < 20000, 60,
             "publishing to begin")
    assert relay.stop(signal.SIGINT) == 0, relay.text()
    assert "lease released" in relay.text(), relay.text()
    left = scalar(conn, WAITING)
    assert left > 0, "the stop should come mid-stream"
    # released, not left to expire: the TTL is a minute
    assert scalar(conn, "SELECT lease_expires_in_ms FROM outbox.status(%s)", (name,)) <= 0

    relay = relays(cfg)
    wait_for(drained(conn), 120, "the rest after the restart")
    assert relay.stop(signal.SIGINT) == 0, relay.text()
    check_exactly_once(read_all(tps), range(20000))
    assert_positions_agree(conn, name)


def test_second_stop_signal_exits_at_once(outbox_db, topics, relays, tmp_path):
    """A first SIGTERM that cannot finish (the relay is blocked in a database
    call: its lease renewal waits for a row lock held elsewhere), then a
    second one: the process exits at once. README says "a second
    SIGTERM/SIGINT exits at once" (exit codes: 0 stopped cleanly); the code
    exits 1, which is what this test asserts (reported to the lead)."""
    topics(1)
    name = "r-second-signal"
    conn = connect(outbox_db)
    dbname = conn.get_dsn_parameters()["dbname"]
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name,
                       **{"postgres.statement_timeout_ms": 0, "relay.lease_ttl_ms": 3000})
    relay = relays(cfg)
    relay.wait_log("publishing")
    holder = hold_relay_row(outbox_db, name)
    try:
        wait_for(blocked_on_lock(conn, dbname), 10, "the relay's renewal to wait for the lock")
        relay.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # a precondition, not the claim: the first signal cannot finish
        assert relay.proc.poll() is None, relay.text()
        assert blocked_on_lock(conn, dbname)()
        sent = time.monotonic()
        relay.proc.send_signal(signal.SIGTERM)
        rc = relay.wait_exit(10)
        took = time.monotonic() - sent
    finally:
        holder.rollback()
        holder.close()
    assert took < 2, f"the second signal took {took:.1f}s"
    assert rc == 1, f"exit {rc}:\n{relay.text()}"
    assert "second stop signal: exiting at once" in relay.text(), relay.text()


def test_abandoned_transaction_aborted_by_next_start(outbox_db, topics, relays, tmp_path):
    """A relay killed between producing a batch and committing it leaves an
    open Kafka transaction: read_uncommitted shows its records, read_committed
    never does, and the next start aborts it (init_transactions) well before
    the transaction timeout would, then publishes the rows once."""
    tps = topics(2)
    name = "r-abandoned"
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 3000, per_txn=1000)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name,
                       **{"batch.max_rows": 1000, "kafka.transaction_timeout_ms": 60000})
    crashing = relays(cfg, env={"OUTBOX_RELAY_CRASH_AT": "after-produce:2"})
    assert crashing.wait_exit(120) == -9, crashing.text()
    crashed = time.monotonic()  # the transaction is at most this old
    assert 'crash point "after-produce" reached' in crashing.text()

    committed = ns_of(read_all(tps))
    assert committed == list(range(1000)), committed[:5]
    raw = ns_of(read_all(tps, "read_uncommitted"))
    abandoned = sorted(set(raw) - set(committed))
    assert abandoned == list(range(1000, 2000)), abandoned[:5]
    assert scalar(conn, WAITING) == 2000

    relay = relays(cfg)
    wait_for(drained(conn), 30, "the outbox to drain after the restart")
    # every row once, the abandoned batch's included: its records, still
    # ahead of the new ones in the log, were aborted by the start, not by the
    # one-minute transaction timeout
    check_exactly_once(read_all(tps), range(3000))
    assert time.monotonic() - crashed < 50, "too slow to tell the start from the timeout"
    assert relay.stop() == 0, relay.text()
    raw = ns_of(read_all(tps, "read_uncommitted"))
    assert raw.count(1500) == 2 and raw.count(500) == 1 and raw.count(2500) == 1
    assert_positions_agree(conn, name)
