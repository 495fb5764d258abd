#!/usr/bin/python3
"""bench.py: outbox-relay against bare Kafka, as ratios measured in one run.

Run it through bench/run.sh, which builds the relay and the C programs of
bench/ first. Scenarios (bench/README.md has the details):

  A  drain a backlog of ROWS 256-byte rows (16 keys) to a topic of 1 and 6
     partitions, transaction sizes 1k/10k/100k rows, until the last row is
     visible to a read_committed consumer; against bench-producer txn (the same
     records from memory, the same transaction size) and a plain SELECT.
  B  steady ingest: single-row transactions at 1k/s and 5k/s, latency from the
     writer's COMMIT returning to the row arriving at a read_committed
     consumer, NOTIFY on and off; against bench-producer idempotent at the same
     rate; and the writers' max throughput with and without the NOTIFY trigger.
  C  recovery: kill -9 of the relay during A and during B, time from restart to
     the first new row visible; against bench-producer txn killed with a
     transaction open and restarted with the same transactional.id.

Every database (bench_<run>_*) and topic (bench-<run>-*) it creates is
dropped at the end, also after a failure or Ctrl-C.
"""
import argparse
import json
import math
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BENCH_BUILD", os.path.join(ROOT, "build-bench"))
RELAY = os.path.join(BUILD, "relay", "outbox-relay")
TOOLS = os.path.join(BUILD, "tools")
PRODUCER = os.path.join(TOOLS, "bench-producer")
CONSUMER = os.path.join(TOOLS, "bench-consumer")
WRITER = os.path.join(TOOLS, "bench-writer")

PG_URL = os.environ.get("OUTBOX_PG_URL", "postgresql://postgres@127.0.0.1:55432/outbox")
BOOTSTRAP = os.environ.get("OUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
# The relay's shipped kafka.properties (conf/relay.conf); the bare producers
# get the same ones.
KAFKA_PROPS = ["compression.type=lz4"]  # conf/relay.conf's; linger.ms is the relay's default (0)
CLK_TCK = os.sysconf("SC_CLK_TCK")
RUN = "%x%04x" % (int(time.time()) & 0xFFFFFF, os.getpid() & 0xFFFF)
OWNER = "bench-owner"  # fixed relay.owner: a restarted relay retakes its lease at once


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def now_ns():
    return time.time_ns()


# --- PostgreSQL ------------------------------------------------------------------

def db_url(name):
    return re.sub(r"^(postgres(?:ql)?://[^/?]*)(/[^?]*)?", lambda m: m.group(1) + "/" + name, PG_URL)


class Pg:
    """Databases of this run, created and dropped through the superuser URL."""

    def __init__(self):
        self.created = []

    def admin(self, sql, *args):
        conn = psycopg2.connect(PG_URL)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def create(self, name, template=None):
        sql = 'CREATE DATABASE "%s"' % name
        if template:
            # FILE_COPY: a checkpoint and a directory copy, far quicker than
            # replaying a 1M-row template through the WAL.
            sql += ' TEMPLATE "%s" STRATEGY FILE_COPY' % template
        self.admin(sql)
        self.created.append(name)
        return db_url(name)

    def drop(self, name):
        self.admin('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        if name in self.created:
            self.created.remove(name)

    def drop_all(self):
        for name in list(reversed(self.created)):
            try:
                self.drop(name)
            except Exception as e:  # keep cleaning up
                log("could not drop database %s: %s" % (name, e))

    @staticmethod
    def run(url, sql, *args):
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    @staticmethod
    def run_file(url, path):
        """An SQL file into url by psql, stopping at its first error."""
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", path],
                       check=True, stdout=subprocess.DEVNULL)

    @staticmethod
    def install(url, schema=None):
        """sql/install.sql into url; with schema N only its migrations up to
        N (an older schema, for a relay built for it)."""
        if schema is None:
            Pg.run_file(url, os.path.join(ROOT, "sql", "install.sql"))
            return
        text = open(os.path.join(ROOT, "sql", "install.sql")).read()
        text = text[:text.index("\\set migration %04d" % (schema + 1))].replace(
            "\\ir lib/", "\\ir %s/" % os.path.join(ROOT, "sql", "lib"))
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url], input=text, text=True,
                       check=True, stdout=subprocess.DEVNULL)


# --- Kafka -----------------------------------------------------------------------

class Kafka:
    def __init__(self):
        self.admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        self.created = set()

    def create(self, name, partitions, config=None):
        fut = self.admin.create_topics([NewTopic(name, num_partitions=partitions,
                                                 replication_factor=1, config=config or {})])[name]
        fut.result(30)
        self.created.add(name)
        # the topic's leaders must be known before a consumer assigns it
        deadline = time.time() + 30
        while time.time() < deadline:
            md = self.admin.list_topics(name, timeout=10).topics.get(name)
            if md and md.error is None and len(md.partitions) == partitions and \
                    all(p.leader >= 0 for p in md.partitions.values()):
                return name
            time.sleep(0.1)
        raise RuntimeError("topic %s has no leaders" % name)

    def delete(self, names):
        names = [n for n in names if n]
        if not names:
            return
        for name, fut in self.admin.delete_topics(names, operation_timeout=30).items():
            try:
                fut.result(60)
            except KafkaException as e:
                if e.args[0].code() != 3:  # UNKNOWN_TOPIC_OR_PART
                    log("could not delete topic %s: %s" % (name, e))
            self.created.discard(name)

    def delete_all(self):
        self.delete(sorted(self.created))


# --- processes -------------------------------------------------------------------

class Proc:
    """A child whose stdout (or stderr) lines are read by a thread and kept
    with the CLOCK_REALTIME ns at which they were read."""

    def __init__(self, argv, name, stream="stdout", env=None):
        self.name = name
        self.argv = argv
        self.lines = []
        self.cond = threading.Condition()
        self.spawn_ns = now_ns()
        kw = {"stdout": subprocess.PIPE, "stderr": None}
        if stream == "stderr":
            kw = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        self.p = subprocess.Popen(argv, text=True, bufsize=1, env=env, **kw)
        self.pid = self.p.pid
        self.stream = self.p.stdout if stream == "stdout" else self.p.stderr
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.stream:
            with self.cond:
                self.lines.append((now_ns(), line.rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, pred, timeout, start=0):
        """The first (ns, line) from index start that satisfies pred."""
        deadline = time.time() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i][1]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.time()
                if left <= 0 or (self.p.poll() is not None and not self.thread.is_alive()):
                    raise RuntimeError("%s: no matching line within %.0f s (exit %s); last: %s" % (
                        self.name, timeout, self.p.poll(),
                        [l for _, l in self.lines[-5:]]))
                self.cond.wait(min(left, 0.5))

    def wait_prefix(self, prefix, timeout, start=0):
        ns, line = self.wait_line(lambda l: l.startswith(prefix), timeout, start)
        return ns, line.split()

    def cpu_us(self, pid=None):
        with open("/proc/%d/stat" % (pid or self.pid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000000 // CLK_TCK

    def hwm_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return -1

    def send(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.send(sig)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.p.wait(10)
        self.thread.join(5)
        return self.p.returncode

    def kill9(self):
        self.send(signal.SIGKILL)
        self.p.wait(10)
        self.thread.join(5)


def phases_env(label):
    """With BENCH_PHASES=DIR, the child runs under the phase timer
    (libphases.so), writing DIR/LABEL.phases."""
    d = os.environ.get("BENCH_PHASES")
    if not d:
        return None
    env = dict(os.environ)
    env["LD_PRELOAD"] = os.path.join(TOOLS, "libphases.so")
    env["PHASES_OUT"] = os.path.join(d, label + ".phases")
    return env


def start_perf(label, *pids):
    """With BENCH_PERF=DIR, sample the given processes (cpu-clock, DWARF
    call graphs) into DIR/LABEL-PID.data until stop_perf."""
    d = os.environ.get("BENCH_PERF")
    if not d:
        return []
    out = []
    for pid in pids:
        if pid:
            out.append(subprocess.Popen(
                ["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,16384",
                 "-p", str(pid), "-o", os.path.join(d, "%s-%d.data" % (label, pid))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.2)
    return out


def stop_perf(procs):
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait(120)


def cpu_times():
    """Machine-wide jiffies from /proc/stat: (busy, idle + iowait, steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq, idle + iowait, steal)


def machine_share(t0, t1):
    """Fractions of the machine (all CPUs) busy, idle and stolen between two cpu_times()."""
    d = [b - a for a, b in zip(t0, t1)]
    tot = sum(d) or 1
    return {"busy": d[0] / tot, "idle": d[1] / tot, "steal": d[2] / tot}


def broker_pid():
    try:
        with open(os.path.join(os.environ.get("OUTBOX_LOCAL_STATE", "/var/tmp/outbox-relay-local"),
                               "kafka.pid")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError):
        return None


def phase_lines(label, kind):
    """The fields of the phase-timer file's lines of one kind ("total" or
    "event"); nothing without BENCH_PHASES or the file."""
    d = os.environ.get("BENCH_PHASES")
    if not d:
        return []
    try:
        with open(os.path.join(d, label + ".phases")) as f:
            return [line.split()[1:] for line in f if line.startswith(kind + " ")]
    except OSError:
        return []


def read_phases(label):
    """Totals of a phase-timer file: {name: (calls, total_ms, max_ms)}."""
    return {" ".join(p[:-3]): (int(p[-3]), float(p[-2]), float(p[-1]))
            for p in phase_lines(label, "total")}


def phase_events(label):
    """The first calls a phase-timer file logged as they happened:
    [(ms since start, name, duration ms)]; survives kill -9."""
    return [(float(p[0]), " ".join(p[1:-1]), float(p[-1])) for p in phase_lines(label, "event")]


def phase_breakdown(ph):
    """Wall ms per transaction on the main thread: PostgreSQL reads, the
    produce loop, the Kafka commit, the database advance."""
    txns = ph.get("kafka commit_transaction", (0, 0, 0))[0]
    if not txns:
        return None
    g = lambda k: ph.get(k, (0, 0.0, 0))[1] / txns
    return {"txns": txns,
            # read_page since schema 6, fetch_page before
            "fetch_ms": g("pg outbox.read_page") + g("pg outbox.fetch_page") + g("pg outbox.window_open"),
            "produce_ms": g("produce loop (begin..commit)") + g("kafka begin_transaction"),
            "commit_ms": g("kafka commit_transaction"),
            "advance_ms": g("pg outbox.advance")}


def pid_cpu_us(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000000 // CLK_TCK
    except OSError:
        return None


class Consumer(Proc):
    def __init__(self, topic, max_seq, want=0, out=None, timeout=900, from_end=True):
        argv = [CONSUMER, "-b", BOOTSTRAP, "-t", topic, "--max-seq", str(max_seq),
                "--timeout", str(timeout)]
        if from_end:
            argv.append("--from-end")
        if want:
            argv += ["-n", str(want)]
        if out:
            argv += ["--out", out]
        super().__init__(argv, "consumer")
        self.out = out
        self.wait_prefix("assigned", 30)

    def count(self):
        with self.cond:
            for _, line in reversed(self.lines):
                if line.startswith("P "):
                    return int(line.split()[1])
        return 0

    def wait_count(self, n, timeout):
        ns, f = self.wait_line(lambda l: l.startswith("P ") and int(l.split()[1]) >= n, timeout)
        return ns

    def wait_quiet(self, quiet_s, timeout):
        """Wait until no new record arrived for quiet_s seconds."""
        deadline = time.time() + timeout
        last, since = self.count(), time.time()
        while time.time() < deadline:
            time.sleep(0.05)
            c = self.count()
            if c != last:
                last, since = c, time.time()
            elif time.time() - since >= quiet_s:
                return c
        return last

    def finish(self, timeout):
        """Wait for its end (after -n records, or stop it) and parse "done"."""
        try:
            _, f = self.wait_prefix("done", timeout)
        except RuntimeError:
            self.send(signal.SIGTERM)
            _, f = self.wait_prefix("done", 60)
        self.p.wait(30)
        return {"first_ns": int(f[1]), "last_ns": int(f[2]), "count": int(f[3]),
                "dups": int(f[4]), "foreign": int(f[5]), "cpu_us": int(f[6])}

    def arrivals(self):
        return read_i64(self.out)


def read_i64(path):
    with open(path, "rb") as f:
        data = f.read()
    return struct.unpack("<%dq" % (len(data) // 8), data)


class Relay(Proc):
    def __init__(self, tmp, name, url, max_rows=10000, max_bytes=None, notify=True,
                 poll_ms=200, ckpt_topic=None, tag="", log_level=None, retention_ms=0, binary=None,
                 kafka_props=()):
        self.write_conf(tmp, name, url, max_rows, max_bytes, notify, poll_ms, ckpt_topic, tag,
                        log_level, retention_ms, kafka_props)
        super().__init__([binary or RELAY, "run", "-c", self.conf], "relay", stream="stderr",
                         env=phases_env("relay-%s%s" % (name, tag)))
        self.backend = None

    def write_conf(self, tmp, name, url, max_rows=10000, max_bytes=None, notify=True, poll_ms=200,
                   ckpt_topic=None, tag="", log_level=None, retention_ms=0, kafka_props=()):
        self.conf = os.path.join(tmp, "relay-%s%s.conf" % (name, tag))
        # a checkpoint topic per relay name: a new relay's start-up does not
        # depend on how many checkpoints earlier runs left
        self.ckpt_topic = ckpt_topic = ckpt_topic or name + "-ckpt"
        if max_bytes is None:
            max_bytes = max(16 << 20, max_rows * 512)
        extra = [p for p in os.environ.get("BENCH_RELAY_KAFKA_PROPS", "").split(",") if p]
        # later entries win: the environment's, then the variant's own
        props = ", ".join('"%s"' % p for p in KAFKA_PROPS + extra + list(kafka_props))
        with open(self.conf, "w") as f:
            f.write("""relay = { name = "%s"; owner = "%s"; };
postgres = { conninfo = "%s"; retention_ms = %d; };
kafka = { bootstrap_servers = "%s"; checkpoint_topic = "%s"; properties = [ %s ]; };
batch = { max_rows = %d; max_bytes = %d; max_wait_ms = 0; poll_interval_ms = %d; notify = %s; };
http = { listen = ""; };
log = { level = "%s"; format = "text"; };
""" % (name, OWNER, url, retention_ms, BOOTSTRAP, ckpt_topic, props, max_rows, max_bytes, poll_ms,
                "true" if notify else "false",
                log_level or os.environ.get("BENCH_RELAY_LOG_LEVEL", "info")))
        self.url = url

    def wait_publishing(self, timeout=60):
        ns, _ = self.wait_line(lambda l: "publishing" in l, timeout)
        return ns

    def find_backend(self):
        """The pid of the relay's PostgreSQL backend (to add its CPU time)."""
        rows = Pg.run(self.url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                      " AND application_name = 'outbox-relay'")
        self.backend = rows[0][0] if rows else None
        return self.backend

    def log_ms(self, needle):
        """Wall time (ms) of the relay's own timestamp on its first line holding needle."""
        with self.cond:
            for _, line in self.lines:
                if needle in line:
                    ts = line.split()[0]
                    t = time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")
                    return (int(time_gm(t)) * 1000 + int(ts[20:23]))
        return None

    def errors(self):
        with self.cond:
            return [l for _, l in self.lines if " error " in l or " warning " in l]


def time_gm(t):
    import calendar
    return calendar.timegm(t)


# --- statistics --------------------------------------------------------------------

def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(math.ceil(p * len(sorted_vals))) - 1))
    return sorted_vals[i]


def latency_stats(sent, arrived, first=1):
    """Latencies in ms of rows that were both sent and arrived, and the rows lost."""
    lat, missing = [], 0
    n = min(len(sent), len(arrived))
    for seq in range(first, len(sent)):
        s = sent[seq]
        if s <= 0:
            continue
        a = arrived[seq] if seq < n else 0
        if a <= 0:
            missing += 1
            continue
        lat.append((a - s) / 1e6)
    lat.sort()
    return {"n": len(lat), "missing": missing,
            "p50": percentile(lat, 0.50), "p99": percentile(lat, 0.99),
            "p999": percentile(lat, 0.999), "max": lat[-1] if lat else float("nan")}


def backlog_series(sent, arrived, step_s=1.0):
    """Rows committed but not yet visible, sampled every step_s over the run."""
    s = sorted(x for x in sent if x > 0)
    a = sorted(x for x in arrived if x > 0)
    if not s:
        return []
    t, end, out, i, j = s[0], s[-1], [], 0, 0
    step = int(step_s * 1e9)
    while t <= end:
        while i < len(s) and s[i] <= t:
            i += 1
        while j < len(a) and a[j] <= t:
            j += 1
        out.append(i - j)
        t += step
    return out


def slope(ys):
    """Least-squares slope of ys per sample."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    num = sum((x - mx) * (y - my) for x, y in enumerate(ys))
    den = sum((x - mx) ** 2 for x in range(n))
    return num / den


# --- the benchmark -----------------------------------------------------------------

def kafka_argv():
    out = []
    for p in KAFKA_PROPS:
        out += ["-X", p]
    return out


def max_bytes_for(txn_rows):
    # batch.max_bytes raised with the transaction size: a row here counts
    # 262 bytes (key + payload), so max_rows is always the limit that cuts.
    return max(16 << 20, txn_rows * 512)


class Bench:
    def __init__(self, args):
        self.args = args
        self.pg = Pg()
        self.kafka = Kafka()
        self.tmp = tempfile.mkdtemp(prefix="outbox-bench-")
        self.procs = []
        self.results = {"run": RUN, "args": vars(args), "A": [], "A_select": [], "B": [],
                        "B_writers": [], "C": []}
        self.seq = 0
        self.templates = {}
        if not args.no_phases and not os.environ.get("BENCH_PHASES"):
            os.makedirs(os.path.join(self.tmp, "phases"))
            os.environ["BENCH_PHASES"] = os.path.join(self.tmp, "phases")

    def next(self):
        self.seq += 1
        return self.seq

    def track(self, proc):
        self.procs.append(proc)
        return proc

    def cleanup(self):
        for p in self.procs:
            try:
                if p.p.poll() is None:
                    p.stop(signal.SIGKILL, 5)
            except Exception:
                pass
        self.pg.drop_all()
        # the relays created their checkpoint topics
        self.kafka.created.update(p.ckpt_topic for p in self.procs if isinstance(p, Relay))
        self.kafka.delete_all()
        subprocess.run(["rm", "-rf", self.tmp])

    # -- databases ------------------------------------------------------------------

    def empty_template(self):
        if "empty" not in self.templates:
            name = "bench_%s_empty" % RUN
            Pg.install(self.pg.create(name))
            self.templates["empty"] = name
        return self.templates["empty"]

    def backlog_template(self, parts, topic, rows):
        """A database holding the backlog for topic, vacuumed and analyzed,
        copied (FILE_COPY) for every drain so that each starts alike."""
        key = "p%d" % parts
        if key not in self.templates:
            name = "bench_%s_%s" % (RUN, key)
            url = self.pg.create(name)
            Pg.install(url)
            t = time.time()
            subprocess.run([WRITER, "load", "-d", url, "-t", topic, "-n", str(rows)], check=True,
                           stdout=subprocess.DEVNULL)
            Pg.run(url, "VACUUM (ANALYZE) outbox.event")
            log("backlog of %d rows for %s loaded in %.1f s" % (rows, topic, time.time() - t))
            self.templates[key] = name
        return self.templates[key]

    def copy_db(self, template):
        name = "bench_%s_%d" % (RUN, self.next())
        return name, self.pg.create(name, template=template)

    # -- A: backlog drain ---------------------------------------------------------------

    def select_rate(self, template, rows):
        best = None
        for _ in range(2):
            t = time.perf_counter()
            Pg.run(db_url(template), "COPY (SELECT id, topic, key, payload, headers, created_at "
                                     "FROM outbox.event ORDER BY id) TO '/dev/null'")
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        return rows / best

    def a_relay(self, template, topic, parts, txn_rows, rows, retention_ms=0, binary=None, who="relay",
                kafka_props=()):
        dbname, url = self.copy_db(template)
        try:
            cons = self.track(Consumer(topic, rows, want=rows))
            label = "bench-%s-a%d" % (RUN, self.seq)
            relay = self.track(Relay(self.tmp, label, url,
                                     max_rows=txn_rows, max_bytes=max_bytes_for(txn_rows),
                                     retention_ms=retention_ms, binary=binary,
                                     kafka_props=kafka_props))
            t_pub = relay.wait_publishing()
            relay.find_backend()
            b0 = pid_cpu_us(relay.backend) if relay.backend else None
            k0, m0 = pid_cpu_us(broker_pid() or 0), cpu_times()
            perf = start_perf("relay-p%d-T%d" % (parts, txn_rows), relay.pid, relay.backend)
            done = cons.finish(self.args.timeout)
            stop_perf(perf)
            k1, m1 = pid_cpu_us(broker_pid() or 0), cpu_times()
            cpu, hwm = relay.cpu_us(), relay.hwm_kb()
            b1 = pid_cpu_us(relay.backend) if relay.backend else None
            relay.stop()
            phases = phase_breakdown(read_phases("relay-" + label))
            secs = (done["last_ns"] - t_pub) / 1e9
            if retention_ms:
                who += ", retention_ms"
            return {"who": who,
                    "partitions": parts, "txn_rows": txn_rows,
                    "rows": done["count"], "dups": done["dups"], "seconds": secs,
                    "rows_per_s": done["count"] / secs,
                    "startup_s": (t_pub - relay.spawn_ns) / 1e9,
                    "cpu_us_per_row": cpu / rows, "rss_mb": hwm / 1024.0,
                    "pg_cpu_us_per_row": (b1 - b0) / rows if b0 is not None and b1 else None,
                    "consumer_cpu_us_per_row": done["cpu_us"] / rows,
                    "broker_cpu_us_per_row": (k1 - k0) / rows if k0 is not None and k1 else None,
                    "machine": machine_share(m0, m1),
                    "phases": phases, "warnings": relay.errors()[:5]}
        finally:
            self.pg.drop(dbname)

    def a_bare(self, topic, parts, txn_rows, rows):
        cons = self.track(Consumer(topic, rows, want=rows))
        prod = self.track(Proc([PRODUCER, "txn", "-b", BOOTSTRAP, "-t", topic, "-n", str(rows),
                                "-T", str(txn_rows), "--txn-id", "bench-%s-bare%d" % (RUN, self.next()),
                                "--max-bytes", str(max_bytes_for(txn_rows))] + kafka_argv(),
                               "bench-producer", env=phases_env("bare-%d" % self.seq)))
        label = "bare-%d" % self.seq
        t_ready, _ = prod.wait_prefix("ready", 60)
        k0, m0 = pid_cpu_us(broker_pid() or 0), cpu_times()
        done = cons.finish(self.args.timeout)
        k1, m1 = pid_cpu_us(broker_pid() or 0), cpu_times()
        _, f = prod.wait_prefix("done", 120)
        prod.p.wait(30)
        secs = (done["last_ns"] - t_ready) / 1e9
        return {"who": "bare", "partitions": parts, "txn_rows": txn_rows, "rows": done["count"],
                "dups": done["dups"], "seconds": secs, "rows_per_s": done["count"] / secs,
                "startup_s": (t_ready - prod.spawn_ns) / 1e9,
                "cpu_us_per_row": int(f[2]) / rows, "rss_mb": int(f[3]) / 1024.0,
                "consumer_cpu_us_per_row": done["cpu_us"] / rows,
                "broker_cpu_us_per_row": (k1 - k0) / rows if k0 is not None and k1 else None,
                "machine": machine_share(m0, m1),
                "phases": phase_breakdown(read_phases(label))}

    def scenario_a(self):
        rows = self.args.rows
        for parts in self.args.partitions:
            topic = self.kafka.create("bench-%s-p%d" % (RUN, parts), parts)
            tpl = self.backlog_template(parts, topic, rows)
            self.results["A_select"].append({"partitions": parts, "rows_per_s": self.select_rate(tpl, rows)})
            for txn_rows in self.args.txn_sizes:
                for rep in range(self.args.repeat):
                    order = ["bare", "relay"] + (["retention"] if self.args.retention_variant else []) + \
                        (["compare"] if self.args.compare_relay else []) + \
                        (["compare-retention"] if self.args.compare_relay and self.args.retention_variant else [])
                    for who in order if rep % 2 == 0 else reversed(order):
                        if who == "bare":
                            r = self.a_bare(topic, parts, txn_rows, rows)
                        elif who == "compare-retention":
                            r = self.a_relay(tpl, topic, parts, txn_rows, rows, retention_ms=3600000,
                                             binary=self.args.compare_relay,
                                             who="relay, " + self.args.compare_label,
                                             kafka_props=self.args.compare_props)
                        elif who == "compare":
                            r = self.a_relay(tpl, topic, parts, txn_rows, rows,
                                             binary=self.args.compare_relay,
                                             who="relay, " + self.args.compare_label,
                                             kafka_props=self.args.compare_props)
                        elif who == "retention":
                            # deletes deferred (postgres.retention_ms): what the
                            # DELETE in outbox.advance costs the drain
                            r = self.a_relay(tpl, topic, parts, txn_rows, rows, retention_ms=3600000)
                        else:
                            r = self.a_relay(tpl, topic, parts, txn_rows, rows)
                        log("A %s p=%d T=%d: %.0f rows/s (%d rows, %.1f s)" % (
                            who, parts, txn_rows, r["rows_per_s"], r["rows"], r["seconds"]))
                        self.results["A"].append(r)
            self.results["A_select"].append({"partitions": parts, "rows_per_s": self.select_rate(tpl, rows)})

    # -- B: steady ingest -----------------------------------------------------------------

    def steady_topic(self):
        if "steady" not in self.templates:
            self.templates["steady"] = self.kafka.create("bench-%s-steady" % RUN, 6)
        return self.templates["steady"]

    def conns_for(self, rate, per_txn=1):
        # one connection commits about 1k single-row transactions/s here
        # when the machine is quiet; give the open loop room to catch up
        return max(4, min(16, int(math.ceil(rate / per_txn / 300.0))))

    def b_relay(self, rate, notify, secs, per_txn=1, binary=None, who="relay", kafka_props=()):
        topic = self.steady_topic()
        dbname, url = self.copy_db(self.empty_template())
        n = int(rate * secs)
        try:
            Pg.run(url, "SELECT outbox.notify_enable()" if notify else "SELECT outbox.notify_disable()")
            arr_file = os.path.join(self.tmp, "b-arrived-%d" % self.seq)
            sent_file = os.path.join(self.tmp, "b-sent-%d" % self.seq)
            cons = self.track(Consumer(topic, n, out=arr_file))
            relay = self.track(Relay(self.tmp, "bench-%s-b%d" % (RUN, self.seq), url,
                                     notify=notify, binary=binary, kafka_props=kafka_props))
            relay.wait_publishing()
            relay.find_backend()
            time.sleep(0.5)
            cpu0 = relay.cpu_us()
            b0 = pid_cpu_us(relay.backend) if relay.backend else None
            w = self.track(Proc([WRITER, "steady", "-d", url, "-t", topic, "-r", str(rate), "-s",
                                 str(secs), "-c", str(self.conns_for(rate, per_txn)), "--out", sent_file,
                                 "--rows-per-txn", str(per_txn)], "bench-writer"))
            _, wf = w.wait_prefix("done", secs + 60)
            written = int(wf[1])
            try:
                cons.wait_count(written, 20)
            except RuntimeError:
                pass
            cpu1, hwm = relay.cpu_us(), relay.hwm_kb()
            b1 = pid_cpu_us(relay.backend) if relay.backend else None
            cons.send(signal.SIGTERM)
            done = cons.finish(30)
            relay.stop()
            r = self.b_stats(read_i64(sent_file), cons.arrivals(), rate, secs, wf)
            r.update({"who": who, "notify": notify, "dups": done["dups"], "per_txn": per_txn,
                      "cpu_us_per_row": (cpu1 - cpu0) / max(written, 1), "rss_mb": hwm / 1024.0,
                      "pg_cpu_us_per_row": (b1 - b0) / max(written, 1) if b0 is not None and b1 else None,
                      "scheduled": n, "written": written,
                      "writer_conns": self.conns_for(rate, per_txn)})
            return r
        finally:
            self.pg.drop(dbname)

    def background_writers(self, rate, secs):
        """The relay runs' writer load (same rate, same connections) into a
        scratch database nobody relays: the bare baselines then share the
        machine with the same PostgreSQL work as the relay does."""
        dbname, url = self.copy_db(self.empty_template())
        Pg.run(url, "SELECT outbox.notify_disable()")
        w = self.track(Proc([WRITER, "steady", "-d", url, "-t", "bench-background", "-r", str(rate),
                             "-s", str(secs), "-c", str(self.conns_for(rate)), "--out",
                             os.path.join(self.tmp, "bg-%d" % self.seq)], "background-writer"))
        w.wait_prefix("ready", 30)
        return dbname, w

    def b_bare(self, rate, secs, mode="idempotent"):
        topic = self.steady_topic()
        n = int(rate * secs)
        bg = self.background_writers(rate, secs + 3) if not self.args.bare_quiet else None
        arr_file = os.path.join(self.tmp, "b-arrived-%d" % self.next())
        sent_file = os.path.join(self.tmp, "b-sent-%d" % self.seq)
        cons = self.track(Consumer(topic, n, out=arr_file))
        prod = self.track(Proc([PRODUCER, mode, "-b", BOOTSTRAP, "-t", topic, "-r", str(rate),
                                "-s", str(secs), "--out", sent_file,
                                "--txn-id", "bench-%s-stream%d" % (RUN, self.seq)] + kafka_argv(),
                               "bench-producer"))
        _, f = prod.wait_prefix("done", secs * 3 + 60)
        try:
            cons.wait_count(n, 20)
        except RuntimeError:
            pass
        cons.send(signal.SIGTERM)
        done = cons.finish(30)
        if bg:
            bg[1].stop(signal.SIGKILL)
            self.pg.drop(bg[0])
        r = self.b_stats(read_i64(sent_file), cons.arrivals(), rate, secs, None)
        r.update({"who": "bare " + mode, "notify": None, "dups": done["dups"], "per_txn": None,
                  "background_writers": bg is not None,
                  "cpu_us_per_row": int(f[2]) / n, "rss_mb": int(f[3]) / 1024.0})
        return r

    def b_stats(self, sent, arrived, rate, secs, writer_fields):
        r = {"rate": rate, "seconds": secs}
        r.update(latency_stats(sent, arrived))
        series = backlog_series(sent, arrived, 0.5)
        r["backlog"] = series
        # growth: the mean backlog of the last quarter against the second
        # (the first is warm-up), and the slope over the second half
        q = len(series) // 4
        r["backlog_q2"] = sum(series[q:2 * q]) / q if q else 0
        r["backlog_q4"] = sum(series[3 * q:]) / len(series[3 * q:]) if q else 0
        r["backlog_growth"] = r["backlog_q4"] - r["backlog_q2"]
        r["backlog_slope"] = slope(series[len(series) // 2:]) * 2  # per second
        r["backlog_max"] = max(series) if series else 0
        s = sorted(x for x in sent if x > 0)
        r["achieved_rate"] = (len(s) - 1) / ((s[-1] - s[0]) / 1e9) if len(s) > 1 else 0
        if writer_fields:
            r["writer_late_p99_ms"] = int(writer_fields[4]) / 1000.0
            r["writer_late_max_ms"] = int(writer_fields[5]) / 1000.0
            r["commit_p50_ms"] = int(writer_fields[6]) / 1000.0
            r["commit_p99_ms"] = int(writer_fields[7]) / 1000.0
        # latency in the last third, against the whole
        third = len(sent) * 2 // 3
        r["p99_last_third"] = latency_stats(sent[third:], arrived[third:], first=0)["p99"]
        return r

    def writers_max(self, notify, conns, secs):
        dbname, url = self.copy_db(self.empty_template())
        try:
            Pg.run(url, "SELECT outbox.notify_enable()" if notify else "SELECT outbox.notify_disable()")
            out = subprocess.run([WRITER, "max", "-d", url, "-t", "bench-writers", "-s", str(secs),
                                  "-c", str(conns)], check=True, capture_output=True, text=True).stdout
            f = out.split()
            return {"notify": notify, "conns": conns, "commits_per_s": float(f[3])}
        finally:
            self.pg.drop(dbname)

    def scenario_b(self):
        secs = self.args.steady_seconds
        for rate in self.args.rates:
            runs = [("relay", True, 1), ("relay", False, 1), ("idempotent", None, None),
                    ("txn-stream", None, None)]
            if rate >= 5000 and self.args.batched_writers > 1:
                # the writers cannot commit 5k single-row transactions/s here:
                # the same rows/s in fewer, larger transactions
                runs += [("relay", True, self.args.batched_writers),
                         ("relay", False, self.args.batched_writers)]
            if self.args.compare_relay:
                runs[2:2] = [("compare", True, 1), ("compare", False, 1)]
            for who, notify, per_txn in runs:
                if who == "relay":
                    r = self.b_relay(rate, notify, secs, per_txn)
                elif who == "compare":
                    r = self.b_relay(rate, notify, secs, per_txn, binary=self.args.compare_relay,
                                     who="relay, " + self.args.compare_label,
                                     kafka_props=self.args.compare_props)
                else:
                    r = self.b_bare(rate, secs, who)
                log("B %s %d/s notify=%s rows/txn=%s: p50 %.1f p99 %.1f p99.9 %.1f max %.1f ms, achieved %.0f/s" % (
                    r["who"], rate, notify, per_txn, r["p50"], r["p99"], r["p999"], r["max"], r["achieved_rate"]))
                self.results["B"].append(r)
        for conns in self.args.writer_conns:
            for notify in (False, True):
                r = self.writers_max(notify, conns, self.args.writer_seconds)
                log("B writers max, %d conns, notify=%s: %.0f commits/s" % (conns, notify, r["commits_per_s"]))
                self.results["B_writers"].append(r)

    # -- C: recovery ---------------------------------------------------------------------

    def first_after(self, arrivals, t_ns, lo=1, hi=None):
        hi = len(arrivals) if hi is None else min(hi, len(arrivals))
        best = None
        for seq in range(lo, hi):
            a = arrivals[seq]
            if a > t_ns and (best is None or a < best):
                best = a
        return best

    def c_relay_drain(self, trials):
        parts = 6
        topic = "bench-%s-p%d" % (RUN, parts)
        if topic not in self.kafka.created:
            self.kafka.create(topic, parts)
        tpl = self.backlog_template(parts, topic, self.args.rows)
        dbname, url = self.copy_db(tpl)
        rows, txn_rows = self.args.rows, 10000
        arr_file = os.path.join(self.tmp, "c-arrived-%d" % self.seq)
        name = "bench-%s-c%d" % (RUN, self.seq)
        out = []
        try:
            cons = self.track(Consumer(topic, rows, out=arr_file))
            relay = self.track(Relay(self.tmp, name, url, max_rows=txn_rows))
            relay.wait_publishing()
            for k in range(trials):
                base = cons.count()
                cons.wait_count(base + 2 * txn_rows, 120)
                time.sleep((k * 0.37) % 0.5)  # vary the point in the batch cycle
                relay.kill9()
                before = cons.wait_quiet(1.0, 20)
                relay = self.track(Relay(self.tmp, name, url, max_rows=txn_rows,
                                         tag="-r%d" % k))
                t_pub = relay.wait_publishing()
                cons.wait_count(before + 1, 60)
                out.append({"t_restart": relay.spawn_ns, "t_pub": t_pub, "before": before,
                            "phases": "relay-%s-r%d" % (name, k)})
            relay.stop()
            cons.send(signal.SIGTERM)
            cons.finish(30)
            arrivals = cons.arrivals()
            return self.c_results("relay during A (T=10k)", out, arrivals)
        finally:
            self.pg.drop(dbname)

    def c_relay_steady(self, trials, rate=1000):
        topic = self.steady_topic()
        dbname, url = self.copy_db(self.empty_template())
        secs = trials * 6 + 4
        n = rate * secs
        arr_file = os.path.join(self.tmp, "c-arrived-%d" % self.seq)
        sent_file = os.path.join(self.tmp, "c-sent-%d" % self.seq)
        name = "bench-%s-c%d" % (RUN, self.seq)
        out = []
        try:
            Pg.run(url, "SELECT outbox.notify_enable()")
            cons = self.track(Consumer(topic, n, out=arr_file))
            relay = self.track(Relay(self.tmp, name, url))
            relay.wait_publishing()
            w = self.track(Proc([WRITER, "steady", "-d", url, "-t", topic, "-r", str(rate), "-s",
                                 str(secs), "-c", str(self.conns_for(rate)), "--out", sent_file],
                                "bench-writer"))
            _, f = w.wait_prefix("ready", 30)
            t0 = int(f[1])
            for k in range(trials):
                bench_sleep_until(t0 + int((3 + 6 * k + (k * 0.37) % 0.5) * 1e9))
                relay.kill9()
                before = cons.wait_quiet(1.0, 20)
                relay = self.track(Relay(self.tmp, name, url, tag="-r%d" % k))
                t_pub = relay.wait_publishing()
                cons.wait_count(before + 1, 60)
                out.append({"t_restart": relay.spawn_ns, "t_pub": t_pub, "before": before,
                            "phases": "relay-%s-r%d" % (name, k)})
            w.wait_prefix("done", secs + 60)
            relay.stop()
            cons.send(signal.SIGTERM)
            cons.finish(30)
            return self.c_results("relay during B (1k rows/s)", out, cons.arrivals())
        finally:
            self.pg.drop(dbname)

    def c_bare(self, trials, txn_rows):
        topic = "bench-%s-p6" % RUN
        if topic not in self.kafka.created:
            self.kafka.create(topic, 6)
        arr_file = os.path.join(self.tmp, "c-arrived-%d" % self.next())
        txn_id = "bench-%s-cbare%d" % (RUN, self.seq)
        cons = self.track(Consumer(topic, trials * txn_rows, out=arr_file))
        out = []
        for k in range(trials):
            first = 1 + k * txn_rows
            # the victim: a transaction open with half a batch in the log
            victim = self.track(Proc([PRODUCER, "txn", "-b", BOOTSTRAP, "-t", topic, "--hold-open",
                                      str(txn_rows // 2), "--first", str(10 ** 9), "--txn-id", txn_id,
                                      "--max-bytes", str(max_bytes_for(txn_rows))] + kafka_argv(),
                                     "victim"))
            victim.wait_prefix("open", 60)
            victim.kill9()
            time.sleep(1.0)
            p = self.track(Proc([PRODUCER, "txn", "-b", BOOTSTRAP, "-t", topic, "-n", str(txn_rows),
                                 "-T", str(txn_rows), "--first", str(first), "--txn-id", txn_id,
                                 "--max-bytes", str(max_bytes_for(txn_rows))] + kafka_argv(),
                                "bench-producer", env=phases_env("bare-c%d-%d" % (self.seq, k))))
            t_ready, _ = p.wait_prefix("ready", 60)
            p.wait_prefix("done", 60)
            p.p.wait(30)
            out.append({"t_restart": p.spawn_ns, "t_pub": t_ready, "lo": first, "hi": first + txn_rows,
                        "phases": "bare-c%d-%d" % (self.seq, k)})
        cons.wait_count(trials * txn_rows, 30)
        cons.send(signal.SIGTERM)
        cons.finish(30)
        return self.c_results("bare transactional producer (T=%d)" % txn_rows, out, cons.arrivals())

    def c_results(self, what, trials, arrivals):
        rows = []
        for t in trials:
            first = self.first_after(arrivals, t["t_restart"], t.get("lo", 1), t.get("hi"))
            row = {"restart_to_ready_s": (t["t_pub"] - t["t_restart"]) / 1e9,
                   "restart_to_first_row_s": (first - t["t_restart"]) / 1e9 if first else None}
            ev = phase_events(t["phases"]) if t.get("phases") else []
            init = [d for _, n, d in ev if n == "kafka init_transactions"]
            ckpt = [d for _, n, d in ev if n == "kafka consumer_poll"]
            if init:
                # init_transactions waits for the broker to abort a transaction
                # the killed process left open (about 0.5 s here)
                row["init_transactions_s"] = init[0] / 1e3
                row["txn_open_at_kill"] = init[0] > 100
            if ckpt:
                row["checkpoint_read_s"] = None
                t0 = [tm - d for tm, n, d in ev if n == "kafka new consumer"]
                t1 = [tm for tm, n, d in ev if n == "kafka consumer_close"]
                if t0 and t1:
                    row["checkpoint_read_s"] = (t1[0] - t0[0]) / 1e3
            rows.append(row)
        vals = sorted(r["restart_to_first_row_s"] for r in rows if r["restart_to_first_row_s"] is not None)
        opened = sorted(r["restart_to_first_row_s"] for r in rows
                        if r.get("txn_open_at_kill") and r["restart_to_first_row_s"] is not None)
        res = {"what": what, "trials": rows,
               "median_s": statistics.median(vals) if vals else None, "max_s": vals[-1] if vals else None,
               "median_open_s": statistics.median(opened) if opened else None}
        log("C %s: %s" % (what, ", ".join("%.2f s" % v for v in vals)))
        return res

    # -- P: instruction profile ----------------------------------------------------------

    def scenario_p(self):
        """The relay and the bare producer under callgrind, draining the same
        small backlog (transactions of 10k rows, 6 partitions)."""
        rows, txn_rows = self.args.profile_rows, 10000
        topic = self.kafka.create("bench-%s-prof" % RUN, 6)
        dbname = "bench_%s_prof" % RUN
        url = self.pg.create(dbname)
        Pg.install(url)
        subprocess.run([WRITER, "load", "-d", url, "-t", topic, "-n", str(rows)], check=True,
                       stdout=subprocess.DEVNULL)
        Pg.run(url, "VACUUM (ANALYZE) outbox.event")
        res = {"rows": rows}
        cons = self.track(Consumer(topic, rows, want=rows))
        name = "bench-%s-prof" % RUN
        conf = Relay.__new__(Relay)  # only its configuration file
        Relay.write_conf(conf, self.tmp, name, url, max_rows=txn_rows)
        out = os.path.join(self.tmp, "relay.cg")
        relay = self.track(Proc(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                                 RELAY, "run", "-c", conf.conf], "relay-callgrind", stream="stderr"))
        relay.wait_line(lambda l: "publishing" in l, 300)
        cons.finish(1800)
        relay.stop(signal.SIGTERM, 300)
        self.kafka.created.add(name + "-ckpt")
        res["relay"] = callgrind_summary(out)
        cons = self.track(Consumer(topic, rows, want=rows))
        out = os.path.join(self.tmp, "bare.cg")
        bare = self.track(Proc(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                                PRODUCER, "txn", "-b", BOOTSTRAP, "-t", topic, "-n", str(rows), "-T",
                                str(txn_rows), "--txn-id", name + "-bare"] + kafka_argv(), "bare-callgrind"))
        cons.finish(1800)
        bare.p.wait(300)
        res["bare"] = callgrind_summary(out)
        self.pg.drop(dbname)
        self.results["P"] = res

    def scenario_c(self):
        trials = self.args.trials
        self.results["C"].append(self.c_bare(trials, 10000))
        self.results["C"].append(self.c_relay_drain(trials))
        self.results["C"].append(self.c_bare(trials, 1000))
        self.results["C"].append(self.c_relay_steady(trials))


def callgrind_summary(path, top=12):
    """Total instructions and the top exclusive functions of a callgrind file."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True,
                         text=True).stdout
    total, funcs = None, []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        if not m:
            continue
        ir, pct, what = int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3)
        if "PROGRAM TOTALS" in what:
            total = ir
        elif len(funcs) < top:
            what = re.sub(r"^\S*/(\S+?):", r"\1:", what)  # shorter file names
            funcs.append((ir, pct, what))
    return total, funcs


def bench_sleep_until(t_ns):
    d = (t_ns - now_ns()) / 1e9
    if d > 0:
        time.sleep(d)


# --- report --------------------------------------------------------------------------

def fmt(v, spec="%.0f"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return spec % v


def yes(ok):
    return "**met**" if ok else "**not met**"


def report(res):
    out = []
    p = out.append
    if res["A"]:
        p("### A. Backlog drain (%d rows, 256-byte payloads, 16 keys)\n" % res["args"]["rows"])
        p("| partitions | txn rows | relay rows/s | bare txn producer rows/s | ratio | relay CPU µs/row | "
          "relay's PG backend CPU µs/row | bare CPU µs/row | relay peak RSS MB | bare peak RSS MB | "
          "relay start-up s |")
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        keys = sorted({(r["partitions"], r["txn_rows"], r["who"]) for r in res["A"] if r["who"] != "bare"})
        for key3 in keys:
            key = key3[:2]
            rel = [r for r in res["A"] if (r["partitions"], r["txn_rows"]) == key and r["who"] == key3[2]]
            bare = [r for r in res["A"] if (r["partitions"], r["txn_rows"]) == key and r["who"] == "bare"]
            if not rel or not bare:
                continue
            br = max(rel, key=lambda r: r["rows_per_s"])
            bb = max(bare, key=lambda r: r["rows_per_s"])
            p("| %d | %d%s | %s | %s | %.2f | %s | %s | %s | %.1f | %.1f | %.2f |" % (
                key[0], key[1], "" if key3[2] == "relay" else " (%s)" % key3[2][len("relay, "):],
                fmt(br["rows_per_s"]), fmt(bb["rows_per_s"]),
                br["rows_per_s"] / bb["rows_per_s"], fmt(br["cpu_us_per_row"], "%.2f"),
                fmt(br["pg_cpu_us_per_row"], "%.2f"), fmt(bb["cpu_us_per_row"], "%.2f"),
                max(r["rss_mb"] for r in rel), bb["rss_mb"], br["startup_s"]))
        p("")
        mc = [r for r in res["A"] if r.get("machine")]
        if mc:
            p("CPU per row in the same runs (µs; broker = the local Kafka JVM, which other "
              "users of this machine may also load) and the machine's state during the drain:\n")
            p("| partitions | txn rows | who | producer process | its PG backend | Kafka broker | "
              "consumer | machine busy | idle | steal |")
            p("|---|---|---|---|---|---|---|---|---|---|")
            for r in sorted(mc, key=lambda r: (r["partitions"], r["txn_rows"], r["who"])):
                m = r["machine"]
                p("| %d | %d | %s | %.2f | %s | %s | %.2f | %.0f%% | %.0f%% | %.0f%% |" % (
                    r["partitions"], r["txn_rows"], r["who"], r["cpu_us_per_row"],
                    fmt(r.get("pg_cpu_us_per_row"), "%.2f"), fmt(r.get("broker_cpu_us_per_row"), "%.2f"),
                    r["consumer_cpu_us_per_row"], 100 * m["busy"], 100 * m["idle"], 100 * m["steal"]))
            p("")
        ph = [r for r in res["A"] if r.get("phases")]
        if ph:
            p("Where the main thread's wall time goes, ms per transaction (phase timer, same runs):\n")
            p("| partitions | txn rows | who | PG fetch (window_open + read_page) | produce loop | "
              "Kafka commit | PG advance | sum | rows/s |")
            p("|---|---|---|---|---|---|---|---|---|")
            for r in sorted(ph, key=lambda r: (r["partitions"], r["txn_rows"], r["who"])):
                x = r["phases"]
                tot = x["fetch_ms"] + x["produce_ms"] + x["commit_ms"] + x["advance_ms"]
                p("| %d | %d | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %s |" % (
                    r["partitions"], r["txn_rows"], r["who"], x["fetch_ms"], x["produce_ms"],
                    x["commit_ms"], x["advance_ms"], tot, fmt(r["rows_per_s"])))
            p("")
        p("Plain SELECT of the same rows (`COPY (SELECT ... ORDER BY id) TO '/dev/null'`, best of 2): " +
          ", ".join("%s rows/s (%d partitions' backlog)" % (fmt(s["rows_per_s"]), s["partitions"])
                    for s in res["A_select"]))
        p("")
    if res["B"]:
        p("### B. Steady ingest, latency COMMIT returned → read_committed consumer (ms)\n")
        p("| rate rows/s | producer | achieved rate | p50 | p99 | p99.9 | max | p99 last third | "
          "missing | backlog max rows | backlog growth rows (Q4 − Q2) | CPU µs/row | RSS MB |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in res["B"]:
            if r["who"].startswith("relay"):
                who = "%s, NOTIFY %s" % (r["who"], "on" if r["notify"] else "off (poll 200 ms)")
                if r.get("per_txn", 1) > 1:
                    who += ", writers %d rows/txn" % r["per_txn"]
            elif r["who"] == "bare idempotent":
                who = "bare idempotent producer"
            else:
                who = "bare txn producer, back-to-back txns"
            if not r["who"].startswith("relay") and r.get("background_writers"):
                who += " (+ same writer load)"
            p("| %d | %s | %s | %s | %s | %s | %s | %s | %d | %d | %s | %s | %.1f |" % (
                r["rate"], who, fmt(r["achieved_rate"]), fmt(r["p50"], "%.1f"), fmt(r["p99"], "%.1f"),
                fmt(r["p999"], "%.1f"), fmt(r["max"], "%.1f"), fmt(r["p99_last_third"], "%.1f"),
                r["missing"], r["backlog_max"], fmt(r.get("backlog_growth"), "%.0f"),
                fmt(r["cpu_us_per_row"], "%.1f"), r["rss_mb"]))
        p("")
        wr = [r for r in res["B"] if r["who"] == "relay"]  # the writers of the relay runs
        if wr:
            p("Writers: " + "; ".join("%d/s (%d rows/txn, %d connections, NOTIFY %s): commit p50 %.2f ms, "
                                      "p99 %.2f ms, start late p99 %.1f ms" % (
                                          r["rate"], r["per_txn"], r["writer_conns"],
                                          "on" if r["notify"] else "off", r["commit_p50_ms"],
                                          r["commit_p99_ms"], r["writer_late_p99_ms"]) for r in wr))
            p("")
    if res["B_writers"]:
        p("Writers' maximum throughput (single-row transactions, closed loop, relay not running):\n")
        p("| connections | NOTIFY trigger off, commits/s | NOTIFY trigger on, commits/s | on/off |")
        p("|---|---|---|---|")
        for conns in sorted({r["conns"] for r in res["B_writers"]}):
            off = [r for r in res["B_writers"] if r["conns"] == conns and not r["notify"]]
            on = [r for r in res["B_writers"] if r["conns"] == conns and r["notify"]]
            if off and on:
                p("| %d | %s | %s | %.2f |" % (conns, fmt(off[0]["commits_per_s"]), fmt(on[0]["commits_per_s"]),
                                              on[0]["commits_per_s"] / off[0]["commits_per_s"]))
        p("")
    if res["C"]:
        p("### C. Recovery after kill -9 (s)\n")
        p("| what | restart → ready (publishing / init_transactions done) | restart → first new row visible | "
          "of which init_transactions (* = a transaction was open) | of which checkpoint read | median | "
          "median, transaction open | max |")
        p("|---|---|---|---|---|---|---|---|")
        for c in res["C"]:
            p("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                c["what"], ", ".join(fmt(t["restart_to_ready_s"], "%.2f") for t in c["trials"]),
                ", ".join(fmt(t["restart_to_first_row_s"], "%.2f") for t in c["trials"]),
                ", ".join(fmt(t.get("init_transactions_s"), "%.2f") + ("*" if t.get("txn_open_at_kill") else "")
                          for t in c["trials"]),
                ", ".join(fmt(t.get("checkpoint_read_s"), "%.2f") for t in c["trials"]),
                fmt(c["median_s"], "%.2f"), fmt(c.get("median_open_s"), "%.2f"), fmt(c["max_s"], "%.2f")))
        p("")
    if res.get("P"):
        P = res["P"]
        p("### P. Instructions (callgrind), %d rows in 10k-row transactions, 6 partitions\n" % P["rows"])
        for who in ("relay", "bare"):
            total, funcs = P[who]
            p("%s: %s instructions, %.0f per row (whole process, start-up included). Top functions "
              "(exclusive):\n" % (who, "{:,}".format(total or 0), (total or 0) / P["rows"]))
            p("| Ir | % | function |")
            p("|---|---|---|")
            for ir, pct, what in funcs:
                p("| %s | %.1f | `%s` |" % ("{:,}".format(ir), pct, what))
            p("")
    p(targets(res))
    return "\n".join(out)


def targets(res):
    out = ["### Targets\n", "| target | measured | verdict |", "|---|---|---|"]
    p = out.append
    rel = [r for r in res["A"] if r["who"] == "relay"]
    if rel:
        for key in sorted({(r["partitions"], r["txn_rows"]) for r in rel}):
            br = max((r for r in rel if (r["partitions"], r["txn_rows"]) == key), key=lambda r: r["rows_per_s"])
            bare = [r for r in res["A"] if r["who"] == "bare" and (r["partitions"], r["txn_rows"]) == key]
            if not bare:
                continue
            bb = max(bare, key=lambda r: r["rows_per_s"])
            ratio = br["rows_per_s"] / bb["rows_per_s"]
            p("| A p=%d T=%d: ≥ 0.8 × bare | %.2f × | %s |" % (key[0], key[1], ratio, yes(ratio >= 0.8)))
            p("| A p=%d T=%d: ≥ 100k rows/s | %s rows/s (bare: %s) | %s |" % (
                key[0], key[1], fmt(br["rows_per_s"]), fmt(bb["rows_per_s"]), yes(br["rows_per_s"] >= 100000)))
            rss = max(r["rss_mb"] for r in rel if (r["partitions"], r["txn_rows"]) == key)
            p("| A p=%d T=%d: relay RSS ≤ 50 MB | %.1f MB | %s |" % (key[0], key[1], rss, yes(rss <= 50)))
    for r in res["B"]:
        if r["who"] == "relay" and r["rate"] == 1000:
            p("| B 1k/s NOTIFY %s: p99 ≤ 25 ms | %.1f ms | %s |" % (
                "on" if r["notify"] else "off", r["p99"], yes(r["p99"] <= 25)))
        if r["who"] == "relay" and r["rate"] == 5000:
            # growing by less than 100 ms worth of rows between the second
            # and the last quarter, and every row arrived
            kept_up = r["missing"] == 0 and r["backlog_growth"] < 0.1 * r["achieved_rate"]
            reached = r["achieved_rate"] >= 0.95 * r["rate"]
            verdict = yes(kept_up) if reached else (
                "relay kept up: %s; **the writers reached only %s rows/s** (rate not reached on this machine)"
                % ("yes" if kept_up else "no", fmt(r["achieved_rate"])))
            p("| B 5k/s NOTIFY %s, %d row(s)/txn: no backlog growth | writers %s rows/s; backlog mean "
              "%.0f rows in the 2nd quarter, %.0f in the 4th, max %d; p99 %.1f ms (last third %s) | %s |" % (
                  "on" if r["notify"] else "off", r["per_txn"], fmt(r["achieved_rate"]), r["backlog_q2"],
                  r["backlog_q4"], r["backlog_max"], r["p99"], fmt(r["p99_last_third"], "%.1f"), verdict))
    cs = {c["what"]: c for c in res["C"]}
    for rel_name, bare_name in (("relay during A (T=10k)", "bare transactional producer (T=10000)"),
                                ("relay during B (1k rows/s)", "bare transactional producer (T=1000)")):
        c, b = cs.get(rel_name), cs.get(bare_name)
        if c and c["median_s"] is not None:
            p("| C %s: ≤ 2 s | median %.2f s, max %.2f s | %s |" % (rel_name, c["median_s"], c["max_s"],
                                                                yes(c["max_s"] <= 2)))
            if b and b["median_s"]:
                # like for like: the bare producer is always killed with its
                # transaction open; compare with the relay's kills that also
                # left one open when there were any
                rel_med = c.get("median_open_s") or c["median_s"]
                ratio = rel_med / b["median_s"]
                p("| C %s: ≤ 1.5 × bare | %.2f × (relay median %.2f s%s, bare median %.2f s) | %s |" % (
                    rel_name, ratio, rel_med, " over kills with a transaction open" if c.get("median_open_s") else "",
                    b["median_s"], yes(ratio <= 1.5)))
    return "\n".join(out) + "\n"


def machine():
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = open("/proc/loadavg").read().split()[:3]
    return "nproc %d (%s), memory %s, load average at start %s, %s UTC" % (
        os.cpu_count(), cpu, mem, " ".join(load), time.strftime("%Y-%m-%d %H:%M", time.gmtime()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="200k rows, transaction size 10k only, 10 s of steady load, 2 recovery trials")
    ap.add_argument("--only", default="ABC",
                    help="scenarios to run, e.g. A or BC (default ABC); P = callgrind profile of the "
                         "relay and the bare producer (slow, not in the default)")
    ap.add_argument("--profile-rows", type=int, default=50000, help="backlog rows for P")
    ap.add_argument("--rows", type=int, help="backlog rows for A and C (default 1000000)")
    ap.add_argument("--txn-sizes", help="comma-separated transaction sizes (default 1000,10000,100000)")
    ap.add_argument("--partitions", help="comma-separated partition counts for A (default 1,6)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each A pair, alternating order")
    ap.add_argument("--compare-relay", metavar="BINARY",
                    help="A and B: also run this other outbox-relay build (before/after a change)")
    ap.add_argument("--compare-label", default="candidate", help="its name in the tables")
    ap.add_argument("--compare-props", metavar="NAME=VALUE,...", default="",
                    type=lambda v: [p for p in v.split(",") if p],
                    help="librdkafka properties for --compare-relay only, after the relay's own "
                         "(e.g. linger.ms=0; the same binary with other settings)")
    ap.add_argument("--retention-variant", action="store_true",
                    help="A: also drain with postgres.retention_ms set (no DELETE while draining)")
    ap.add_argument("--rates", help="comma-separated steady rates (default 100,1000,5000)")
    ap.add_argument("--steady-seconds", type=int, help="seconds of steady load per B run (default 30)")
    ap.add_argument("--writer-conns", default="1,4,16", help="connections for the writers' max throughput")
    ap.add_argument("--bare-quiet", action="store_true",
                    help="B: run the bare baselines without the writers' load in the background")
    ap.add_argument("--batched-writers", type=int, default=10,
                    help="at 5k rows/s, also run writers committing this many rows per transaction")
    ap.add_argument("--writer-seconds", type=int, default=10)
    ap.add_argument("--trials", type=int, help="kills per recovery scenario (default 5)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds one drain may take")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--no-phases", action="store_true",
                    help="do not run the relay and the bare producer under the phase timer (libphases.so)")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a saved --json run and exit")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            res = json.load(f)
        print(res.get("header", "") + "\n")
        print(report(res))
        return
    q = args.quick
    args.rows = args.rows or (200000 if q else 1000000)
    args.txn_sizes = [int(x) for x in (args.txn_sizes or ("10000" if q else "1000,10000,100000")).split(",")]
    args.partitions = [int(x) for x in (args.partitions or "1,6").split(",")]
    args.rates = [int(x) for x in (args.rates or "100,1000,5000").split(",")]
    args.steady_seconds = args.steady_seconds or (10 if q else 30)
    args.writer_conns = [int(x) for x in args.writer_conns.split(",")]
    args.trials = args.trials or (2 if q else 5)

    for path in (RELAY, PRODUCER, CONSUMER, WRITER):
        if not os.access(path, os.X_OK):
            sys.exit("bench: %s is missing: run bench/run.sh, which builds it" % path)
    b = Bench(args)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))
    header = "Machine: %s. Run %s: %s" % (machine(), RUN, " ".join(sys.argv[1:]) or "(full)")
    extra = " ".join("%s=%s" % (k, os.environ[k]) for k in ("BENCH_RELAY_KAFKA_PROPS",) if os.environ.get(k))
    if extra:
        header += " (environment: %s)" % extra
    b.results["header"] = header
    log(header)
    try:
        if "A" in args.only:
            b.scenario_a()
        if "B" in args.only:
            b.scenario_b()
        if "C" in args.only:
            b.scenario_c()
        if "P" in args.only:
            b.scenario_p()
    finally:
        b.cleanup()
        b.results["end"] = "load average at end %s, %s UTC" % (
            " ".join(open("/proc/loadavg").read().split()[:3]), time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(b.results, f, indent=1)
    print(header + "; " + b.results["end"] + "\n")
    print(report(b.results))


if __name__ == "__main__":
    main()
