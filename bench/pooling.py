#!/usr/bin/env python3
"""pooling.py: what postgres.pooling costs the drain of a backlog, as ratios
to a direct connection. For each way in (direct with "none", direct with
"transaction", PgBouncer session with "session", PgBouncer transaction with
"transaction", and direct "none" without prepared statements, which
"transaction" goes without by default): a fresh database with ROWS rows, one relay, the time from
its "publishing" line to an empty outbox. Small batches (batch.max_rows) make the
per-statement cost show: "transaction" adds a SET LOCAL statement to the
round trip of each. Needs deploy/local/up (its env file sourced) and a
built relay; --repeat takes the best of N.

    bench/pooling.py [--rows 20000] [--max-rows 100] [--repeat 3]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/e2e"))

import psycopg2  # noqa: E402

from conftest import PG_URL, ROOT, Relay, create_topics, pg_url_for, psql, wait_for, write_config  # noqa: E402
from test_pgbouncer import via  # noqa: E402
from test_relay import connect, drained, insert_rows  # noqa: E402

# (way in, postgres.pooling, postgres.prepared_statements; None = its default)
WAYS = [("direct", "none", None), ("direct", "none", False), ("direct", "transaction", None),
        ("session", "session", None), ("transaction", "transaction", None)]


def drain_seconds(way, pooling, prepared, rows, max_rows, tmp):
    name = f"bench_pool_{int(time.time() * 1000) % 10**9}"
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    url = pg_url_for(name)
    try:
        psql(url, "-f", str(ROOT / "sql/install.sql"))
        topic = f"bench-pool-{name}"
        create_topics([topic])
        conn = connect(url)
        insert_rows(conn, [topic], 0, rows, per_txn=10000)
        cfg = write_config(tmp / f"{name}.conf", url if way == "direct" else via(way, url), "r-bench",
                           **{"postgres.pooling": pooling, "batch.max_rows": max_rows,
                              "batch.max_wait_ms": 0, "relay.lease_ttl_ms": 10000,
                              "log.level": "info",
                              **({} if prepared is None else {"postgres.prepared_statements": prepared})})
        relay = Relay(cfg, tmp / f"{name}.log")
        wait_for(drained(conn), 600, "the drain", interval=0.01)
        took = time.time() - relay.log_time(r"publishing$")  # from the log line's own clock
        assert relay.stop() == 0, relay.text()
        conn.close()
        return took
    finally:
        admin.cursor().execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--max-rows", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path("/tmp/outbox-relay-bench-pooling")
    tmp.mkdir(exist_ok=True)
    best = {}
    for _ in range(args.repeat):
        for w in WAYS:
            s = drain_seconds(*w, args.rows, args.max_rows, tmp)
            best[w] = min(s, best.get(w, s))
    base = best[WAYS[0]]
    print(f"{args.rows} rows, batch.max_rows {args.max_rows}, best of {args.repeat}")
    for w in WAYS:
        way, pooling, prepared = w
        s = best[w]
        prep = "default" if prepared is None else str(prepared).lower()
        print(f"  {way:12} pooling {pooling:12} prepared {prep:8} {s:6.2f} s  "
              f"{args.rows / s:8.0f} rows/s  {base / s:5.2f} of direct")


if __name__ == "__main__":
    main()
