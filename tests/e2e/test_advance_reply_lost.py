"""Issue 12 item 2: the reply to outbox.advance is lost after the server
committed it (a TCP proxy in front of PostgreSQL drops the connection at
that moment). The relay reconnects, its retry is answered "already applied",
and every row arrives exactly once. Before the fix the retry was refused as
"position would go backwards" (OR002) and the relay exited 5."""
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import read_all, wait_for, write_config
from test_relay import assert_positions_agree, check_exactly_once, connect, drained, insert_rows, scalar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pgproxy import PgProxy  # noqa: E402


def via_proxy(url, port):
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.mark.parametrize("arm", ["at-start", "mid-stream"])
@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "unprepared"])
def test_advance_reply_lost_after_commit(prepared, arm, outbox_db, topics, relays, tmp_path):
    """mid-stream: armed after the relay has advanced (and so prepared its
    statements) many times, as the fault run does."""
    up = urlsplit(outbox_db)
    proxy = PgProxy(0, up.hostname, up.port or 5432).start()
    try:
        tps = topics(3, partitions=2)
        conn = connect(outbox_db)
        insert_rows(conn, tps, 0, 3000, per_txn=500)
        if arm == "at-start":
            proxy.arm_drop_after_commit(b"outbox.advance")
        cfg = write_config(tmp_path / "relay.conf", via_proxy(outbox_db, proxy.port), "r-lost",
                           **{"postgres.prepared_statements": prepared, "batch.max_rows": 400})
        relay = relays(cfg)
        if arm == "mid-stream":
            wait_for(drained(conn), 60, "the first rows to be relayed")
            assert proxy.fired == 0
            before = scalar(conn, "SELECT batch_seq FROM outbox.position_get('r-lost')")
            assert before >= 5
            proxy.arm_drop_after_commit(b"outbox.advance")
        insert_rows(conn, tps, 3000, 500, per_txn=100)
        wait_for(lambda: proxy.fired == 1 or relay.proc.poll() is not None, 60,
                 "the proxy to drop an advance's reply")
        assert proxy.fired == 1, relay.text()
        relay.wait_log(r'advance of relay "r-lost" to batch \d+ was already applied', 60)
        wait_for(lambda: drained(conn)() or relay.proc.poll() is not None, 120, "the outbox to drain")
        assert relay.proc.poll() is None, f"relay exited {relay.proc.poll()}:\n{relay.text()}"
        insert_rows(conn, tps, 3500, 500, per_txn=100)
        wait_for(drained(conn), 60, "the outbox to drain again")
        assert relay.stop() == 0, relay.text()
        assert "would go backwards" not in relay.text()
        assert proxy.connections >= 2  # it did reconnect through the proxy
        check_exactly_once(read_all(tps), range(4000))
        assert_positions_agree(conn, "r-lost")
    finally:
        proxy.stop()
