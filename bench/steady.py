#!/usr/bin/python3
"""steady.py: what the relay costs at steady load, variant against variant.

Run it through bench/run.sh --only S (which builds the relay and the C
programs first) or directly once they are built. For each variant (a relay
binary, NOTIFY on or off, and any extra relay configuration), in rounds that
alternate the variants:

  * steady load at each rate (default 100, 1000, 10000 rows/s) for SECONDS
    (default 60): bench-writer steady, 4 connections, one 256-byte row per
    transaction (10 rows per transaction from --batch-rate on, default
    10000 rows/s, which single-row transactions cannot reach on this
    machine), rows spread round-robin over 3 topics of 1 partition each,
    created with message.timestamp.type=LogAppendTime;
  * CPU seconds over the measured interval of the relay, the Kafka broker and
    PostgreSQL (every server process of the cluster, the writers' backends
    included), per minute and per row;
  * latency per row, COMMIT returned -> broker append (the record's
    LogAppendTime, ms resolution) and COMMIT returned -> arrival at a
    read_committed consumer;
  * after the last rate, in the same relay process: IDLE seconds without
    writes (relay, PostgreSQL and broker CPU per minute), then the wake-up
    latency of single rows written one every 500 ms.

Variants: --variant NAME=[BINARY][:key=value;key=value...] (repeatable) or
--variants FILE.json; bench/README.md ("S. Steady cost") describes both.

Every database (bench_<run>_*) and topic (steady-<run>-*) it creates is
dropped at the end, also after a failure or Ctrl-C.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import (BOOTSTRAP, CLK_TCK, CONSUMER, KAFKA_PROPS, OWNER, PG_URL, RELAY, RUN, WRITER,  # noqa: E402
                   Kafka, Pg, Proc, Relay, broker_pid, cpu_times, fmt, machine, machine_share,
                   percentile, pid_cpu_us, read_i64)


def log(msg):
    print("steady: " + msg, file=sys.stderr, flush=True)


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


# --- variants ----------------------------------------------------------------------

def conf_value(v):
    """A relay configuration value in libconfig syntax: numbers, true/false,
    "quoted strings", [lists] and { groups } pass as they are; anything
    else is quoted."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[ %s ]" % ", ".join(conf_value(x) for x in v)
    v = str(v).strip()
    if re.fullmatch(r"-?(0x[0-9a-fA-F]+|[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?)L?|true|false", v, re.I) or \
            v[:1] in ('"', "[", "{", "("):
        return v
    return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')


ON = ("1", "on", "true", "yes")


class Variant:
    """A relay binary, NOTIFY on or off, and configuration settings
    ("group.name" -> value, dotted for nested groups) and librdkafka
    properties on top of the base configuration (scenario B's)."""

    def __init__(self, name, binary=None, notify=True, settings=None, kprops=None, schema=None,
                 pghost=None, sql=None):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError("variant name %r: letters, digits, '.', '_', '-' only" % name)
        self.name = name
        self.binary = os.path.abspath(binary) if binary else RELAY
        self.notify = notify
        self.settings = dict(settings or {})
        self.kprops = dict(kprops or {})
        # None: install.sql's latest; N: its migrations up to N (a relay
        # built for that schema, e.g. before the partitioned outbox)
        self.schema = int(schema) if schema else None
        # the relay's own connection through another host (a Unix socket
        # directory, say); the writers keep the run's URL
        self.pghost = pghost or None
        # an SQL file run after the install (a schema probe, say)
        self.sql = os.path.abspath(sql) if sql else None
        if self.sql and not os.path.isfile(self.sql):
            raise ValueError("variant %s: sql file %s does not exist" % (name, self.sql))
        if not os.access(self.binary, os.X_OK):
            raise ValueError("variant %s: %s is not an executable" % (name, self.binary))

    @classmethod
    def parse(cls, spec):
        """NAME=[BINARY][:key=value;key=value...]. key "notify" (on/off) is
        the variant's NOTIFY; "schema" (N) installs install.sql's migrations
        up to N only; "pghost" (a host or Unix socket directory) is where the
        relay connects to PostgreSQL; "sql" (a file) is run after the
        install, before the relay starts; "librdkafka.NAME" adds a kafka.properties entry
        NAME=value; anything else is a relay setting "group.name"."""
        if "=" not in spec:
            raise ValueError("--variant %r: NAME=[BINARY][:key=value;...]" % spec)
        name, rest = spec.split("=", 1)
        binary, _, opts = rest.partition(":")
        notify, settings, kprops, schema, pghost, sql = True, {}, {}, None, None, None
        for kv in (x.strip() for x in opts.split(";")):
            if not kv:
                continue
            if "=" not in kv:
                raise ValueError("variant %s: %r is not key=value" % (name, kv))
            k, v = (x.strip() for x in kv.split("=", 1))
            if k == "notify":
                notify = v.lower() in ON
            elif k == "schema":
                schema = v
            elif k == "pghost":
                pghost = v
            elif k == "sql":
                sql = v
            elif k.startswith("librdkafka."):
                kprops[k[len("librdkafka."):]] = v
            elif "." in k:
                settings[k] = v
            else:
                raise ValueError("variant %s: %r is neither notify, schema, pghost, sql, librdkafka.NAME nor "
                                 "group.name"
                                 % (name, k))
        return cls(name, binary or None, notify, settings, kprops, schema, pghost, sql)

    @classmethod
    def from_json(cls, obj):
        n = obj.get("notify", True)
        return cls(obj["name"], obj.get("binary"), n if isinstance(n, bool) else str(n).lower() in ON,
                   obj.get("config", {}), {k: str(v) for k, v in obj.get("librdkafka", {}).items()},
                   obj.get("schema"), obj.get("pghost"), obj.get("sql"))

    def describe(self):
        return describe(self.to_json())

    def to_json(self):
        return {"name": self.name, "binary": self.binary, "notify": self.notify,
                "config": self.settings, "librdkafka": self.kprops, "schema": self.schema,
                "pghost": self.pghost, "sql": self.sql}

    def conf_text(self, name, url, ckpt_topic):
        """The relay's configuration file: scenario B's (bench.py Relay),
        then this variant's settings."""
        props = dict(p.split("=", 1) for p in KAFKA_PROPS)
        props.update(p.split("=", 1) for p in os.environ.get("BENCH_RELAY_KAFKA_PROPS", "").split(",") if p)
        props.update(self.kprops)
        tree = {
            "relay": {"name": name, "owner": OWNER},
            "postgres": {"conninfo": url if not self.pghost else
                         url + ("&" if "?" in url else "?") + "host=" + urllib.parse.quote(self.pghost, safe=""),
                         "retention_ms": 0},
            "kafka": {"bootstrap_servers": BOOTSTRAP, "checkpoint_topic": ckpt_topic,
                      "properties": ["%s=%s" % kv for kv in props.items()]},
            "batch": {"max_rows": 10000, "max_bytes": 16 << 20, "max_wait_ms": 0,
                      "poll_interval_ms": 200, "notify": self.notify},
            "http": {"listen": ""},
            "log": {"level": os.environ.get("BENCH_RELAY_LOG_LEVEL", "info"), "format": "text"},
        }
        for key, value in self.settings.items():
            *groups, leaf = key.split(".")
            node = tree
            for g in groups:
                node = node.setdefault(g, {})
                if not isinstance(node, dict):
                    raise ValueError("variant %s: %s is not a group" % (self.name, g))
            node[leaf] = value

        def render(node, indent):
            out = []
            for k, v in node.items():
                if isinstance(v, dict):
                    out.append("%s%s = {\n%s%s};" % (indent, k, render(v, indent + "  "), indent))
                else:
                    out.append("%s%s = %s;" % (indent, k, conf_value(v)))
            return "".join(line + "\n" for line in out)

        return render(tree, "")


def describe(v):
    """A variant (as to_json gives it) in words."""
    parts = ["NOTIFY %s" % ("on" if v["notify"] else "off")]
    if v.get("schema"):
        parts.append("schema %s" % v["schema"])
    if v.get("pghost"):
        parts.append("relay's PostgreSQL host %s" % v["pghost"])
    if v.get("sql"):
        parts.append("then %s" % os.path.relpath(v["sql"], bench.ROOT))
    parts += ["%s=%s" % kv for kv in sorted(v["config"].items())]
    parts += ["librdkafka %s=%s" % kv for kv in sorted(v["librdkafka"].items())]
    parts.append("relay " + (os.path.relpath(v["binary"], bench.ROOT) if v["binary"].startswith(bench.ROOT)
                             else v["binary"]))
    return ", ".join(parts)


class VariantRelay(Relay):
    def __init__(self, tmp, name, url, variant):
        self.conf = os.path.join(tmp, "relay-%s.conf" % name)
        self.ckpt_topic = name + "-ckpt"
        self.url = url
        with open(self.conf, "w") as f:
            f.write(variant.conf_text(name, url, self.ckpt_topic))
        Proc.__init__(self, [variant.binary, "run", "-c", self.conf], "relay", stream="stderr")
        self.backend = None


class TopicsConsumer(bench.Consumer):
    """bench-consumer on several topics from their ends, keeping arrival
    times (out) and record timestamps (ts_out) per seq."""

    def __init__(self, topics, max_seq, out, ts_out, timeout):
        Proc.__init__(self, [CONSUMER, "-b", BOOTSTRAP, "-t", ",".join(topics), "--max-seq", str(max_seq),
                             "--timeout", str(timeout), "--from-end", "--out", out, "--out-ts", ts_out],
                      "consumer")
        self.out, self.ts_out = out, ts_out
        self.wait_prefix("assigned", 30)


class NoRelay:
    pid, backend, ckpt_topic = 0, None, None


class Offsets:
    """High watermarks, for the relay's Kafka transactions: every committed
    batch writes one checkpoint record to partition 0 of the relay's
    checkpoint topic, and its commit marker takes one more offset there."""

    def __init__(self):
        from confluent_kafka import Consumer as KConsumer
        self.c = KConsumer({"bootstrap.servers": BOOTSTRAP, "group.id": "steady-offsets-%s" % RUN,
                            "enable.auto.commit": False})

    def high(self, topic):
        if not topic:
            return None
        from confluent_kafka import TopicPartition
        try:
            return self.c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
        except Exception:
            return None

    def close(self):
        self.c.close()


# --- CPU of the PostgreSQL cluster -----------------------------------------------------

def proc_stat(pid):
    """(utime + stime, cutime + cstime) in ticks, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return int(v[11]) + int(v[12]), int(v[13]) + int(v[14])
    except (OSError, IndexError, ValueError):
        return None


def proc_children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def proc_title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


# background processes of the cluster (not backends of a database)
PG_AUX = ("checkpointer", "background writer", "walwriter", "autovacuum launcher", "logical replication launcher",
          "archiver", "stats collector", "startup", "walreceiver", "walsender")


def pg_role(title):
    """What a PostgreSQL child is, from its process title: ("db", NAME) for a
    backend or autovacuum worker of database NAME, ("aux", TITLE) for a
    background process, ("other", TITLE) otherwise."""
    rest = title.strip()
    if rest.startswith("postgres: "):
        rest = rest[len("postgres: "):]
    if rest.startswith("autovacuum worker "):
        t = rest.split()
        return ("db", t[2]) if len(t) > 2 else ("other", rest)
    if rest.startswith(PG_AUX):
        return ("aux", rest.split()[0])
    t = rest.split()
    if len(t) >= 3 and ("(" in t[2] or t[2] == "[local]"):
        return ("db", t[1])
    return ("other", rest)


class PgCpu:
    """CPU of every process of the PostgreSQL cluster behind PG_URL: the
    postmaster's own time and the time of the children it has reaped
    (cutime + cstime: backends and workers that exited), plus the time of
    every live child. Between two snapshots, a backend that exits in between
    counts once: live at the first, in the postmaster's cutime at the
    second.

    A sampler thread (every 0.2 s) also notes each child's role (process
    title: a database's backend, a background process) and its CPU time as
    last seen, so the cluster's time splits into: the backends of this run's
    database (relay + writers + autovacuum; a backend's last < 0.2 s before
    it exits is missed), the background processes (checkpointer, walwriter,
    ...: long-lived, exact) and the rest (other databases: the neighbours)."""

    def __init__(self):
        datadir = Pg.run(PG_URL, "SHOW data_directory")[0][0]
        with open(os.path.join(datadir, "postmaster.pid")) as f:
            self.postmaster = int(f.readline())
        if proc_stat(self.postmaster) is None:
            raise RuntimeError("postmaster %d (of %s) is not visible in /proc" % (self.postmaster, datadir))
        self.lock = threading.Lock()
        self.seen = {}  # pid -> [role, ticks as last seen]
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def snapshot(self):
        """Total ticks of the cluster and {pid: ticks} of its live children."""
        for _ in range(10):
            pm0 = proc_stat(self.postmaster)
            kids = {}
            for pid in proc_children(self.postmaster):
                st = proc_stat(pid)
                if st:
                    kids[pid] = st[0] + st[1]
            pm1 = proc_stat(self.postmaster)
            # a child reaped while we read: read again
            if pm0 and pm1 and pm0[1] == pm1[1]:
                break
        return pm1[0] + pm1[1] + sum(kids.values()), kids

    def _note(self, kids):
        with self.lock:
            for pid, ticks in kids.items():
                e = self.seen.get(pid)
                if e is None:
                    e = self.seen[pid] = [pg_role(proc_title(pid)), 0]
                elif e[0][0] == "other":
                    # A child seen just after its fork still had the
                    # postmaster's title: look again until it says what
                    # it is (else a segment's backends can all count as
                    # "other" and its "ours" read 0).
                    title = proc_title(pid)
                    if title:
                        e[0] = pg_role(title)
                e[1] = ticks
            return {pid: tuple(e) for pid, e in self.seen.items()}

    def _sample(self):
        while not self.stop_ev.wait(0.2):
            kids = {}
            for pid in proc_children(self.postmaster):
                st = proc_stat(pid)
                if st:
                    kids[pid] = st[0] + st[1]
            self._note(kids)

    def forget_dead(self):
        """Drop the exited children (between measurements only)."""
        _, kids = self.snapshot()
        with self.lock:
            self.seen = {pid: e for pid, e in self.seen.items() if pid in kids}

    def read(self):
        """(total ticks, {pid: (role, ticks)} of every child seen, the
        exited ones with their last sampled time)."""
        total, kids = self.snapshot()
        return total, self._note(kids)

    def close(self):
        self.stop_ev.set()


class Meter:
    """CPU of the relay, its PostgreSQL backend, the broker and the
    PostgreSQL cluster (whole, and split as PgCpu says) between start() and
    stop()."""

    def __init__(self, pg, relay, dbname=None, offsets=None):
        self.pg, self.relay, self.dbname, self.offsets = pg, relay, dbname, offsets

    def ckpt_high(self):
        return self.offsets.high(self.relay.ckpt_topic) if self.offsets else None

    def start(self):
        self.t0 = time.time_ns()
        self.load0 = loadavg()
        self.m0 = cpu_times()
        self.relay0 = pid_cpu_us(self.relay.pid)
        self.backend0 = pid_cpu_us(self.relay.backend) if self.relay.backend else None
        self.broker0 = pid_cpu_us(broker_pid() or 0)
        self.pg0, self.kids0 = self.pg.read()
        self.ckpt0 = self.ckpt_high()
        return self

    def stop(self, rows=None):
        pg1, kids1 = self.pg.read()
        t1 = time.time_ns()
        ckpt1 = self.ckpt_high()
        relay1 = pid_cpu_us(self.relay.pid)
        backend1 = pid_cpu_us(self.relay.backend) if self.relay.backend else None
        broker1 = pid_cpu_us(broker_pid() or 0)
        m1 = cpu_times()
        secs = (t1 - self.t0) / 1e9
        tick_us = 1e6 / CLK_TCK
        ours = aux = 0
        for pid, (role, ticks) in kids1.items():
            k0 = self.kids0.get(pid)
            dt = ticks - (k0[1] if k0 else 0)
            if role == ("db", self.dbname):
                ours += dt
            elif role[0] == "aux":
                aux += dt

        def d(a, b):
            return (b - a) if a is not None and b is not None else None

        pg = (pg1 - self.pg0) * tick_us
        cpu = {"relay": d(self.relay0, relay1), "relay_backend": d(self.backend0, backend1),
               "broker": d(self.broker0, broker1), "pg": pg,
               "pg_ours": ours * tick_us if self.dbname else None, "pg_aux": aux * tick_us,
               "pg_ours_aux": (ours + aux) * tick_us if self.dbname else None}
        # checkpoint record + commit marker per relay transaction
        txns = (ckpt1 - self.ckpt0) / 2 if ckpt1 is not None and self.ckpt0 is not None else None
        out = {"seconds": secs, "load_start": self.load0, "load_end": loadavg(), "kafka_txns": txns,
               "rows_per_kafka_txn": rows / txns if rows and txns else None,
               "machine": machine_share(self.m0, m1), "cpu_us": cpu,
               "cpu_s_per_min": {k: (v / 1e6 * 60 / secs if v is not None else None) for k, v in cpu.items()}}
        if rows:
            out["cpu_us_per_row"] = {k: (v / rows if v is not None else None) for k, v in cpu.items()}
        if txns:
            # at these rates the relay's cost follows its Kafka transactions
            # more than its rows: how many rows a transaction carries depends
            # on how late the relay is (the machine's load)
            out["cpu_us_per_kafka_txn"] = {k: (v / txns if v is not None else None) for k, v in cpu.items()}
        return out


# --- latency -------------------------------------------------------------------------

def lat_summary(vals):
    vals = sorted(vals)
    return {"n": len(vals), "p50": percentile(vals, 0.5), "p99": percentile(vals, 0.99),
            "max": vals[-1] if vals else float("nan"), "min": vals[0] if vals else float("nan")}


def row_stats(sent, arrived, stamped):
    """commit->append and commit->consumer latencies (ms) of every row the
    writers committed, the rows that never arrived, and rows that arrived
    without a COMMIT the writers saw return."""
    app, cons, missing, unexpected, not_log_append = [], [], 0, 0, 0
    for seq in range(1, max(len(sent), len(arrived))):
        s = sent[seq] if seq < len(sent) else 0
        a = arrived[seq] if seq < len(arrived) else 0
        if s <= 0:
            if a > 0:
                unexpected += 1
            continue
        if a <= 0:
            missing += 1
            continue
        cons.append((a - s) / 1e6)
        app.append(stamped[seq] - s / 1e6)
    return {"commit_append_ms": lat_summary(app), "commit_consumer_ms": lat_summary(cons),
            "missing": missing, "unexpected": unexpected}


# --- the benchmark ---------------------------------------------------------------------

class Steady:
    def __init__(self, args, variants):
        self.args = args
        self.variants = variants
        self.pg = Pg()
        self.kafka = Kafka()
        self.tmp = tempfile.mkdtemp(prefix="outbox-steady-")
        self.procs = []
        self.seq = 0
        self.topics = []
        self.pgcpu = None
        self.offsets = None
        self.results = {"run": RUN, "args": {k: v for k, v in vars(args).items() if k != "variant"},
                        "variants": [v.to_json() for v in variants], "baseline": None,
                        "rates": [], "idle": [], "wake": [], "perf": [], "problems": [], "warnings": []}

    def track(self, p):
        self.procs.append(p)
        return p

    def next(self):
        self.seq += 1
        return self.seq

    def cleanup(self):
        for p in self.procs:
            try:
                if p.p.poll() is None:
                    p.stop(signal.SIGKILL, 5)
            except Exception:
                pass
        if self.pgcpu:
            self.pgcpu.close()
        if self.offsets:
            try:
                self.offsets.close()
            except Exception:
                pass
        self.pg.drop_all()
        self.kafka.created.update(p.ckpt_topic for p in self.procs if isinstance(p, Relay))
        self.kafka.delete_all()
        subprocess.run(["rm", "-rf", self.tmp])

    def problem(self, msg):
        """Rows lost, duplicated or unaccounted for: the run fails."""
        log("!!! " + msg)
        self.results["problems"].append(msg)

    def warn(self, msg):
        """Conditions that make figures doubtful (rate not reached, relay warnings)."""
        log("warning: " + msg)
        self.results["warnings"].append(msg)

    def setup(self):
        self.pgcpu = PgCpu()
        self.offsets = Offsets()
        name = "bench_%s_steady_empty" % RUN
        Pg.install(self.pg.create(name))
        self.templates = {(None, None): name}
        # LogAppendTime: the broker stamps each record as it appends it
        for i in range(self.args.topics):
            self.topics.append(self.kafka.create("steady-%s-t%d" % (RUN, i), self.args.partitions,
                                                 {"message.timestamp.type": "LogAppendTime"}))

    def consumer(self, n, label):
        arr = os.path.join(self.tmp, "%s-arrived" % label)
        ts = os.path.join(self.tmp, "%s-stamped" % label)
        return self.track(TopicsConsumer(self.topics, n, arr, ts, self.args.seconds + 600))

    def baseline(self):
        """The machine's neighbours: PostgreSQL and broker CPU while nothing
        of this run is running."""
        secs = self.args.baseline_seconds
        if secs <= 0:
            return
        m = Meter(self.pgcpu, NoRelay()).start()
        time.sleep(secs)
        r = m.stop()
        log("baseline (nothing of ours running, %d s): PostgreSQL %.2f CPU s/min (background processes %.2f), "
            "broker %.2f CPU s/min, load %s" % (secs, r["cpu_s_per_min"]["pg"], r["cpu_s_per_min"]["pg_aux"],
                                                r["cpu_s_per_min"]["broker"] or -1, r["load_end"]))
        self.results["baseline"] = r

    # -- one relay process, one or more phases ----------------------------------------

    def segment(self, variant, rnd, phases, perf=False):
        k = self.next()
        dbname = "bench_%s_s%d" % (RUN, k)
        tkey = (variant.schema, variant.sql)
        if tkey not in self.templates:
            name = "bench_%s_steady_empty_t%d" % (RUN, len(self.templates))
            turl = self.pg.create(name)
            Pg.install(turl, variant.schema)
            if variant.sql:
                Pg.run_file(turl, variant.sql)
            self.templates[tkey] = name
        url = self.pg.create(dbname, template=self.templates[tkey])
        relay = None
        try:
            Pg.run(url, "SELECT outbox.notify_enable()" if variant.notify else "SELECT outbox.notify_disable()")
            relay = self.track(VariantRelay(self.tmp, "steady-%s-%d" % (RUN, k), url, variant))
            try:
                relay.wait_publishing(60)
            except RuntimeError:
                raise RuntimeError("variant %s: the relay did not start publishing; its log:\n%s" % (
                    variant.name, "\n".join(l for _, l in relay.lines[-20:])))
            relay.find_backend()
            self.pgcpu.forget_dead()
            time.sleep(self.args.settle)
            for ph in phases:
                if ph == "idle":
                    self.idle(variant, rnd, relay, dbname)
                elif ph == "wake":
                    self.wake(variant, rnd, relay, url, k)
                else:
                    self.rate(variant, rnd, relay, url, dbname, ph, perf)
            warnings = relay.errors()
            if warnings:
                self.warn("variant %s: relay warnings/errors: %s" % (variant.name, warnings[:5]))
            if relay.p.poll() is not None:
                self.problem("variant %s: the relay exited (%s) during the run" % (variant.name, relay.p.poll()))
        finally:
            if relay:
                relay.stop()
            self.pg.drop(dbname)

    def run_writer(self, url, label, rate, secs, conns, per_txn):
        sent = os.path.join(self.tmp, "%s-sent" % label)
        w = self.track(Proc([WRITER, "steady", "-d", url, "-t", ",".join(self.topics), "-r", str(rate),
                             "-s", str(secs), "-c", str(conns), "--rows-per-txn", str(per_txn),
                             "--out", sent], "bench-writer"))
        _, f = w.wait_prefix("ready", 30)
        return w, int(f[1]), sent

    def deliver(self, cons, written, quiet_s):
        """Wait until the consumer has every written row, or none arrived
        for quiet_s (a relay still working through a backlog is waited for)."""
        last, since = -1, time.time()
        while True:
            c = cons.count()
            if c >= written:
                return True
            if c != last:
                last, since = c, time.time()
            elif time.time() - since > quiet_s:
                return False
            time.sleep(0.01)

    def finish_consumer(self, cons):
        cons.send(signal.SIGTERM)
        _, f = cons.wait_prefix("done", 60)
        cons.p.wait(30)
        return {"count": int(f[3]), "dups": int(f[4]), "foreign": int(f[5]),
                "log_append": int(f[7]) if len(f) > 7 else None}

    def check(self, r, what):
        bad = []
        if r["missing"]:
            bad.append("%d MISSING rows (committed, not delivered %s s after the last arrival)" % (
                r["missing"], self.args.drain_quiet))
        if r["dups"]:
            bad.append("%d DUPLICATE records" % r["dups"])
        if r["unexpected"] or r["foreign"]:
            bad.append("%d rows arrived that no writer saw commit, %d foreign records" % (
                r["unexpected"], r["foreign"]))
        if r.get("log_append") is not None and r["log_append"] != r["delivered"]:
            bad.append("%d of %d records without LogAppendTime (commit→append is wrong)" % (
                r["delivered"] - r["log_append"], r["delivered"]))
        if bad:
            self.problem("%s: %s" % (what, "; ".join(bad)))

    def rate(self, variant, rnd, relay, url, dbname, rate, perf):
        secs = self.args.seconds
        per_txn = self.args.batch_rows if rate >= self.args.batch_rate else 1
        n = int(rate * secs)
        label = "%s-r%d" % (dbname, rate)
        cons = self.consumer(n, label)
        w, t0, sent_file = self.run_writer(url, label, rate, secs, self.args.conns, per_txn)
        bench.bench_sleep_until(t0)
        meter = Meter(self.pgcpu, relay, dbname, self.offsets).start()
        perf_proc = None
        if perf:
            perf_file = os.path.join(self.tmp, "%s.perf" % label)
            if self.args.perf_dir:
                perf_file = os.path.join(self.args.perf_dir, "relay-%s-%s-%d.perf" % (RUN, variant.name, rate))
            pid = relay.pid
            if self.args.perf_backend:
                if not relay.backend:
                    raise SystemExit("steady: --perf-backend: the relay's PostgreSQL backend was not found")
                pid = relay.backend
            perf_proc = self.track(Proc(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999",
                                         "--call-graph", self.args.perf_call_graph,
                                         "-p", str(pid), "-o", perf_file], "perf"))
        _, wf = w.wait_prefix("done", secs + 120)
        written = int(wf[1])
        complete = self.deliver(cons, written, self.args.drain_quiet)
        r = meter.stop(rows=written)
        if perf_proc:
            perf_proc.send(signal.SIGINT)
            perf_proc.p.wait(120)
        done = self.finish_consumer(cons)
        w.p.wait(30)
        sent = read_i64(sent_file)
        stats = row_stats(sent, read_i64(cons.out), read_i64(cons.ts_out))
        committed = sorted(x for x in sent if x > 0)
        r.update(stats)
        r.update({"variant": variant.name, "round": rnd, "rate": rate, "per_txn": per_txn,
                  "conns": self.args.conns, "scheduled": n, "written": written,
                  "achieved_rate": (len(committed) - 1) / ((committed[-1] - committed[0]) / 1e9)
                  if len(committed) > 1 else 0,
                  "delivered": done["count"], "dups": done["dups"], "foreign": done["foreign"],
                  "log_append": done["log_append"], "complete": complete,
                  "commit_p50_ms": int(wf[6]) / 1000.0, "commit_p99_ms": int(wf[7]) / 1000.0,
                  "writer_late_p99_ms": int(wf[4]) / 1000.0})
        what = "%s %d rows/s round %d" % (variant.name, rate, rnd)
        self.check(r, what)
        if written < 0.95 * n:
            self.warn("%s: the writers committed only %d of %d rows (%.0f rows/s): the rate was not reached"
                         % (what, written, n, r["achieved_rate"]))
        if perf_proc:
            self.results["perf"].append({"variant": variant.name, "rate": rate,
                                         "process": "relay's PostgreSQL backend" if self.args.perf_backend else "relay",
                                         "file": perf_file
                                         if self.args.perf_dir else None, "call_graph": self.args.perf_call_graph,
                                         "top": perf_top(perf_file, self.args.perf_top)})
        else:
            self.results["rates"].append(r)
        c = r["cpu_s_per_min"]
        log("%s%s: %d rows (%d/txn; relay: %s rows per Kafka transaction), commit→append p50 %.1f p99 %.1f ms, commit→consumer p50 %.1f p99 %.1f ms; "
            "CPU s/min relay %s, broker %s, PostgreSQL %s (ours + background %s); load %s → %s" % (
                what, " (perf)" if perf_proc else "", written, per_txn, fmt(r["rows_per_kafka_txn"], "%.1f"),
                r["commit_append_ms"]["p50"],
                r["commit_append_ms"]["p99"], r["commit_consumer_ms"]["p50"], r["commit_consumer_ms"]["p99"],
                fmt(c["relay"], "%.2f"), fmt(c["broker"], "%.2f"), fmt(c["pg"], "%.2f"),
                fmt(c["pg_ours_aux"], "%.2f"), r["load_start"], r["load_end"]))

    def idle(self, variant, rnd, relay, dbname):
        time.sleep(self.args.idle_settle)
        meter = Meter(self.pgcpu, relay, dbname, self.offsets).start()
        time.sleep(self.args.idle_seconds)
        r = meter.stop()
        r.update({"variant": variant.name, "round": rnd})
        self.results["idle"].append(r)
        c = r["cpu_s_per_min"]
        log("%s idle %d s round %d: relay Kafka transactions %s; CPU s/min relay %s (its backend %s), PostgreSQL %s (ours %s, background %s), "
            "broker %s" % (variant.name, self.args.idle_seconds, rnd, fmt(r["kafka_txns"]), fmt(c["relay"], "%.3f"),
                           fmt(c["relay_backend"], "%.3f"), fmt(c["pg"], "%.3f"), fmt(c["pg_ours"], "%.3f"),
                           fmt(c["pg_aux"], "%.3f"), fmt(c["broker"], "%.3f")))

    def wake(self, variant, rnd, relay, url, k):
        rows, gap = self.args.wake_rows, self.args.wake_interval_ms / 1000.0
        label = "s%d-wake" % k
        cons = self.consumer(rows, label)
        w, t0, sent_file = self.run_writer(url, label, 1 / gap, rows * gap, 1, 1)
        _, wf = w.wait_prefix("done", rows * gap + 60)
        written = int(wf[1])
        complete = self.deliver(cons, written, self.args.drain_quiet)
        done = self.finish_consumer(cons)
        w.p.wait(30)
        r = row_stats(read_i64(sent_file), read_i64(cons.out), read_i64(cons.ts_out))
        r.update({"variant": variant.name, "round": rnd, "rows": rows, "interval_ms": self.args.wake_interval_ms,
                  "written": written, "delivered": done["count"], "dups": done["dups"],
                  "foreign": done["foreign"], "log_append": done["log_append"], "complete": complete})
        self.check(r, "%s wake-up round %d" % (variant.name, rnd))
        self.results["wake"].append(r)
        log("%s wake-up round %d: %d rows, commit→append p50 %.1f p99 %.1f max %.1f ms, commit→consumer p50 %.1f "
            "p99 %.1f max %.1f ms" % (variant.name, rnd, written, r["commit_append_ms"]["p50"],
                                      r["commit_append_ms"]["p99"], r["commit_append_ms"]["max"],
                                      r["commit_consumer_ms"]["p50"], r["commit_consumer_ms"]["p99"],
                                      r["commit_consumer_ms"]["max"]))

    def run(self):
        self.setup()
        self.baseline()
        rates = self.args.rates
        nv = len(self.variants)
        for rnd in range(1, self.args.rounds + 1):
            # round-robin, rotated every round: A B, B A, A B, ...
            order = [self.variants[(i + rnd - 1) % nv] for i in range(nv)]
            for i, rate in enumerate(rates):
                for v in order:
                    phases = [rate]
                    if i == len(rates) - 1 and self.args.idle_seconds > 0:
                        phases += ["idle"] + (["wake"] if self.args.wake_rows > 0 else [])
                    self.segment(v, rnd, phases)
        if self.args.perf:
            for v in self.variants:
                self.segment(v, 0, [self.args.perf], perf=True)


def perf_report(path, sort):
    try:
        return subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children", "--sort", sort,
                               "-g", "none", "--percent-limit", "0.1"],
                              capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return "perf report failed: %s" % e


def perf_top(path, n):
    """The top n symbols by self time of a perf.data file, and the share of
    each object (the relay, librdkafka, libpq, libc, the kernel)."""
    top, objs = [], []
    for line in perf_report(path, "dso,symbol").splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*?)(\s+-\s+-)?\s*$", line)
        if m and len(top) < n:
            top.append([float(m.group(1)), "%s (%s)" % (m.group(3), m.group(2))])
    for line in perf_report(path, "dso").splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)", line)
        if m:
            objs.append([float(m.group(1)), m.group(2)])
    return {"symbols": top, "objects": objs[:8]}


# --- the report ---------------------------------------------------------------------

def med(vals):
    vals = [v for v in vals if v is not None and v == v]
    return statistics.median(vals) if vals else None


def spread(vals, f="%.2f"):
    """median, with the range when there are several rounds"""
    vals = [v for v in vals if v is not None and v == v]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f % vals[0]
    return (f + " (" + f + "–" + f + ")") % (statistics.median(vals), min(vals), max(vals))


def per_txn_ms(rs, who):
    """median CPU ms of who per relay Kafka transaction"""
    v = med([r["cpu_us"][who] / r["kafka_txns"] for r in rs
             if r.get("kafka_txns") and r["cpu_us"].get(who) is not None])
    return fmt(v / 1000 if v is not None else None, "%.2f")


def report(res):
    out = []
    p = out.append
    vnames = [v["name"] for v in res["variants"]]
    vdesc = {v["name"]: describe(v) for v in res["variants"]}
    a = res["args"]
    p("### S. Steady cost\n")
    p("Variants: " + "; ".join("**%s**: %s" % (n, vdesc[n]) for n in vnames) + ".\n")
    p("Load: bench-writer steady, %d connections, 256-byte rows spread round-robin over %d topics of %d "
      "partition(s) (message.timestamp.type=LogAppendTime), one row per transaction below %d rows/s and %d "
      "rows per transaction from it on; %d s per rate, %d round(s), variants alternating. Figures are the "
      "median over rounds, the range in parentheses. CPU per minute is over the measured interval (schedule "
      "start to the last row's arrival); µs/row over the rows committed. PostgreSQL: *cluster* = every "
      "process of the PostgreSQL server, writers' backends included, but also other databases' backends "
      "(the server is shared: see the baseline); *ours + bg* = the backends of this run's database (relay's "
      "backend, writers, autovacuum) plus the server's background processes (checkpointer, walwriter, ...), "
      "the figure to compare on a shared server.\n" % (
          a["conns"], a["topics"], a["partitions"], a["batch_rate"], a["batch_rows"], a["seconds"], a["rounds"]))
    b = res.get("baseline")
    if b:
        c = b["cpu_s_per_min"]
        p("Baseline, nothing of this run running (%.0f s): PostgreSQL cluster %s CPU s/min (of which "
          "background processes %s), broker %s CPU s/min, load %s → %s.\n" % (
              b["seconds"], fmt(c["pg"], "%.2f"), fmt(c["pg_aux"], "%.2f"), fmt(c["broker"], "%.2f"),
              b["load_start"], b["load_end"]))
    if res["problems"]:
        p("**PROBLEMS (rows lost, duplicated or unaccounted for):**\n")
        for x in res["problems"]:
            p("- **%s**" % x)
        p("")
    if res.get("warnings"):
        p("Warnings (figures doubtful):\n")
        for x in res["warnings"]:
            p("- %s" % x)
        p("")
    rates = sorted({r["rate"] for r in res["rates"]})
    if rates:
        p("| system | rate rows/s (rows/txn) | commit→append p50 / p99 ms | relay CPU s/min | broker CPU s/min | "
          "PostgreSQL CPU s/min (writers included): cluster / ours + bg | commit→consumer p50 / p99 ms |")
        p("|---|---|---|---|---|---|---|")
        for rate in rates:
            for vn in vnames:
                rs = [r for r in res["rates"] if r["rate"] == rate and r["variant"] == vn]
                if not rs:
                    continue
                g = lambda key, sub: [r[key][sub] for r in rs]
                p("| %s | %d (%d) | %s / %s | %s | %s | %s / %s | %s / %s |" % (
                    vn, rate, rs[0]["per_txn"], spread(g("commit_append_ms", "p50"), "%.1f"),
                    spread(g("commit_append_ms", "p99"), "%.1f"), spread(g("cpu_s_per_min", "relay")),
                    spread(g("cpu_s_per_min", "broker")), spread(g("cpu_s_per_min", "pg")),
                    spread(g("cpu_s_per_min", "pg_ours_aux")), spread(g("commit_consumer_ms", "p50"), "%.1f"),
                    spread(g("commit_consumer_ms", "p99"), "%.1f")))
        p("")
        p("Details (medians over rounds):\n")
        p("| system | rate | achieved rows/s | rows committed / delivered | missing / dup | relay rows per Kafka txn | "
          "relay / broker CPU ms per Kafka txn | commit→append max ms | "
          "commit→consumer p50 / p99 / max ms | relay µs/row | relay's PG backend CPU s/min (µs/row) | "
          "broker µs/row | PostgreSQL µs/row: cluster / ours + bg | PostgreSQL ours (relay backend + writers) / bg "
          "CPU s/min | writer COMMIT p50 / p99 ms | machine busy / steal | load start → end |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for rate in rates:
            for vn in vnames:
                rs = [r for r in res["rates"] if r["rate"] == rate and r["variant"] == vn]
                if not rs:
                    continue
                g = lambda key, sub: med([r[key][sub] for r in rs])
                miss = sum(r["missing"] for r in rs)
                dup = sum(r["dups"] for r in rs)
                md = "%d / %d" % (miss, dup)
                if miss or dup:
                    md = "**%s**" % md
                p("| %s | %d | %s | %s / %s | %s | %s | %s / %s | %s | %s / %s / %s | %s | %s (%s) | %s | %s / %s | %s / %s | %s / %s | "
                  "%.0f%% / %.0f%% | %s |" % (
                      vn, rate, fmt(med([r["achieved_rate"] for r in rs])),
                      fmt(med([r["written"] for r in rs])), fmt(med([r["delivered"] for r in rs])), md,
                      fmt(med([r.get("rows_per_kafka_txn") for r in rs]), "%.1f"),
                      per_txn_ms(rs, "relay"), per_txn_ms(rs, "broker"),
                      fmt(g("commit_append_ms", "max"), "%.1f"),
                      fmt(g("commit_consumer_ms", "p50"), "%.1f"), fmt(g("commit_consumer_ms", "p99"), "%.1f"),
                      fmt(g("commit_consumer_ms", "max"), "%.1f"),
                      fmt(g("cpu_us_per_row", "relay"), "%.1f"),
                      fmt(g("cpu_s_per_min", "relay_backend"), "%.2f"), fmt(g("cpu_us_per_row", "relay_backend"), "%.1f"),
                      fmt(g("cpu_us_per_row", "broker"), "%.1f"), fmt(g("cpu_us_per_row", "pg"), "%.1f"),
                      fmt(g("cpu_us_per_row", "pg_ours_aux"), "%.1f"),
                      fmt(g("cpu_s_per_min", "pg_ours"), "%.2f"), fmt(g("cpu_s_per_min", "pg_aux"), "%.2f"),
                      fmt(med([r["commit_p50_ms"] for r in rs]), "%.2f"),
                      fmt(med([r["commit_p99_ms"] for r in rs]), "%.2f"),
                      100 * med([r["machine"]["busy"] for r in rs]), 100 * med([r["machine"]["steal"] for r in rs]),
                      "; ".join("%s → %s" % (r["load_start"].split()[0], r["load_end"].split()[0]) for r in rs)))
        p("")
        if len(vnames) > 1:
            base = vnames[0]
            p("Ratios against %s (median / median):\n" % base)
            p("| system | rate | relay CPU | PostgreSQL cluster | PostgreSQL ours + bg | broker CPU | "
              "commit→append p50 | commit→append p99 |")
            p("|---|---|---|---|---|---|---|---|")
            for rate in rates:
                b0 = [r for r in res["rates"] if r["rate"] == rate and r["variant"] == base]
                for vn in vnames[1:]:
                    rs = [r for r in res["rates"] if r["rate"] == rate and r["variant"] == vn]
                    if not rs or not b0:
                        continue

                    def ratio(key, sub):
                        x, y = med([r[key][sub] for r in rs]), med([r[key][sub] for r in b0])
                        return "%.2f ×" % (x / y) if x is not None and y else "–"
                    p("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                        vn, rate, ratio("cpu_us_per_row", "relay"), ratio("cpu_us_per_row", "pg"),
                        ratio("cpu_us_per_row", "pg_ours_aux"), ratio("cpu_us_per_row", "broker"),
                        ratio("commit_append_ms", "p50"), ratio("commit_append_ms", "p99")))
            p("")
    if res["idle"]:
        p("Idle (%s s without writes after the last rate, same relay process), CPU s/min:\n" % a["idle_seconds"])
        p("| system | relay | relay's PG backend | PostgreSQL cluster | PostgreSQL ours + bg | PostgreSQL bg | "
          "broker | relay Kafka txns | load start → end |")
        p("|---|---|---|---|---|---|---|---|---|")
        for vn in vnames:
            rs = [r for r in res["idle"] if r["variant"] == vn]
            if rs:
                g = lambda sub: spread([r["cpu_s_per_min"][sub] for r in rs], "%.3f")
                p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    vn, g("relay"), g("relay_backend"), g("pg"), g("pg_ours_aux"), g("pg_aux"), g("broker"),
                    ", ".join(fmt(r.get("kafka_txns")) for r in rs),
                    "; ".join("%s → %s" % (r["load_start"].split()[0], r["load_end"].split()[0]) for r in rs)))
        p("")
    if res["wake"]:
        p("Wake-up after idle: %d single-row transactions, one every %d ms (all rows of all rounds pooled):\n" % (
            a["wake_rows"], a["wake_interval_ms"]))
        p("| system | rows delivered | missing / dup | commit→append p50 / p99 / max ms | "
          "commit→consumer p50 / p99 / max ms |")
        p("|---|---|---|---|---|")
        for vn in vnames:
            rs = [r for r in res["wake"] if r["variant"] == vn]
            if rs:
                g = lambda key, sub: med([r[key][sub] for r in rs])
                miss, dup = sum(r["missing"] for r in rs), sum(r["dups"] for r in rs)
                md = "%d / %d" % (miss, dup)
                p("| %s | %d | %s | %s / %s / %s | %s / %s / %s |" % (
                    vn, sum(r["delivered"] for r in rs), "**%s**" % md if miss or dup else md,
                    fmt(g("commit_append_ms", "p50"), "%.1f"), fmt(g("commit_append_ms", "p99"), "%.1f"),
                    fmt(max(r["commit_append_ms"]["max"] for r in rs), "%.1f"),
                    fmt(g("commit_consumer_ms", "p50"), "%.1f"), fmt(g("commit_consumer_ms", "p99"), "%.1f"),
                    fmt(max(r["commit_consumer_ms"]["max"] for r in rs), "%.1f")))
        p("")
    for pf in res.get("perf", []):
        top = pf["top"]
        p("perf record -g (cpu-clock) of the %s, variant %s at %d rows/s (a run of its own, not in the tables "
          "above): by object %s; top %d symbols by self time:\n" % (
              pf.get("process", "relay"), pf["variant"], pf["rate"], ", ".join("%s %.1f%%" % (o, x) for x, o in top["objects"]),
              len(top["symbols"])))
        p("| self % | symbol (object) |")
        p("|---|---|")
        for pct, sym in top["symbols"]:
            p("| %.2f | `%s` |" % (pct, sym))
        p("")
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=[BIN][:k=v;k=v]",
                    help="a relay variant (repeatable); BIN defaults to build-bench's relay; keys: notify=on|off, "
                         "schema=N, pghost=HOST (the relay's PostgreSQL host or socket directory), sql=FILE (run after the "
                         "install), "
                         "librdkafka.NAME=VALUE (a kafka.properties entry), group.name=VALUE (a relay setting, "
                         "e.g. batch.poll_interval_ms=50). Default: notify-on and notify-off of build-bench's relay")
    ap.add_argument("--variants", metavar="FILE.json", help="variants as a JSON list of {name, binary, notify, "
                    "config: {group.name: value}, librdkafka: {name: value}, schema, pghost, sql}")
    ap.add_argument("--quick", action="store_true", help="10 s per rate, 10 s idle, 5 s baseline")
    ap.add_argument("--rates", default="100,1000,10000", help="comma-separated rows/s (default 100,1000,10000)")
    ap.add_argument("--seconds", type=int, help="seconds per rate (default 60, quick 10)")
    ap.add_argument("--idle-seconds", type=int, help="idle period after the last rate (default 60, quick 10; 0 = none)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, variants alternating (default 1)")
    ap.add_argument("--conns", type=int, default=4, help="writer connections (default 4)")
    ap.add_argument("--batch-rate", type=int, default=10000,
                    help="from this rate on, writers commit --batch-rows rows per transaction (default 10000)")
    ap.add_argument("--batch-rows", type=int, default=10)
    ap.add_argument("--topics", type=int, default=3, help="topics the rows are spread over (default 3)")
    ap.add_argument("--partitions", type=int, default=1, help="partitions per topic (default 1)")
    ap.add_argument("--wake-rows", type=int, default=20, help="rows written one by one after idle (default 20)")
    ap.add_argument("--wake-interval-ms", type=int, default=500)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between the relay publishing and the load")
    ap.add_argument("--idle-settle", type=float, default=2.0,
                    help="seconds between the last row's arrival and the idle measurement")
    ap.add_argument("--drain-quiet", type=float, default=20,
                    help="after the writers stop, wait for the rest of the rows until none arrived for this "
                         "many seconds (default 20); rows still not delivered count as missing")
    ap.add_argument("--baseline-seconds", type=int, help="measure the neighbours first (default 10, quick 5; 0 = no)")
    ap.add_argument("--perf", type=int, nargs="?", const=1000, metavar="RATE",
                    help="after the rounds, one more run per variant at RATE (default 1000) under perf record -g; "
                         "prints the top symbols (not counted in the tables)")
    ap.add_argument("--perf-backend", action="store_true",
                    help="with --perf: profile the relay's PostgreSQL backend instead of the relay")
    ap.add_argument("--perf-top", type=int, default=15)
    ap.add_argument("--perf-call-graph", default="fp", help="perf record --call-graph: fp (= -g, the default) or "
                    "dwarf (deeper stacks through code built without frame pointers, larger files)")
    ap.add_argument("--perf-dir", help="keep the perf.data files here (default: dropped with the run)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a saved --json run and exit")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            res = json.load(f)
        print(res.get("header", "") + "\n")
        print(report(res))
        return
    q = args.quick
    args.rates = [int(x) for x in args.rates.split(",")]
    args.seconds = args.seconds or (10 if q else 60)
    if args.idle_seconds is None:
        args.idle_seconds = 10 if q else 60
    if args.perf_dir:
        os.makedirs(args.perf_dir, exist_ok=True)
    if args.baseline_seconds is None:
        args.baseline_seconds = 5 if q else 10
    try:
        if args.variants:
            with open(args.variants) as f:
                variants = [Variant.from_json(o) for o in json.load(f)]
        else:
            variants = [Variant.parse(s) for s in args.variant] or \
                [Variant("notify-on", None, True), Variant("notify-off", None, False)]
    except (ValueError, OSError, KeyError) as e:
        sys.exit("steady: %s" % e)
    if len({v.name for v in variants}) != len(variants):
        sys.exit("steady: variant names must differ")
    for path in (CONSUMER, WRITER):
        if not os.access(path, os.X_OK):
            sys.exit("steady: %s is missing: run bench/run.sh --only S, which builds it" % path)
    s = Steady(args, variants)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))
    header = "Machine: %s. Run %s: steady.py %s" % (machine(), RUN, " ".join(sys.argv[1:]) or "(defaults)")
    s.results["header"] = header
    log(header)
    for v in variants:
        log("variant %s: %s" % (v.name, v.describe()))
    try:
        s.run()
    except KeyboardInterrupt:
        s.problem("interrupted: the tables hold what was measured before")
    finally:
        s.cleanup()
        s.results["end"] = "load average at end %s, %s UTC" % (loadavg(), time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(s.results, f, indent=1)
    print(header + "; " + s.results["end"] + "\n")
    print(report(s.results))
    if s.results["problems"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
