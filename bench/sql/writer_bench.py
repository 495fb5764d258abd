#!/usr/bin/python3
"""writer_bench.py: what an outbox insert costs a writer, as a ratio against
the same insert into a plain table, measured in the same run.

    source /var/tmp/outbox-relay-local/env
    /usr/bin/python3 bench/sql/writer_bench.py                 # every variant
    /usr/bin/python3 bench/sql/writer_bench.py plain v2 event  # some of them
    /usr/bin/python3 bench/sql/writer_bench.py --list          # what they are

pgbench, CLIENTS (8) clients, -j 2, SECONDS (15) per run, one single-row
INSERT per transaction: a 256-byte payload, one of 3 topics, a 10-byte key,
headers NULL (variants ending in "+h": a two-header object). Every variant
writes its own table in database BENCH_DB (default writer_bench, dropped at
the end unless KEEP_DB=1), into which sql/install.sql is installed, with one
relay holding the lease and two reserved topics (what a running relay does).

Variants (--list prints them):
  plain     id bigint identity PK, txid xid8, topic text, key bytea,
            payload bytea, headers jsonb, created_at timestamptz default now();
            no txid default, no txid index, no checks, no triggers
  event     outbox.event as sql/install.sql installs it (the current version)
  v2        a copy of outbox.event as schema version 2 defined it: txid
            default, 5 CHECKs, txid index, autovacuum options, the two
            statement-level reserved-topic triggers of migration 0002
  v2-<part> v2 without one component, so that the cost of each is known
  ...       design options for version 3, measured the same way
  o-bare-n  txid default and index plus the NOTIFY trigger, which notifies
            only while no relay is awake; AWAKE=1 holds the relay's lock for
            the whole run (a relay publishing), otherwise every transaction
            notifies (no relay awake)
NOTIFY_EVENT=1 switches notify_enable()'s trigger on for outbox.event itself
(the "event" variants): the wake-up on, as the quick start has it.

Runs are interleaved: each of ROUNDS (3) rounds runs the variants in a
rotated order, with a plain run before the first and after every PAIR (2)
variants; a variant's ratio in a round is its tps over the mean of the plain
runs on either side of it. Reported: per variant the median of its per-round
ratios and of its tps, the min and max ratio, and the CPU time the server's
backends spent per transaction (/proc/PID/schedstat of the pgbench
connections over the middle of each run, when the server runs on this
host). Tables are truncated before every run. The load average is printed
before and after. PROTOCOL sets pgbench -M (simple).

--mixed runs each variant together with plain in one pgbench run (two
scripts, weight 1 each: every transaction picks one at random), so both meet
the same load, commit queue and contention; reported: the ratio of their
average latencies (plain / variant), median over ROUNDS runs per variant.
Much steadier than separate runs on a shared machine, but compressed
towards 1: the two share the commit queue and the wait for a CPU, so only
the difference in their own work shows.

--micro instead times the statements inside the server, which the noise of a
shared machine moves less: one session, synchronous_commit off, MICRO_ROWS
(2000) single-row transactions per chunk (a procedure: INSERT; COMMIT), chunks
of the variants interleaved, MICRO_REPEAT (7) times; best chunk per variant,
in microseconds per transaction, and the difference to plain; and the
median CPU time of the backend per transaction (/proc/PID/schedstat, when
the server runs on this host), which the load moves much less.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
URL = os.environ.get("OUTBOX_PG_URL", "postgresql://postgres@127.0.0.1:55432/outbox")
DB = os.environ.get("BENCH_DB", "writer_bench")
CLIENTS = int(os.environ.get("CLIENTS", "8"))
SECONDS = int(os.environ.get("SECONDS", "15"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
PAIR = int(os.environ.get("PAIR", "2"))
MODE = os.environ.get("PROTOCOL", "simple")  # pgbench -M: simple, extended, prepared
MICRO_ROWS = int(os.environ.get("MICRO_ROWS", "2000"))
MICRO_REPEAT = int(os.environ.get("MICRO_REPEAT", "7"))
KEEP = os.environ.get("KEEP_DB") == "1"


def with_db(url, db):
    if re.match(r"^postgres(ql)?://", url):
        return re.sub(r"^(postgres(ql)?://[^/?]*)(/[^?]*)?", lambda m: m.group(1) + "/" + db, url)
    return url + " dbname=" + db


DB_URL = with_db(URL, DB)

# ---------------------------------------------------------------------------
# Table definitions. Component names: txdef (txid NOT NULL DEFAULT
# pg_current_xact_id()), txidx (index on txid), the five CHECKs of 0001,
# avopts (autovacuum options), trig2 (the statement triggers of 0002).
# ---------------------------------------------------------------------------
CHECKS = {
    "chk_empty": "CHECK (topic <> '')",
    "chk_chars": "CHECK (topic ~ '^[A-Za-z0-9._-]*$')",
    "chk_len": "CHECK (length(topic) <= 249)",
    "chk_dot": "CHECK (topic NOT IN ('.', '..'))",
    "chk_headers": "CHECK (outbox.headers_valid(headers))",
}
V2 = ["txdef", "txidx", "avopts", "trig2"] + list(CHECKS)

# The v2 trigger function, as migration 0002 defines it (copied here so that
# the comparison survives a later migration that replaces it).
SETUP_SQL = r"""
CREATE SCHEMA wb;
CREATE FUNCTION wb.refuse_reserved_v2()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    v_topic text;
    v_relay text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM outbox.reserved_topic AS r
                       WHERE r.topic IN (SELECT n.topic FROM event_new AS n)) THEN
            RETURN NULL;
        END IF;
        SELECT r.topic, r.relay_name INTO v_topic, v_relay
        FROM outbox.reserved_topic AS r
        WHERE r.topic IN (SELECT n.topic FROM event_new AS n)
        ORDER BY r.topic, r.relay_name
        LIMIT 1;
    ELSE
        SELECT r.topic, r.relay_name INTO v_topic, v_relay
        FROM outbox.reserved_topic AS r
        WHERE r.topic IN (SELECT n.topic
                          FROM event_new AS n
                          LEFT JOIN event_old AS o ON o.id = n.id
                          WHERE o.topic IS DISTINCT FROM n.topic)
        ORDER BY r.topic, r.relay_name
        LIMIT 1;
        IF v_topic IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'outbox row refused: topic "%" is reserved by relay "%"', v_topic, v_relay
        USING ERRCODE = 'OR006';
END
$$;
-- A row-level trigger function that raises: fired only when a WHEN clause
-- matched (design options below).
CREATE FUNCTION wb.refuse_row()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'outbox row refused: topic "%" is reserved', NEW.topic USING ERRCODE = 'OR006';
END
$$;
-- A row-level lookup per row, for comparison.
CREATE FUNCTION wb.refuse_row_lookup()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT FROM outbox.reserved_topic AS r WHERE r.topic = NEW.topic) THEN
        RAISE EXCEPTION 'outbox row refused: topic "%" is reserved', NEW.topic USING ERRCODE = 'OR006';
    END IF;
    RETURN NULL;
END
$$;
-- The reserved names as a constant: a SQL function whose body the planner
-- inlines; regenerated when reserved_topic changes (here: once, below).
CREATE FUNCTION wb.reserved_names() RETURNS text[] LANGUAGE sql STABLE PARALLEL SAFE
RETURN '{}'::text[];
-- The rules as domains: their CHECKs are planned once per session (type
-- cache), a table's CHECK once per statement.
CREATE DOMAIN wb.topic_name AS text
    CONSTRAINT topic_name_not_empty CHECK (VALUE <> '')
    CONSTRAINT topic_name_legal_chars CHECK (VALUE ~ '^[A-Za-z0-9._-]*$')
    CONSTRAINT topic_name_max_length CHECK (length(VALUE) <= 249)
    CONSTRAINT topic_name_not_dot CHECK (VALUE NOT IN ('.', '..'));
-- The same, and the reserved names written into one more constraint (the
-- function runs only for a reserved name, to raise OR006).
CREATE FUNCTION wb.refuse_topic(p_topic text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'outbox row refused: topic "%" is reserved', p_topic USING ERRCODE = 'OR006';
END
$$;
CREATE DOMAIN wb.topic_name_r AS text
    CONSTRAINT topic_name_not_empty CHECK (VALUE <> '')
    CONSTRAINT topic_name_legal_chars CHECK (VALUE ~ '^[A-Za-z0-9._-]*$')
    CONSTRAINT topic_name_max_length CHECK (length(VALUE) <= 249)
    CONSTRAINT topic_name_not_dot CHECK (VALUE NOT IN ('.', '..'))
    CONSTRAINT topic_name_not_reserved
        CHECK (VALUE <> ALL ('{bench.checkpoints,bench.dead-letters}'::text[]) OR wb.refuse_topic(VALUE));
CREATE DOMAIN wb.headers AS jsonb
    CONSTRAINT headers_string_object CHECK (outbox.headers_valid(VALUE));
-- The topic checks in one constraint.
CREATE FUNCTION wb.topic_valid(p_topic text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_topic ~ '^[A-Za-z0-9._-]{1,249}$' AND p_topic NOT IN ('.', '..');
"""


def table_ddl(name, parts):
    """CREATE statements for table wb.<name> with the given components."""
    parts = set(parts)
    txid = "txid xid8 NOT NULL DEFAULT pg_current_xact_id()" if "txdef" in parts else "txid xid8"
    cols = [
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        txid,
        ("topic wb.topic_name" if "dom_topic" in parts else
         "topic wb.topic_name_r" if "dom_topic_r" in parts else "topic text") + (" NOT NULL" if "txdef" in parts else ""),
        "key bytea",
        "payload bytea",
        "headers wb.headers" if "dom_headers" in parts else "headers jsonb",
        "created_at timestamptz" + (" NOT NULL" if "txdef" in parts else "") + " DEFAULT now()",
    ]
    for c, expr in CHECKS.items():
        if c in parts:
            cols.append("CONSTRAINT %s_%s %s" % (name, c, expr))
    if "chk_topic1" in parts:  # the four topic rules in one CHECK
        cols.append("CONSTRAINT %s_topic CHECK (topic ~ '^[A-Za-z0-9._-]{1,249}$' "
                    "AND topic NOT IN ('.', '..'))" % name)
    if "chk_topicfn" in parts:  # the same through an inlined SQL function
        cols.append("CONSTRAINT %s_topic CHECK (wb.topic_valid(topic))" % name)
    if "chk_topic3" in parts:  # the four topic rules in one CHECK, no bounded repetition
        cols.append("CONSTRAINT %s_topic CHECK (topic ~ '^[A-Za-z0-9._-]+$' AND length(topic) <= 249 "
                    "AND topic NOT IN ('.', '..'))" % name)
    if "chk_hdr_inline" in parts:  # headers_valid()'s body written out: nothing to inline
        cols.append("CONSTRAINT %s_headers CHECK (headers IS NULL OR (jsonb_typeof(headers) = 'object' "
                    "AND NOT jsonb_path_exists(headers, 'strict $.* ? (@.type() != \"string\")')))" % name)
    if "chk_all1" in parts:  # topic and headers in one CHECK
        cols.append("CONSTRAINT %s_valid CHECK (topic ~ '^[A-Za-z0-9._-]{1,249}$' "
                    "AND topic NOT IN ('.', '..') AND outbox.headers_valid(headers))" % name)
    sql = ["CREATE TABLE wb.%s (%s)" % (name, ", ".join(cols))]
    if "txidx" in parts:
        sql.append("CREATE INDEX %s_txid_idx ON wb.%s (txid)" % (name, name))
    if "txbrin" in parts:
        sql.append("CREATE INDEX %s_txid_brin ON wb.%s USING brin (txid)" % (name, name))
    if "avopts" in parts:
        sql.append("ALTER TABLE wb.%s SET (autovacuum_vacuum_scale_factor = 0.01, "
                   "autovacuum_vacuum_insert_scale_factor = 0.01, "
                   "autovacuum_analyze_scale_factor = 0.01)" % name)
    if "trig2" in parts:
        sql.append("CREATE TRIGGER %s_ins AFTER INSERT ON wb.%s REFERENCING NEW TABLE AS event_new "
                   "FOR EACH STATEMENT EXECUTE FUNCTION wb.refuse_reserved_v2()" % (name, name))
        sql.append("CREATE TRIGGER %s_upd AFTER UPDATE ON wb.%s REFERENCING OLD TABLE AS event_old "
                   "NEW TABLE AS event_new FOR EACH STATEMENT EXECUTE FUNCTION wb.refuse_reserved_v2()"
                   % (name, name))
    if "trigwhen" in parts:  # row-level, fires only for a reserved name
        sql.append("CREATE TRIGGER %s_ins AFTER INSERT ON wb.%s FOR EACH ROW "
                   "WHEN (NEW.topic = ANY (wb.reserved_names())) EXECUTE FUNCTION wb.refuse_row()"
                   % (name, name))
        sql.append("CREATE TRIGGER %s_upd AFTER UPDATE OF topic ON wb.%s FOR EACH ROW "
                   "WHEN (NEW.topic IS DISTINCT FROM OLD.topic AND NEW.topic = ANY (wb.reserved_names())) "
                   "EXECUTE FUNCTION wb.refuse_row()" % (name, name))
    if "trigwhenlit" in parts:  # row-level, WHEN with the names written in
        sql.append("CREATE TRIGGER %s_ins AFTER INSERT ON wb.%s FOR EACH ROW "
                   "WHEN (NEW.topic = ANY ('{bench.checkpoints,bench.dead-letters}'::text[])) "
                   "EXECUTE FUNCTION wb.refuse_row()" % (name, name))
    if "trigrow" in parts:  # row-level, a lookup per row
        sql.append("CREATE TRIGGER %s_ins AFTER INSERT ON wb.%s FOR EACH ROW "
                   "EXECUTE FUNCTION wb.refuse_row_lookup()" % (name, name))
    if "notify" in parts:
        sql.append("CREATE TRIGGER %s_notify AFTER INSERT ON wb.%s FOR EACH STATEMENT "
                   "EXECUTE FUNCTION outbox.notify_event()" % (name, name))
    return sql


def without(*drop):
    return [p for p in V2 if p not in drop]


# name -> (table, components or None for a real table, headers?, description)
VARIANTS = {}


def variant(name, parts, desc, table=None):
    VARIANTS[name] = (table or "wb." + name.replace("-", "_").replace("+", "_"), parts, False, desc)
    VARIANTS[name + "+h"] = (VARIANTS[name][0], parts, True, desc + "; headers: a two-header object")


variant("plain", [], "plain table: same columns, PK only")
variant("event", None, "outbox.event as installed (sql/install.sql of this tree)", table="outbox.event")
variant("v2", V2, "outbox.event of schema version 2 (copy)")
variant("v2-trig", without("trig2"), "v2 without the reserved-topic statement triggers")
variant("v2-txidx", without("txidx"), "v2 without the txid index")
variant("v2-txdef", without("txdef"), "v2 without the txid default (and NOT NULLs)")
variant("v2-avopts", without("avopts"), "v2 without the autovacuum options")
for c in CHECKS:
    variant("v2-" + c, without(c), "v2 without CHECK %s" % c)
variant("v2-checks", without(*CHECKS), "v2 without any CHECK")
variant("v2+notify", V2 + ["notify"], "v2 with the NOTIFY trigger of 0001")
# Design options.
variant("o-when", without("trig2") + ["trigwhen"],
        "v2, reserved topics by a row-level trigger WHEN topic = ANY(inlined constant)")
variant("o-row", without("trig2") + ["trigrow"], "v2, reserved topics by a row-level lookup trigger")
variant("o-chk1", [p for p in without("trig2", *CHECKS) if p] + ["chk_topic1", "chk_headers", "trigwhen"],
        "o-when with the four topic CHECKs in one")
variant("o-chkfn", [p for p in without("trig2", *CHECKS) if p] + ["chk_topicfn", "chk_headers", "trigwhen"],
        "o-when with the topic rules in one CHECK through an inlined function")
variant("o-all1", [p for p in without("trig2", *CHECKS) if p] + ["chk_all1", "trigwhen"],
        "o-when with topic and headers in one CHECK")
variant("o-brin", [p for p in without("trig2", "txidx")] + ["txbrin", "trigwhen"],
        "o-when with a BRIN index on txid instead of the btree")
variant("o-bare", ["txdef", "txidx"], "txid default and index only")
variant("o-bare-n", ["txdef", "txidx", "notify"],
        "txid default and index, and the NOTIFY trigger (notifies only while no relay is awake: AWAKE=1 "
        "holds the relay's lock for the whole run)")
BASE3 = ["txdef", "txidx", "avopts"]
TOPIC4 = ["chk_empty", "chk_chars", "chk_len", "chk_dot"]
variant("o-hdr", BASE3 + TOPIC4 + ["chk_hdr_inline", "trig2"], "v2 with the headers CHECK written out")
variant("o-a4", BASE3 + TOPIC4 + ["chk_hdr_inline", "trigrow"],
        "4 topic CHECKs, headers CHECK written out, row-level lookup trigger")
variant("o-a1", BASE3 + ["chk_topic3", "chk_hdr_inline", "trigrow"],
        "1 topic CHECK, headers CHECK written out, row-level lookup trigger")
variant("o-b1", BASE3 + ["chk_topic3", "chk_hdr_inline", "trigwhenlit"],
        "1 topic CHECK, headers CHECK written out, row trigger WHEN topic = ANY(literal names)")
variant("o-b4", BASE3 + TOPIC4 + ["chk_hdr_inline", "trigwhenlit"],
        "4 topic CHECKs, headers CHECK written out, row trigger WHEN topic = ANY(literal names)")
variant("o-dom", BASE3 + ["dom_topic", "dom_headers", "trig2"], "v2 with the CHECKs as domains")
variant("o-domrow", BASE3 + ["dom_topic", "dom_headers", "trigrow"],
        "CHECKs as domains, row-level lookup trigger")
variant("o-domlit", BASE3 + ["dom_topic", "dom_headers", "trigwhenlit"],
        "CHECKs as domains, row trigger WHEN topic = ANY(literal names)")
variant("o-domres", BASE3 + ["dom_topic_r", "dom_headers"],
        "CHECKs as domains, the reserved names written into the topic domain")
variant("o-dom0", BASE3 + ["dom_topic", "dom_headers"], "CHECKs as domains, no reserved check")
variant("o-c1", BASE3 + ["chk_topic3", "chk_hdr_inline"], "1 topic CHECK, headers CHECK written out, no reserved check")

DEFAULT = ["plain", "event", "v2", "v2-trig", "v2-txidx", "v2-txdef", "v2-avopts"] + \
    ["v2-" + c for c in CHECKS] + ["v2-checks", "plain+h", "v2+h", "event+h"]

PAYLOAD = "'\\x" + "5a" * 256 + "'::bytea"
HEADERS = """'{"trace-id": "4bf92f3577b34da6", "source": "bench"}'::jsonb"""


def insert_sql(table, headers):
    # 10-byte key ("key-" and 6 digits), topic one of 3.
    return ("INSERT INTO %s (topic, key, payload, headers) VALUES "
            "('orders-' || :t, convert_to('key-' || :k, 'UTF8'), %s, %s);"
            % (table, PAYLOAD, HEADERS if headers else "NULL"))


def base_of(n):
    return "plain+h" if n.endswith("+h") else "plain"


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def connect(url):
    c = psycopg2.connect(url)
    c.autocommit = True
    return c


def setup(names):
    c = connect(URL)
    c.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB)
    c.cursor().execute("CREATE DATABASE %s" % DB)
    c.close()
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", DB_URL, "-f",
                    os.path.join(ROOT, "sql", "install.sql")], check=True, stdout=subprocess.DEVNULL)
    c = connect(DB_URL)
    cur = c.cursor()
    cur.execute("SELECT outbox.version()")
    version = cur.fetchone()[0]
    cur.execute(SETUP_SQL)
    cur.execute("SELECT generation FROM outbox.lease_acquire('bench', 'writer_bench', 3600000)")
    gen = cur.fetchone()[0]
    cur.execute("SELECT outbox.reserve_topics('bench', %s, ARRAY['bench.checkpoints', 'bench.dead-letters'])",
                (gen,))
    cur.execute("CREATE OR REPLACE FUNCTION wb.reserved_names() RETURNS text[] LANGUAGE sql STABLE "
                "PARALLEL SAFE RETURN %s::text[]",
                ("{%s}" % ",".join(sorted(["bench.checkpoints", "bench.dead-letters"])),))
    done = set()
    for n in names:
        table, parts, _, _ = VARIANTS[n]
        if parts is None or table in done:
            continue
        for s in table_ddl(table.split(".")[1], parts):
            cur.execute(s)
        done.add(table)
    cur.execute("ALTER DATABASE %s SET track_functions = 'pl'" % DB)
    return c, version


def truncate(cur, names):
    tables = sorted({VARIANTS[n][0] for n in names})
    cur.execute("TRUNCATE %s" % ", ".join(tables))


def pgbench(script, table, cur):
    """tps of one run, and the CPU time the server's backends spent per
    transaction in its middle (from 2 s after the start to 2 s before the
    end): rows inserted (the identity sequence) and /proc/PID/schedstat of
    the pgbench connections. None for the latter when the server is not on
    this host."""
    proc = subprocess.Popen(["pgbench", "-n", "-M", MODE, "-c", str(CLIENTS), "-j", "2", "-T", str(SECONDS),
                             "-f", script, DB_URL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu = None
    try:
        time.sleep(2)
        cur.execute("SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'pgbench' AND pid <> pg_backend_pid()")
        pids = cur.fetchone()[0] or []
        seq = "SELECT last_value FROM %s" % seqs[table]
        cur.execute(seq)
        r0 = cur.fetchone()[0]
        c0 = sum(cpu_ns(p) for p in pids)
        time.sleep(max(SECONDS - 4, 1))
        c1 = sum(cpu_ns(p) for p in pids)
        cur.execute(seq)
        r1 = cur.fetchone()[0]
        if r1 > r0 and len(pids) == CLIENTS:
            cpu = (c1 - c0) / 1000.0 / (r1 - r0)
    except (OSError, psycopg2.Error):
        pass
    out, err = proc.communicate()
    m = re.search(r"^tps = ([0-9.]+)", out, re.M)
    if not m or proc.returncode != 0:
        sys.exit("pgbench failed:\n" + out + err)
    return float(m.group(1)), cpu


seqs = {}


def run_pgbench(names, conn):
    cur = conn.cursor()
    scripts = {}
    tmp = tempfile.mkdtemp(prefix="writer_bench.")
    for n in names:
        table, _, headers, _ = VARIANTS[n]
        p = os.path.join(tmp, n + ".sql")
        with open(p, "w") as f:
            f.write("\\set t random(1, 3)\n\\set k random(100000, 999999)\n")
            f.write(insert_sql(table, headers) + "\n")
        scripts[n] = p
    for n in names:
        t = VARIANTS[n][0]
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (t,))
        seqs[t] = cur.fetchone()[0]
    print("load average before: %s" % load(), flush=True)
    truncate(cur, names)
    pgbench(scripts["plain"], VARIANTS["plain"][0], cur)  # warm-up, not counted
    cpus = {n: [] for n in names}

    def run(n):
        t, c = pgbench(scripts[n], VARIANTS[n][0], cur)
        tps[n].append(t)
        if c is not None:
            cpus[n].append(c)
        line.append("%s %.0f" % (n, t))
        return t

    families = {}
    for n in names:
        b = base_of(n)
        if n != b:
            families.setdefault(b, []).append(n)
    ratios = {n: [] for n in names}
    tps = {n: [] for n in set(names) | set(families)}
    line = []
    for r in range(ROUNDS):
        line.clear()
        for base, others in families.items():
            k = (r * len(others)) // ROUNDS
            order = others[k:] + others[:k]
            truncate(cur, names)
            prev = run(base)
            for i in range(0, len(order), PAIR):
                group = order[i:i + PAIR]
                got = {}
                for n in group:
                    truncate(cur, names)
                    got[n] = run(n)
                truncate(cur, names)
                nxt = run(base)
                for n in group:
                    ratios[n].append(got[n] / ((prev + nxt) / 2))
                prev = nxt
        print("round %d (load %s): %s" % (r + 1, load(), ", ".join(line)), flush=True)
    print("load average after: %s" % load())
    print()
    print("| variant | tps (median) | tps ratio to plain (same headers): median | min | max "
          "| server CPU us / transaction (median) | CPU ratio plain / variant |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def med(x):
        return statistics.median(x) if x else float("nan")
    for base, others in families.items():
        print("| %s | %.0f | 1 | | | %.1f | 1 |" % (base, med(tps[base]), med(cpus[base])))
        for n in others:
            print("| %s | %.0f | **%.2f** | %.2f | %.2f | %.1f | %.2f |" % (
                n, med(tps[n]), med(ratios[n]), min(ratios[n]), max(ratios[n]), med(cpus[n]),
                med(cpus[base]) / med(cpus[n])))
    cur.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1)


MICRO_PROC = r"""
CREATE PROCEDURE wb.micro(p_table text, p_headers boolean, p_rows int, INOUT p_us float8 DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    v_payload bytea := decode(repeat('5a', 256), 'hex');
    v_headers jsonb := CASE WHEN p_headers THEN '{"trace-id": "4bf92f3577b34da6", "source": "bench"}'::jsonb END;
BEGIN
    COMMIT;
    t0 := clock_timestamp();
    FOR i IN 1..p_rows LOOP
        EXECUTE format('INSERT INTO %s (topic, key, payload, headers) VALUES ($1, $2, $3, $4)', p_table)
        USING 'orders-' || (i % 3 + 1), convert_to('key-' || (100000 + i), 'UTF8'), v_payload, v_headers;
        COMMIT;
    END LOOP;
    p_us := extract(epoch FROM clock_timestamp() - t0) * 1e6 / p_rows;
END
$$;
"""


def cpu_ns(pid):
    # Time the backend spent on a CPU (ns): what the statements cost, less
    # exposed to how many other processes share the CPUs than wall time.
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0])


def run_micro(names, conn):
    cur = conn.cursor()
    cur.execute(MICRO_PROC)
    cur.execute("SET synchronous_commit = off")
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    local = os.path.exists("/proc/%d/schedstat" % pid)
    best = {n: float("inf") for n in names}
    cpu = {n: [] for n in names}
    print("load average before: %s" % load(), flush=True)
    for r in range(MICRO_REPEAT + 1):
        k = (r * len(names)) // (MICRO_REPEAT + 1)
        for n in names[k:] + names[:k]:
            table, _, headers, _ = VARIANTS[n]
            truncate(cur, names)
            c0 = cpu_ns(pid) if local else 0
            cur.execute("CALL wb.micro(%s, %s, %s)", (table, headers, MICRO_ROWS))
            us = cur.fetchone()[0]
            c1 = cpu_ns(pid) if local else 0
            if r > 0:  # the first repeat warms up
                best[n] = min(best[n], us)
                cpu[n].append((c1 - c0) / 1000.0 / MICRO_ROWS)
    print("load average after: %s" % load())
    print()
    print("| variant | wall us / transaction (best) | over plain | backend CPU us / transaction (median) | over plain |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for n in names:
        b = base_of(n)
        med = statistics.median(cpu[n]) if local else float("nan")
        bmed = statistics.median(cpu[b]) if local else float("nan")
        print("| %s | %.1f | %s | %.1f | %s |" % (
            n, best[n], "" if n == b else "%+.1f" % (best[n] - best[b]),
            med, "" if n == b else "%+.1f" % (med - bmed)))


def run_mixed(names, conn):
    cur = conn.cursor()
    tmp = tempfile.mkdtemp(prefix="writer_bench.")
    scripts = {}
    for n in names:
        table, _, headers, _ = VARIANTS[n]
        p = os.path.join(tmp, n + ".sql")
        with open(p, "w") as f:
            f.write("\\set t random(1, 3)\n\\set k random(100000, 999999)\n")
            f.write(insert_sql(table, headers) + "\n")
        scripts[n] = p
    others = [n for n in names if n != base_of(n)]
    ratios = {n: [] for n in others}
    print("load average before: %s" % load(), flush=True)
    for r in range(ROUNDS):
        line = []
        for n in others:
            b = base_of(n)
            truncate(cur, names)
            # The two scripts in one run, each transaction picks one at
            # random: both meet the same load, commit queue and contention.
            order = [scripts[b], scripts[n]] if r % 2 == 0 else [scripts[n], scripts[b]]
            out = subprocess.run(["pgbench", "-n", "-M", MODE, "-c", str(CLIENTS), "-j", "2", "-T", str(SECONDS),
                                  "-f", order[0] + "@1", "-f", order[1] + "@1", DB_URL],
                                 capture_output=True, text=True)
            lat = {}
            for m in re.finditer(r"^SQL script \d+: (\S+)\n(?:.*\n)*? - latency average = ([0-9.]+) ms", out.stdout, re.M):
                lat[m.group(1)] = float(m.group(2))
            if out.returncode != 0 or len(lat) != 2:
                sys.exit("pgbench failed:\n" + out.stdout + out.stderr)
            ratios[n].append(lat[scripts[b]] / lat[scripts[n]])
            line.append("%s %.2f" % (n, ratios[n][-1]))
        print("round %d (load %s): %s" % (r + 1, load(), ", ".join(line)), flush=True)
    print("load average after: %s" % load())
    print()
    print("| variant | latency ratio plain / variant (same run): median | min | max |")
    print("| --- | ---: | ---: | ---: |")
    for n in others:
        print("| %s | **%.2f** | %.2f | %.2f |" % (n, statistics.median(ratios[n]), min(ratios[n]), max(ratios[n])))


def main():
    args = sys.argv[1:]
    micro = "--micro" in args
    mixed = "--mixed" in args
    args = [a for a in args if a not in ("--micro", "--mixed")]
    if "--list" in args:
        for n, (table, parts, headers, desc) in VARIANTS.items():
            print("%-16s %s" % (n, desc))
        return
    names = args or DEFAULT
    for n in names:
        if n not in VARIANTS:
            sys.exit("unknown variant %s (--list)" % n)
    for n in list(names):
        if base_of(n) not in names:
            names.insert(0, base_of(n))
    conn, version = setup(names)
    if os.environ.get("NOTIFY_EVENT") == "1":
        # the wake-up on: the quick start's NOTIFY trigger on outbox.event
        conn.cursor().execute("SELECT outbox.notify_enable()")
        print("NOTIFY trigger on outbox.event (notify_enable())")
    awake = None
    if os.environ.get("AWAKE") == "1":
        # a relay that is awake: it holds this lock, so the trigger of the
        # "-n" variants does not notify (sql/migrations/0003)
        awake = psycopg2.connect(DB_URL)
        awake.autocommit = True
        awake.cursor().execute("SELECT outbox.relay_awake(true)")
        print("a relay session holds the \"relay awake\" lock for the whole run")
    print("writer_bench: schema version %s, %s, %d clients, %d s per run, %d rounds, PostgreSQL %s"
          % (version, "micro" if micro else ("mixed, " if mixed else "") + "pgbench -M " + MODE, CLIENTS, SECONDS, ROUNDS,
             conn.server_version), flush=True)
    try:
        if micro:
            run_micro(names, conn)
        elif mixed:
            run_mixed(names, conn)
        else:
            run_pgbench(names, conn)
        cur = conn.cursor()
        cur.execute("SELECT funcname, calls, round((total_time * 1000 / greatest(calls, 1))::numeric, 1) "
                    "FROM pg_stat_user_functions WHERE calls > 0 ORDER BY 1")
        for f, calls, us in cur.fetchall():
            print("function %s: %d calls, %s us per call" % (f, calls, us))
    finally:
        conn.close()
        if not KEEP:
            c = connect(URL)
            c.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB)
            c.close()


if __name__ == "__main__":
    main()
