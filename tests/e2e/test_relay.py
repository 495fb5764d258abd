"""The relay end to end on the real PostgreSQL and the real Kafka broker:
exactly once, per-key order, record contents, restarts, crash points and
out-of-order commits."""
import collections
import json
import re
import threading
import time

import psycopg2
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from conftest import (WAITING, SANITIZED, ckpt_topic, header, java_partition, read_all, relay_cmd,
                      wait_for, write_config)


def connect(url):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def scalar(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def insert_rows(conn, topics, start, count, keys=64, per_txn=1000, key_prefix="k"):
    """Insert rows start..start+count-1 in transactions of per_txn rows.
    Row n: topic topics[n % 3], key "<key_prefix><n % keys>", payload
    "row-<n>", headers {"n": "<n>", "src": "e2e"}."""
    arr = "{" + ",".join(topics) + "}"
    with conn.cursor() as cur:
        for lo in range(start, start + count, per_txn):
            hi = min(lo + per_txn, start + count) - 1
            cur.execute("BEGIN")
            cur.execute(
                """INSERT INTO outbox.event(topic, key, payload, headers)
                   SELECT (%s::text[])[1 + n %% %s], convert_to(%s || (n %% %s), 'UTF8'),
                          convert_to('row-' || n, 'UTF8'),
                          jsonb_build_object('n', n::text, 'src', 'e2e')
                   FROM generate_series(%s, %s) AS n ORDER BY n""",
                (arr, len(topics), key_prefix, keys, lo, hi))
            cur.execute("COMMIT")


def drained(conn):
    return lambda: scalar(conn, WAITING) == 0


def check_exactly_once(msgs, expected_ns, partitions=None):
    """Each expected row exactly once; nothing else; per key, outbox ids rise
    along the partition; keys sit where Java's murmur2 puts them."""
    seen = collections.Counter(int(header(m, "n")) for m in msgs)
    dups = {n: c for n, c in seen.items() if c > 1}
    lost = set(expected_ns) - set(seen)
    extra = set(seen) - set(expected_ns)
    assert not dups, f"duplicated rows: {sorted(dups)[:20]}"
    assert not lost, f"lost {len(lost)} rows, e.g. {sorted(lost)[:20]}"
    assert not extra, f"unexpected rows: {sorted(extra)[:20]}"
    last = {}
    for m in sorted(msgs, key=lambda m: (m.topic(), m.partition(), m.offset())):
        oid = int(header(m, "outbox-id"))
        k = (m.topic(), m.partition(), m.key())
        assert last.get(k, 0) < oid, f"key {k} out of order: id {oid} after {last[k]}"
        last[k] = oid
        if partitions and m.key() is not None:
            assert m.partition() == java_partition(m.key(), partitions)


def checkpoint_of(name, ckpt_topic):
    recs = [m for m in read_all([ckpt_topic]) if m.key() == name.encode()]
    return recs[-1].value().decode() if recs else None


def db_position(conn, name):
    with conn.cursor() as cur:
        cur.execute("SELECT batch_seq, pos_done, pos_next, pos_after_id FROM outbox.position_get(%s)",
                    (name,))
        return cur.fetchone()


def assert_positions_agree(conn, name):
    """The database position equals the last committed checkpoint."""
    ck = checkpoint_of(name, ckpt_topic("/" + conn.get_dsn_parameters()["dbname"], name))
    assert ck is not None
    fields = dict(f.split("=", 1) for f in ck.split()[1:])
    seq, done, nxt, after = db_position(conn, name)
    assert (int(fields["seq"]), fields["done"], None if fields["next"] == "-" else fields["next"],
            int(fields["after"])) == (seq, done, nxt, after)


@pytest.mark.sanitizer
def test_backlog_exactly_once_in_order_with_contents(outbox_db, topics, relays, tmp_path):
    n_rows = 20000 if SANITIZED else 100000
    tps = topics(3, partitions=4)
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, n_rows, per_txn=5000)
    # one row with NULL key and payload and no headers, and one with binary data
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) VALUES "
                    "(%s, NULL, NULL, '{\"n\": \"-1\"}'), (%s, '\\x00ff'::bytea, '\\x0001fe'::bytea, "
                    "'{\"n\": \"-2\", \"h\": \"\"}')", (tps[0], tps[1]))
        cur.execute("SELECT id, floor(extract(epoch FROM created_at) * 1000)::bigint FROM outbox.event")
        created = dict(cur.fetchall())
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-backlog")
    relay = relays(cfg)
    wait_for(drained(conn), 300, "the backlog to drain")
    assert relay.stop() == 0, relay.text()

    msgs = read_all(tps)
    check_exactly_once(msgs, list(range(n_rows)) + [-1, -2], partitions=4)
    for m in msgs:
        oid = int(header(m, "outbox-id"))
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_CREATE_TIME and ts == created[oid], (oid, ts, created[oid])
        n = int(header(m, "n"))
        if n >= 0:
            assert m.topic() == tps[n % 3]
            assert m.key() == f"k{n % 64}".encode()
            assert m.value() == f"row-{n}".encode()
            assert header(m, "src") == b"e2e"
    special = {int(header(m, "n")): m for m in msgs if int(header(m, "n")) < 0}
    assert special[-1].key() is None and special[-1].value() is None
    assert special[-2].key() == b"\x00\xff" and special[-2].value() == b"\x00\x01\xfe"
    assert header(special[-2], "h") == b""
    assert_positions_agree(conn, "r-backlog")


def test_stop_and_start_mid_stream(outbox_db, topics, relays, tmp_path):
    """SIGTERM while a backlog is being relayed, three times, with rows
    still arriving: each stop comes after the run published some batches and
    while committed rows still wait in the outbox; nothing is lost or
    repeated across the restarts."""
    tps = topics(3, partitions=2)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-restart", **{"batch.max_rows": 500})
    backlog, total = 20000, 30000
    insert_rows(conn, tps, 0, backlog, per_txn=1000)
    writer_conn = connect(outbox_db)
    writer = threading.Thread(target=insert_rows, args=(writer_conn, tps, backlog, total - backlog),
                              kwargs={"per_txn": 100})
    writer.start()
    seq = 0
    for round_ in range(3):
        relay = relays(cfg)
        relay.wait_log("publishing")
        # some batches of this run committed and advanced...
        wait_for(lambda: db_position(conn, "r-restart")[0] >= seq + 2, 60,
                 f"round {round_}: two batches", interval=0.02)
        waiting = scalar(conn, WAITING)
        started = time.monotonic()
        assert relay.stop() == 0, relay.text()
        assert time.monotonic() - started < 15
        # ...and rows were still waiting when the signal went
        assert waiting > 0, f"round {round_}: the outbox was empty at the stop"
        seq = db_position(conn, "r-restart")[0]
        assert scalar(conn, WAITING) > 0
    writer.join()
    relay = relays(cfg)
    wait_for(drained(conn), 180, "the outbox to drain")
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all(tps), range(total))
    assert_positions_agree(conn, "r-restart")


CRASH_POINTS = ["after-fetch", "after-produce", "during-commit", "after-commit", "after-advance"]
# Where the crash finds the next batch already read (held in memory, read
# while the crashing batch travelled): from the end of the produce on.
HOLDS_READ_AHEAD = {"during-commit", "after-commit", "after-advance"}


def assert_read_ahead_at_crash(text, point):
    """What the crashing relay held when it died, from its debug log. Full
    batches of 1000: every batch after the first is read ahead while the one
    before travels ("read N rows ahead (after_id X) while batch S travels").
    The crashing batch C is the one after the last committed batch. At
    during-commit, after-commit and after-advance the batch after C was read
    ahead while C travelled, and is held at the crash; at after-fetch and
    after-produce nothing is held yet, but C itself was read ahead while
    C - 1 travelled."""
    head = text[:text.index(f'crash point "{point}" reached')]
    committed = [int(s) for s in re.findall(r"batch (\d+): \d+ rows committed", head)]
    ahead = [(int(n), int(s)) for n, s in
             re.findall(r"read (\d+) rows ahead \(after_id \d+\) while batch (\d+) travels", head)]
    assert committed and ahead, text
    crashing = committed[-1] + 1
    assert crashing >= 3, f"the crash came at batch {crashing}, not the third:\n{text}"
    want = crashing if point in HOLDS_READ_AHEAD else crashing - 1
    assert ahead[-1] == (1000, want), (
        f"at {point} the last batch read ahead should be 1000 rows read while batch {want} "
        f"travelled, got {ahead[-1]}:\n{text}")


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_point_repaired(point, outbox_db, topics, relays, tmp_path):
    tps = topics(3, partitions=2)
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 6000, per_txn=1000)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, f"r-crash-{point}",
                       **{"batch.max_rows": 1000, "log.level": "debug"})
    # die on the third pass: two batches are committed before
    crashing = relays(cfg, env={"OUTBOX_RELAY_CRASH_AT": f"{point}:3"})
    rc = crashing.wait_exit(120)
    assert rc == -9, f"expected SIGKILL at {point}, got {rc}:\n{crashing.text()}"
    assert f'crash point "{point}" reached' in crashing.text()
    assert_read_ahead_at_crash(crashing.text(), point)
    before = scalar(conn, WAITING)
    assert 0 < before < 6000, "the crash should come mid-stream"

    relay = relays(cfg)
    wait_for(drained(conn), 120, "the outbox to drain after the crash")
    assert relay.stop() == 0, relay.text()
    if point == "after-commit":
        assert "bringing the database forward" in relay.text()
    msgs = read_all(tps)
    check_exactly_once(msgs, range(6000))
    assert_positions_agree(conn, f"r-crash-{point}")
    if point == "after-produce":
        # Not vacuous: the killed transaction's 1000 records are in the log
        # (the crash point flushes them first) but were aborted.
        raw = read_all(tps, "read_uncommitted")
        assert len(raw) >= len(msgs) + 1000


def test_out_of_order_commit_with_long_open_transaction(outbox_db, topics, relays, tmp_path):
    (tp,) = topics(1)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-order")
    relay = relays(cfg)
    relay.wait_log("publishing")

    t1 = psycopg2.connect(outbox_db)  # stays open: takes the lower id
    with t1.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) "
                    "VALUES (%s, 'a', 'T1', '{\"n\": \"1\"}') RETURNING id", (tp,))
        t1_id = cur.fetchone()[0]
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) "
                    "VALUES (%s, 'b', 'T2', '{\"n\": \"2\"}') RETURNING id", (tp,))
        t2_id = cur.fetchone()[0]
    assert t1_id < t2_id

    # T2's row arrives although T1, with the lower id, is still open
    wait_for(lambda: [m.value() for m in read_all([tp])] == [b"T2"], 30, "T2's row")
    time.sleep(1.0)
    assert [m.value() for m in read_all([tp])] == [b"T2"]

    t1.commit()
    wait_for(lambda: len(read_all([tp])) == 2, 30, "T1's row")
    time.sleep(1.0)
    msgs = read_all([tp])
    assert [m.value() for m in msgs] == [b"T2", b"T1"]
    assert [int(header(m, "outbox-id")) for m in msgs] == [t2_id, t1_id]

    # rolled-back rows never appear
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO outbox.event(topic, payload) VALUES (%s, 'rolled back')", (tp,))
        cur.execute("ROLLBACK")
        cur.execute("INSERT INTO outbox.event(topic, payload, headers) "
                    "VALUES (%s, 'T3', '{\"n\": \"3\"}')", (tp,))
    wait_for(lambda: len(read_all([tp])) == 3, 30, "T3's row")
    assert [m.value() for m in read_all([tp])] == [b"T2", b"T1", b"T3"]
    assert relay.stop() == 0, relay.text()
    t1.close()


def status_fields(out):
    """`status` prints one "name value" line per field of outbox.status()."""
    return dict(line.split(None, 1) if " " in line.strip() else (line.strip(), "")
                for line in out.splitlines() if line.strip())


@pytest.mark.sanitizer
def test_check_and_status_commands(outbox_db, topics, relays, tmp_path):
    """check and status as an operator runs them; under the sanitizer build
    relay_cmd gives ASan and UBSan their own exit codes (86, 87), so an
    expected exit 1 cannot be a memory error."""
    tps = topics(1)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-check")
    out = relay_cmd("check", "-c", cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "postgresql: ok" in out.stdout and "kafka: ok" in out.stdout
    bad = tmp_path / "bad.conf"
    bad.write_text(cfg.read_text().replace("lease_ttl_ms", "lease_tll_ms"))
    out = relay_cmd("check", "-c", bad)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "relay.lease_tll_ms: unknown option" in out.stderr and "bad.conf:3" in out.stderr
    out = relay_cmd("bogus")
    assert out.returncode == 2, out.stdout + out.stderr

    # status before the relay ever ran: its state does not exist yet
    out = relay_cmd("status", "-c", cfg)
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'relay "r-check" does not exist' in out.stderr, out.stderr

    # after a run that relayed three batches and stopped cleanly
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 30, per_txn=10)
    relay = relays(write_config(tmp_path / "run.conf", outbox_db, "r-check",
                                **{"batch.max_rows": 10}))
    wait_for(drained(conn), 60, "the rows to be relayed")
    assert relay.stop() == 0, relay.text()
    owner = re.search(r'lease of relay "r-check" taken by "([^"]+)": generation 1',
                      relay.text()).group(1)
    insert_rows(conn, tps, 30, 7, per_txn=7)  # committed, not relayed: the lag
    seq, done, nxt, after = db_position(conn, "r-check")
    out = relay_cmd("status", "-c", cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    st = status_fields(out.stdout)
    assert set(st) == {"name", "owner", "generation", "lease_expires_at", "lease_expires_in_ms",
                       "batch_seq", "pos_done", "pos_next", "pos_after_id", "created_at",
                       "updated_at", "advanced_at", "lag_rows", "lag_oldest_age_ms"}, out.stdout
    assert st["name"] == "r-check" and st["owner"] == owner
    assert st["generation"] == "1"
    assert int(st["lease_expires_in_ms"]) <= 0  # released at the clean stop
    assert int(st["batch_seq"]) == seq >= 3
    assert (st["pos_done"], st["pos_next"], int(st["pos_after_id"])) == \
        (done, nxt if nxt is not None else "(null)", after)
    assert st["lag_rows"] == "7" and int(st["lag_oldest_age_ms"]) >= 0
    assert st["advanced_at"] != "(null)"


@pytest.mark.serial  # a wake-up timed in seconds
def test_notify_wakes_the_relay_else_it_polls(outbox_db, topics, relays, tmp_path):
    """With NOTIFY off the relay finds rows only at its poll (every
    batch.poll_interval_ms): rows committed one by one within a second land
    in at most two transactions. With the trigger on, each row wakes it: each
    arrives long before the next poll, in a transaction of its own. The
    transactions are read back from Kafka (consecutive offsets, then a
    marker), so the proof is what was published, not a silence."""
    from test_ha import transaction_sizes
    (tp,) = topics(1)
    conn = connect(outbox_db)
    poll_s = 8
    relay = relays(write_config(tmp_path / "relay.conf", outbox_db, "r-notify-wake",
                                **{"batch.poll_interval_ms": poll_s * 1000,
                                   "relay.lease_ttl_ms": 60000}))
    relay.wait_log("publishing")
    assert scalar(conn, "SELECT outbox.notify_enabled()") is False

    for n in range(4):  # NOTIFY off: four commits within 1.2 s
        insert_rows(conn, [tp], n, 1, per_txn=1)
        time.sleep(0.4)
    wait_for(drained(conn), 2 * poll_s + 10, "the rows at the next poll")
    polled = transaction_sizes(tp)
    assert sum(polled) == 4 and len(polled) <= 2, polled

    assert scalar(conn, "SELECT outbox.notify_enable()") is True
    for n in range(4, 8):  # NOTIFY on: each row arrives well before a poll would
        t0 = time.monotonic()
        insert_rows(conn, [tp], n, 1, per_txn=1)
        wait_for(drained(conn), poll_s / 2, f"row {n} woken by NOTIFY", interval=0.02)
        assert time.monotonic() - t0 < poll_s / 2
    assert transaction_sizes(tp) == polled + [1, 1, 1, 1]
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all([tp]), range(8))


def test_json_logs(outbox_db, topics, relays, tmp_path):
    (tp,) = topics(1)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-json",
                       **{"log.format": "json", "log.level": "debug",
                          "kafka.properties": ["debug=eos"]})  # librdkafka's own lines too
    relay = relays(cfg)
    relay.wait_log('"msg":"relay \\\\"r-json\\\\" publishing"')
    conn = connect(outbox_db)
    insert_rows(conn, [tp], 0, 10, per_txn=10)
    wait_for(drained(conn), 30, "rows to be relayed")
    assert relay.stop() == 0
    lines = relay.text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(set(r) == {"ts", "level", "src", "msg"} for r in records)
    assert {"relay", "librdkafka"} <= {r["src"] for r in records}
    assert any(r["level"] == "debug" and r["msg"].startswith("batch 1:") for r in records)


def test_checkpoint_topic_with_several_partitions(outbox_db, topics, relays, tmp_path):
    """Regression: checkpoints must all go to partition 0, where the relay
    reads them back, even when someone created the topic with more."""
    from conftest import create_topics
    tps = topics(1)
    name = "r-ckpt-parts2"
    assert java_partition(name.encode(), 3) != 0  # murmur2 alone would not pick partition 0
    create_topics([ckpt_topic(outbox_db, name)], partitions=3, config={"cleanup.policy": "compact"})
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 3000, per_txn=500)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name, **{"batch.max_rows": 500})
    crashing = relays(cfg, env={"OUTBOX_RELAY_CRASH_AT": "after-commit:3"})
    assert crashing.wait_exit(60) == -9, crashing.text()
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the outbox to drain")
    assert relay.stop() == 0, relay.text()
    assert "bringing the database forward" in relay.text()
    check_exactly_once(read_all(tps), range(3000))
    ck = [m for m in read_all([ckpt_topic(outbox_db, name)])]
    assert ck and {m.partition() for m in ck} == {0}


def test_retention_keeps_then_purges(outbox_db, topics, relays, tmp_path):
    tps = topics(1)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-keep",
                       **{"postgres.retention_ms": 4000})
    relay = relays(cfg)
    relay.wait_log("publishing")
    insert_rows(conn, tps, 0, 300, per_txn=100)
    wait_for(lambda: len(read_all(tps)) == 300, 30, "rows in Kafka")
    time.sleep(0.5)
    assert scalar(conn, "SELECT count(*) FROM outbox.event") == 300  # kept
    assert scalar(conn, "SELECT rows FROM outbox.lag('r-keep')") == 0  # yet relayed
    wait_for(drained(conn), 30, "the purge after the retention")
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all(tps), range(300))


def test_valgrind_clean_run(outbox_db, topics, tmp_path):
    """The daemon's normal run under valgrind: no memory errors, no leaks of
    its own (librdkafka's and libpq's global one-off allocations aside)."""
    import shutil
    import signal as sig
    import subprocess
    from conftest import RELAY_BIN
    assert shutil.which("valgrind"), "valgrind is missing: scripts/install-deps.sh installs it"
    tps = topics(2, partitions=2)
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 2000, per_txn=500)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-valgrind",
                       **{"batch.max_rows": 300, "http.listen": "127.0.0.1:0"})
    log = tmp_path / "valgrind.log"
    proc = subprocess.Popen(["valgrind", "--error-exitcode=99", "--leak-check=full",
                             "--errors-for-leak-kinds=definite", f"--log-file={log}",
                             RELAY_BIN, "run", "-c", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(drained(conn), 180, "the rows under valgrind")
        insert_rows(conn, tps, 2000, 100, per_txn=100)
        wait_for(drained(conn), 60, "more rows under valgrind")
    finally:
        proc.send_signal(sig.SIGTERM)
        rc = proc.wait(120)
    text = log.read_text()
    assert rc == 0, f"exit {rc}:\n{text[-4000:]}"
    assert "ERROR SUMMARY: 0 errors" in text, text[-4000:]
    check_exactly_once(read_all(tps), range(2100))


def test_without_prepared_statements(outbox_db, topics, relays, tmp_path):
    """postgres.prepared_statements = false (PgBouncer before 1.21)."""
    tps = topics(2, partitions=2)
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 3000, per_txn=1000)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-unprepared",
                       **{"postgres.prepared_statements": False, "batch.max_rows": 700})
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the outbox to drain")
    insert_rows(conn, tps, 3000, 500, per_txn=50)
    wait_for(drained(conn), 60, "the outbox to drain again")
    assert relay.stop() == 0, relay.text()
    check_exactly_once(read_all(tps), range(3500))
    assert_positions_agree(conn, "r-unprepared")
