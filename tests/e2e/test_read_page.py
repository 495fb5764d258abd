"""Schema 6 on the real PostgreSQL and Kafka: the relay closes a window with
the page whose last row says window_end, without one more page call that
comes back empty (what every look of an open transaction that found rows
paid before), and still publishes every row exactly once."""
import time

from conftest import read_all, wait_for, write_config
from test_relay import check_exactly_once, connect, drained, insert_rows, scalar


def calls(conn, fn):
    """Calls of outbox.<fn> counted by PostgreSQL (track_functions = pl)."""
    return scalar(conn, "SELECT coalesce(sum(calls), 0)::int FROM pg_stat_user_functions "
                        "WHERE schemaname = 'outbox' AND funcname = %s", (fn,))


def test_a_window_ends_with_its_last_page(outbox_db, topics, relays, tmp_path):
    """Rows committed one at a time while the relay's transaction is open:
    each window holds a row or two, far less than a page. position_get() and
    fetch_page_bounds() (read_page's first half, called once per page) are
    counted by PostgreSQL: one page call per window, empty windows included.
    The relay that read until an empty page made one more for every window
    that had rows; the relay before the one-statement look opened each window
    with window_open() first."""
    names = topics(3)
    conn = connect(outbox_db)
    db = scalar(conn, "SELECT current_database()")
    with conn.cursor() as cur:  # for sessions that start from now on: the relay's
        cur.execute(f"ALTER DATABASE {db} SET track_functions = 'pl'")
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-end", **{
        "batch.max_rows": 1000, "batch.max_wait_ms": 250, "batch.look_interval_ms": 10})
    relay = relays(cfg)
    for i in range(40):
        insert_rows(conn, names, i, 1)
        time.sleep(0.03)
    wait_for(drained(conn), 60, "the relay to publish the rows")
    check_exactly_once(read_all(names), range(40))
    assert relay.stop() == 0, relay.text()
    # the relay's backend writes its function statistics when it exits
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                  "AND backend_type = 'client backend'") == 0,
             30, "the relay's backend to exit")
    # Each look opens its window and reads the first page in one statement,
    # which calls position_get() (the stored position's OR003 check) and
    # read_page() once: no window_open() round trip. position_get() is also
    # called at start (the reconciliation), a call or two.
    looks, pages = calls(conn, "position_get"), calls(conn, "fetch_page_bounds")
    assert calls(conn, "window_open") == 0, "a window opened by its own statement"
    assert pages >= 10, f"{pages} page calls for 40 rows committed 30 ms apart: not streamed?"
    assert 0 <= looks - pages <= 3, (f"{pages} page calls for {looks} looks: "
                                     "a window that had rows was read again until an empty page")
