"""The relay logging in with SASL/SCRAM-SHA-512 over TLS (issue 14), on the
Kafka 3.9 broker of deploy/local/scram-broker, which this module starts and
stops (one broker start for the module).

Debian 12's librdkafka 2.0.2 sends a SCRAM proof that Kafka 4.x refuses
(fixed in librdkafka 2.6.1), so the 4.1.1 broker of deploy/local/up cannot
show a SCRAM login (test_security.py's `scram-old-librdkafka` case shows the
refusal); Kafka 3.9 accepts it. That broker's SASL_SSL listener offers
SCRAM-SHA-512 only, under KRaft's StandardAuthorizer, and user outbox-relay
holds exactly the ACLs deploy/README.md lists:

- a few hundred rows published exactly once, and a restart that reads its
  checkpoint back and goes on without a duplicate or a loss;
- a wrong password: a clear error at start-up, exit code 1, the password
  never printed;
- PLAIN, which that listener does not offer, refused at start-up: a login
  there is a SCRAM login.
"""
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, ckpt_topic, create_topics, read_all, wait_for
from secure_util import (SASL_USER, STATE, SecurityAdmin, assert_secret_never_shown, grant,
                         readme_acls, sasl_props, secure_config)
from test_relay import check_exactly_once, connect, drained, insert_rows

# Run alone (scripts/test runs the "serial" tests after the others,
# one at a time): a second broker on fixed ports and a fixed state directory.
pytestmark = pytest.mark.serial

SCRIPT = ROOT / "deploy/local/scram-broker"
SCRAM = "SCRAM-SHA-512"


class ScramBroker:
    def __init__(self, env):
        self.bootstrap = env["OUTBOX_KAFKA_SCRAM_BOOTSTRAP"]  # SASL_SSL, SCRAM-SHA-512
        self.admin_bootstrap = env["OUTBOX_KAFKA_SCRAM_ADMIN_BOOTSTRAP"]  # PLAINTEXT
        self.acls = SecurityAdmin(self.admin_bootstrap, env["OUTBOX_KAFKA_SCRAM_JARS"])


def read_env(path):
    """The `export NAME='value'` lines of an env file."""
    return dict(re.findall(r"^export (\w+)='([^']*)'$", path.read_text(), re.M))


@pytest.fixture(scope="module")
def scram_broker():
    """The Kafka 3.9 broker, started for this module and stopped after it
    (left running if it was running before)."""
    was_running = subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0
    # scripts/test has fetched the broker's jars (`scram-broker fetch`);
    # otherwise this first start on a machine does, with Maven.
    up = subprocess.run([SCRIPT, "up"], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        broker = ScramBroker(read_env(Path(STATE) / "kafka39" / "env"))
        yield broker
        broker.acls.clear(SASL_USER)
        broker.acls.close()
    finally:
        if not was_running:
            down = subprocess.run([SCRIPT, "down"], capture_output=True, text=True, timeout=120)
            assert down.returncode == 0, down.stdout + down.stderr


def test_scram_exactly_once_through_a_restart(outbox_db, relays, scram_broker, tmp_path):
    """Through SCRAM-SHA-512 with exactly the listed ACLs: 300 rows once; a
    restart reads the checkpoint back (a restart without it stops with exit
    5) and publishes 200 more; nothing doubled, nothing lost."""
    b = scram_broker
    name = "r-scram"
    tps = [f"e2e-{uuid.uuid4().hex[:8]}-{i}" for i in range(2)]
    ckpt = ckpt_topic(outbox_db, name)
    create_topics(tps, bootstrap=b.admin_bootstrap)
    create_topics([ckpt], config={"cleanup.policy": "compact"}, bootstrap=b.admin_bootstrap)
    grant(b.acls, SASL_USER, readme_acls(name, tps, ckpt))
    cfg = secure_config(tmp_path / "relay.conf", outbox_db, name, b.bootstrap,
                        sasl_props(mechanism=SCRAM))
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 300, per_txn=100)
    r = relays(cfg)
    wait_for(drained(conn), 60, "the first 300 rows to be published")
    assert r.stop() == 0, r.text()
    insert_rows(conn, tps, 300, 200, per_txn=100)
    r2 = relays(cfg)
    # the position comes back from the checkpoint topic, where the first
    # run left it
    r2.wait_log(r"position: batch [1-9]", 60)
    wait_for(drained(conn), 60, "the 200 rows after the restart to be published")
    assert r2.stop() == 0, r2.text()
    check_exactly_once(read_all(tps, bootstrap=b.admin_bootstrap), range(500))
    assert_secret_never_shown(r.text(), r2.text())
    for run in (r, r2):
        bad = [ln for ln in run.text().splitlines()
               if re.search(r"(?i)authori[sz]|authenticat|refused", ln)]
        assert not bad, run.text()


STARTUP_ERRORS = [
    ("wrong-password", lambda: sasl_props(mechanism=SCRAM, password="Wr0ng-" + uuid.uuid4().hex),
     r"could not connect to Kafka at .*: authentication failed: .*invalid credentials with SASL "
     r"mechanism SCRAM-SHA-512.*check sasl\.username and sasl\.password"),
    ("plain-not-offered", lambda: sasl_props(mechanism="PLAIN"),
     r"could not connect to Kafka at .*: authentication failed: .*SASL PLAIN mechanism handshake "
     r"failed: Broker: Unsupported SASL mechanism: broker's supported mechanisms: SCRAM-SHA-512"
     r".*sasl\.mechanism"),
]


@pytest.mark.parametrize("case,props,pattern", STARTUP_ERRORS, ids=[c[0] for c in STARTUP_ERRORS])
def test_scram_startup_errors(case, props, pattern, outbox_db, relays, scram_broker, tmp_path):
    """A clear error at start-up and exit code 1; the password never shows."""
    kafka_props = props()
    secret = next(p.split("=", 1)[1] for p in kafka_props if p.startswith("sasl.password="))
    cfg = secure_config(tmp_path / "relay.conf", outbox_db, f"r-scram-{case}",
                        scram_broker.bootstrap, kafka_props)
    r = relays(cfg)
    assert r.wait_exit(60) == 1, r.text()
    r.wait_log(r"error relay: " + pattern, 1)
    assert_secret_never_shown(r.text(), secret=secret)
