#!/usr/bin/env python3
"""page_cost.py: the backend CPU of reading a whole backlog page by page, as
the relay does (one prepared statement, the same arguments), for each page
function named -- to compare two ways of reading a page in one run.

    page_cost.py URL FUNCTION:MAX_ROWS ...
    e.g. page_cost.py postgresql://.../db fetch_page:1000 read_page:1000

URL: a database with the outbox schema and a backlog in outbox.event (the
window is 1:1: to the current snapshot; nothing is advanced, so the runs
read the same rows). FUNCTION is fetch_page or read_page (which also ends
at a window_end row); batch.max_bytes is the relay's default, 16 MiB. Each
is run twice, in a new session each time; the CPU is the backend's (user +
system from /proc), so the machine's other load counts only through caches.
"""
import os
import sys
import time

import psycopg2


def backend_cpu_s(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def drain(url, fn, max_rows):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid(), pg_current_snapshot()::text")
    pid, snap = cur.fetchone()
    cols = "id, topic, key, payload, header_names, header_values, created_ms"
    if fn == "read_page":
        cols += ", window_end"
    cur.execute("PREPARE page(pg_snapshot, pg_snapshot, bigint, int, bigint) AS "
                "SELECT %s FROM outbox.%s($1, $2, $3, $4, $5)" % (cols, fn))
    after, rows, pages = 0, 0, 0
    c0, w0 = backend_cpu_s(pid), time.time()
    while True:
        cur.execute("EXECUTE page('1:1:', %s, %s, %s, 16777216)", (snap, after, max_rows))
        page = cur.fetchall()
        pages += 1
        if not page:
            break
        rows += len(page)
        after = page[-1][0]
        if fn == "read_page" and page[-1][-1]:
            break
    cpu, wall = backend_cpu_s(pid) - c0, time.time() - w0
    conn.close()
    return rows, pages, cpu, wall


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    url = sys.argv[1]
    for spec in sys.argv[2:]:
        fn, _, n = spec.partition(":")
        if fn not in ("fetch_page", "read_page") or not n.isdigit():
            sys.exit("page_cost.py: %r: expected fetch_page:N or read_page:N" % spec)
        for _ in range(2):
            rows, pages, cpu, wall = drain(url, fn, int(n))
            print("%s max_rows %s: %d rows in %d calls, backend CPU %.2f s, wall %.2f s"
                  % (fn, n, rows, pages, cpu, wall))


if __name__ == "__main__":
    main()
