"""The relay loop's waiting (issue 12, items 6, 14 and issue 17 item 12):
the lease is renewed while a step waits, handled signals reach only the main
thread, and the lag is measured while a backlog drains, not only when idle."""
import os
import re
import time
from pathlib import Path

from conftest import read_all, wait_for, write_config
from test_http import free_port, metric
from test_relay import check_exactly_once, connect, drained, insert_rows


def test_lease_kept_while_a_batch_waits_for_rows(outbox_db, topics, relays, tmp_path):
    """batch.max_wait_ms longer than the lease TTL: the leader waits for
    more rows inside one step. It must renew the lease while it waits, so a
    standby never takes over from a healthy leader. (Before the fix the
    wait renewed nothing: the standby took the lease after the TTL and the
    leader was fenced, exit 3.)"""
    names = topics(3)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-wait", **{
        "relay.lease_ttl_ms": 2000, "batch.max_wait_ms": 9000, "batch.poll_interval_ms": 200,
        "batch.max_rows": 1000})
    leader = relays(cfg)
    leader.wait_log("publishing")
    standby = relays(cfg)
    standby.wait_log("standby")
    conn = connect(outbox_db)
    insert_rows(conn, names, 0, 5)  # a batch that waits up to 9 s for more
    t0 = time.monotonic()
    wait_for(drained(conn), timeout=30, what="the batch to be published")
    waited = time.monotonic() - t0
    assert waited > 6, f"the batch did not wait (published after {waited:.1f} s)"
    assert leader.proc.poll() is None, f"leader exited {leader.proc.poll()}:\n{leader.text()}"
    assert "publishing" not in standby.text(), f"the standby took over:\n{standby.text()}"
    assert "lost" not in leader.text()
    check_exactly_once(read_all(names), range(5))
    assert leader.stop() == 0


def test_handled_signals_blocked_in_other_threads(outbox_db, topics, relays, tmp_path):
    """SIGTERM, SIGINT and SIGHUP are blocked in every thread but the main
    one (libmicrohttpd's and librdkafka's threads), so a signal always lands
    where it cuts the loop's wait short."""
    port = free_port()
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-sig",
                       **{"http.listen": f"127.0.0.1:{port}"})
    relay = relays(cfg)
    relay.wait_log("publishing")
    pid = relay.proc.pid
    handled = (1 << (15 - 1)) | (1 << (2 - 1)) | (1 << (1 - 1))  # SIGTERM, SIGINT, SIGHUP
    tasks = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    assert len(tasks) > 3, "expected the HTTP and librdkafka threads"
    for tid in tasks:
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)", status, re.M).group(1), 16)
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        if tid == pid:
            assert blocked & handled == 0, f"main thread blocks handled signals: {blocked:x}"
        else:
            assert blocked & handled == handled, \
                f"thread {tid} ({name}) can receive handled signals: SigBlk {blocked:x}"
    assert relay.stop() == 0


def test_lag_measured_while_busy(outbox_db, topics, relays, tmp_path):
    """A backlog being drained shows on /metrics: the lag gauge is refreshed
    every few seconds while batches flow, not only when the relay is idle."""
    names = topics(3)
    conn = connect(outbox_db)
    insert_rows(conn, names, 0, 40000, per_txn=2000)
    port = free_port()
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-lag", **{
        "http.listen": f"127.0.0.1:{port}", "batch.max_rows": 20})
    relay = relays(cfg)
    relay.wait_log("publishing")
    seen = []

    def lag_seen_while_busy():
        published = metric(port, "outbox_relay_rows_published_total")
        lag = metric(port, "outbox_relay_lag_rows")
        if 0 < published < 40000 and lag > 0:
            seen.append((published, lag))
        return len(seen) >= 2 and seen[-1][1] < seen[0][1]

    wait_for(lag_seen_while_busy, timeout=120, what="the lag gauge to move during the drain",
             interval=0.5)
    assert relay.stop() == 0
