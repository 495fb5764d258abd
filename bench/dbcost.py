#!/usr/bin/python3
"""dbcost.py: what draining and cleaning up a backlog costs PostgreSQL, as a
ratio to a binary COPY of the same rows, measured in one run (issue 13).

Run it through bench/run.sh's build (or after it): it needs the relay in
build-bench/relay and bench-consumer in build-bench/tools.

    bench/dbcost.py                      # ratios of the relay at max_rows 1000 and 10000
    bench/dbcost.py --variants all       # + the SQL-only driver variants and the prototype
    bench/dbcost.py --json out.json      # raw numbers

What it does (bench/README.md, "dbcost.py", has the details):

  * starts a private PostgreSQL 15 cluster (initdb in /var/tmp, its own
    port, the local environment's settings), so that the server's CPU is
    the CPU of every process of that cluster and of nobody else's sessions;
  * loads ROWS rows (256-byte payloads, 16 keys, 3 topics round robin) in
    1000-row COPY transactions into a template database, VACUUM (ANALYZE);
  * per measurement copies the template (CREATE DATABASE ... STRATEGY
    FILE_COPY), CHECKPOINT, then measures the CPU of all the cluster's
    processes (postmaster utime+stime+cutime+cstime plus every live child:
    exited children counted exactly once, through the postmaster's cutime)
    from the relay's start to the end of `VACUUM outbox.event`;
  * the floor: one COPY (SELECT id, topic, key, payload, headers,
    created_at FROM outbox.event ORDER BY id) TO STDOUT (FORMAT binary) on a
    fresh copy: the CPU of its backend.
"""
import argparse
import ctypes
import io
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (helpers: Kafka, Consumer, Relay, Pg)

ROOT = bench.ROOT
CLK_TCK = bench.CLK_TCK
RUN = bench.RUN
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
DRAFT_SQL = os.path.join(ROOT, "bench", "sql", "draft_0003_partitioned_outbox.sql")
TOPICS = 3


def log(msg):
    print("dbcost: " + msg, file=sys.stderr, flush=True)


def tick_us(t):
    return t * 1000000 // CLK_TCK


# --- the cluster ------------------------------------------------------------------

class Cluster:
    """A private PostgreSQL cluster: initdb, the local environment's
    settings (bench/README.md), started with pg_ctl as user postgres."""

    def __init__(self, port=None):
        self.dir = "/var/tmp/dbcost-%s" % RUN
        self.data = os.path.join(self.dir, "data")
        self.port = port or self.free_port()
        self.url = "postgresql://postgres@127.0.0.1:%d/postgres" % self.port
        self.started = False

    @staticmethod
    def free_port():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        return p

    def as_pg(self, argv, **kw):
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        return subprocess.run(argv, check=True, **kw)

    def init(self):
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.as_pg([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--locale=C.UTF-8"], stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("""
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 100
shared_buffers = 256MB
max_wal_size = 1GB
min_wal_size = 80MB
max_prepared_transactions = 10
log_min_messages = warning
""" % (self.port, self.dir))

    def start(self, extra=()):
        opts = " ".join("-c %s" % e for e in extra)
        self.as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l",
                    os.path.join(self.dir, "postgresql.log"), "-w", "-t", "60"] +
                   (["-o", opts] if opts else []) + ["start"], stdout=subprocess.DEVNULL)
        self.started = True

    def stop(self):
        if self.started:
            self.as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL)
            self.started = False

    def destroy(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def postmaster(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())


# --- CPU of all the server's processes -------------------------------------------

def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in ticks, or None when gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(v[1]), int(v[11]) + int(v[12]), int(v[13]) + int(v[14])


def proc_name(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def children(pm):
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[0] == pm:
                out[int(d)] = st[1] + st[2]
    return out


def server_sample(pm):
    """All ticks of the cluster: the postmaster's own and reaped children's,
    plus every live child's. Retried until the postmaster reaped no child
    while its children were read, so that an exiting child is counted once:
    either live or reaped, never both nor neither."""
    for _ in range(50):
        a = proc_stat(pm)
        kids = children(pm)
        b = proc_stat(pm)
        if a[2] == b[2]:
            return {"total": b[1] + b[2] + sum(kids.values()), "self": b[1], "reaped": b[2],
                    "kids": kids}
    raise RuntimeError("postmaster kept reaping children while sampled")


class Watcher:
    """Polls the cluster's children every 50 ms to name where the CPU went:
    the last seen ticks of every child by kind (a child that exits between
    two polls loses at most 50 ms of attribution; the total is exact)."""

    def __init__(self, pm, dbname):
        self.pm, self.dbname = pm, dbname
        self.seen = {}  # pid -> [kind, first ticks, last ticks]
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def kind(self, pid):
        n = proc_name(pid)
        n = n[len("postgres: "):] if n.startswith("postgres: ") else n
        if self.dbname and (" %s " % self.dbname) in (" " + n + " "):
            return "client backend"
        for k in ("autovacuum worker", "autovacuum launcher", "walwriter", "checkpointer", "parallel worker",
                  "background writer", "logical replication launcher"):
            if n.startswith(k):
                return k
        return "other client backend" if "127.0.0.1" in n or "[local]" in n else n.split()[0] if n else "?"

    def poll(self):
        for pid, t in children(self.pm).items():
            e = self.seen.get(pid)
            if e is None:
                self.seen[pid] = [self.kind(pid), t, t, True]
            else:
                e[2] = t

    def start(self, base):
        for pid, t in base["kids"].items():
            self.seen[pid] = [self.kind(pid), t, t, False]
        self.thread.start()

    def run(self):
        while not self.stop_ev.wait(0.05):
            self.poll()

    def finish(self):
        self.stop_ev.set()
        self.thread.join()
        self.poll()
        by = {}
        for kind, t0, t1, new in self.seen.values():
            by[kind] = by.get(kind, 0) + (t1 if new else t1 - t0)
        return {k: tick_us(v) for k, v in by.items()}


def perf_start(outdir, label, pid):
    """perf record of one backend (cpu-clock, no call graphs: Debian's
    postgres has no frame pointers; self time per symbol is what we read)."""
    if not outdir or not pid:
        return None
    p = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(pid), "-o",
                          os.path.join(outdir, label + ".data")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.1)
    return p


def perf_stop(p):
    if p:
        p.send_signal(signal.SIGINT)
        p.wait(60)


def backend_ticks(pid):
    st = proc_stat(pid)
    return st[1] if st else None


# --- loading ----------------------------------------------------------------------

def payload(seq, pads):
    # bench/common.c's layout: {"seq":<12 digits>,"pad":"<227 hex>"} = 256 bytes
    return '{"seq":%012d,"pad":"%s"}' % (seq, pads[seq % len(pads)])


def load(url, topics, rows, chunk=1000):
    rnd = random.Random(13)
    pads = ["".join(rnd.choice("0123456789abcdef") for _ in range(227)) for _ in range(256)]
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            for start in range(1, rows + 1, chunk):
                buf = io.StringIO()
                for seq in range(start, min(rows, start + chunk - 1) + 1):
                    buf.write("%s\tkey-%02d\t%s\n" % (topics[seq % len(topics)], seq % 16,
                                                       payload(seq, pads)))
                buf.seek(0)
                cur.copy_expert("COPY outbox.event (topic, key, payload) FROM STDIN", buf)
                conn.commit()
    finally:
        conn.close()


# --- a libpq driver that runs the relay's statements ------------------------------

class LibPQ:
    lib = None

    @classmethod
    def get(cls):
        if cls.lib is None:
            lib = ctypes.CDLL("libpq.so.5")
            vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
            for name, res, args in [
                    ("PQconnectdb", vp, [cp]), ("PQstatus", i, [vp]), ("PQerrorMessage", cp, [vp]),
                    ("PQprepare", vp, [vp, cp, cp, i, vp]),
                    ("PQexecPrepared", vp, [vp, cp, i, ctypes.POINTER(cp), vp, vp, i]),
                    ("PQexec", vp, [vp, cp]), ("PQresultStatus", i, [vp]),
                    ("PQresultErrorMessage", cp, [vp]), ("PQntuples", i, [vp]),
                    ("PQgetvalue", vp, [vp, i, i]), ("PQgetlength", i, [vp, i, i]),
                    ("PQgetisnull", i, [vp, i, i]), ("PQclear", None, [vp]), ("PQfinish", None, [vp]),
                    ("PQbackendPID", i, [vp]), ("PQnfields", i, [vp])]:
                f = getattr(lib, name)
                f.restype, f.argtypes = res, args
            cls.lib = lib
        return cls.lib


class Driver:
    """The relay's PostgreSQL side without Kafka: the same functions in the
    same order (relay/relay.c read_pages / fill_batch, one page per batch
    when the batch fills, advance after each batch, lag every 3 s or twenty
    times its last duration), prepared statements, binary pages."""

    def __init__(self, url, name, max_rows, max_bytes, fetch_max_bytes=True, lag=True, serial=False):
        self.pq = LibPQ.get()
        self.conn = self.pq.PQconnectdb(("%s application_name=outbox-relay" % self.dsn(url)).encode())
        if self.pq.PQstatus(self.conn) != 0:
            raise RuntimeError(self.pq.PQerrorMessage(self.conn).decode())
        self.name, self.max_rows, self.max_bytes = name, max_rows, max_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.lag = lag
        self.stmts = set()
        if serial:
            # lag()'s count without parallel workers (its function could SET it)
            self.pq.PQclear(self.pq.PQexec(self.conn, b"SET max_parallel_workers_per_gather = 0"))

    @staticmethod
    def dsn(url):
        # postgresql://user@host:port/db -> keyword form
        rest = url.split("://", 1)[1]
        user, rest = rest.split("@", 1)
        hostport, db = rest.split("/", 1)
        host, port = hostport.split(":")
        return "host=%s port=%s user=%s dbname=%s" % (host, port, user, db)

    def backend(self):
        return self.pq.PQbackendPID(self.conn)

    def q(self, stmt, sql, params, binary=False):
        pq = self.pq
        if stmt not in self.stmts:
            r = pq.PQprepare(self.conn, stmt.encode(), sql.encode(), len(params), None)
            if pq.PQresultStatus(r) != 1:
                raise RuntimeError(pq.PQresultErrorMessage(r).decode())
            pq.PQclear(r)
            self.stmts.add(stmt)
        arr = (ctypes.c_char_p * len(params))(*[None if p is None else str(p).encode() for p in params])
        r = pq.PQexecPrepared(self.conn, stmt.encode(), len(params), arr, None, None, 1 if binary else 0)
        if pq.PQresultStatus(r) not in (1, 2):
            msg = pq.PQresultErrorMessage(r).decode()
            pq.PQclear(r)
            raise RuntimeError("%s: %s" % (stmt, msg))
        return r

    def scalar(self, stmt, sql, params):
        r = self.q(stmt, sql, params)
        v = None if self.pq.PQgetisnull(r, 0, 0) else ctypes.string_at(self.pq.PQgetvalue(r, 0, 0)).decode()
        self.pq.PQclear(r)
        return v

    def row(self, stmt, sql, params):
        r = self.q(stmt, sql, params)
        out = [None if self.pq.PQgetisnull(r, 0, i) else
               ctypes.string_at(self.pq.PQgetvalue(r, 0, i)).decode() for i in range(self.pq.PQnfields(r))]
        self.pq.PQclear(r)
        return out

    def fetch(self, done, nxt, after, rows, max_bytes):
        r = self.q("fetch", "SELECT id, topic, key, payload, header_names, header_values, created_ms "
                            "FROM outbox.fetch_page($1, $2, $3, $4, $5)",
                   [done, nxt, after, rows, max_bytes], binary=True)
        n = self.pq.PQntuples(r)
        last, nbytes = None, 0
        if n:
            last = struct.unpack("!q", ctypes.string_at(self.pq.PQgetvalue(r, n - 1, 0), 8))[0]
            for i in range(n):
                nbytes += self.pq.PQgetlength(r, i, 2) + self.pq.PQgetlength(r, i, 3)
        self.pq.PQclear(r)
        return n, last, nbytes

    def fetch_ids(self, done, nxt, after, rows):
        r = self.q("fetch", "SELECT id, topic, key, payload, header_names, header_values, created_ms "
                            "FROM outbox.fetch_page($1, $2, $3, $4, $5)",
                   [done, nxt, after, rows, None], binary=True)
        ids = [struct.unpack("!q", ctypes.string_at(self.pq.PQgetvalue(r, i, 0), 8))[0]
               for i in range(self.pq.PQntuples(r))]
        self.pq.PQclear(r)
        return ids

    def run_bigpage(self, page_rows):
        """Pages of page_rows rows (max_bytes NULL) cut into batches of
        max_rows in memory: one fetch per page_rows rows, one advance per
        batch. No lag() calls."""
        gen = int(self.row("acq", "SELECT acquired, generation FROM outbox.lease_acquire($1, $2, $3)",
                           [self.name, "dbcost", 30000])[1])
        _, seq, done, nxt, after = self.row(
            "pos", "SELECT generation, batch_seq, pos_done, pos_next, pos_after_id "
                   "FROM outbox.position_get($1)", [self.name])
        seq, after = int(seq), int(after)
        stats = {"fetches": 0, "advances": 0, "lags": 0, "windows": 0, "rows": 0}
        buf, fetched = [], after
        while True:
            w_done, w_next, w_after = done, nxt, after
            nrows = 0
            while nrows < self.max_rows:
                if not buf:
                    if w_next is None:
                        w_next = self.scalar("win", "SELECT outbox.window_open($1)", [self.name])
                        stats["windows"] += 1
                        fetched = w_after
                    buf = self.fetch_ids(w_done, w_next, fetched, page_rows)
                    stats["fetches"] += 1
                    if not buf:
                        w_done, w_next, w_after = w_next, None, 0
                        break
                    fetched = buf[-1]
                take = min(len(buf), self.max_rows - nrows)
                w_after, buf, nrows = buf[take - 1], buf[take:], nrows + take
            if nrows == 0:
                break
            seq += 1
            self.scalar("adv", "SELECT outbox.advance($1, $2, $3, $4, $5, $6, $7)",
                        [self.name, gen, seq, w_done, w_next, w_after, 0])
            stats["advances"] += 1
            stats["rows"] += nrows
            done, nxt, after = w_done, w_next, w_after
        return stats

    def run(self):
        gen = int(self.row("acq", "SELECT acquired, generation FROM outbox.lease_acquire($1, $2, $3)",
                           [self.name, "dbcost", 30000])[1])
        _, seq, done, nxt, after = self.row(
            "pos", "SELECT generation, batch_seq, pos_done, pos_next, pos_after_id "
                   "FROM outbox.position_get($1)", [self.name])
        seq, after = int(seq), int(after)
        next_lag = 0.0
        stats = {"fetches": 0, "advances": 0, "lags": 0, "windows": 0, "rows": 0}
        while True:
            # fill_batch: pages until the batch is full or the window ends
            w_done, w_next, w_after = done, nxt, after
            nrows, nbytes = 0, 0
            while nrows < self.max_rows and nbytes < self.max_bytes:
                if w_next is None:
                    w_next = self.scalar("win", "SELECT outbox.window_open($1)", [self.name])
                    stats["windows"] += 1
                mb = (self.max_bytes - nbytes) if self.fetch_max_bytes else None
                n, last, b = self.fetch(w_done, w_next, w_after, self.max_rows - nrows, mb)
                stats["fetches"] += 1
                if n == 0:
                    w_done, w_next, w_after = w_next, None, 0
                    break
                nrows, nbytes, w_after = nrows + n, nbytes + b, last
            if nrows == 0:
                break  # drained (the finished window stays in memory, as in the relay)
            seq += 1
            self.scalar("adv", "SELECT outbox.advance($1, $2, $3, $4, $5, $6, $7)",
                        [self.name, gen, seq, w_done, w_next, w_after, 0])
            stats["advances"] += 1
            stats["rows"] += nrows
            done, nxt, after = w_done, w_next, w_after
            if self.lag and time.time() >= next_lag:
                t = time.time()
                self.row("lag", "SELECT rows, oldest_age_ms FROM outbox.lag($1)", [self.name])
                took = time.time() - t
                next_lag = time.time() + max(3.0, 20 * took)
                stats["lags"] += 1
        return stats

    def close(self):
        self.pq.PQfinish(self.conn)


# --- the benchmark ------------------------------------------------------------------

# Variants of a relay built for an earlier schema (--relay-vN BIN), on
# install.sql up to that version.
OLD_RELAYS = {"relay-v4": 4, "relay-v5": 5, "relay-v6": 6}

VARIANTS = {
    # name: (kind, template, max_rows or None)
    "relay": "the relay (RelWithDebInfo, crash points off), schema of install.sql (7 since four partitions)",
    "relay-v6": "--relay-v6 BIN on schema 6 (install.sql up to 0006): eight partitions",
    "relay-v5": "--relay-v5 BIN on schema 5 (install.sql up to 0005): fetch_page's byte pass, an empty fetch per window",
    "relay-v4": "--relay-v4 BIN on schema 4 (install.sql up to 0004): the DELETE in advance and its VACUUM",
    "driver": "driver: the relay's statements from a libpq driver, schema v2",
    "driver-nobytes": "driver, fetch_page(..., max_bytes => NULL), schema v2",
    "driver-keep": "driver, advance with retention (no DELETE), then nothing: no cleanup at all (a lower bound)",
    "proto": "driver, schema v2 + draft 0003 (partitions, TRUNCATE instead of DELETE)",
    "proto-nobytes": "driver, draft 0003 + max_bytes NULL",
    "proto-nobytes-serial": "driver, draft 0003 + max_bytes NULL, lag() without parallel workers",
    "proto-nobytes-nolag": "driver, draft 0003 + max_bytes NULL, no outbox.lag() calls during the drain",
    "proto-bigpage": "as proto-nobytes-nolag, but pages of 10000 rows cut into batches of max_rows in memory",
    "delete": "DELETE FROM outbox.event + VACUUM (no relay): the v2 cleanup alone",
}


class DbCost:
    def __init__(self, args):
        self.args = args
        self.cluster = Cluster(args.port)
        self.kafka = None
        self.tmp = tempfile.mkdtemp(prefix="dbcost-")
        self.procs = []
        self.seq = 0
        self.templates = {}
        self.topics = []
        self.relay_names = []

    # -- set-up and tear-down
    def setup(self):
        self.cluster.init()
        self.cluster.start()
        bench.PG_URL = self.cluster.url  # bench.Pg and db_url() use it
        self.pg = bench.Pg()
        self.pm = self.cluster.postmaster()
        log("private cluster on port %d, postmaster %d, data %s" % (self.cluster.port, self.pm,
                                                                     self.cluster.data))

    def cleanup(self):
        for p in self.procs:
            try:
                if p.p.poll() is None:
                    p.stop(signal.SIGKILL, 5)
            except Exception:
                pass
        if self.kafka:
            self.kafka.created.update(self.topics)
            self.kafka.created.update(n + "-ckpt" for n in self.relay_names)
            self.kafka.delete_all()
        self.cluster.destroy()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def template(self, kind):
        if kind not in self.templates:
            name = "dbcost_%s_tpl_%s" % (RUN, kind)
            url = self.pg.create(name)
            bench.Pg.install(url, {"v%d" % n: n for n in OLD_RELAYS.values()}.get(kind))
            if kind == "proto":
                bench.Pg.run_file(url, DRAFT_SQL)
            t = time.time()
            load(url, self.topic_names(), self.args.rows)
            bench.Pg.run(url, "VACUUM (ANALYZE) outbox.event")
            log("template %s: %d rows loaded in %.1f s" % (kind, self.args.rows, time.time() - t))
            self.templates[kind] = name
        return self.templates[kind]

    def topic_names(self):
        if not self.topics:
            self.topics = ["dbcost-%s-t%d" % (RUN, i) for i in range(TOPICS)]
        return self.topics

    def kafka_topics(self):
        if self.kafka is None:
            self.kafka = bench.Kafka()
            for t in self.topic_names():
                self.kafka.create(t, 1)
        return self.topics

    def fresh(self, kind):
        self.seq += 1
        name = "dbcost_%s_%d" % (RUN, self.seq)
        url = self.pg.create(name, template=self.template(kind))
        if self.args.track_functions:
            bench.Pg.run(url, "ALTER DATABASE %s SET track_functions = 'pl'" % name)
        bench.Pg.run(url, "CHECKPOINT")
        time.sleep(self.args.settle)
        return name, url

    # -- measurements
    def measure(self, dbname, body):
        """Run body() between two samples of the whole cluster."""
        lsn0 = bench.Pg.run(self.cluster.url, "SELECT pg_current_wal_lsn()")[0][0]
        m0 = bench.cpu_times()
        s0 = server_sample(self.pm)
        w = Watcher(self.pm, dbname)
        w.start(s0)
        t0 = time.time()
        extra = body() or {}
        t1 = time.time()
        s1 = server_sample(self.pm)
        by_kind = w.finish()
        m1 = bench.cpu_times()
        wal = bench.Pg.run(self.cluster.url, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", lsn0)[0][0]
        out = {"server_us": tick_us(s1["total"] - s0["total"]), "seconds": t1 - t0, "wal_bytes": int(wal),
               "postmaster_us": tick_us(s1["self"] - s0["self"]),
               "by_kind": by_kind, "machine": bench.machine_share(m0, m1),
               "loadavg": os.getloadavg()[0]}
        out.update(extra)
        return out

    def func_stats(self, url):
        if not self.args.track_functions:
            return None
        rows = bench.Pg.run(url, "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
                                 "WHERE schemaname = 'outbox' ORDER BY total_time DESC")
        return {r[0]: {"calls": r[1], "total_ms": r[2], "self_ms": r[3]} for r in rows}

    def copy_floor(self):
        dbname, url = self.fresh("v2")
        try:
            conn = psycopg2.connect(url)
            conn.autocommit = True
            pid = conn.get_backend_pid()

            class Sink:
                n = 0

                def write(self, b):
                    Sink.n += len(b)

            def body():
                b0 = backend_ticks(pid)
                with conn.cursor() as cur:
                    cur.copy_expert("COPY (SELECT id, topic, key, payload, headers, created_at FROM "
                                    "outbox.event ORDER BY id) TO STDOUT (FORMAT binary)", Sink())
                return {"backend_us": tick_us(backend_ticks(pid) - b0), "bytes": Sink.n}
            r = self.measure(dbname, body)
            conn.close()
            return r
        finally:
            self.pg.drop(dbname)

    def vacuum(self, url):
        t = time.time()
        bench.Pg.run(url, "VACUUM outbox.event")
        return time.time() - t

    def leftover(self, url):
        return bench.Pg.run(url, "SELECT count(*) FROM outbox.event")[0][0]

    def relay_backend(self, dbname):
        for pid in children(self.pm):
            if (" %s " % dbname) in (" " + proc_name(pid) + " "):
                return pid
        return None

    def run_relay(self, max_rows, kind="v2", binary=None):
        topics = self.kafka_topics()
        dbname, url = self.fresh(kind)
        try:
            per = [sum(1 for s in range(1, self.args.rows + 1) if s % TOPICS == i) for i in range(TOPICS)]
            cons = [bench.Consumer(t, self.args.rows, want=n, timeout=600) for t, n in zip(topics, per)]
            self.procs += cons
            label = "dbcost-%s-r%d" % (RUN, self.seq)
            self.relay_names.append(label)

            def body():
                relay = bench.Relay(self.tmp, label, url, max_rows=max_rows,
                                    max_bytes=bench.max_bytes_for(max_rows), binary=binary)
                self.procs.append(relay)
                relay.wait_publishing(120)
                pid = None
                for _ in range(100):
                    pid = self.relay_backend(dbname)
                    if pid:
                        break
                    time.sleep(0.01)
                b0 = 0  # the backend was born after the first sample
                perf = perf_start(self.args.perf, "relay-%d" % max_rows, pid)
                counts = [c.finish(self.args.timeout)["count"] for c in cons]
                time.sleep(0.3)  # the last advance follows the last Kafka commit
                # the cleanup is part of the cost: schema 5 truncates the
                # last partition at the last advance or when the relay idles
                deadline = time.time() + 10
                while self.leftover(url) and time.time() < deadline:
                    time.sleep(0.1)
                b1 = backend_ticks(pid) if pid else None
                perf_stop(perf)
                relay.stop()
                vac = self.vacuum(url)
                return {"relay_backend_us": tick_us(b1 - b0) if b1 is not None else None,
                        "consumed": sum(counts), "vacuum_s": vac, "warnings": relay.errors()[:3]}
            r = self.measure(dbname, body)
            r["leftover_rows"] = self.leftover(url)
            r["functions"] = self.func_stats(url)
            return r
        finally:
            self.pg.drop(dbname)

    def run_driver(self, kind, max_rows, fetch_max_bytes=True, keep=False, lag=True, serial=False,
                   page_rows=None):
        dbname, url = self.fresh(kind)
        try:
            def body():
                d = Driver(url, "dbcost-%s-d%d" % (RUN, self.seq), max_rows,
                           bench.max_bytes_for(max_rows), fetch_max_bytes, lag, serial)
                pid = d.backend()
                perf = perf_start(self.args.perf, "%s-%d" % (kind + ("-keep" if keep else "") +
                                                             ("" if fetch_max_bytes else "-nobytes") + ("" if lag else "-nolag") +
                                                             ("-serial" if serial else "") + ("-bigpage" if page_rows else ""), max_rows), pid)
                stats = d.run_bigpage(page_rows) if page_rows else self.drive(d, keep)
                b1 = backend_ticks(pid)
                perf_stop(perf)
                d.close()
                vac = self.vacuum(url) if not keep else 0.0
                return {"relay_backend_us": tick_us(b1), "stats": stats, "vacuum_s": vac}
            r = self.measure(dbname, body)
            r["leftover_rows"] = self.leftover(url)
            r["functions"] = self.func_stats(url)
            return r
        finally:
            self.pg.drop(dbname)

    @staticmethod
    def drive(d, keep):
        if not keep:
            return d.run()
        # retention: advance deletes nothing
        orig = d.scalar

        def scalar(stmt, sql, params):
            if stmt == "adv":
                params = params[:-1] + [3600000]
            return orig(stmt, sql, params)
        d.scalar = scalar
        return d.run()

    def run_delete(self):
        dbname, url = self.fresh("v2")
        try:
            def body():
                bench.Pg.run(url, "DELETE FROM outbox.event")
                return {"vacuum_s": self.vacuum(url)}
            r = self.measure(dbname, body)
            r["leftover_rows"] = self.leftover(url)
            return r
        finally:
            self.pg.drop(dbname)

    def one(self, variant, max_rows):
        if variant == "relay":
            return self.run_relay(max_rows)
        if variant in OLD_RELAYS:
            n = OLD_RELAYS[variant]
            binary = getattr(self.args, "relay_v%d" % n)
            if not binary:
                raise SystemExit("dbcost: variant %s needs --relay-v%d BIN (a relay built for schema %d)"
                                 % (variant, n, n))
            return self.run_relay(max_rows, kind="v%d" % n, binary=binary)
        if variant == "driver":
            return self.run_driver("v2", max_rows)
        if variant == "driver-nobytes":
            return self.run_driver("v2", max_rows, fetch_max_bytes=False)
        if variant == "driver-keep":
            return self.run_driver("v2", max_rows, keep=True)
        if variant == "proto":
            return self.run_driver("proto", max_rows)
        if variant == "proto-nobytes":
            return self.run_driver("proto", max_rows, fetch_max_bytes=False)
        if variant == "proto-nobytes-serial":
            return self.run_driver("proto", max_rows, fetch_max_bytes=False, serial=True)
        if variant == "proto-bigpage":
            return self.run_driver("proto", max_rows, fetch_max_bytes=False, lag=False,
                                   page_rows=max(10000, max_rows))
        if variant == "proto-nobytes-nolag":
            return self.run_driver("proto", max_rows, fetch_max_bytes=False, lag=False)
        raise ValueError(variant)

    def main(self):
        a = self.args
        res = {"run": RUN, "args": vars(a), "copy": [], "runs": [], "delete": []}
        self.template("v2")
        if any(v.startswith("proto") for v in a.variants):
            raise SystemExit("dbcost: the proto variants apply bench/sql/draft_0003 to schema 2-4; "
                             "install.sql is at schema 5 now (runs 2-6 of bench/sql/RESULTS.md measured them)")
        for v, n in OLD_RELAYS.items():
            if v in a.variants:
                self.template("v%d" % n)
        for rep in range(a.repeat):
            res["copy"].append(self.copy_floor())
            log("copy floor: backend %.0f ms, server %.0f ms" % (res["copy"][-1]["backend_us"] / 1e3,
                                                                 res["copy"][-1]["server_us"] / 1e3))
            order = [(v, n) for n in a.max_rows for v in a.variants if v != "delete"]
            if rep % 2:
                order.reverse()
            for v, n in order:
                r = self.one(v, n)
                r.update({"variant": v, "max_rows": n, "rep": rep})
                res["runs"].append(r)
                log("%s max_rows=%d: server %.0f ms, relay backend %s ms, %.1f s, leftover %d" % (
                    v, n, r["server_us"] / 1e3,
                    "%.0f" % (r["relay_backend_us"] / 1e3) if r.get("relay_backend_us") is not None else "?",
                    r["seconds"], r["leftover_rows"]))
            if "delete" in a.variants:
                res["delete"].append(self.run_delete())
                log("delete+vacuum: server %.0f ms" % (res["delete"][-1]["server_us"] / 1e3))
            res["copy"].append(self.copy_floor())
            log("copy floor: backend %.0f ms, server %.0f ms" % (res["copy"][-1]["backend_us"] / 1e3,
                                                                 res["copy"][-1]["server_us"] / 1e3))
        return res


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return None if not n else (xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2)


def report(res):
    floor = median([c["backend_us"] for c in res["copy"]])
    print("COPY floor (backend CPU of one binary COPY of %d rows): median %.0f ms of %s" % (
        res["args"]["rows"], floor / 1e3, ", ".join("%.0f" % (c["backend_us"] / 1e3) for c in res["copy"])))
    print("(whole server during the COPY: %s ms)" % ", ".join("%.0f" % (c["server_us"] / 1e3)
                                                              for c in res["copy"]))
    print()
    print("| variant | max_rows | server CPU ms | ratio to floor | relay backend ms | backend ratio | "
          "autovacuum ms | walwriter+ckpt+bgw ms | parallel workers ms | postmaster ms | other ms | WAL MB | drain+cleanup s | leftover rows |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    keys = []
    for r in res["runs"]:
        k = (r["variant"], r["max_rows"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        rs = [r for r in res["runs"] if (r["variant"], r["max_rows"]) == k]
        srv = median([r["server_us"] for r in rs])
        be = median([r["relay_backend_us"] for r in rs if r.get("relay_backend_us") is not None])
        av = median([r["by_kind"].get("autovacuum worker", 0) for r in rs])
        bg = median([sum(r["by_kind"].get(x, 0) for x in ("walwriter", "checkpointer", "background writer"))
                     for r in rs])
        other = median([r["server_us"] - sum(v for kk, v in r["by_kind"].items()
                                             if kk in ("client backend", "autovacuum worker", "walwriter",
                                                       "checkpointer", "background writer", "parallel worker"))
                     for r in rs])
        wal = median([r.get("wal_bytes", 0) for r in rs])
        pw = median([r["by_kind"].get("parallel worker", 0) for r in rs])
        pm = median([r.get("postmaster_us", 0) for r in rs])
        other -= pm
        print("| %s | %d | %.0f | **%.2f** (%s) | %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %s |" % (
            k[0], k[1], srv / 1e3, srv / floor,
            ", ".join("%.2f" % (r["server_us"] / floor) for r in rs),
            "%.0f" % (be / 1e3) if be is not None else "-", "%.2f" % (be / floor) if be is not None else "-",
            av / 1e3, bg / 1e3, pw / 1e3, pm / 1e3, other / 1e3, wal / 1e6, median([r["seconds"] for r in rs]),
            ",".join(str(r["leftover_rows"]) for r in rs)))
    for d in res["delete"]:
        print("| DELETE all + VACUUM | - | %.0f | **%.2f** | - | - | %.0f | - | - | - | - | %.1f | %.1f | %d |" % (
            d["server_us"] / 1e3, d["server_us"] / floor, d["by_kind"].get("autovacuum worker", 0) / 1e3,
            d.get("wal_bytes", 0) / 1e6, d["seconds"], d["leftover_rows"]))
    print()
    fs = [r for r in res["runs"] if r.get("functions")]
    if fs:
        print("Time inside outbox functions (pg_stat_user_functions, track_functions = pl; ms, "
              "median; wall time in the function, not CPU):")
        print()
        names = []
        for r in fs:
            for n in r["functions"]:
                if n not in names:
                    names.append(n)
        print("| variant | max_rows | " + " | ".join(names) + " |")
        print("| --- | ---: |" + " ---: |" * len(names))
        for k in keys:
            rs = [r for r in fs if (r["variant"], r["max_rows"]) == k]
            if not rs:
                continue
            cells = []
            for n in names:
                v = [r["functions"][n]["total_ms"] for r in rs if n in r["functions"]]
                c = [r["functions"][n]["calls"] for r in rs if n in r["functions"]]
                cells.append("%.0f (%d)" % (median(v), median(c)) if v else "-")
            print("| %s | %d | %s |" % (k[0], k[1], " | ".join(cells)))
        print()
    print("machine: load average %s; %s" % (
        ", ".join("%.1f" % r["loadavg"] for r in res["runs"]),
        "busy %.0f%%-%.0f%% of 2 CPUs during the runs" % (
            100 * min(r["machine"]["busy"] for r in res["runs"]),
            100 * max(r["machine"]["busy"] for r in res["runs"]))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300000)
    ap.add_argument("--relay-v5", metavar="BIN",
                    help="for variant relay-v5: a relay built for schema 5 (before read_page)")
    ap.add_argument("--relay-v6", metavar="BIN",
                    help="for variant relay-v6: a relay built for schema 6 (eight partitions)")
    ap.add_argument("--relay-v4", metavar="BIN",
                    help="for variant relay-v4: a relay built for schema 4 (before the partitioned outbox)")
    ap.add_argument("--max-rows", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--variants", nargs="+", default=["relay", "delete"],
                    help="any of: %s; 'all' for every one" % ", ".join(VARIANTS))
    ap.add_argument("--repeat", type=int, default=1, help="rounds, alternating the order")
    ap.add_argument("--track-functions", action="store_true",
                    help="track_functions = pl in the measured databases (time per outbox function)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds of quiet before each measurement")
    ap.add_argument("--port", type=int, help="port of the private cluster (default: a free one)")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--perf", metavar="DIR", help="perf record the relay's (or driver's) backend into DIR")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--report", help="print the tables of an earlier --json file and exit")
    ap.add_argument("--keep-cluster", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.report:
        with open(a.report) as f:
            report(json.load(f))
        return
    if a.variants == ["all"]:
        a.variants = list(VARIANTS)
    for v in a.variants:
        if v not in VARIANTS:
            ap.error("unknown variant %s" % v)
    for p in (bench.RELAY, bench.CONSUMER):
        if "relay" in a.variants and not os.path.exists(p):
            ap.error("%s missing: run bench/run.sh --help once (it builds), or see bench/README.md" % p)
    b = DbCost(a)
    done = threading.Event()

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        b.setup()
        res = b.main()
        done.set()
    finally:
        if not a.keep_cluster:
            b.cleanup()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    report(res)


if __name__ == "__main__":
    main()
