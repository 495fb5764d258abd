"""tests/pgproxy.py on its own, with psycopg2 (simple Query protocol, and
the explicit BEGIN/COMMIT that psycopg2 sends outside autocommit): a
committed answer is lost and the commit took effect; an open transaction's
answers pass until its COMMIT; a rollback or an error is not dropped; other
statements pass; it disarms after firing."""
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pgproxy import PgProxy  # noqa: E402


@pytest.fixture
def proxied(outbox_db):
    up = urlsplit(outbox_db)
    proxy = PgProxy(0, up.hostname, up.port or 5432).start()
    direct = psycopg2.connect(outbox_db)
    direct.autocommit = True
    direct.cursor().execute("CREATE TABLE probe (n int)")
    dsn = f"host=127.0.0.1 port={proxy.port} dbname={up.path.lstrip('/')} user={up.username}"
    yield proxy, dsn, direct
    direct.close()
    proxy.stop()


def count(direct, n):
    cur = direct.cursor()
    cur.execute("SELECT count(*) FROM probe WHERE n = %s", (n,))
    return cur.fetchone()[0]


def test_autocommit_answer_lost_after_commit(proxied):
    proxy, dsn, direct = proxied
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    conn.cursor().execute("INSERT INTO probe VALUES (0)")  # not armed: passes
    proxy.arm_drop_after_commit(b"probe_mark")
    with pytest.raises(psycopg2.OperationalError):
        conn.cursor().execute("INSERT INTO probe SELECT 1 AS probe_mark")
    assert proxy.fired == 1 and not proxy.armed()
    assert count(direct, 1) == 1  # the server committed it
    again = psycopg2.connect(dsn)
    again.autocommit = True
    again.cursor().execute("INSERT INTO probe SELECT 2 AS probe_mark")  # disarmed: passes
    assert count(direct, 2) == 1 and proxy.fired == 1
    again.close()


def test_transaction_block_loses_the_commit_answer(proxied):
    proxy, dsn, direct = proxied
    conn = psycopg2.connect(dsn)  # psycopg2 sends BEGIN first
    proxy.arm_drop_after_commit(b"probe_mark")
    cur = conn.cursor()
    cur.execute("INSERT INTO probe SELECT 3 AS probe_mark")  # answer passes: transaction open
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    with pytest.raises(psycopg2.OperationalError):
        conn.commit()
    assert proxy.fired == 1 and count(direct, 3) == 1


def test_rollback_and_errors_are_not_dropped(proxied):
    proxy, dsn, direct = proxied
    proxy.arm_drop_after_commit(b"probe_mark")
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("INSERT INTO probe SELECT 4 AS probe_mark")
    conn.rollback()
    conn.autocommit = True
    with pytest.raises(psycopg2.errors.UndefinedTable):
        cur.execute("INSERT INTO no_such_table SELECT 5 AS probe_mark")
    cur.execute("SELECT 6")
    assert cur.fetchone() == (6,)
    assert proxy.fired == 0 and proxy.armed() and count(direct, 4) == 0
