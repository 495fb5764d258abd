"""Fixtures for the end-to-end tests: a fresh outbox database per test on the
local PostgreSQL, unique Kafka topics on the local broker, the relay as a
real subprocess, and a read_committed reader of whole topics.

deploy/local/up must have run; scripts/test does that and exports
OUTBOX_PG_URL and OUTBOX_KAFKA_BOOTSTRAP.
"""
import os
import re
import signal
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]

# Rows a relay has still to publish: with schema 5 relayed rows stay in
# outbox.event until their whole partition is truncated, so the row count no
# longer says how far the relays got. Rows not relayed by some relay's stored
# position (every row while no relay exists).
WAITING = ("SELECT count(*) FROM outbox.event AS e "
           "WHERE NOT EXISTS (SELECT FROM outbox.relay_state) "
           "OR EXISTS (SELECT FROM outbox.relay_state AS o WHERE NOT outbox.relayed("
           "e.txid, e.id, o.pos_done, o.pos_next, o.pos_after_id))")
PG_URL = os.environ.get("OUTBOX_PG_URL", "postgresql://postgres@127.0.0.1:55432/outbox")
BOOTSTRAP = os.environ.get("OUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
RELAY_BIN = os.environ.get("OUTBOX_RELAY_BIN", str(ROOT / "build/relay/outbox-relay"))
SANITIZED = os.environ.get("OUTBOX_E2E_SANITIZED") == "1"
QUIET = {"log_level": 0}
# Topics this pytest session named (its own and its relays' checkpoint
# topics): only these are deleted at its end, so that sessions running side
# by side on one broker do not delete each other's topics mid-test.
SESSION_TOPICS = set()


def pytest_configure(config):
    config.addinivalue_line("markers", "sanitizer: also run against the ASan+UBSan relay build")
    config.addinivalue_line("markers", "serial: run alone, after the others (scripts/test runs the rest "
                            "on two pytest-xdist workers): it disturbs the shared PostgreSQL, broker or "
                            "cluster-wide objects, or times something in seconds")


def pg_url_for(dbname):
    return urlunsplit(urlsplit(PG_URL)._replace(path="/" + dbname))


def psql(url, *args, check=True):
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, *args],
                          check=check, capture_output=True, text=True)


@pytest.fixture(scope="session", autouse=True)
def drop_test_topics():
    """Delete the session's topics at its end (the tests' own and the relays'
    checkpoint topics): a broker that keeps thousands of partitions from
    earlier runs restarts slowly after kill -9, which the fault run does."""
    yield
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **QUIET})
    names = [t for t in admin.list_topics(timeout=10).topics if t in SESSION_TOPICS]
    if names:
        for f in admin.delete_topics(names, operation_timeout=30).values():
            f.result(60)


@pytest.fixture
def outbox_dbs():
    """Factory of new databases with the outbox schema installed (their
    URLs); all dropped afterwards."""
    made = []

    def make():
        name = "e2e_" + uuid.uuid4().hex[:10]
        admin = psycopg2.connect(PG_URL)
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {name}")
        admin.close()
        made.append(name)
        url = pg_url_for(name)
        psql(url, "-f", os.environ.get("OUTBOX_E2E_INSTALL_SQL", str(ROOT / "sql/install.sql")))
        return url
    yield make
    # a new connection: a test may have restarted the server
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    cur = admin.cursor()
    for name in made:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,))
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.close()


@pytest.fixture
def outbox_db(outbox_dbs):
    """A new database with the outbox schema installed; dropped afterwards."""
    return outbox_dbs()


def create_topics(names, partitions=1, config=None, bootstrap=BOOTSTRAP):
    """Create the topics (on the local broker, or the one at `bootstrap`)
    and wait until every partition has a leader."""
    if bootstrap == BOOTSTRAP:
        SESSION_TOPICS.update(names)
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    futs = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1,
                                         config=config or {}) for n in names])
    for f in futs.values():
        f.result(30)
    # wait until the metadata shows every partition with a leader
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        if all(n in md.topics and len(md.topics[n].partitions) == partitions and
               all(p.leader >= 0 for p in md.topics[n].partitions.values()) for n in names):
            return
        time.sleep(0.2)
    raise AssertionError(f"topics {names} not ready")


@pytest.fixture
def topics():
    """Factory: topics(n, partitions) -> list of new unique topic names."""
    def make(n=1, partitions=1):
        names = [f"e2e-{uuid.uuid4().hex[:8]}-{i}" for i in range(n)]
        create_topics(names, partitions)
        return names
    return make


def read_all(topic_names, isolation="read_committed", timeout=120, bootstrap=BOOTSTRAP):
    """Every record of every partition of the topics, from the start to the
    end (the last stable offset for read_committed). No consumer group."""
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-unused",
                     "isolation.level": isolation, "enable.auto.commit": False,
                     "enable.partition.eof": True, "fetch.wait.max.ms": 50, **QUIET})
    md = cons.list_topics(timeout=10)
    parts = [TopicPartition(t, p, OFFSET_BEGINNING)
             for t in topic_names for p in md.topics[t].partitions]
    pending = {(tp.topic, tp.partition) for tp in parts}
    cons.assign(parts)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while pending:
            assert time.monotonic() < deadline, f"reading {topic_names} timed out"
            for m in cons.consume(10000, 0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard((m.topic(), m.partition()))
                        continue
                    raise AssertionError(f"consume error: {m.error()}")
                out.append(m)
    finally:
        cons.close()
    return out


def header(msg, name):
    for k, v in msg.headers() or []:
        if k == name:
            return v
    return None


# Exit codes of a sanitizer finding, distinct from every code the relay
# uses (0-5) and from ASan's default 1, so that a memory error can never
# pass for an expected exit status.
ASAN_EXIT, UBSAN_EXIT = 86, 87


def relay_env(env=None):
    """The environment for any run of the relay binary (run, check, status):
    the caller's additions, and under the sanitizer build the sanitizers'
    distinct exit codes."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    if SANITIZED:
        full_env.setdefault("ASAN_OPTIONS", f"detect_leaks=1:abort_on_error=0:exitcode={ASAN_EXIT}")
        full_env.setdefault("UBSAN_OPTIONS",
                            f"print_stacktrace=1:halt_on_error=1:exitcode={UBSAN_EXIT}")
    return full_env


def relay_cmd(*args, env=None, timeout=120):
    """Run the relay binary to completion (check, status, usage errors);
    returns the CompletedProcess with text stdout and stderr."""
    return subprocess.run([RELAY_BIN, *map(str, args)], capture_output=True, text=True,
                          env=relay_env(env), timeout=timeout)


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (.*)$", re.M)


def log_time(text, pattern, after=None):
    """Unix time (s) of the first relay log line (text format, "<UTC time>Z
    <level> <src>: <message>") matching pattern, at or after `after`."""
    for ts, rest in LOG_LINE.findall(text):
        t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
        if (after is None or t >= after) and re.search(pattern, rest):
            return t
    return None


class Relay:
    """The relay binary as a subprocess, its stderr in a log file."""

    def __init__(self, config, log_path, env=None):
        self.config = config
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([RELAY_BIN, "run", "-c", str(config)], stdout=self.log,
                                     stderr=self.log, env=relay_env(env))

    def text(self):
        return Path(self.log_path).read_text(errors="replace")

    def log_time(self, pattern, after=None):
        """Unix time (s) of the first log line matching pattern (after the
        line time `after`, if given), from the line's own timestamp; None
        when there is none. Text-format logs only."""
        return log_time(self.text(), pattern, after)

    def wait_log(self, pattern, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"relay log has no /{pattern}/ (exit {self.proc.poll()}):\n{self.text()}")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None and sig in (signal.SIGTERM, signal.SIGINT):
            # Until its first log line the relay may not have installed its
            # handlers yet; a signal then kills it like any process.
            deadline = time.monotonic() + timeout
            while (self.proc.poll() is None and time.monotonic() < deadline
                   and not re.search(r"outbox-relay \S+ starting", self.text())):
                time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def wait_exit(self, timeout=120):
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture
def relays(tmp_path):
    """Factory that starts relays and makes sure none outlives the test."""
    started = []

    def start(config, env=None):
        r = Relay(config, tmp_path / f"relay-{len(started)}.log", env)
        started.append(r)
        return r
    yield start
    for r in started:
        if r.proc.poll() is None:
            r.kill()


def ckpt_topic(db_url, name):
    """The checkpoint topic of relay `name` in this test: topics outlive a
    test on the shared broker, the per-test database name keeps them apart."""
    topic = f"ckpt-{name}-{urlsplit(db_url).path.lstrip('/')}"
    SESSION_TOPICS.add(topic)
    return topic


def write_config(path, db_url, name, **opts):
    """A relay.conf for the test; opts are "group.key" -> value overrides."""
    groups = {
        "relay": {"name": name, "lease_ttl_ms": 2000},
        "postgres": {"conninfo": db_url},
        "kafka": {"bootstrap_servers": BOOTSTRAP, "checkpoint_topic": ckpt_topic(db_url, name),
                  "transaction_timeout_ms": 20000, "commit_timeout_ms": 10000},
        "batch": {"poll_interval_ms": 50},
        "http": {"listen": ""},
        "log": {"level": "info"},
    }
    for k, v in opts.items():
        g, key = k.split(".", 1)
        groups.setdefault(g, {})[key] = v

    def lit(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v) + ("L" if abs(v) > 2**31 - 1 else "")
        if isinstance(v, list):
            return "[" + ", ".join(lit(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    text = "".join(f"{g} = {{\n" + "".join(f"  {k} = {lit(v)};\n" for k, v in kv.items()) + "};\n"
                   for g, kv in groups.items())
    Path(path).write_text(text)
    return path


def wait_for(pred, timeout=120, what="condition", interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (as its Java client computes it), for partition checks."""
    m, r = 0x5bd1e995, 24
    length = len(data)
    h = (0x9747b28c ^ length) & 0xFFFFFFFF
    i = 0
    while length - i >= 4:
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
        i += 4
    rest = length - i
    if rest == 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def java_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions
