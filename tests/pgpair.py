"""pgpair.py: a throwaway PostgreSQL primary and physical standby of their
own, for database failover (tests/e2e/test_failover.py and the db_failover
fault of tests/fault/run.py). The env's cluster is not touched: the pair
lives in a temporary state directory under /var/tmp (the postgres user must
reach it) on free ports, both servers run as postgres, and the standby is
made by deploy/local/standby.

    pair = Pair(sync=True, dbname="outbox")   # initdb, install.sql, standby up
    conninfo = pair.multi_host()              # both servers, read-write wins
    pair.fail_over()                          # primary -m immediate, promote
    pair.stop_receiving()                     # (before fail_over) the standby
                                              # stops with the primary's WAL up
                                              # to now: later commits it misses
    pair.rebuild_standby()                    # old primary's data replaced by
                                              # a base backup of the new one
    pair.destroy()

The two nodes' roles alternate: node 0 (STATE/pg-data, port p1) starts as
the primary, node 1 (STATE/pg-standby, port p2) as its standby; after a
failover and a rebuild node 1 is the primary and node 0 its standby, and so
on.
"""
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = "/usr/lib/postgresql/15/bin"
STANDBY = ROOT / "deploy/local/standby"


def as_postgres(*cmd, check=True):
    """Run cmd as the postgres user, as deploy/local/env.sh does."""
    su = [] if getpass.getuser() == "postgres" else ["runuser", "-u", "postgres", "--"]
    return subprocess.run([*su, *map(str, cmd)], check=check, capture_output=True, text=True,
                          timeout=120)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pair:
    """A primary in STATE/pg-data and its standby made by
    deploy/local/standby, both run as postgres. `sync`: the standby is in
    the primary's synchronous_standby_names (else it is asynchronous).
    `dbname` is created on the primary (so it is in the standby's base
    backup) and `install_sql` run in it. `standby=False`: the primary alone
    (restart() crashes and starts it); `settings`: more postgresql.conf
    lines for the primary."""

    def __init__(self, sync, dbname="outbox", install_sql=ROOT / "sql/install.sql",
                 standby=True, settings=""):
        self.sync = sync
        self.dbname = dbname
        self.state = Path(tempfile.mkdtemp(prefix="outbox-failover-", dir="/var/tmp"))
        self.state.chmod(0o755)
        self.p1, self.p2 = free_port(), free_port()
        self.primary = self.state / "pg-data"
        self.standby = self.state / "pg-standby"
        # (data directory, port) of each node; self.role[0] is the primary's
        self.nodes = [(self.primary, self.p1), (self.standby, self.p2)]
        self.role = [0, 1]
        subprocess.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "700",
                        self.primary, self.state / "pg-run"], check=True)
        as_postgres(f"{PG_BIN}/initdb", "-D", self.primary, "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--locale=C.UTF-8")
        with open(self.primary / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.p1}\n"
                    f"unix_socket_directories = '{self.state}/pg-run'\n"
                    "wal_level = replica\nlog_min_messages = warning\n" + settings)
        self.start(self.primary)
        admin = psycopg2.connect(self.url(self.p1, "postgres"))
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{dbname}"')
        admin.close()
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url(self.p1), "-f",
                        install_sql], check=True, capture_output=True)
        if standby:
            self.standby_cmd("up")

    @property
    def env(self):
        """deploy/local/standby's environment for the current roles."""
        (pdata, pport), (sdata, sport) = (self.nodes[i] for i in self.role)
        return dict(os.environ, OUTBOX_LOCAL_STATE=str(self.state), OUTBOX_PG_PORT=str(pport),
                    OUTBOX_PG_PRIMARY_DATA=str(pdata), OUTBOX_PG_STANDBY_PORT=str(sport),
                    OUTBOX_PG_STANDBY_DATA=str(sdata), OUTBOX_PG_STANDBY_SYNC=str(int(self.sync)))

    @property
    def primary_port(self):
        return self.nodes[self.role[0]][1]

    @property
    def standby_port(self):
        return self.nodes[self.role[1]][1]

    @property
    def primary_data(self):
        return self.nodes[self.role[0]][0]

    def url(self, port, db=None):
        return f"postgresql://postgres@127.0.0.1:{port}/{db or self.dbname}"

    def multi_host(self, ports=None):
        """The conninfo of the relay and the writers: both servers (or
        `ports`, e.g. proxies in front of them), the one that takes writes
        wins."""
        p = ports or (self.p1, self.p2)
        return (f"host=127.0.0.1,127.0.0.1 port={p[0]},{p[1]} dbname={self.dbname} user=postgres "
                "target_session_attrs=read-write connect_timeout=2")

    def standby_cmd(self, what):
        return subprocess.run([STANDBY, what], env=self.env, check=True, capture_output=True,
                              text=True, timeout=120).stdout

    def log_of(self, data):
        """The server log of a data directory (pg_ctl -l): in its socket
        directory, DATA-run as deploy/local/standby makes it, else pg-run."""
        run = Path(f"{data}-run")
        return (run if run.is_dir() else self.state / "pg-run") / "postgresql.log"

    def start(self, data):
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-l", self.log_of(data), "-w", "-t", "60", "start")

    def stop(self, data, mode="immediate"):
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-m", mode, "-w", "stop", check=False)

    def restart(self, mode="immediate"):
        """The primary stopped (-m immediate by default: a crash, its WAL
        not yet flushed is lost) and started again."""
        self.stop(self.primary_data, mode)
        self.start(self.primary_data)

    def primary_sql(self, sql, args=(), db="postgres"):
        """One statement on the current primary (autocommit); its first row."""
        conn = psycopg2.connect(self.url(self.primary_port, db), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchone() if cur.description else None
        finally:
            conn.close()

    def set_sync(self, sync):
        """The primary's synchronous_standby_names: the standby's name, or
        none (its commits then wait for no standby)."""
        self.primary_sql("ALTER SYSTEM SET synchronous_standby_names = %s",
                         ("outbox_standby" if sync else "",))
        self.primary_sql("SELECT pg_reload_conf()")

    def stop_receiving(self, timeout=60):
        """An asynchronous standby that misses the commits from now on: the
        primary made asynchronous (else its commits would wait for the
        stopped standby), the standby waited for until it has replayed the
        primary's WAL up to now (so every commit acknowledged before this
        call is on it), then stopped (-m fast: it keeps what it received).
        fail_over() starts it again and promotes it. (A paused replay,
        pg_wal_replay_pause(), would not do: the standby keeps receiving, and
        replays it all at promotion.)"""
        self.set_sync(False)
        lsn = self.primary_sql("SELECT pg_current_wal_lsn()::text")[0]
        deadline = time.monotonic() + timeout
        while not self.primary_sql("SELECT coalesce(bool_and(replay_lsn >= %s::pg_lsn), false) "
                                   "FROM pg_stat_replication", (lsn,))[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not replay the primary's WAL up to {lsn} "
                                   f"within {timeout} s")
            time.sleep(0.05)
        self.stop(self.nodes[self.role[1]][0], "fast")

    def standby_xmax(self):
        """The standby's snapshot xmax (it must run, in recovery): every
        transaction it has as committed has a lower id, every transaction
        it runs once promoted a higher or equal one."""
        conn = psycopg2.connect(self.url(self.standby_port), connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def standby_running(self):
        data = self.nodes[self.role[1]][0]
        return as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "status", check=False).returncode == 0

    def fail_over(self, before_promote=None):
        """Stops the primary with -m immediate and promotes the standby
        (started again first if stop_receiving() stopped it): the roles
        swap. The old primary stays down until rebuild_standby().
        `before_promote()` runs with the standby up, in recovery; its value
        is returned."""
        self.stop(self.primary_data)
        if not self.standby_running():
            self.start(self.nodes[self.role[1]][0])
        seen = before_promote() if before_promote else None
        self.standby_cmd("promote")
        self.role.reverse()
        return seen

    def rebuild_standby(self):
        """The old primary's data directory replaced by a fresh base backup
        of the current primary (deploy/local/standby up: pg_basebackup -R),
        started as its standby, synchronous again when the pair is."""
        old = self.nodes[self.role[1]][0]
        self.stop(old)
        shutil.rmtree(old, ignore_errors=True)
        self.standby_cmd("up")

    def destroy(self):
        for data, _ in self.nodes:
            self.stop(data)
        shutil.rmtree(self.state, ignore_errors=True)
