"""What the relay costs the database (issue 13): its session runs no
parallel workers, whose CPU made each lag count over a backlog cost several
times its serial price."""
import time

from conftest import psql, wait_for, write_config
from test_relay import connect, scalar


def test_relay_session_uses_no_parallel_workers(outbox_db, topics, relays, tmp_path):
    """A relay halted on a poison row with 200k rows behind it counts its lag
    every few seconds over the whole backlog. With parallel plans made cheap
    for the database, that count ran with parallel workers before the fix
    (leader = the relay's backend); now the relay's session forbids them."""
    names = topics(1)
    dbname = outbox_db.rsplit("/", 1)[1]
    psql(outbox_db, "-c", f"ALTER DATABASE {dbname} SET parallel_setup_cost = 0",
         "-c", f"ALTER DATABASE {dbname} SET parallel_tuple_cost = 0",
         "-c", f"ALTER DATABASE {dbname} SET min_parallel_table_scan_size = 0")
    conn = connect(outbox_db)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, payload) VALUES ('no-such-topic-par', 'p')")
        cur.execute("""INSERT INTO outbox.event(topic, key, payload)
                       SELECT %s, convert_to('k' || n, 'UTF8'), convert_to(repeat('x', 200), 'UTF8')
                       FROM generate_series(1, 200000) AS n""", (names[0],))
        cur.execute("ANALYZE outbox.event")
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-par", **{"relay.poison_retry_ms": 60000})
    relay = relays(cfg)
    relay.wait_log("stopped on outbox row", timeout=60)
    backend = scalar(conn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                           " AND application_name = 'outbox-relay'")
    assert backend, "the relay's backend is not in pg_stat_activity"
    seen_lag, workers = 0, 0
    deadline = time.monotonic() + 10
    with conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT count(*) FILTER (WHERE backend_type = 'parallel worker' AND leader_pid = %s),"
                        "       count(*) FILTER (WHERE pid = %s AND state = 'active' AND query LIKE '%%lag%%')"
                        " FROM pg_stat_activity", (backend, backend))
            w, l = cur.fetchone()
            workers += w
            seen_lag += l
            time.sleep(0.005)
    assert seen_lag > 0, "never saw the relay counting its lag (the test proves nothing)"
    assert workers == 0, f"the relay's lag count ran with parallel workers ({workers} samples)"
    assert relay.stop() == 0
