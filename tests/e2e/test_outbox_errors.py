"""The libpq side's error paths (issue 12, items 7 and 12):

- a conninfo that libpq cannot parse: its messages quote fragments of the
  string, which may be the password; the relay's log, /status last_error and
  `outbox-relay check` must not show it;
- a read-only server: the relay's write functions fail with SQLSTATE 25006,
  and the relay must say that it points at a read-only server. A real hot
  standby is not available here; a database with
  default_transaction_read_only = on gives the same SQLSTATE to every write
  (LISTEN is allowed in a read-only transaction, so only the standby's
  "cannot execute LISTEN during recovery" is not reproduced: it carries the
  same SQLSTATE, 25006, and goes through the same classification)."""
import json
import os
import subprocess
from urllib.parse import urlsplit

import pytest

from conftest import PG_URL, RELAY_BIN, psql, write_config
from test_http import free_port, get

SECRET = "s3cretvalue"


@pytest.mark.parametrize("conninfo", [
    f"host=127.0.0.1 port=5432 password=my {SECRET} dbname=x",
    f"postgresql://u:{SECRET}%zz@127.0.0.1/x",
    f"postgresql://u:{SECRET}@[::1/x",
    f"host=127.0.0.1 password={SECRET} port=notaport",
    f"host=127.0.0.1 port=5432 password='{SECRET}",
], ids=["missing-equals", "bad-percent-escape", "unclosed-ipv6", "bad-port", "unterminated-quote"])
def test_conninfo_errors_never_show_the_password(conninfo, relays, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "relay.conf", "postgresql:///unused", "r-secret",
                       **{"postgres.conninfo": conninfo, "http.listen": f"127.0.0.1:{port}"})
    out = subprocess.run([RELAY_BIN, "check", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "postgresql: FAILED" in out.stdout, out.stdout
    assert SECRET not in out.stdout + out.stderr, out.stdout + out.stderr

    relay = relays(cfg)
    relay.wait_log(r"could not connect to PostgreSQL|invalid postgres\.conninfo")
    code, _, body = get(port, "/status")
    assert code == 200
    last_error = (json.loads(body).get("last_error") or {}).get("message", "")
    assert "PostgreSQL" in last_error or "postgres.conninfo" in last_error, body
    relay.stop()
    assert SECRET not in body, body
    assert SECRET not in relay.text(), relay.text()


def test_read_only_server_is_named(outbox_db, relays, tmp_path):
    dbname = urlsplit(outbox_db).path.lstrip("/")
    psql(PG_URL, "-c", f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-ro")
    relay = relays(cfg)
    relay.wait_log(r"the relay points at a read-only server", 30)
    assert "cannot execute" in relay.text(), relay.text()
    relay.stop()


def test_plain_database_name_is_not_parsed_as_conninfo(outbox_db, tmp_path):
    """A conninfo without '=' and not a URI is a database name to libpq: the
    parse check in front of the connection must let it through."""
    url = urlsplit(outbox_db)
    cfg = write_config(tmp_path / "relay.conf", url.path.lstrip("/"), "r-plain")
    env = {"PGHOST": url.hostname, "PGPORT": str(url.port or 5432), "PGUSER": url.username or ""}
    out = subprocess.run([RELAY_BIN, "check", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, **env})
    assert "postgresql: ok" in out.stdout, out.stdout + out.stderr
