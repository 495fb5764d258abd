"""or003.py: the recovery of docs/sql.md "OR003" (transaction ids behind the
position), steps 3-6, as an operator runs it after a failover to an
asynchronous replica that missed commits. Shared by
tests/e2e/test_failover.py and the db_failover_async fault of
tests/fault/run.py.

    summary = list_lost(relay_bin, cfg, topics)    # 3. verify --list-lost
    delete_published(conn, summary)                # 4. rows Kafka has already
    reset(conn, name, kafka_batch(summary) + 1)   # 5.-6. 'unrelayed', above Kafka

Step 1 (every relay of the name stopped) and step 7 (one start with
relay.on_database_ahead = "trust-database") are the caller's.
"""
import json
import subprocess


class VerifyError(RuntimeError):
    """verify did not judge: an exit code other than 0 and 6."""


def list_lost(relay_bin, cfg, topics, env=None, timeout=300):
    """outbox-relay verify --json --list-lost: (exit code, the JSON summary).
    The summary's "lost_list" holds one object per record of Kafka's batches
    after the database's stored one: "state" "lost" (its row is not in the
    table, or another row has its id) or "published" (its row is still
    there, equal), with topic, partition, offset and outbox_id."""
    res = subprocess.run([relay_bin, "verify", "-c", str(cfg), "--topics", ",".join(topics),
                          "--json", "--list-lost"], capture_output=True, text=True, env=env,
                         timeout=timeout)
    if res.returncode not in (0, 6):
        raise VerifyError(f"verify exited {res.returncode}: {res.stdout}{res.stderr}")
    summary = json.loads(res.stdout)
    where = [(e["topic"], e["partition"], e["offset"]) for e in summary["lost_list"]]
    if len(set(where)) != len(where):
        raise VerifyError(f"verify listed a record twice: {summary['lost_list']}")
    return res.returncode, summary


def kafka_batch(summary):
    """The batch of Kafka's last checkpoint, as verify read it."""
    return summary["database_position"]["kafka_batch"]


def published_ids(summary):
    """The outbox ids of the records verify listed as published."""
    return [e["outbox_id"] for e in summary["lost_list"] if e["state"] == "published"]


def delete_published(conn, summary):
    """Step 4: the rows listed as published are in Kafka already; deleted,
    so that the reset does not publish them a second time.
    Returns how many were deleted."""
    ids = published_ids(summary)
    if not ids:
        return 0
    with conn.cursor() as cur:
        cur.execute("DELETE FROM outbox.event WHERE id = ANY(%s)", (ids,))
        n = cur.rowcount
    conn.commit()
    return n


def reset(conn, name, batch_seq, existing="unrelayed"):
    """Steps 5 and 6: the current generation read, then
    outbox.position_reset(name, generation, existing, batch_seq); after a
    failover 'unrelayed' (schema 5: the rows the stored position relayed
    may still be in the table, and are deleted first). Returns (generation
    and batch before, the reset's row: generation, batch_seq, pos_done,
    rows_restamped, rows_deleted)."""
    with conn.cursor() as cur:
        cur.execute("SELECT generation, batch_seq FROM outbox.status(%s)", (name,))
        before = cur.fetchone()
        cur.execute("SELECT * FROM outbox.position_reset(%s, %s, %s, %s)",
                    (name, before[0], existing, batch_seq))
        row = cur.fetchone()
    conn.commit()
    return before, row
