"""Helpers of the test_claims_* files: the relay's HTTP endpoint, and rows
written one by one with a marker header. (Kept here rather than in conftest.py
or test_http.py, which other changes edit.)"""
import http.client
import json
import socket

from conftest import write_config


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, res.read().decode()
    finally:
        conn.close()


def ready(port):
    code, body = get(port, "/readyz")
    return code, json.loads(body)


def status(port):
    return json.loads(get(port, "/status")[1])


def metrics(port):
    """Every unlabelled sample of /metrics: name -> value."""
    out = {}
    for line in get(port, "/metrics")[1].splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


def metric(port, name):
    m = metrics(port)
    assert "outbox_relay_" + name in m, f"no metric outbox_relay_{name}"
    return m["outbox_relay_" + name]


def http_config(path, db, name, **opts):
    """write_config with http.listen on a free port; returns (path, port)."""
    port = free_port()
    write_config(path, db, name, **{"http.listen": f"127.0.0.1:{port}"}, **opts)
    return path, port


def insert(conn, topic, n, payload=None, key="k"):
    """One row with header n; returns its id."""
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outbox.event(topic, key, payload, headers) VALUES "
                    "(%s, %s, %s, jsonb_build_object('n', %s::text)) RETURNING id",
                    (topic, key, payload if payload is not None else f"row-{n}".encode(), n))
        return cur.fetchone()[0]
