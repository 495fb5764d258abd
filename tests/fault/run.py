#!/usr/bin/python3
"""Fault-injection run on the real PostgreSQL and the real Kafka broker.

A workload of concurrent writers (tests/fault/workload.py) commits outbox
rows while the relay is hit by faults of every kind; then the faults stop,
everything drains, and the checker (tests/fault/checker.py) reads all topics
back and compares with the writers' audit table.

    run.py --quick                      the reduced run of the test suite
    run.py --full [--results FILE]      >= 1M rows and >= 500 faults

deploy/local/up must have run (scripts/test does that).
"""
import argparse
import collections
import datetime
import itertools
import os
import platform
import random
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
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checker  # noqa: E402
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
            cli, _ = self.srv.accept()
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
    def __init__(self, h, env=None):
        self.log_path = h.dir / f"relay-{len(h.all_relays)}.log"
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([RELAY_BIN, "run", "-c", str(h.config)], stdout=self.logf,
                                     stderr=self.logf, env={**os.environ, **(env or {})})
        h.all_relays.append(self)

    def text(self):
        return self.log_path.read_text(errors="replace")

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
        self.faults = collections.Counter()
        self.exit_codes = collections.Counter()
        self.all_relays = []
        self.lock = threading.Lock()
        self.name = "fault-" + uuid.uuid4().hex[:6]
        # every crash point in turn, so each is hit equally often
        self.points = itertools.cycle(self.rng.sample(CRASH_POINTS, len(CRASH_POINTS)))
        self.db = None

    # -- set-up -------------------------------------------------------------
    def setup(self):
        dbname = self.name.replace("-", "_")
        admin = psycopg2.connect(PG_URL)
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {dbname}")
        admin.close()
        self.db = PG_URL.rsplit("/", 1)[0] + "/" + dbname
        sql = os.environ.get("OUTBOX_E2E_INSTALL_SQL", str(ROOT / "sql/install.sql"))
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.db, "-f", sql], check=True,
                       capture_output=True)
        self.topics = [f"{self.name}-t{i}" for i in range(3)]
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0})
        for f in admin.create_topics([NewTopic(t, num_partitions=6, replication_factor=1)
                                      for t in self.topics]).values():
            f.result(30)
        workload.setup(self.db, self.topics, self.args.keys)
        self.ckpt = f"ckpt-{self.name}"
        self.config = self.dir / "relay.conf"
        self.config.write_text(f"""
relay = {{ name = "{self.name}"; lease_ttl_ms = {LEASE_TTL_MS}; }};
postgres = {{ conninfo = "{self.db}"; statement_timeout_ms = 10000; }};
kafka = {{ bootstrap_servers = "{PROXIED}"; checkpoint_topic = "{self.ckpt}";
          transaction_timeout_ms = {TXN_TIMEOUT_MS}; commit_timeout_ms = {COMMIT_TIMEOUT_MS}; }};
batch = {{ max_rows = {self.args.batch_rows}; poll_interval_ms = 50; }};
http = {{ listen = ""; }};
""")
        self.proxy = DelayProxy(PROXY_PORT, PROXIED)
        self.proxy.start()
        log(f"run directory {self.dir}, database {self.db}, relay {self.name}")

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
                if not any(r.alive() for r in self.all_relays):
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
        else:
            raise RuntimeError(f"crash point {point} not reached in 60 s: {armed.log_path}")

    def f_kill(self):
        r = self.current()
        time.sleep(self.rng.uniform(1, 5) if not self.args.quick else self.rng.uniform(0.5, 2))
        r.proc.kill()
        r.proc.wait(30)
        self.faults["kill -9 (random time)"] += 1

    def f_zombie(self):
        r = self.current()
        with self.lock:
            standby = Relay(self)
        standby.wait_log("standby", 30)
        r.proc.send_signal(signal.SIGSTOP)
        took = standby.wait_log("publishing", 30)
        time.sleep(0.5)
        r.proc.send_signal(signal.SIGCONT)
        rc = r.proc.wait(60)
        if took and rc == 3:
            self.faults["zombie (SIGSTOP, takeover, SIGCONT)"] += 1
        else:
            raise RuntimeError(f"zombie: takeover={took}, zombie exit {rc}: {r.log_path}")

    def f_failover(self):
        r = self.current()
        with self.lock:
            standby = Relay(self)
        standby.wait_log("standby", 30)
        time.sleep(self.rng.uniform(0.2, 1.5))
        r.proc.kill()
        r.proc.wait(30)
        if not standby.wait_log("publishing", 30):
            raise RuntimeError(f"standby did not take over: {standby.log_path}")
        self.faults["leader kill -9, standby takes over"] += 1

    def f_broker(self):
        self.current()
        time.sleep(self.rng.uniform(0.2, 1.5))
        pid = int(Path(f"{STATE}/kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        time.sleep(self.rng.uniform(0.5, 2))
        subprocess.run([str(ROOT / "deploy/local/up")], check=True, capture_output=True)
        self.faults["broker kill -9 and restart"] += 1

    def f_postgres(self):
        self.current()
        time.sleep(self.rng.uniform(0.2, 1.5))
        subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "-D",
                        f"{STATE}/pg-data", "-m", "immediate", "stop"], check=True, capture_output=True)
        time.sleep(self.rng.uniform(0.5, 2))
        subprocess.run([str(ROOT / "deploy/local/up")], check=True, capture_output=True)
        self.faults["postgresql immediate stop and restart"] += 1

    def f_terminate_backend(self):
        self.current()
        time.sleep(self.rng.uniform(0.2, 1.5))
        conn = psycopg2.connect(PG_URL)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'outbox-relay' AND datname = %s",
                        (self.db.rsplit("/", 1)[1],))
            n = cur.fetchone()[0]
        conn.close()
        if n:
            self.faults["pg_terminate_backend of the relay"] += 1

    def f_pause(self):
        r = self.current()
        time.sleep(self.rng.uniform(0.1, 1))
        r.proc.send_signal(signal.SIGSTOP)
        time.sleep(TXN_TIMEOUT_MS / 1000 + 2)
        r.proc.send_signal(signal.SIGCONT)
        self.faults["relay paused beyond transaction.timeout.ms"] += 1

    def f_delay(self):
        self.current()
        self.proxy.delay = COMMIT_TIMEOUT_MS / 1000 + 1.5
        time.sleep(self.rng.uniform(4, 8))
        self.proxy.delay = 0
        self.faults["broker responses delayed beyond the commit timeout"] += 1

    # -- the run -----------------------------------------------------------------
    def run(self):
        self.stopping = False
        self.setup()
        sup = threading.Thread(target=self.supervise, daemon=True)
        sup.start()
        # the writers run through every fault; the row target is a minimum
        load = workload.Workload(self.db, self.args.keys, writers=self.args.writers,
                                 seed=self.args.seed).start()
        plan = self.plan()
        log(f"{len(plan)} faults planned; writers target {self.args.rows} rows")
        started = time.monotonic()
        for i, fault in enumerate(plan):
            if time.monotonic() - started > self.args.max_seconds:
                log("time budget spent: no more faults")
                break
            log(f"fault {i + 1}/{len(plan)}: {fault}")
            getattr(self, "f_" + fault)()
            if (i + 1) % 20 == 0:
                log(f"{i + 1} faults, {load.committed} rows committed")
        # faults over: let the writers reach the row target (full run)
        while not self.args.quick and load.alive() and load.committed < self.args.rows:
            time.sleep(1)
        load.stop()
        self.drain()
        r = self.current()
        self.stopping = True
        sup.join(5)
        r.proc.send_signal(signal.SIGTERM)
        rc = r.proc.wait(60)
        stray = [x for x in self.all_relays if x.alive()]
        for x in stray:
            x.proc.kill()
        if stray:
            log(f"relays still alive at the end: {[str(x.log_path) for x in stray]}")
        report, violations = checker.check(self.db, BOOTSTRAP, self.topics, self.name, self.ckpt,
                                           expect_aborted=True)
        report["faults injected"] = sum(self.faults.values())
        report["final relay exit code"] = rc
        if rc != 0:
            violations.append(f"the last relay did not stop cleanly (exit {rc})")
        return report, violations, time.monotonic() - started

    def plan(self):
        if self.args.quick:
            plan = ["crash_point"] * 5 + ["kill"] * 3 + ["zombie", "failover", "broker", "postgres",
                                                          "terminate_backend", "pause", "delay"]
        else:
            n = self.args.faults
            weights = {"crash_point": 0.22, "kill": 0.45, "zombie": 0.05, "failover": 0.06,
                       "broker": 0.05, "postgres": 0.05, "terminate_backend": 0.06, "pause": 0.03,
                       "delay": 0.03}
            plan = [k for k, w in weights.items() for _ in range(max(2, int(n * w)))]
        self.rng.shuffle(plan)
        return plan

    def drain(self, timeout=300):
        conn = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
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
        raise RuntimeError("the outbox did not drain after the faults")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="the reduced run of the test suite")
    mode.add_argument("--full", action="store_true", help=">= 1M rows, >= 500 faults")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--faults", type=int, default=520)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--keys", type=int, default=96)
    ap.add_argument("--batch-rows", type=int, default=500)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--max-seconds", type=int)
    ap.add_argument("--results", help="append the result table to this file")
    args = ap.parse_args()
    if args.rows is None:
        args.rows = 10**12 if args.quick else 1_000_000
    if args.max_seconds is None:
        args.max_seconds = 300 if args.quick else 4 * 3600
    h = Harness(args)
    log(f"seed {args.seed}")
    report, violations, took = h.run()
    print()
    checker.print_report(report, violations)
    print()
    print("| fault | injected |")
    print("| --- | --- |")
    for k, v in sorted(h.faults.items()):
        print(f"| {k} | {v} |")
    print(f"\nrelay exits seen: {dict(h.exit_codes)}; took {took:.0f}s; logs in {h.dir}")
    if args.results:
        with open(args.results, "a") as f:
            f.write(f"\n## Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n")
            f.write(f"Command: `python3 tests/fault/run.py {' '.join(sys.argv[1:])}` (seed {args.seed})  \n")
            f.write(f"Machine: {os.cpu_count()} cores, {platform.platform()}; took {took:.0f} s\n\n")
            checker.print_report(report, violations, out=f)
            f.write("\n| fault | injected |\n| --- | --- |\n")
            for k, v in sorted(h.faults.items()):
                f.write(f"| {k} | {v} |\n")
    ok = not violations
    if ok:  # after a failure the topics stay for a look at them
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0})
        for f in admin.delete_topics(h.topics + [h.ckpt], operation_timeout=30).values():
            f.result(60)
    print(f"fault run: {1 if ok else 0} passed, {0 if ok else 1} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
