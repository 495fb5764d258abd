"""`outbox-relay verify` on the real broker: a history the relay wrote alone
is clean (exit 0, counts right); a history broken from outside is reported
with the kind of break (exit 6); what read_committed hides (a foreign
aborted transaction) is not a break."""
import json
import time
import uuid
from urllib.parse import urlsplit

import pytest

from confluent_kafka import Producer

from conftest import (BOOTSTRAP, PG_URL, QUIET, ckpt_topic, psql, read_all, relay_cmd, wait_for,
                      write_config)
from test_relay import connect, db_position, drained, insert_rows, scalar

ROWS = 300
KINDS = ("checkpoint_gap", "checkpoint_seq_backwards", "generation_backwards",
         "position_backwards", "checkpoint_foreign", "duplicate", "out_of_order",
         "no_outbox_id", "missing_in_kafka", "content_differs", "not_in_database", "lost_by_database")


def relayed_history(outbox_db, topics, relays, tmp_path, name, retention_ms=0):
    """ROWS rows in 3 transactions, relayed in batches of at most 100 rows by
    the real relay, which is then stopped. Returns (config, topics, conn)."""
    tps = topics(3, partitions=2)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name,
                       **{"batch.max_rows": 100, "postgres.retention_ms": retention_ms})
    insert_rows(conn, tps, 0, ROWS, per_txn=100)
    relay = relays(cfg)
    if retention_ms:
        relayed = ("SELECT count(*) FROM outbox.event AS e JOIN outbox.relay_state AS s "
                   "ON s.name = %s WHERE outbox.relayed(e.txid, e.id, s.pos_done, s.pos_next, "
                   "s.pos_after_id)")
        wait_for(lambda: scalar(conn, relayed, (name,)) == ROWS, 60, "the rows to be relayed")
    else:
        wait_for(drained(conn), 60, "the rows to be relayed")
    assert relay.stop() == 0, relay.text()
    return cfg, tps, conn


def verify(cfg, tps, *extra):
    """verify --json: (exit code, the summary, or None when there is none)."""
    res = relay_cmd("verify", "-c", cfg, "--topics", ",".join(tps), "--json", *extra)
    assert res.returncode in (0, 6), res.stderr
    return res.returncode, json.loads(res.stdout)


def only(summary, kind, count):
    """Exactly `count` violations, all of `kind`."""
    assert summary["kinds"][kind]["count"] == count, summary
    assert summary["violations"] == count, summary


def plain_producer():
    return Producer({"bootstrap.servers": BOOTSTRAP, **QUIET})


def foreign_txn_producer():
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"foreign-{uuid.uuid4().hex[:8]}",
                  **QUIET})
    p.init_transactions(30)
    return p


@pytest.mark.sanitizer
def test_clean_history(outbox_db, topics, relays, tmp_path):
    name = "r-verify-clean"
    cfg, tps, conn = relayed_history(outbox_db, topics, relays, tmp_path, name)
    seq = db_position(conn, name)[0]
    ex, s = verify(cfg, tps)
    assert ex == 0, s
    assert s["violations"] == 0 and all(s["kinds"][k]["count"] == 0 for k in KINDS)
    assert s["rows"] == ROWS and s["dead_letters"] == 0
    assert s["max_id"] - s["min_id"] == ROWS - 1
    assert s["checkpoints"] == seq >= 3 and (s["first_batch"], s["last_batch"]) == (1, seq)
    assert s["database_position"]["batch"] == seq, s
    assert s["database_position"]["lost_report"] == "not_ahead", s
    # the text summary says the same
    res = relay_cmd("verify", "-c", cfg, "--topics", ",".join(tps))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"rows: {ROWS} " in res.stdout and "violations: none" in res.stdout
    assert f"database position: batch {seq}, nothing in Kafka after it" in res.stdout
    # --from-batch starts the chain later; --since with a long span reads it all
    ex, s = verify(cfg, tps, "--from-batch", "2")
    assert ex == 0 and s["checkpoints"] == seq - 1 and s["checkpoints_before_from_batch"] == 1
    ex, s = verify(cfg, tps, "--since", "1h")
    assert ex == 0 and s["rows"] == ROWS and s["checkpoints"] == seq


@pytest.mark.sanitizer
def test_duplicate_from_outside(outbox_db, topics, relays, tmp_path):
    """A plain producer writes a record with an outbox-id the relay wrote."""
    cfg, tps, _ = relayed_history(outbox_db, topics, relays, tmp_path, "r-verify-dup")
    victim = next(m for m in read_all([tps[0]]))
    p = plain_producer()
    p.produce(tps[0], key=victim.key(), value=victim.value(), partition=victim.partition(),
              headers=victim.headers())
    p.flush(30)
    ex, s = verify(cfg, tps)
    assert ex == 6
    # the copy of the partition's first record, appended after later rows
    # of its key, is also out of their order
    assert s["kinds"]["duplicate"]["count"] == 1, s
    assert s["kinds"]["out_of_order"]["count"] == 1, s
    assert s["violations"] == 2, s
    oid = dict(victim.headers())["outbox-id"].decode()
    assert s["kinds"]["duplicate"]["examples"][0].startswith(f"outbox-id {oid}:")
    assert s["rows"] == ROWS + 1


# A checkpoint appended after the relay's last one (seq, gen, done) by
# another transactional producer with the relay's key and marker, and what
# verify must call it: (kind, the value, headers beyond the marker, the
# example's text).
FORGED = {
    "gap": ("checkpoint_gap", "v1 seq={s2} gen={gen} after=0 done={done} next=-", [],
            "batch {s2} after batch {seq} (1 missing)"),
    "seq_backwards": ("checkpoint_seq_backwards", "v1 seq={seq} gen={gen} after=0 done={done} next=-",
                      [], "batch {seq} after batch {seq}"),
    "generation_backwards": ("generation_backwards",
                             "v1 seq={s1} gen={g0} after=0 done={done} next=-", [],
                             "batch {s1} generation {g0} after {gen}"),
    # the position of the relay's first checkpoint again: behind its last
    "position_backwards": ("position_backwards", "v1 seq={s1} gen={gen} {first_position}", [],
                           "offset {offset}: batch {s1} "),
    # a record with the relay's key and an outbox-id header: an outbox row
    # aimed at the checkpoint topic, never a checkpoint
    "foreign": ("checkpoint_foreign", "v1 seq={s1} gen={gen} after=0 done={done} next=-",
                [("outbox-id", b"12345")], "it is an outbox row (it has an outbox-id header)"),
}


@pytest.mark.parametrize("forged", sorted(FORGED))
def test_forged_checkpoint_is_reported(forged, outbox_db, topics, relays, tmp_path):
    """Each break of the checkpoint chain verify checks, made on the real
    broker after a history the relay wrote alone: exactly that kind, once."""
    kind, value, headers, example = FORGED[forged]
    name = f"r-verify-{forged.replace('_', '-')}"
    cfg, tps, conn = relayed_history(outbox_db, topics, relays, tmp_path, name)
    seq, done, _, _ = db_position(conn, name)
    chain = read_all([ckpt_topic(outbox_db, name)])
    gen = next(int(f.split("=")[1]) for f in chain[-1].value().decode().split()
               if f.startswith("gen="))
    first = chain[0].value().decode().split()
    fields = dict(seq=seq, s1=seq + 1, s2=seq + 2, gen=gen, g0=gen - 1, done=done,
                  offset=chain[-1].offset() + 2,  # after the last one's commit marker
                  first_position=" ".join(f for f in first[3:6]))
    assert fields["first_position"] != " ".join(chain[-1].value().decode().split()[3:6])
    p = foreign_txn_producer()
    p.begin_transaction()
    p.produce(ckpt_topic(outbox_db, name), key=name.encode(), partition=0,
              value=value.format(**fields).encode(),
              headers=[("outbox-relay-checkpoint", name.encode()), *headers])
    p.commit_transaction(30)
    ex, s = verify(cfg, tps)
    assert ex == 6
    only(s, kind, 1)
    assert example.format(**fields) in s["kinds"][kind]["examples"][0], s["kinds"][kind]


def test_foreign_aborted_hidden_committed_reported(outbox_db, topics, relays, tmp_path):
    """An aborted foreign transaction is not returned by read_committed and
    is no violation; a committed foreign record without outbox-id is."""
    cfg, tps, _ = relayed_history(outbox_db, topics, relays, tmp_path, "r-verify-foreign")
    victim = next(m for m in read_all([tps[1]]))
    p = foreign_txn_producer()
    p.begin_transaction()
    p.produce(tps[1], key=b"foreign", value=b"no outbox-id", partition=0)
    p.produce(tps[1], key=victim.key(), value=victim.value(), partition=victim.partition(),
              headers=victim.headers())
    p.flush(30)
    p.abort_transaction(30)
    ex, s = verify(cfg, tps)
    assert ex == 0, s
    assert s["rows"] == ROWS
    q = plain_producer()
    q.produce(tps[1], key=b"foreign", value=b"no outbox-id", partition=1)
    q.flush(30)
    ex, s = verify(cfg, tps)
    assert ex == 6
    only(s, "no_outbox_id", 1)
    assert f'topic "{tps[1]}" partition 1' in s["kinds"]["no_outbox_id"]["examples"][0]


def test_retained_rows_match_kafka(outbox_db, topics, relays, tmp_path):
    """With postgres.retention_ms the kept rows are compared with Kafka;
    the topics come from the rows (no --topics needed)."""
    cfg, tps, conn = relayed_history(outbox_db, topics, relays, tmp_path, "r-verify-kept",
                                     retention_ms=3600000)
    assert scalar(conn, "SELECT count(*) FROM outbox.event") == ROWS
    res = relay_cmd("verify", "-c", cfg, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    s = json.loads(res.stdout)
    assert sorted(s["topics"]) == sorted(tps)
    assert s["db_relayed"] == ROWS and s["rows"] == ROWS and s["violations"] == 0


@pytest.mark.sanitizer
def test_tampered_payload_and_lost_row(outbox_db, topics, relays, tmp_path):
    """A kept row altered in PostgreSQL (as superuser) no longer matches its
    record; a kept row deleted leaves a record the database does not have."""
    cfg, tps, conn = relayed_history(outbox_db, topics, relays, tmp_path, "r-verify-tamper",
                                     retention_ms=3600000)
    lo = scalar(conn, "SELECT min(id) FROM outbox.event")
    scalar(conn, "UPDATE outbox.event SET payload = 'forged' WHERE id = %s RETURNING id",
           (lo + 10,))
    ex, s = verify(cfg, tps)
    assert ex == 6
    only(s, "content_differs", 1)
    assert s["kinds"]["content_differs"]["examples"][0].startswith(f"outbox row {lo + 10}:")
    scalar(conn, "DELETE FROM outbox.event WHERE id = %s RETURNING id", (lo + 20,))
    ex, s = verify(cfg, tps)
    assert ex == 6
    assert s["kinds"]["not_in_database"]["count"] == 1, s
    assert s["kinds"]["not_in_database"]["examples"][0].startswith(f"outbox-id {lo + 20} ")
    assert s["violations"] == 2, s
    # a row that the stored position calls relayed but that was never sent:
    # the transaction of the first row, and, if its window is still open,
    # after_id moved past the new row by hand
    new = scalar(conn, "INSERT INTO outbox.event(txid, topic, key, payload) "
                       "SELECT txid, topic, 'k', 'never sent' FROM outbox.event WHERE id = %s "
                       "RETURNING id", (lo,))
    with conn.cursor() as cur:
        cur.execute("UPDATE outbox.relay_state SET pos_after_id = %s WHERE pos_next IS NOT NULL",
                    (new,))
    ex, s = verify(cfg, tps)
    assert ex == 6
    assert s["kinds"]["missing_in_kafka"]["count"] == 1, s
    assert s["kinds"]["missing_in_kafka"]["examples"][0].startswith(f"outbox row {new} ")
    assert s["violations"] == 3, s


def test_lost_by_database(outbox_db, topics, relays, tmp_path):
    """The database is set back to an earlier stored position, as a replica
    that missed the last commits would be after a failover: the records
    published after it are reported as lost (rows gone), as lost with their
    id reused (another row has it now), or not at all (the row is there and
    will be relayed)."""
    name = "r-verify-lost"
    tps = topics(3, partitions=2)
    conn = connect(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, name, **{"batch.max_rows": 100})
    insert_rows(conn, tps, 0, 200, per_txn=100)
    relay = relays(cfg)
    wait_for(drained(conn), 60, "the first rows to be relayed")
    with conn.cursor() as cur:
        cur.execute("SELECT batch_seq, pos_done, pos_next, pos_after_id, advanced_at "
                    "FROM outbox.relay_state WHERE name = %s", (name,))
        kept = cur.fetchone()
    last_kept_id = scalar(conn, "SELECT last_value FROM outbox.event_id_seq")
    time.sleep(0.05)
    insert_rows(conn, tps, 200, 100, per_txn=50)  # published after the kept position
    wait_for(drained(conn), 60, "the last rows to be relayed")
    assert relay.stop() == 0, relay.text()
    ex, s = verify(cfg, tps)
    assert ex == 0 and s["database_position"]["lost_report"] == "not_ahead", s
    with conn.cursor() as cur:
        cur.execute("UPDATE outbox.relay_state SET batch_seq = %s, pos_done = %s, pos_next = %s, "
                    "pos_after_id = %s, advanced_at = %s WHERE name = %s", (*kept, name))
        # the replica never had the later rows (schema 5 keeps relayed rows
        # until their partition goes: they may still be here)
        cur.execute("DELETE FROM outbox.event WHERE id > %s", (last_kept_id,))

    def n_of(m):
        return int(dict(m.headers())["n"].decode())
    by_n = {n_of(m): m for m in read_all(tps)}
    ex, s = verify(cfg, tps)
    assert ex == 6
    only(s, "lost_by_database", 100)
    pos = s["database_position"]
    assert (pos["batch"], pos["lost_report"], pos["after_position"], pos["rows_present"],
            pos["lost"], pos["ids_reused"]) == (kept[0], "judged", 100, 0, 100, 0), pos
    # the checkpoints of the later batches count the same rows, same ids
    assert (pos["checkpoint_rows"], pos["digest"]) == (100, "equal"), pos
    # another row takes the id of row 250; row 260 is back, equal to its record
    reused, back = by_n[250], by_n[260]
    scalar(conn, "INSERT INTO outbox.event(id, topic, key, payload) "
                 "OVERRIDING SYSTEM VALUE VALUES (%s, %s, 'other', 'another event') RETURNING id",
           (int(dict(reused.headers())["outbox-id"]), reused.topic()))
    scalar(conn, "INSERT INTO outbox.event(id, topic, key, payload, headers) "
                 "OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s) RETURNING id",
           (int(dict(back.headers())["outbox-id"]), back.topic(), back.key(), back.value(),
            json.dumps({"n": "260", "src": "e2e"})))
    ex, s = verify(cfg, tps, "--list-lost")
    assert ex == 6
    only(s, "lost_by_database", 99)
    pos = s["database_position"]
    assert (pos["after_position"], pos["rows_present"], pos["lost"], pos["ids_reused"],
            pos["digest"]) == (100, 1, 99, 1, "equal"), pos
    listed = {(e["topic"], e["partition"], e["offset"]): e for e in s["lost_list"]}
    lost = {n for n, m in by_n.items()
            if listed.get((m.topic(), m.partition(), m.offset()), {}).get("state") == "lost"}
    assert lost == set(range(200, 300)) - {260}, sorted(lost)
    # row 260 is listed as published: in Kafka, and its row back in the
    # table (the OR003 procedure deletes it before relaying the table again)
    e = listed[(back.topic(), back.partition(), back.offset())]
    assert (e["state"], e["why"]) == ("published", "row present"), e
    assert len(listed) == 100
    e = listed[(reused.topic(), reused.partition(), reused.offset())]
    assert (e["why"], e["key"]) == ("id reused", reused.key().decode()), e
    # the text lines: topic, partition, offset, outbox-id, key, why
    res = relay_cmd("verify", "-c", cfg, "--topics", ",".join(tps), "--list-lost")
    assert res.returncode == 6, res.stdout + res.stderr
    lines = [line.split("\t") for line in res.stdout.splitlines() if line.startswith("lost\t")]
    assert len(lines) == 99
    assert [line.split("\t") for line in res.stdout.splitlines() if line.startswith("published\t")] \
        == [["published", back.topic(), str(back.partition()), str(back.offset()),
             dict(back.headers())["outbox-id"].decode(), back.key().decode(), "row present"]]
    assert ["lost", reused.topic(), str(reused.partition()), str(reused.offset()),
            dict(reused.headers())["outbox-id"].decode(), reused.key().decode(),
            "id reused"] in lines
    assert f"database position: batch {kept[0]}, Kafka's checkpoints reach batch" in res.stdout
    assert "count the same rows (100, ids summed)" in res.stdout
    # a record from another producer (another shard's relay, say) after
    # them is taken for one of ours: the digests tell
    p = plain_producer()
    p.produce(reused.topic(), key=b"elsewhere", value=b"x", partition=reused.partition(),
              headers=[("outbox-id", b"999999")])
    p.flush(30)
    ex, s = verify(cfg, tps)
    assert ex == 6
    pos = s["database_position"]
    assert (pos["after_position"], pos["lost"], pos["digest"]) == (101, 100, "differs"), pos
    res = relay_cmd("verify", "-c", cfg, "--topics", ",".join(tps))
    assert "WARNING: the checkpoints of those batches count 100 rows" in res.stdout, res.stdout


def test_usage_and_connection_errors(tmp_path):
    assert relay_cmd("verify", "--since", "soon").returncode == 2
    assert relay_cmd("verify", "--from-batch", "0").returncode == 2
    cfg = write_config(tmp_path / "relay.conf", "postgresql:///nowhere", "r-verify-none",
                       **{"kafka.bootstrap_servers": "127.0.0.1:1"})
    res = relay_cmd("verify", "-c", cfg, timeout=60)
    assert res.returncode == 1 and "verify:" in res.stderr, res.stderr


def test_verify_as_a_least_privilege_relay_login(outbox_db, topics, relays, tmp_path):
    """verify needs no more than the relay's own rights: a login that is a
    member of outbox_relay only audits a history (the stored position read
    through outbox.status, not the relay_state table it may not read)."""
    name = "r-verify-leastpriv"
    cfg, tps, _ = relayed_history(outbox_db, topics, relays, tmp_path, name)
    user = f"relay_verify_{uuid.uuid4().hex[:8]}"
    dbname = urlsplit(outbox_db).path.lstrip("/")
    psql(PG_URL, "-c", f"CREATE ROLE {user} LOGIN IN ROLE outbox_relay",
         "-c", f"GRANT CONNECT ON DATABASE {dbname} TO {user}")
    try:
        u = urlsplit(outbox_db)
        cfg2 = write_config(tmp_path / "verify.conf", outbox_db, name, **{
            "postgres.conninfo": f"host={u.hostname} port={u.port} dbname={dbname} user={user}"})
        ex, s = verify(cfg2, tps)
        assert ex == 0, s
        assert s["rows"] == ROWS and s["database_position"]["lost_report"] == "not_ahead", s
    finally:
        psql(PG_URL, "-c", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'")
        psql(outbox_db, "-c", f"DROP OWNED BY {user}")
        psql(PG_URL, "-c", f"DROP ROLE {user}")
