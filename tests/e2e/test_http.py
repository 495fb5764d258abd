"""The health and metrics endpoint on a running relay: status codes,
readiness that follows the pipeline (broker and database stopped and back,
standby, poison stop), lag gauges, promtool, and garbage requests."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import ROOT, wait_for, write_config
from test_ha import _poison_setup
from test_relay import connect, drained, insert_rows, scalar

STATE = os.environ.get("OUTBOX_LOCAL_STATE", "/var/tmp/outbox-relay-local")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, method="GET", timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        res = conn.getresponse()
        return res.status, res.getheader("Content-Type"), res.read().decode()
    finally:
        conn.close()


def ready(port):
    code, _, body = get(port, "/readyz")
    return code, json.loads(body)


def metric(port, name):
    _, _, text = get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def start(relays, tmp_path, db, name, **opts):
    port = free_port()
    cfg = write_config(tmp_path / f"{name}.conf", db, name, **{"http.listen": f"127.0.0.1:{port}"},
                       **opts)
    relay = relays(cfg)
    relay.wait_log("publishing|standby")
    return relay, port


@pytest.mark.sanitizer
def test_endpoints_and_exposition(outbox_db, topics, relays, tmp_path):
    tps = topics(3)
    # 100-row transactions into 50-row batches: every batch is full, and the
    # second half of each transaction is read while the first travels
    relay, port = start(relays, tmp_path, outbox_db, "r-http", **{"batch.max_rows": 50})
    relay.wait_log("publishing")
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 500, per_txn=100)
    wait_for(drained(conn), 30, "rows to be relayed")
    wait_for(lambda: ready(port) == (200, {"ready": True, "role": "leader", "reason": "publishing"}),
             10, "ready")

    assert get(port, "/healthz")[:2] == (200, "text/plain; charset=utf-8")
    code, ctype, text = get(port, "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert metric(port, "outbox_relay_rows_published_total") == 500
    assert metric(port, "outbox_relay_leader") == 1
    assert metric(port, "outbox_relay_ready") == 1
    assert metric(port, "outbox_relay_batches_committed_total") >= 10
    assert metric(port, "outbox_relay_batches_read_ahead_total") >= 1
    promtool = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                              text=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr

    code, ctype, body = get(port, "/status")
    st = json.loads(body)
    assert code == 200 and ctype == "application/json"
    assert st["role"] == "leader" and st["rows_published"] == 500 and st["poison_row"] is None
    assert st["position"]["batch_seq"] >= 1 and st["generation"] == 1

    assert get(port, "/nope")[0] == 404
    assert get(port, "/metrics", "POST")[0] == 405
    assert get(port, "/readyz", "DELETE")[0] == 405
    assert get(port, "/healthz", "HEAD")[0] == 200
    assert relay.stop() == 0, relay.text()


def test_standby_and_poison_and_lag(outbox_db, topics, relays, tmp_path):
    conn, small, poison_id = _poison_setup(outbox_db, topics)
    leader, lport = start(relays, tmp_path, outbox_db, "r-http2", **{"relay.poison_retry_ms": 1000})
    leader.wait_log(f"stopped on outbox row {poison_id}")
    standby, sport = start(relays, tmp_path, outbox_db, "r-http2")
    standby.wait_log("standby")
    wait_for(lambda: ready(sport) == (200, {"ready": True, "role": "standby", "reason": "standby"}),
             10, "standby readiness")
    assert metric(sport, "outbox_relay_standby") == 1
    assert metric(sport, "outbox_relay_leader") == 0
    assert metric(sport, "outbox_relay_ready") == 1, "a healthy standby is ready"

    # publishing paused on the poison row: not ready, and the lag grows
    wait_for(lambda: ready(lport)[0] == 503, 10, "not ready on poison")
    assert ready(lport)[1]["reason"] == f"stopped on poison row {poison_id}"
    assert json.loads(get(lport, "/status")[2])["poison_row"]["id"] == poison_id
    insert_rows(conn, [small], 100, 50, per_txn=50)
    wait_for(lambda: metric(lport, "outbox_relay_lag_rows") >= 55, 20, "lag to rise")
    assert metric(lport, "outbox_relay_lag_seconds") > 0
    assert metric(lport, "outbox_relay_poison_stopped") == 1
    assert metric(lport, "outbox_relay_ready") == 0, "the gauge says what /readyz says"

    with conn.cursor() as cur:
        cur.execute("DELETE FROM outbox.event WHERE id = %s", (poison_id,))
    wait_for(drained(conn), 30, "drain after the fix")
    wait_for(lambda: metric(lport, "outbox_relay_lag_rows") == 0, 20, "lag to fall")
    wait_for(lambda: ready(lport)[0] == 200, 10, "ready again")
    assert leader.stop() == 0 and standby.stop() == 0


@pytest.mark.serial  # it kills the shared broker and stops the shared PostgreSQL
def test_readiness_follows_broker_and_database(outbox_db, topics, relays, tmp_path):
    tps = topics(1)
    relay, port = start(relays, tmp_path, outbox_db, "r-http3")
    relay.wait_log("publishing")
    wait_for(lambda: ready(port)[0] == 200, 10, "ready")

    kafka_pid = int(open(f"{STATE}/kafka.pid").read())
    os.kill(kafka_pid, 9)
    try:
        wait_for(lambda: ready(port) == (503, {"ready": False, "role": "leader",
                                               "reason": "kafka unreachable"}), 30,
                 "503 with the broker down")
        assert get(port, "/healthz")[0] == 200  # alive, just not ready
    finally:
        subprocess.run([str(ROOT / "deploy/local/up")], check=True, capture_output=True)
    wait_for(lambda: ready(port)[0] == 200, 60, "ready with the broker back")

    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 100, per_txn=100)
    wait_for(drained(conn), 60, "rows after the broker restart")

    pg_data = f"{STATE}/pg-data"
    subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "-D",
                    pg_data, "-m", "immediate", "stop"], check=True, capture_output=True)
    try:
        wait_for(lambda: ready(port) == (503, {"ready": False, "role": "leader",
                                               "reason": "postgresql unreachable"}), 30,
                 "503 with PostgreSQL down")
    finally:
        subprocess.run([str(ROOT / "deploy/local/up")], check=True, capture_output=True)
    wait_for(lambda: ready(port)[0] == 200, 60, "ready with PostgreSQL back")
    conn = connect(outbox_db)
    insert_rows(conn, tps, 100, 100, per_txn=100)
    wait_for(drained(conn), 60, "rows after the database restart")
    assert relay.proc.poll() is None
    assert relay.stop() == 0, relay.text()


def test_garbage_requests_do_not_stall(outbox_db, topics, relays, tmp_path):
    tps = topics(1)
    relay, port = start(relays, tmp_path, outbox_db, "r-http4", **{"http.timeout_s": 2,
                                                                   "http.max_connections": 8})
    relay.wait_log("publishing")
    # slowloris: connections that send half a request and wait
    lingering = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        lingering.append(s)
    # a huge URL
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = s.recv(100)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 414") or reply.startswith(b"HTTP/1.1 431"), reply
    s.close()
    # an unknown method and a malformed request line
    assert get(port, "/healthz", "BREW")[0] == 405
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"\x00\x01garbage\r\n\r\n")
    assert s.recv(100)[:12] in (b"", b"HTTP/1.1 400", b"HTTP/1.0 400")
    s.close()

    # meanwhile the relay keeps relaying and the endpoint keeps answering
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 200, per_txn=50)
    wait_for(drained(conn), 30, "relaying during the attack")
    assert get(port, "/healthz")[0] == 200
    time.sleep(3)  # past http.timeout_s: the lingering connections are closed
    for s in lingering:
        s.settimeout(5)
        data = s.recv(100)  # raises on a hang
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data  # closed by the server
        s.close()
    assert get(port, "/readyz")[0] == 200
    assert relay.proc.poll() is None
    assert relay.stop() == 0, relay.text()


@pytest.mark.serial  # connections checked and closed within seconds
def test_connection_limit_reached_then_freed(outbox_db, topics, relays, tmp_path):
    """http.max_connections idle or half-sent connections take every slot:
    the next request is not served (refused, or queued behind them) until
    http.timeout_s closes them; one slot fewer and requests are served."""
    topics(1)
    limit, timeout_s = 4, 4
    relay, port = start(relays, tmp_path, outbox_db, "r-http5",
                        **{"http.max_connections": limit, "http.timeout_s": timeout_s})
    relay.wait_log("publishing")

    def served(timeout):
        try:
            return get(port, "/healthz", timeout=timeout)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    idle = []
    opened = time.monotonic()
    for i in range(limit - 1):
        s = socket.create_connection(("127.0.0.1", port))
        if i % 2:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a request
        idle.append(s)
    # one slot left: served (the kernel hands connections over in order,
    # so the idle ones hold their slots by now)
    assert served(3), "a request with one slot left was not served"
    idle.append(socket.create_connection(("127.0.0.1", port)))
    # every slot taken: the next request waits or is refused
    assert not served(1.5), f"a request beyond {limit} connections was served"
    assert time.monotonic() - opened < timeout_s, "the check came after the timeout"

    # the server closes the idle connections after http.timeout_s...
    for s in idle:
        s.settimeout(timeout_s + 5)
        data = s.recv(100)
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
        s.close()
    closed = time.monotonic() - opened
    assert timeout_s - 1 <= closed <= timeout_s + 3, f"idle connections closed after {closed:.1f}s"
    # ...and the slots are free again
    assert served(3), "requests not served after the idle connections were closed"
    assert relay.stop() == 0, relay.text()
