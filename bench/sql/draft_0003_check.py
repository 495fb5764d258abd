#!/usr/bin/python3
"""draft_0003_check.py URL: a quick check of the draft 0003 prototype's
cleanup against the window semantics (not part of tests/: the draft is not
shipped). In an empty scratch database on a superuser URL it installs
sql/install.sql and the draft, then:

  1. a transaction A inserts one row (block 0) and stays open;
  2. 140k rows are committed in 1000-row transactions (blocks 0..2);
  3. a relay loop (window_open / fetch_page / advance, as the relay does)
     drains every window; A's partition must not be truncated while A is
     open (its lock blocks TRUNCATE ... NOWAIT), A's row must not be lost;
  4. A commits; the loop drains again and must deliver A's row exactly once;
  5. a second later one more row: the loop drains it, and the partitions
     left over (tried less than a second before) are truncated now;
  6. the ids relayed are the ids inserted, each once, in id order within
     each page.
"""
import os
import subprocess
import sys
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(url):
    for f in ("sql/install.sql", "bench/sql/draft_0003_partitioned_outbox.sql"):
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", os.path.join(ROOT, f)],
                       check=True, stdout=subprocess.DEVNULL)
    relay = psycopg2.connect(url)
    relay.autocommit = True
    cur = relay.cursor()
    a = psycopg2.connect(url)
    ca = a.cursor()
    ca.execute("INSERT INTO outbox.event (topic, payload) VALUES ('t', 'A') RETURNING id")
    a_id = ca.fetchone()[0]
    w = psycopg2.connect(url)
    cw = w.cursor()
    for i in range(140):
        cw.execute("INSERT INTO outbox.event (topic, payload) SELECT 't', 'x' FROM generate_series(1, 1000)")
        w.commit()
    cur.execute("SELECT generation FROM outbox.lease_acquire('chk', 'me', 60000)")
    gen = cur.fetchone()[0]
    cur.execute("SELECT batch_seq, pos_done, pos_next, pos_after_id FROM outbox.position_get('chk')")
    seq, done, nxt, after = cur.fetchone()
    seen = []
    truncated = 0

    def drain():
        nonlocal seq, done, nxt, after, truncated
        while True:
            if nxt is None:
                cur.execute("SELECT outbox.window_open('chk')")
                nxt = cur.fetchone()[0]
            cur.execute("SELECT id FROM outbox.fetch_page(%s, %s, %s, 5000, NULL)", (done, nxt, after))
            ids = [r[0] for r in cur.fetchall()]
            if ids:
                assert ids == sorted(ids)
                seen.extend(ids)
                after = ids[-1]
            else:
                done, nxt, after = nxt, None, 0
            seq += 1
            cur.execute("SELECT outbox.advance('chk', %s, %s, %s, %s, %s, 0)", (gen, seq, done, nxt, after))
            truncated += cur.fetchone()[0] or 0
            if not ids and nxt is None:
                cur.execute("SELECT count(*) FROM outbox.event")
                return cur.fetchone()[0]

    left = drain()
    assert a_id not in seen, "A's uncommitted row was relayed"
    cur.execute("SELECT count(*) FROM outbox.event_p0")
    p0 = cur.fetchone()[0]
    print("A open: relayed %d rows, %d partitions truncated, %d rows left (partition p0: %d)"
          % (len(seen), truncated, left, p0))
    assert p0 > 0, "partition p0 was truncated while A was open"
    # the other partitions are not held back by A's: block 1 went (block 2,
    # the sequence's current one, goes once the relay is past every id)
    assert left < 140000 - 60000, "A's open transaction held back other partitions"
    a.commit()
    # a new window must include A; one more write so that the final
    # position moves past a window end and the current block is tried
    left = drain()
    cur.execute("SELECT count(*) FROM outbox.event")
    rest = cur.fetchone()[0]
    print("after A committed: relayed %d rows, %d truncations, %d rows left" % (len(seen), truncated, rest))
    # a partition tried less than a second ago waits for a later advance
    time.sleep(1.1)
    cw.execute("INSERT INTO outbox.event (topic, payload) VALUES ('t', 'late')")
    w.commit()
    drain()
    cur.execute("SELECT count(*) FROM outbox.event")
    rest = cur.fetchone()[0]
    print("one more row a second later: relayed %d rows, %d truncations, %d rows left" % (len(seen), truncated, rest))
    assert seen.count(a_id) == 1, "A's row relayed %d times" % seen.count(a_id)
    assert len(seen) == len(set(seen)) == 140002, (len(seen), len(set(seen)))
    print("ok: every row relayed once; rows left in the table: %d" % rest)


if __name__ == "__main__":
    main(sys.argv[1])
