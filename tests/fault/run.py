#!/usr/bin/python3
"""Fault-injection run on the real PostgreSQL and the real Kafka broker.

A workload of concurrent writers (tests/fault/workload.py) commits outbox
rows while the relay is hit by faults of every kind; then the faults stop,
everything drains, and the checker (tests/fault/checker.py) reads all topics
back and compares with the writers' audit table.

    run.py --quick                      the reduced run of the test suite
    run.py --full [--results FILE]      >= 1M rows and >= 1000 faults
    run.py --quick --kinds kill,crash_point   only these kinds of the plan
    run.py --quick --plan crash_point=5,zombie=2   this plan instead

A fault counts only when it took effect (evidence in the relay's log or the
process's exit, see EVIDENCE and each f_* method); one that hit nothing is
tried again, and a kind that falls short of its plan, or a plan cut short by
the time budget, fails the run. The last line is `fault run: N passed, N
failed`.

Database failover (`db_failover`): the database primary is stopped with
-m immediate while the writers and the relay run, and its synchronous
standby promoted; the writers, the relays and the checker find the server
that takes writes through a multi-host conninfo (target_session_attrs=
read-write). Then the old primary's data directory becomes a fresh
synchronous standby of the new one (pg_basebackup -R), ready for the next.
A plan with db_failover (or db_failover_async) runs its whole database on
such a primary+standby pair of its own (tests/pgpair.py: own state
directory under /var/tmp, own ports, removed at the end; the server logs
are copied to the run directory); the `postgres` and `terminate_backend`
faults then act on the pair's current primary. A plan without either uses
deploy/local/up's cluster.

Failover to an asynchronous replica that missed commits
(`db_failover_async`, issue 15; in the full plan, not the quick one): the
standby stops receiving (the primary made asynchronous for it, the standby
stopped -m fast once it has the primary's WAL up to then) while the writers
commit and the relay publishes at least two more batches, past transactions
the standby missed; the primary is stopped -m immediate, the standby
started again and promoted. The database has then lost transactions that
Kafka has, its transaction and outbox ids restart below the relay's, and
its stored batch is behind Kafka's. The supervisor is held: every relay
alive (a standby relay among them) must stop by itself with exit code 5
(OR003). The harness then does what docs/sql.md "OR003" tells the operator
(tests/or003.py): `verify --list-lost`, the rows listed `published`
deleted, `position_reset(name, generation, 'unrelayed', Kafka's batch + 1)`,
one relay started with relay.on_database_ahead = "trust-database" until it
advanced; then the supervisor goes on and the old primary becomes the new
one's standby. The checker then follows two histories (checker.py, "Two
histories"): the records whose rows the database lost must be exactly those
verify listed as lost, of transactions acknowledged in the lost span; no
other acknowledged transaction may be missing; rows are told apart by the
workload's own transaction and key, not by the reused ids.

The writers record every transaction whose COMMIT returned in files of the
run directory, outside the database; the checker fails on one missing from
the database (the audit table would fail over, or rewind, with the outbox),
unless acknowledged in a db_failover_async's lost span.

deploy/local/up must have run (scripts/test does that).
"""
import argparse
import collections
import datetime
import itertools
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import checker  # noqa: E402
import or003  # noqa: E402
import pgpair  # noqa: E402
import workload  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STATE = os.environ.get("OUTBOX_LOCAL_STATE", "/var/tmp/outbox-relay-local")
PG_URL = os.environ.get("OUTBOX_PG_URL", "postgresql://postgres@127.0.0.1:55432/outbox")
BOOTSTRAP = os.environ.get("OUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
PROXIED = os.environ.get("OUTBOX_KAFKA_PROXIED", "127.0.0.1:19094")
PROXY_PORT = int(os.environ.get("OUTBOX_KAFKA_PROXY_PORT", "19095"))
RELAY_BIN = os.environ.get("OUTBOX_RELAY_BIN", str(ROOT / "build/relay/outbox-relay"))
CRASH_POINTS = ["after-fetch", "after-produce", "during-commit", "after-commit", "after-advance"]
TXN_TIMEOUT_MS = 6000
COMMIT_TIMEOUT_MS = 3000
LEASE_TTL_MS = 2000
# The broker's transaction.abort.timed.out.transaction.cleanup.interval.ms
# (deploy/local/kafka/server.properties.in).
ABORT_CLEANUP_MS = 5000

# What the relay's log must show for a fault to count as having taken effect
# (matched loosely, case-insensitive, in what any relay wrote after the fault
# began). A fault without its evidence hit nothing in flight: it is tried
# again, and the run fails when a kind falls short of its plan.
EVIDENCE = {
    # a transaction aborted, fenced or of unknown outcome, or a new producer
    "pause": ["aborted", "unknown", "fenced", "recreating the producer", "lease of relay",
              "timed out", "could not commit"],
    # a commit that did not answer within the commit timeout
    "delay": ["unknown", "timed out", "retrying the commit", "could not commit"],
    # the relay's database connection failed and it reconnected
    # (seen: "could not advance the database position: ...: no connection to the server")
    "terminate_backend": ["terminating connection", "server closed the connection", "connection to server",
                          "no connection", "could not connect", "could not receive", "could not send"],
    "postgres": ["terminating connection", "server closed the connection", "connection to server",
                 "no connection", "could not connect", "could not receive", "could not send",
                 "the database system is"],
    "broker": ["disconnected", "connection refused", "transport", "timed out", "could not",
               "all broker", "unknown"],
}
# db_failover: the relay that published before the stop lost its connection
# (one of the "postgres" lines, in its own log), and a relay advanced the
# position on the promoted standby (read there: the relay's batch_seq rose
# above what the new primary held when it was promoted).
EVIDENCE["db_failover"] = EVIDENCE["postgres"]
# The restarted relay saw a foreign transaction hold the checkpoint
# partition's last stable offset back and waited (issue 12.1).
FOREIGN_TXN_WAIT_TEXT = "last stable offset"
# The relay's retried advance was answered "already applied" (issue 12.2).
ADVANCE_APPLIED_TEXT = "already applied"
KINDS = ["crash_point", "kill", "zombie", "failover", "broker", "postgres", "terminate_backend",
         "pause", "delay", "foreign_txn", "advance_reply_lost", "db_failover", "db_failover_async"]
LABELS = {
    "crash_point": "crash point",  # with the point's name
    "kill": "kill -9 (random time)",
    "zombie": "zombie (SIGSTOP, takeover, SIGCONT)",
    "failover": "leader kill -9, standby takes over",
    "broker": "broker kill -9 and restart",
    "postgres": "postgresql immediate stop and restart",
    "terminate_backend": "pg_terminate_backend of the relay",
    "pause": "relay paused beyond transaction.timeout.ms",
    "delay": "broker responses delayed beyond the commit timeout",
    "foreign_txn": "foreign transaction open on the checkpoint partition across a restart",
    "advance_reply_lost": "reply to outbox.advance lost after the server committed",
    "db_failover": "database primary stopped -m immediate, synchronous standby promoted",
    "db_failover_async": "asynchronous standby that missed commits promoted; OR003 recovery",
}
# Tries of one planned fault before it counts as not taken effect.
TRIES = 3


def stopped(proc):
    """True when the process is stopped (state T in /proc)."""
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return False


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class DelayProxy(threading.Thread):
    """TCP proxy in front of the broker's PROXIED listener; `delay` seconds
    are added to every broker-to-relay chunk (delayed responses, e.g. a
    delayed EndTxn answer)."""

    def __init__(self, port, upstream):
        super().__init__(daemon=True)
        self.delay = 0.0
        self.upstream = upstream
        self.srv = socket.create_server(("127.0.0.1", port), reuse_port=False)

    def run(self):
        while True:
            try:
                cli, _ = self.srv.accept()
            except OSError:  # the listening socket was closed: the run is over
                return
            try:
                host, port = self.upstream.split(":")
                up = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                cli.close()
                continue
            up.settimeout(None)
            threading.Thread(target=self.pump, args=(cli, up, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, cli, True), daemon=True).start()

    def pump(self, src, dst, delayed):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delayed and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Relay:
    def __init__(self, h, env=None, config=None):
        self.log_path = h.dir / f"relay-{len(h.all_relays)}.log"
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([RELAY_BIN, "run", "-c", str(config or h.config)], stdout=self.logf,
                                     stderr=self.logf, env={**os.environ, **(env or {})})
        h.all_relays.append(self)

    def text(self, start=0):
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def size(self):
        return self.log_path.stat().st_size

    def wait_log(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern in self.text():
                return True
            if self.proc.poll() is not None:
                return pattern in self.text()
            time.sleep(0.1)
        return False

    def alive(self):
        return self.proc.poll() is None


class Harness:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-fault-"))
        self.faults = collections.Counter()    # took effect, by label
        self.effective = collections.Counter()  # took effect, by kind
        self.attempts = collections.Counter()   # tried, by kind
        self.planned = collections.Counter()
        self.notes = []
        self.exit_codes = collections.Counter()
        self.all_relays = []
        self.lock = threading.Lock()
        self.name = "fault-" + uuid.uuid4().hex[:6]
        # every crash point in turn, so each is hit equally often
        self.points = itertools.cycle(self.rng.sample(CRASH_POINTS, len(CRASH_POINTS)))
        self.db = None
        self.pair = None  # tests/pgpair.py's primary+standby, when the plan has db_failover(_async)
        self.hold = False  # the supervisor starts no relay (the OR003 recovery)
        self.async_failovers = []  # for the checker: see f_db_failover_async

    # -- set-up -------------------------------------------------------------
    def setup(self):
        self.dbname = dbname = self.name.replace("-", "_")
        sql = os.environ.get("OUTBOX_E2E_INSTALL_SQL", str(ROOT / "sql/install.sql"))
        if self.plan_kinds & {"db_failover", "db_failover_async"}:
            # The whole run on a primary and a standby of its own (not the
            # env's cluster): the writers, the relays and the checker reach
            # whichever takes writes through a multi-host conninfo. The
            # standby is synchronous when the plan has db_failover (the
            # asynchronous failover makes it asynchronous for its own time).
            self.pair = pgpair.Pair(sync="db_failover" in self.plan_kinds, dbname=dbname,
                                    install_sql=sql)
            self.db = self.pair.multi_host()
            log(f"database on a primary+standby pair of its own: {self.pair.state}")
        else:
            admin = psycopg2.connect(PG_URL)
            admin.autocommit = True
            admin.cursor().execute(f"CREATE DATABASE {dbname}")
            admin.close()
            self.db = PG_URL.rsplit("/", 1)[0] + "/" + dbname
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.db, "-f", sql],
                           check=True, capture_output=True)
        self.topics = [f"{self.name}-t{i}" for i in range(3)]
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0})
        for f in admin.create_topics([NewTopic(t, num_partitions=6, replication_factor=1)
                                      for t in self.topics]).values():
            f.result(30)
        workload.setup(self.db, self.topics, self.args.keys)
        self.ckpt = f"ckpt-{self.name}"
        conninfo = self.db
        self.pgproxies, self.pgproxy_error = {}, None
        if "advance_reply_lost" in self.plan_kinds:
            # every relay reaches PostgreSQL through the proxy that can lose
            # the reply to outbox.advance (tests/pgproxy.py); on a pair, one
            # proxy in front of each server
            try:
                host, port = PG_URL.split("@", 1)[1].split("/", 1)[0].split(":")
                ports = (self.pair.p1, self.pair.p2) if self.pair else (int(port),)
                for p in ports:
                    self.start_pgproxy(p, host=host)
                if self.pair:
                    conninfo = self.pair.multi_host([self.pgproxies[p].port for p in ports])
                else:
                    conninfo = self.db.replace(f"{host}:{port}", f"127.0.0.1:{self.pgproxies[int(port)].port}")
            except Exception as e:  # reported by the fault itself
                self.pgproxies, self.pgproxy_error = {}, f"{type(e).__name__}: {e}"
        # The broker advertises its PROXIED listener at PROXY_PORT, where the
        # delay proxy must listen; one port for the machine, so the relays
        # go through it only when the plan has "delay".
        bootstrap = BOOTSTRAP
        self.proxy = None
        if "delay" in self.plan_kinds:
            deadline = time.monotonic() + 120
            while self.proxy is None:
                try:
                    self.proxy = DelayProxy(PROXY_PORT, PROXIED)
                except OSError as e:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the delay proxy's port {PROXY_PORT} stays taken: {e}") from e
                    time.sleep(1)
            self.proxy.start()
            bootstrap = PROXIED
        self.config = self.dir / "relay.conf"
        self.config.write_text(f"""
relay = {{ name = "{self.name}"; lease_ttl_ms = {LEASE_TTL_MS}; }};
postgres = {{ conninfo = "{conninfo}"; statement_timeout_ms = 10000; }};
kafka = {{ bootstrap_servers = "{bootstrap}"; checkpoint_topic = "{self.ckpt}";
          transaction_timeout_ms = {TXN_TIMEOUT_MS}; commit_timeout_ms = {COMMIT_TIMEOUT_MS}; }};
batch = {{ max_rows = {self.args.batch_rows}; poll_interval_ms = 50; }};
http = {{ listen = ""; }};
""")
        # step 7 of the OR003 recovery: one start trusting the database's
        # position (db_failover_async)
        self.trust_config = self.dir / "relay-trust-database.conf"
        self.trust_config.write_text(self.config.read_text().replace(
            f"lease_ttl_ms = {LEASE_TTL_MS};",
            f'lease_ttl_ms = {LEASE_TTL_MS}; on_database_ahead = "trust-database";'))
        log(f"run directory {self.dir}, database {self.db}, relay {self.name}")

    def start_pgproxy(self, upstream_port, listen_port=0, host="127.0.0.1"):
        import pgproxy
        proxy = self.pgproxies[upstream_port] = pgproxy.PgProxy(listen_port, host, upstream_port)
        proxy.start()
        # The relay prepares outbox.advance once per connection, long
        # before any arming: name the function at once, unarmed (a
        # proxy that keeps every Parse text needs it not; an early
        # one learned statement names only while a name was set).
        try:
            proxy.arm_drop_after_commit(b"outbox.advance", times=0)
        except TypeError:
            pass  # a proxy without `times` watches from the start itself

    # -- the relays -------------------------------------------------------------
    def supervise(self):
        """Like a supervisor with Restart=always: whenever no relay process is
        alive, start one. Exit codes of every relay are counted."""
        seen_dead = set()
        while not self.stopping:
            with self.lock:
                for r in self.all_relays:
                    if not r.alive() and id(r) not in seen_dead:
                        seen_dead.add(id(r))
                        self.exit_codes[r.proc.returncode] += 1
                        if r.proc.returncode not in (-9, 3, 0):
                            log(f"relay exited {r.proc.returncode}: see {r.log_path}")
                if not self.hold and not any(r.alive() for r in self.all_relays):
                    Relay(self)
            time.sleep(0.2)

    @staticmethod
    def leader_generation(r):
        """The generation this relay publishes under, or None."""
        text = r.text()
        i = text.rfind("generation ")
        if i < 0 or "publishing" not in text[i:]:
            return None
        return int(text[i + 11:].split()[0])

    def current(self, timeout=90):
        """The live relay that holds the lease and publishes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                live = [(self.leader_generation(r), r) for r in self.all_relays if r.alive()]
            live = [(g, r) for g, r in live if g is not None]
            if live:
                return max(live, key=lambda x: x[0])[1]
            time.sleep(0.1)
        raise RuntimeError("no relay publishing within the timeout")

    # -- faults ------------------------------------------------------------------
    # Each returns True when the fault took effect (the evidence named in its
    # comment), False when it hit nothing; a fault that cannot be done at all
    # raises.

    def marks(self):
        """Where every relay's log ends now: evidence is looked for after it."""
        with self.lock:
            return [(r, r.size()) for r in self.all_relays]

    def logs_since(self, marks):
        with self.lock:
            relays = list(self.all_relays)
        start = dict((id(r), off) for r, off in marks)
        return "\n".join(r.text(start.get(id(r), 0)) for r in relays)

    def wait_evidence(self, marks, patterns, timeout):
        deadline = time.monotonic() + timeout
        while True:
            text = self.logs_since(marks).lower()
            hit = next((p for p in patterns if p.lower() in text), None)
            if hit or time.monotonic() > deadline:
                return hit
            time.sleep(0.2)

    def f_crash_point(self):
        point = next(self.points)
        leader = self.current()
        with self.lock:
            armed = Relay(self, {"OUTBOX_RELAY_CRASH_AT": f"{point}:{self.rng.randint(1, 4)}"})
        armed.wait_log("standby", 30)
        leader.proc.send_signal(signal.SIGTERM)  # a clean hand-over: not a fault
        leader.proc.wait(60)
        deadline = time.monotonic() + 60
        while armed.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if f'crash point "{point}" reached' in armed.text():
            self.faults[f"crash point {point}"] += 1
            return True
        self.notes.append(f"crash point {point} not reached in 60 s: {armed.log_path}")
        if armed.alive():
            armed.proc.kill()
        return False

    def f_kill(self):
        r = self.current()
        time.sleep(self.rng.uniform(1, 5) if not self.args.quick else self.rng.uniform(0.5, 2))
        if not r.alive():
            return False
        r.proc.kill()
        # evidence: the publishing relay died of the signal
        return r.proc.wait(30) == -9

    def f_zombie(self):
        r = self.current()
        with self.lock:
            standby = Relay(self)
        standby.wait_log("standby", 30)
        r.proc.send_signal(signal.SIGSTOP)
        took = standby.wait_log("publishing", 30)
        time.sleep(0.5)
        r.proc.send_signal(signal.SIGCONT)
        try:
            rc = r.proc.wait(60)
        except subprocess.TimeoutExpired:
            rc = None
        # evidence: the standby took over and the zombie stopped as fenced
        if took and rc == 3:
            return True
        self.notes.append(f"zombie: takeover={took}, zombie exit {rc}: {r.log_path}")
        if rc is None:
            r.proc.kill()
        return False

    def f_failover(self):
        r = self.current()
        with self.lock:
            standby = Relay(self)
        standby.wait_log("standby", 30)
        time.sleep(self.rng.uniform(0.2, 1.5))
        r.proc.kill()
        r.proc.wait(30)
        # evidence: the standby (not a new relay) publishes
        if standby.wait_log("publishing", 30):
            return True
        self.notes.append(f"standby did not take over: {standby.log_path}")
        return False

    def f_broker(self):
        self.current()
        time.sleep(self.rng.uniform(0.2, 1.5))
        m = self.marks()
        pid = int(Path(f"{STATE}/kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        time.sleep(self.rng.uniform(0.5, 2))
        subprocess.run([str(ROOT / "deploy/local/up")], check=True, capture_output=True)
        return self.wait_evidence(m, EVIDENCE["broker"], 20) is not None

    def f_postgres(self):
        """The (current) primary stopped -m immediate and started again."""
        self.current()
        time.sleep(self.rng.uniform(0.2, 1.5))
        m = self.marks()
        data = self.pair.primary_data if self.pair else f"{STATE}/pg-data"
        pgpair.as_postgres(f"{pgpair.PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        time.sleep(self.rng.uniform(0.5, 2))
        if self.pair:
            self.pair.start(data)
        else:
            subprocess.run([str(ROOT / "deploy/local/up")], check=True, capture_output=True)
        return self.wait_evidence(m, EVIDENCE["postgres"], 20) is not None

    def admin_url(self):
        """The maintenance database of the server that takes writes now."""
        return self.pair.url(self.pair.primary_port, "postgres") if self.pair else PG_URL

    def f_terminate_backend(self):
        self.current()
        time.sleep(self.rng.uniform(0.2, 1.5))
        m = self.marks()
        conn = psycopg2.connect(self.admin_url())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'outbox-relay' AND datname = %s", (self.dbname,))
            n = cur.fetchone()[0]
        conn.close()
        # evidence: a backend was terminated and the relay saw its connection fail
        return n > 0 and self.wait_evidence(m, EVIDENCE["terminate_backend"], 15) is not None

    def f_pause(self):
        """The relay stops (SIGSTOP) with a transaction open and stays
        stopped past the transaction timeout and the broker's abort cleanup
        pass. A relay armed with the crash point after-produce (pass 1-4)
        and the test-only stop action takes over by a clean hand-over and
        stops itself there: a pause timed from outside often fell between
        transactions and hit nothing (half the tries, on the pair). Evidence:
        after SIGCONT the relay meets the aborted transaction."""
        leader = self.current()
        with self.lock:
            armed = Relay(self, {"OUTBOX_RELAY_CRASH_AT": f"after-produce:{self.rng.randint(1, 4)}",
                                 "OUTBOX_RELAY_CRASH_ACTION": "stop"})
        armed.wait_log("standby", 30)
        leader.proc.send_signal(signal.SIGTERM)  # a clean hand-over: not a fault
        leader.proc.wait(60)
        deadline = time.monotonic() + 60
        while not stopped(armed.proc) and armed.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not stopped(armed.proc):
            self.notes.append(f"pause: the armed relay did not stop itself in 60 s: {armed.log_path}")
            if armed.alive():
                armed.proc.kill()
            return False
        m = self.marks()
        time.sleep((TXN_TIMEOUT_MS + ABORT_CLEANUP_MS) / 1000 + 2)
        armed.proc.send_signal(signal.SIGCONT)
        # the relay may meet the aborted transaction only at its request timeout
        return self.wait_evidence(m, EVIDENCE["pause"], 45) is not None

    def f_delay(self):
        self.current()
        m = self.marks()
        self.proxy.delay = COMMIT_TIMEOUT_MS / 1000 + 1.5
        time.sleep(self.rng.uniform(4, 8))
        self.proxy.delay = 0
        return self.wait_evidence(m, EVIDENCE["delay"], 15) is not None

    def f_foreign_txn(self):
        """Another transactional producer holds a transaction open on the
        checkpoint partition (a record of another key) while the relay is
        killed and restarted; the transaction outlives the restart, then
        commits or aborts. Evidence: the restarted relay says it waited for
        the last stable offset."""
        r = self.current()
        m = self.marks()
        prod = Producer({"bootstrap.servers": BOOTSTRAP, "log_level": 0,
                         "transactional.id": f"foreign-{uuid.uuid4().hex[:8]}",
                         "transaction.timeout.ms": 60000})
        prod.init_transactions(30)
        prod.begin_transaction()
        prod.produce(self.ckpt, key=f"foreign-{self.name}".encode(), value=b"not a checkpoint", partition=0)
        if prod.flush(10):
            raise RuntimeError("foreign_txn: the foreign record was not delivered")
        time.sleep(self.rng.uniform(0.2, 1.0))
        r.proc.kill()
        r.proc.wait(30)
        # held past the lease TTL, a new relay's start and its checkpoint read
        time.sleep(LEASE_TTL_MS / 1000 + self.rng.uniform(4, 6))
        commit = self.rng.random() < 0.5
        (prod.commit_transaction if commit else prod.abort_transaction)(30)
        hit = self.wait_evidence(m, [FOREIGN_TXN_WAIT_TEXT], 10)
        if not hit:
            self.notes.append(f"foreign_txn: no relay log line with {FOREIGN_TXN_WAIT_TEXT!r} after "
                              f"the foreign transaction held the checkpoint partition")
        return hit is not None

    def f_advance_reply_lost(self):
        """The PostgreSQL proxy drops the relay's connection once the server
        has committed outbox.advance, before the reply reaches the relay.
        Evidence: the proxy fired and the relay's retry was answered
        "already applied"."""
        if not self.pgproxies:
            raise RuntimeError(f"advance_reply_lost needs tests/pgproxy.py: {self.pgproxy_error}")
        self.current()
        m = self.marks()
        # the proxy in front of the server that takes writes now
        proxy = self.pgproxies[self.pair.primary_port] if self.pair else next(iter(self.pgproxies.values()))
        fired = proxy.fired
        proxy.arm_drop_after_commit(b"outbox.advance")
        deadline = time.monotonic() + 30
        while proxy.fired == fired and time.monotonic() < deadline:
            time.sleep(0.1)
        if proxy.fired == fired:
            proxy.disarm()
            self.notes.append("advance_reply_lost: the proxy did not fire within 30 s")
            return False
        hit = self.wait_evidence(m, [ADVANCE_APPLIED_TEXT], 15)
        if not hit:
            self.notes.append(f"advance_reply_lost: the proxy fired, but no relay log line with "
                              f"{ADVANCE_APPLIED_TEXT!r}")
        return hit is not None

    def relay_position(self, port):
        """The relay's stored batch number on the server at `port`, and the
        xmin of its stored pos_done (every transaction below it relayed)."""
        conn = psycopg2.connect(self.pair.url(port), connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT batch_seq, pg_snapshot_xmin(pos_done)::text::bigint "
                            "FROM outbox.relay_state WHERE name = %s", (self.name,))
                return cur.fetchone() or (0, 0)
        finally:
            conn.close()

    def relay_batch_seq(self, port):
        return self.relay_position(port)[0]

    def f_db_failover(self):
        """The database primary stopped with -m immediate while the writers
        and the relay run, its synchronous standby promoted; the writers
        and the relay find the new primary through the multi-host conninfo
        by themselves. Evidence: the relay that published before the stop
        logged the lost connection, and the position stored on the new
        primary rose after its promotion (a relay advanced there). Then the
        old primary's data directory becomes a fresh synchronous standby of
        the new one, for the next failover."""
        r = self.current()
        time.sleep(self.rng.uniform(0.2, 1.5))
        start = r.size()
        t0 = time.monotonic()
        old_port = self.pair.primary_port
        self.pair.fail_over()
        promoted = time.monotonic() - t0
        new_port = self.pair.primary_port
        proxy_port = self.pgproxy_down(old_port)
        seq0 = self.relay_batch_seq(new_port)
        lost = advanced = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (lost and advanced):
            text = r.text(start).lower()
            lost = lost or any(p in text for p in EVIDENCE["db_failover"])
            advanced = advanced or self.relay_batch_seq(new_port) > seq0
            time.sleep(0.2)
        took = time.monotonic() - t0
        t1 = time.monotonic()
        self.pair.rebuild_standby()
        self.pgproxy_up(old_port, proxy_port)
        log(f"db_failover: promoted in {promoted:.2f} s, the relay lost its connection: {lost}, "
            f"advanced on the new primary (port {new_port}, from batch {seq0}): {advanced} "
            f"({took:.1f} s); standby rebuilt in {time.monotonic() - t1:.1f} s; "
            f"the relay that published before {'lives' if r.alive() else 'exited'}")
        if not (lost and advanced):
            self.notes.append(f"db_failover: lost connection in {r.log_path}: {lost}; "
                              f"advance on the new primary: {advanced}")
        return lost and advanced

    def pgproxy_down(self, port):
        """A proxy in front of the stopped server would accept connections
        and close them: libpq then gives up on the whole host list instead
        of trying the next host (a refused connection moves it on). So the
        proxy goes down with its server (returns its port, or None) and
        comes back with the rebuilt standby, on the same port
        (pgproxy_up)."""
        proxy_port = self.pgproxies[port].port if self.pgproxies else None
        if proxy_port:
            self.pgproxies[port].stop()
        return proxy_port

    def pgproxy_up(self, port, proxy_port):
        if proxy_port:
            self.start_pgproxy(port, proxy_port)

    def f_db_failover_async(self):
        """A failover to an asynchronous replica that missed commits (issue
        15): the standby stops receiving (its primary made asynchronous;
        pgpair.Pair.stop_receiving) while the writers commit and a relay
        publishes at least two more batches, past transactions the standby
        missed, then the primary is stopped -m immediate and the standby,
        started again, promoted. The new primary lost transactions Kafka has,
        its ids restart below the relay's position, and its stored batch is
        behind Kafka's checkpoint. The supervisor is held: every relay alive at
        the failover (the one that publishes and a standby relay started for
        this) must stop by itself with exit code 5 (OR003), within a minute
        (one that does not is killed and the fault did not take effect). Then
        the recovery of docs/sql.md "OR003" (tests/or003.py): verify
        --list-lost, the rows listed `published` deleted, position_reset(name,
        generation, 'unrelayed', Kafka's batch + 1), one relay started with
        relay.on_database_ahead = "trust-database" until it advanced, then
        stopped (SIGTERM) and the supervisor let go. Evidence: every relay
        exited 5, verify listed at least one record as lost, and the relay
        published again. For the checker: the transactions acknowledged between
        the standby's stop and the primary's (the lost span), the promoted
        standby's snapshot xmax (the new history's transaction ids begin
        there), the reset's batch and verify's list (checker.check, "Two
        histories"). Then the old primary's data directory becomes the new
        primary's standby (pg_basebackup -R)."""
        self.current()
        with self.lock:  # a standby relay too: every relay must stop
            standby = Relay(self)
        standby.wait_log("standby", 30)
        time.sleep(self.rng.uniform(0.2, 1.0))
        old_port = self.pair.primary_port
        mark = self.load.ack_mark()
        self.pair.stop_receiving()
        missed = int(self.pair.primary_sql("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")[0])
        seq0 = self.relay_batch_seq(old_port)
        # until the relay's position passed transactions the standby
        # missed (every id below `missed` done), two batches at least
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seq, done_xmin = self.relay_position(old_port)
            if seq >= seq0 + 2 and done_xmin > missed:
                break
            time.sleep(0.1)
        time.sleep(self.rng.uniform(0, 0.5))
        with self.lock:
            self.hold = True
            live = [x for x in self.all_relays if x.alive()]
        seq1 = self.relay_batch_seq(old_port)
        t0 = time.monotonic()
        xmax, end = self.pair.fail_over(
            before_promote=lambda: (self.pair.standby_xmax(), self.load.ack_mark()))
        new_port = self.pair.primary_port
        proxy_port = self.pgproxy_down(old_port)
        span = self.load.acked_between(mark, end)
        # 1. every relay of the name stopped: by itself, exit code 5
        deadline = time.monotonic() + 60
        while any(x.alive() for x in live) and time.monotonic() < deadline:
            time.sleep(0.2)
        stuck = [x for x in live if x.alive()]
        for x in stuck:
            x.proc.kill()
            x.proc.wait(30)
        codes = [x.proc.returncode for x in live]
        exited = not stuck and all(c == 5 for c in codes)
        stopped_in = time.monotonic() - t0
        # 3. what Kafka has that the database lost (before any reset)
        code, summary = or003.list_lost(RELAY_BIN, self.config, self.topics)
        kafka_batch = or003.kafka_batch(summary)
        db_batch = summary["database_position"]["batch"]
        nlost = sum(e["state"] == "lost" for e in summary["lost_list"])
        npub = sum(e["state"] == "published" for e in summary["lost_list"])
        reset = None
        if kafka_batch > db_batch:
            conn = psycopg2.connect(self.db, connect_timeout=5)
            try:
                deleted = or003.delete_published(conn, summary)  # 4.
                reset = kafka_batch + 1
                (gen, _), row = or003.reset(conn, self.name, reset)  # 5., 6.
            finally:
                conn.close()
            log(f"db_failover_async: verify exit {code}: {nlost} records lost by the database, "
                f"{npub} published (rows deleted: {deleted}); position_reset('{self.name}', {gen}, "
                f"'unrelayed', {reset}): {row}")
        self.async_failovers.append({"span_acks": span, "xmax": xmax, "reset": reset,
                                     "listed": summary["lost_list"]})
        # 7. one start trusting the database's position, until it advanced
        again = False
        with self.lock:
            trust = Relay(self, config=self.trust_config) if reset else None
            self.hold = False
        if trust:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and trust.alive() and not again:
                again = self.relay_batch_seq(new_port) > reset
                time.sleep(0.2)
            trust.proc.send_signal(signal.SIGTERM)  # a clean hand-over: not a fault
            trust.proc.wait(60)
        took = time.monotonic() - t0
        self.pair.rebuild_standby()
        self.pgproxy_up(old_port, proxy_port)
        log(f"db_failover_async: the relay advanced batches {seq0}..{seq1} after the standby "
            f"stopped receiving; promoted at xmax {xmax} (port {new_port}); {len(span)} "
            f"transactions acknowledged in the lost span; relay exits {codes} in {stopped_in:.1f} s"
            f"{f' ({len(stuck)} killed)' if stuck else ''}; database at batch {db_batch}, Kafka "
            f"at {kafka_batch}; published again after the reset: {again} ({took:.1f} s)")
        if not (exited and nlost and again):
            self.notes.append(f"db_failover_async: relay exits {codes} ({len(stuck)} killed), "
                              f"lost records listed {nlost}, published again {again}: "
                              f"{[str(x.log_path) for x in live]}")
        return exited and nlost > 0 and again

    # -- the run -----------------------------------------------------------------
    def inject(self, fault):
        """Tries a planned fault until it takes effect (at most TRIES times)."""
        for attempt in range(TRIES):
            self.attempts[fault] += 1
            try:
                hit = getattr(self, "f_" + fault)()
            finally:
                self.hold = False  # a fault that raised gives the relays back too
            if hit:
                self.effective[fault] += 1
                if fault != "crash_point":
                    self.faults[LABELS[fault]] += 1
                return True
            log(f"fault {fault} took no effect (try {attempt + 1} of {TRIES})")
            if time.monotonic() - self.started > self.args.max_seconds:
                break
        return False

    def run(self):
        self.stopping = False
        plan = self.plan()
        self.plan_kinds = set(plan)
        self.planned = collections.Counter(plan)
        self.setup()
        sup = threading.Thread(target=self.supervise, daemon=True)
        sup.start()
        # the writers run through every fault; the row target is a minimum
        self.load = load = workload.Workload(self.db, self.args.keys, writers=self.args.writers,
                                             seed=self.args.seed, ack_dir=self.dir).start()
        log(f"{len(plan)} faults planned ({dict(self.planned)}); writers target {self.args.rows} rows")
        self.started = started = time.monotonic()
        harness_errors = []
        for i, fault in enumerate(plan):
            if time.monotonic() - started > self.args.max_seconds:
                log(f"time budget spent: faults {i + 1}..{len(plan)} not injected")
                break
            log(f"fault {i + 1}/{len(plan)}: {fault}")
            try:
                self.inject(fault)
            except Exception as e:  # the fault could not be done: the run fails, the check still runs
                harness_errors.append(f"fault {fault} could not be injected: {e}")
                log(harness_errors[-1])
                break
            if (i + 1) % 20 == 0:
                log(f"{i + 1} faults, {load.committed} rows committed")
        # faults over: let the writers reach the row target (full run)
        while not self.args.quick and load.alive() and load.committed < self.args.rows \
                and not harness_errors:
            time.sleep(1)
        load.stop()
        rc = None
        try:
            self.drain(self.args.drain_seconds)
            r = self.current(60)
        except RuntimeError as e:
            harness_errors.append(str(e))
            r = None
        self.stopping = True
        sup.join(5)
        if r is not None:
            r.proc.send_signal(signal.SIGTERM)
            try:
                rc = r.proc.wait(60)
            except subprocess.TimeoutExpired:
                rc = "none within 60 s"
        stray = [x for x in self.all_relays if x.alive()]
        for x in stray:
            x.proc.kill()
            x.proc.wait(30)
        if stray:
            log(f"relays still alive at the end: {[str(x.log_path) for x in stray]}")
        try:
            # A short hand-made plan (--plan) may hit no transaction in
            # flight; the quick and full plans always do (crash points),
            # unless --kinds left the crash points out.
            expect_aborted = not self.args.plan and "crash_point" in self.plan_kinds
            report, violations = checker.check(self.db, BOOTSTRAP, self.topics, self.name, self.ckpt,
                                               expect_aborted=expect_aborted, acked=load.acked(),
                                               failovers=self.async_failovers)
        except checker.CheckError as e:
            report, violations = collections.OrderedDict(), [f"the check could not be made: {e}"]
        violations = harness_errors + violations
        for proxy in self.pgproxies.values():
            proxy.stop()
        report["faults planned"] = sum(self.planned.values())
        report["faults that took effect"] = sum(self.effective.values())
        report["final relay exit code"] = rc
        if rc != 0:
            violations.append(f"the last relay did not stop cleanly (exit {rc})")
        short = [f"{k}: {self.effective[k]} of {n} took effect ({self.attempts[k]} tries)"
                 for k, n in sorted(self.planned.items()) if self.effective[k] < n]
        if short:
            # No tolerance: every planned fault is tried up to TRIES times
            # until it takes effect, so a shortfall is a fault the relay
            # never met, and the run did not prove what its plan says.
            violations.append("fault plan not met: " + "; ".join(short))
        return report, violations, time.monotonic() - started

    def plan(self):
        if self.args.plan:
            plan = []
            for item in self.args.plan.split(","):
                k, _, n = item.partition("=")
                plan += [k] * int(n or 1)
        elif self.args.quick:
            plan = ["crash_point"] * 5 + ["kill"] * 3 + ["zombie", "failover", "broker", "postgres",
                                                          "terminate_backend", "pause", "delay",
                                                          "foreign_txn", "advance_reply_lost",
                                                          "db_failover"]
        else:
            n = self.args.faults
            weights = {"crash_point": 0.21, "kill": 0.38, "zombie": 0.05, "failover": 0.06,
                       "broker": 0.05, "postgres": 0.05, "terminate_backend": 0.06, "pause": 0.03,
                       "delay": 0.03, "foreign_txn": 0.03, "advance_reply_lost": 0.03,
                       "db_failover": 0.02, "db_failover_async": 0.01}
            plan = [k for k, w in weights.items() for _ in range(max(2, int(n * w)))]
        unknown = sorted(set(plan) - set(KINDS))
        if unknown:
            raise SystemExit(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
        if self.args.kinds:
            kinds = set(self.args.kinds.split(","))
            if kinds - set(KINDS):
                raise SystemExit(f"unknown fault kinds {sorted(kinds - set(KINDS))}; known: {', '.join(KINDS)}")
            plan = [k for k in plan if k in kinds]
        self.rng.shuffle(plan)
        return plan

    def close_pair(self):
        """The pair's servers stopped and their state removed; their logs
        kept in the run directory."""
        if self.pair is None:
            return
        for log_file in self.pair.state.glob("*/postgresql.log"):
            shutil.copy(log_file, self.dir / f"postgresql-{log_file.parent.name}.log")
        self.pair.destroy()

    def drain(self, timeout=300):
        conn = None
        deadline = time.monotonic() + timeout
        refusals = self.exit_codes[5]
        while time.monotonic() < deadline:
            if self.exit_codes[5] - refusals >= 3:
                # no use waiting out the timeout: the relays refuse to start
                raise RuntimeError(f"the outbox did not drain: relays refuse to start (exit 5, "
                                   f"{self.exit_codes[5] - refusals} times since the faults ended)")
            try:
                conn = conn or psycopg2.connect(self.db)
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM outbox.event")
                    if cur.fetchone()[0] == 0:
                        conn.close()
                        return
            except psycopg2.Error:
                conn = None
            time.sleep(0.5)
        raise RuntimeError(f"the outbox did not drain within {timeout} s after the faults "
                           f"(relay exits seen: {dict(self.exit_codes)})")


def print_faults(h, out=sys.stdout):
    print("| fault | planned | took effect | tries |", file=out)
    print("| --- | --- | --- | --- |", file=out)
    for k in KINDS:
        if h.planned[k] or h.attempts[k]:
            print(f"| {k} | {h.planned[k]} | {h.effective[k]} | {h.attempts[k]} |", file=out)
    for k, v in sorted(h.faults.items()):
        if k.startswith("crash point "):
            print(f"| {k} | | {v} | |", file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="the reduced run of the test suite")
    mode.add_argument("--full", action="store_true", help=">= 1M rows, >= 1000 faults")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--faults", type=int, default=1000)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--keys", type=int, default=96)
    ap.add_argument("--batch-rows", type=int, default=500)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--max-seconds", type=int)
    ap.add_argument("--results", help="append the result table to this file")
    ap.add_argument("--kinds", help="only these fault kinds of the plan, comma-separated: " + ",".join(KINDS))
    ap.add_argument("--plan", help="the plan itself instead of --quick's or --full's: kind=count,... "
                                   "(e.g. crash_point=5,kill=2)")
    ap.add_argument("--drain-seconds", type=int, default=180,
                    help="how long the outbox may take to drain after the faults")
    args = ap.parse_args()
    if args.rows is None:
        args.rows = 10**12 if args.quick else 1_000_000
    if args.max_seconds is None:
        args.max_seconds = 300 if args.quick else 4 * 3600
    h = Harness(args)
    log(f"seed {args.seed}")
    # SIGTERM (a CI timeout, an operator) ends the run through the finally
    # below, so that a pair of its own does not outlive it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report, violations, took = h.run()
    finally:
        h.stopping = True  # the supervisor starts no more relays
        with h.lock:
            for r in h.all_relays:  # none outlives an interrupted run
                if r.alive():
                    r.proc.kill()
        h.close_pair()
    print()
    checker.print_report(report, violations)
    print()
    print_faults(h)
    for n in h.notes:
        print(f"note: {n}")
    print(f"\nrelay exits seen: {dict(h.exit_codes)}; took {took:.0f}s; logs in {h.dir}")
    if args.results:
        with open(args.results, "a") as f:
            f.write(f"\n## Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n")
            f.write(f"Command: `python3 tests/fault/run.py {' '.join(sys.argv[1:])}` (seed {args.seed})  \n")
            f.write(f"Machine: {os.cpu_count()} cores, {platform.platform()}; took {took:.0f} s\n\n")
            checker.print_report(report, violations, out=f)
            f.write("\n")
            print_faults(h, out=f)
    ok = not violations
    if ok:  # after a failure the topics stay for a look at them
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0})
        for f in admin.delete_topics(h.topics + [h.ckpt], operation_timeout=30).values():
            f.result(60)
    print(f"fault run: {1 if ok else 0} passed, {0 if ok else 1} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
