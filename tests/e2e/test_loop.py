"""The relay loop's waiting (issue 12, items 6, 14 and issue 17 item 12):
the lease is renewed while a step waits, handled signals reach only the main
thread, and the lag is measured while a backlog drains, not only when idle."""
import os
import re
import time
from pathlib import Path

import pytest

from conftest import read_all, wait_for, write_config
from test_http import free_port, metric
from test_relay import check_exactly_once, connect, drained, insert_rows, scalar

# Run alone (scripts/test runs the "serial" tests after the others,
# one at a time): a proxy on a fixed port in front of the broker; a batch
# timed against max_wait.
pytestmark = pytest.mark.serial


def test_lease_kept_while_a_batch_waits_for_rows(outbox_db, topics, relays, tmp_path):
    """batch.max_wait_ms longer than the lease TTL, and rows arriving all
    along: the leader keeps one transaction open, taking rows, inside one
    step. It must renew the lease while it waits, so a standby never takes
    over from a healthy leader. (Before the fix the wait renewed nothing: the
    standby took the lease after the TTL and the leader was fenced, exit 3.)"""
    names = topics(3)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-wait", **{
        "relay.lease_ttl_ms": 2000, "batch.max_wait_ms": 9000, "batch.poll_interval_ms": 200,
        "batch.look_interval_ms": 200,
        "batch.max_rows": 1000})
    leader = relays(cfg)
    leader.wait_log("publishing")
    standby = relays(cfg)
    standby.wait_log("standby")
    conn = connect(outbox_db)
    t0 = time.monotonic()
    for n in range(60):  # a row every 0.1 s for 6 s: one transaction stays open
        insert_rows(conn, names, n, 1)
        time.sleep(0.1)
    assert scalar(conn, "SELECT batch_seq FROM outbox.relay_state") == 0, \
        "the transaction did not stay open while rows kept coming"
    wait_for(drained(conn), timeout=30, what="the batch to be published")
    waited = time.monotonic() - t0
    assert waited > 6, f"the batch did not wait (published after {waited:.1f} s)"
    assert leader.proc.poll() is None, f"leader exited {leader.proc.poll()}:\n{leader.text()}"
    assert "publishing" not in standby.text(), f"the standby took over:\n{standby.text()}"
    assert "lost" not in leader.text()
    check_exactly_once(read_all(names), range(60))
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


def test_replicas_sharing_relay_owner_do_not_fight(outbox_db, topics, relays, tmp_path):
    """Two replicas started from one config that sets relay.owner: the owner
    is a label, each process owns the lease under its own unique name, so
    the second stands by instead of taking the lease from the first (before:
    the same owner string took the lease over and fenced the first, exit 3)."""
    names = topics(3)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-owner", **{"relay.owner": "replica"})
    first = relays(cfg)
    first.wait_log("publishing")
    second = relays(cfg)
    second.wait_log("standby")
    assert re.search(r'taken by "replica@[^"]+:\d+:[0-9a-f]{4}"', first.text()), first.text()
    conn = connect(outbox_db)
    insert_rows(conn, names, 0, 100)
    wait_for(drained(conn), timeout=30, what="rows published")
    assert first.proc.poll() is None, first.text()
    assert "publishing" not in second.text(), second.text()
    assert first.stop() == 0
    second.wait_log("publishing", timeout=15)
    assert second.stop() == 0


def test_trust_database_and_an_unknown_commit_outcome(outbox_db, topics, relays, tmp_path):
    """relay.on_database_ahead = trust-database after the checkpoint topic
    was lost, then a commit whose outcome is unknown (broker answers delayed
    past the transaction timeout): the checkpoint is missing, which in that
    mode means the transaction did not commit, so the relay sends the batch
    again and goes on (before: exit 5, "another writer used relay name")."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fault"))
    from run import DelayProxy  # noqa: E402

    names = topics(3)
    proxied = os.environ.get("OUTBOX_KAFKA_PROXIED", "127.0.0.1:19094")
    proxy = DelayProxy(int(os.environ.get("OUTBOX_KAFKA_PROXY_PORT", "19095")), proxied)
    proxy.start()
    try:
        _trust_database_unknown_outcome(outbox_db, names, proxied, proxy, relays, tmp_path)
    finally:
        proxy.srv.close()  # free the port for the fault run


def _trust_database_unknown_outcome(outbox_db, names, proxied, proxy, relays, tmp_path):
    from confluent_kafka.admin import AdminClient
    from conftest import BOOTSTRAP, QUIET, ckpt_topic

    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-trust", **{
        "relay.on_database_ahead": "trust-database", "kafka.bootstrap_servers": proxied,
        "kafka.transaction_timeout_ms": 6000, "kafka.commit_timeout_ms": 2000,
        "relay.lease_ttl_ms": 30000})
    relay = relays(cfg)
    relay.wait_log("publishing")
    insert_rows(conn, names, 0, 50)
    wait_for(drained(conn), timeout=30, what="first rows")
    assert relay.stop() == 0
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **QUIET})
    admin.delete_topics([ckpt_topic(outbox_db, "r-trust")], operation_timeout=30)[
        ckpt_topic(outbox_db, "r-trust")].result(60)
    wait_for(lambda: ckpt_topic(outbox_db, "r-trust") not in admin.list_topics(timeout=10).topics,
             timeout=30, what="checkpoint topic deleted")
    relay = relays(cfg)
    relay.wait_log("continuing from the database position", timeout=60)
    relay.wait_log("publishing")
    proxy.delay = 7.5  # every broker answer comes after the transaction timeout
    insert_rows(conn, names, 50, 50)
    relay.wait_log("outcome of batch .* unknown", timeout=60)
    time.sleep(3)
    proxy.delay = 0
    is_drained = drained(conn)
    wait_for(lambda: relay.proc.poll() is not None or is_drained(), timeout=90,
             what="the batch sent again")
    assert relay.proc.poll() is None, f"relay exited {relay.proc.poll()}:\n{relay.text()}"
    assert "turned out" in relay.text(), relay.text()
    check_exactly_once(read_all(names), range(100))
    assert relay.stop() == 0


def test_standby_reloads_on_sighup(outbox_db, topics, relays, tmp_path):
    """A standby applies SIGHUP too (before: only the leader's loop looked
    at the reload flag, so a standby kept its old settings until it took
    over)."""
    import signal
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-hup", **{"relay.lease_ttl_ms": 3000})
    leader = relays(cfg)
    leader.wait_log("publishing")
    standby = relays(cfg)
    standby.wait_log("standby")
    write_config(cfg, outbox_db, "r-hup", **{"relay.lease_ttl_ms": 3000, "batch.max_rows": 77,
                                            "log.level": "debug"})
    standby.proc.send_signal(signal.SIGHUP)
    standby.wait_log("reloading configuration from", timeout=10)
    standby.wait_log("batch.max_rows", timeout=10)
    assert "publishing" not in standby.text()
    assert leader.stop() == 0
    standby.wait_log("publishing", timeout=15)
    assert standby.stop() == 0


def test_read_only_server_backs_off_then_publishes(outbox_db, topics, relays, tmp_path):
    """postgres.conninfo pointing at a read-only server (a standby, or
    default_transaction_read_only): the relay says so, keeps running and
    retries after a back-off, and publishes once the server accepts writes
    (a promoted standby). Before, it exited 1 at the first refused write."""
    from conftest import PG_URL, psql
    from urllib.parse import urlsplit
    names = topics(3)
    dbname = urlsplit(outbox_db).path.lstrip("/")
    conn = connect(outbox_db)
    insert_rows(conn, names, 0, 20)
    psql(PG_URL, "-c", f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")
    cfg = write_config(tmp_path / "r.conf", outbox_db, "r-ro-wait")
    relay = relays(cfg)
    relay.wait_log(r"the relay points at a read-only server", 30)
    # it tries again after a back-off, still running
    wait_for(lambda: relay.proc.poll() is not None or
             relay.text().count("the relay points at a read-only server") >= 3,
             timeout=30, what="retries against the read-only server")
    assert relay.proc.poll() is None, f"relay exited {relay.proc.poll()}:\n{relay.text()}"
    psql(PG_URL, "-c", f"ALTER DATABASE {dbname} SET default_transaction_read_only = off")
    wait_for(drained(conn), timeout=60, what="rows published once the server accepts writes")
    check_exactly_once(read_all(names), range(20))
    assert relay.stop() == 0
