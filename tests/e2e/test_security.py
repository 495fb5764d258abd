"""The relay on the broker's secured listeners and on PostgreSQL over TLS
(issue 14, items 1 and 2), with the listeners, certificates and users that
deploy/local/up makes (deploy/local/tls, deploy/local/kafka/server.properties.in):

- SASL_SSL (TLS, SASL PLAIN) as User:outbox-relay, which holds exactly the
  ACLs deploy/README.md lists ("Kafka security"): exactly once through a
  restart (the checkpoint read back), a dead letter, a standby takeover;
- each of those ACLs taken away in turn: a clear error naming it, and
  nothing lost or doubled once it is back;
- mTLS (client certificate) as User:outbox-relay-mtls;
- start-up errors, exit code 1, secret never printed: wrong password, SCRAM
  with Debian 12's librdkafka, unknown CA, expired or foreign client
  certificate;
- PostgreSQL with sslmode=verify-full as a least-privilege login that
  pg_hba.conf admits only over TLS, and a wrong CA at start-up.
"""
import re
import uuid
from urllib.parse import urlsplit

import psycopg2
import pytest

from conftest import (WAITING, PG_URL, ckpt_topic, create_topics, psql, read_all, relay_cmd, wait_for,
                      write_config)
from secure_util import (MTLS_BOOTSTRAP, MTLS_USER, SASL_BOOTSTRAP, SASL_USER, TLS, Acl,
                         SecurityAdmin, assert_secret_never_shown, grant, mtls_props,
                         readme_acls, sasl_props, secure_config)
from test_relay import check_exactly_once, connect, drained, insert_rows, scalar

# Run alone (scripts/test runs the "serial" tests after the others,
# one at a time): it changes the shared broker's ACLs of the shared users.
pytestmark = pytest.mark.serial


@pytest.fixture(scope="module")
def acl_admin():
    admin = SecurityAdmin()
    yield admin
    admin.clear(SASL_USER)
    admin.clear(MTLS_USER)
    admin.close()


def insert_poison(conn, n, topic):
    """Row n to a topic that does not exist: a poison row."""
    with conn.cursor() as cur:
        cur.execute("SELECT outbox.publish(%s, 'k', convert_to(%s, 'UTF8'), jsonb_build_object('n', %s::text))",
                    (topic, f"row-{n}", n))
    conn.commit()


def relay_topics(outbox_db, topics, name, n=1, dlq=False):
    """n outbox topics, relay `name`'s checkpoint topic (created, as an
    operator would, so that no Create is needed) and, with dlq, a dead-letter
    topic: (outbox topics, checkpoint topic, dead-letter topic or None)."""
    tps = topics(n)
    ckpt = ckpt_topic(outbox_db, name)
    create_topics([ckpt], config={"cleanup.policy": "compact"})
    dead = f"{tps[0]}-dlq" if dlq else None
    if dead:
        create_topics([dead])
    return tps, ckpt, dead


def test_sasl_ssl_exactly_once_restart_dead_letter_standby(outbox_db, topics, relays, acl_admin,
                                                           tmp_path):
    """Exactly the listed ACLs are enough for all of it: publish, restart
    (the checkpoint read back), a dead letter, a standby taking over."""
    name = "r-sasl"
    tps, ckpt, dlq = relay_topics(outbox_db, topics, name, n=2, dlq=True)
    grant(acl_admin, SASL_USER, readme_acls(name, tps, ckpt, dlq))
    cfg = secure_config(tmp_path / "relay.conf", outbox_db, name, SASL_BOOTSTRAP, sasl_props(),
                        **{"kafka.dead_letter_topic": dlq, "relay.poison_policy": "dead-letter"})
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 300, per_txn=100)
    a = relays(cfg)
    wait_for(drained(conn), 60, "the first rows to be published")
    assert a.stop() == 0
    # restart: the position comes back from the checkpoint topic
    insert_rows(conn, tps, 300, 100)
    insert_poison(conn, 400, f"{tps[0]}-missing")
    a = relays(cfg)
    a.wait_log("publishing")
    b = relays(cfg)
    b.wait_log("standby")
    wait_for(drained(conn), 60, "the rows after the restart to be published")
    assert a.stop() == 0
    insert_rows(conn, tps, 401, 100)
    b.wait_log("publishing", 30)
    wait_for(drained(conn), 60, "the standby to publish")
    assert b.stop() == 0
    check_exactly_once(read_all(tps), [n for n in range(501) if n != 400])
    dead = read_all([dlq])
    assert [m.value() for m in dead] == [b"row-400"], dead
    # Under an authorizer a topic the principal may not describe, missing or
    # not, is answered TOPIC_AUTHORIZATION_FAILED: Kafka does not tell.
    assert dict(dead[0].headers())["outbox-error"].decode() == \
        f'writing to topic "{tps[0]}-missing" is not allowed (TOPIC_AUTHORIZATION_FAILED)'
    assert_secret_never_shown(a.text(), b.text())
    # nothing refused but the poison row's topic
    for r in (a, b):
        bad = [ln for ln in r.text().splitlines() if re.search(r"(?i)authoriz|refused", ln)
               and "sending it to dead-letter topic" not in ln]
        assert not bad, r.text()


# Each case: the ACL taken away, what the relay must say (a regex), and
# whether the relay exits (exit 1 at start) instead of waiting for it.
ACL_CASES = [
    ("txn-write", lambda n, t, c: Acl("TRANSACTIONAL_ID", n, "LITERAL", "WRITE"),
     r'needs Write on transactional id "{name}"', True),
    ("topic-write", lambda n, t, c: Acl("TOPIC", t, "LITERAL", "WRITE"),
     r'writing to topic "{topic}" is not allowed \(TOPIC_AUTHORIZATION_FAILED\)', False),
    ("topic-describe-configs", lambda n, t, c: Acl("TOPIC", t, "LITERAL", "DESCRIBE_CONFIGS"),
     r'could not read max\.message\.bytes of topic "{topic}".*needs DescribeConfigs', False),
    ("checkpoint-read", lambda n, t, c: Acl("TOPIC", c, "LITERAL", "READ"),
     r'could not read checkpoint topic "{ckpt}": .*authorization failed.*needs Read on it', False),
    ("checkpoint-write", lambda n, t, c: Acl("TOPIC", c, "LITERAL", "WRITE"),
     r'Topic authorization failed.*needs Write on every outbox topic of the batch, '
     r'Read and Write on checkpoint topic "{ckpt}"', False),
]


def test_each_listed_acl_taken_away(outbox_db, topics, relays, acl_admin, tmp_path):
    """One ACL missing at a time: the relay names it (and exits 1 when it
    cannot start, or waits and retries), and once the ACL is back every row
    is published exactly once. One relay start per case, a few rows."""
    name = "r-acl"
    tps, ckpt, _ = relay_topics(outbox_db, topics, name)
    acls = readme_acls(name, tps, ckpt)
    grant(acl_admin, SASL_USER, acls)
    cfg = secure_config(tmp_path / "relay.conf", outbox_db, name, SASL_BOOTSTRAP, sasl_props(),
                        **{"relay.poison_retry_ms": 1000})
    conn = connect(outbox_db)
    n = 0
    insert_rows(conn, tps, n, 5)
    n += 5
    r = relays(cfg)
    wait_for(drained(conn), 60, "the first rows")
    assert r.stop() == 0
    texts = [r.text()]
    for case, make, pattern, exits in ACL_CASES:
        acl = make(name, tps[0], ckpt)
        assert acl in acls
        acl_admin.remove(SASL_USER, acl)
        insert_rows(conn, tps, n, 5)
        n += 5
        want = pattern.format(name=re.escape(name), topic=re.escape(tps[0]), ckpt=re.escape(ckpt))
        r = relays(cfg)
        if exits:
            assert r.wait_exit(60) == 1, f"{case}: {r.text()}"
        r.wait_log(want, 60)
        if case != "topic-describe-configs":  # only a warning: the rows still go
            assert scalar(conn, WAITING) > 0, f"{case}: {r.text()}"
        acl_admin.add(SASL_USER, acl)
        if exits:
            texts.append(r.text())
            r = relays(cfg)
        wait_for(drained(conn), 60, f"the rows after {case} came back")
        assert r.stop() == 0, f"{case}: {r.text()}"
        texts.append(r.text())
    check_exactly_once(read_all(tps), range(n))
    assert_secret_never_shown(*texts)


def test_dead_letter_write_taken_away(outbox_db, topics, relays, acl_admin, tmp_path):
    """Write on the dead-letter topic missing: the relay names the topic and
    the ACL and sends nothing until it is back; then the poison row is a dead
    letter once and the rows around it reach their topic once."""
    name = "r-dlq"
    tps, ckpt, dlq = relay_topics(outbox_db, topics, name, dlq=True)
    acls = readme_acls(name, tps, ckpt, dlq)
    grant(acl_admin, SASL_USER, [a for a in acls if a.name != dlq])
    cfg = secure_config(tmp_path / "relay.conf", outbox_db, name, SASL_BOOTSTRAP, sasl_props(),
                        **{"kafka.dead_letter_topic": dlq, "relay.poison_policy": "dead-letter"})
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 5)
    insert_poison(conn, 5, f"{tps[0]}-missing")
    insert_rows(conn, tps, 6, 5)
    r = relays(cfg)
    # without Write the relay cannot even see the topic, which it checks at start
    r.wait_log(f'could not create topic "{re.escape(dlq)}": .*TOPIC_AUTHORIZATION_FAILED.*'
               r"grant the relay's ACLs on it \(Write", 60)
    assert scalar(conn, WAITING) == 11
    acl_admin.add(SASL_USER, Acl("TOPIC", dlq, "LITERAL", "WRITE"))
    wait_for(drained(conn), 60, "the rows once the ACL is back")
    assert r.stop() == 0
    check_exactly_once(read_all(tps), [n for n in range(11) if n != 5])
    assert [m.value() for m in read_all([dlq])] == [b"row-5"]


def test_create_acl_only_for_a_missing_topic(outbox_db, topics, relays, acl_admin, tmp_path):
    """A checkpoint topic that does not exist: the relay names the missing
    Create, and creates the topic once it may."""
    tps = topics(1)
    name = "r-create-acl"
    ckpt = ckpt_topic(outbox_db, name)
    grant(acl_admin, SASL_USER, readme_acls(name, tps, ckpt))
    cfg = secure_config(tmp_path / "relay.conf", outbox_db, name, SASL_BOOTSTRAP, sasl_props())
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 5)
    r = relays(cfg)
    r.wait_log(f'could not create topic "{re.escape(ckpt)}": .*TOPIC_AUTHORIZATION_FAILED.*'
               'grant Create on it', 60)
    acl_admin.add(SASL_USER, Acl("TOPIC", ckpt, "LITERAL", "CREATE"))
    r.wait_log(f'created topic "{re.escape(ckpt)}"', 60)
    wait_for(drained(conn), 60, "the rows")
    assert r.stop() == 0
    check_exactly_once(read_all(tps), range(5))


def test_mtls_client_certificate(outbox_db, topics, relays, acl_admin, tmp_path):
    """The same ACLs for the principal of a client certificate."""
    name = "r-mtls"
    tps, ckpt, _ = relay_topics(outbox_db, topics, name)
    grant(acl_admin, MTLS_USER, readme_acls(name, tps, ckpt))
    cfg = secure_config(tmp_path / "relay.conf", outbox_db, name, MTLS_BOOTSTRAP, mtls_props())
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 50)
    r = relays(cfg)
    wait_for(drained(conn), 60, "the rows")
    assert r.stop() == 0
    insert_rows(conn, tps, 50, 50)
    r = relays(cfg)
    wait_for(drained(conn), 60, "the rows after a restart")
    assert r.stop() == 0
    check_exactly_once(read_all(tps), range(100))


STARTUP_ERRORS = [
    ("wrong-password", SASL_BOOTSTRAP, lambda: sasl_props(password="Wr0ng-" + uuid.uuid4().hex),
     r"could not connect to Kafka at .*: authentication failed: .*Invalid username or password"
     r".*check sasl\.username and sasl\.password"),
    # Debian 12's librdkafka 2.0.2 sends SCRAM proofs that Kafka 4 refuses
    # (fixed in librdkafka 2.6.1): the relay says so instead of only
    # "invalid credentials" for a right password.
    ("scram-old-librdkafka", SASL_BOOTSTRAP, lambda: sasl_props(mechanism="SCRAM-SHA-512"),
     r"authentication failed: .*invalid credentials with SASL mechanism SCRAM-SHA-512"
     r".*librdkafka [0-9.]+ computes SCRAM proofs that Kafka 4\.0 and later brokers refuse"),
    ("unknown-ca", SASL_BOOTSTRAP, lambda: sasl_props(ca="other-ca.crt"),
     r"the broker's certificate was not accepted \(unable to get local issuer certificate, "
     r"its own certificate\).*check kafka\.properties ssl\.ca\.location"),
    ("expired-client-certificate", MTLS_BOOTSTRAP, lambda: mtls_props("client-expired"),
     r"the broker refused the TLS connection: .*certificate unknown.*the client certificate "
     r"may have expired"),
    ("client-certificate-of-another-ca", MTLS_BOOTSTRAP, lambda: mtls_props("other-client"),
     r"the broker refused the TLS connection: .*check kafka\.properties ssl\.certificate\.location"),
]


@pytest.mark.parametrize("case,bootstrap,props,pattern", STARTUP_ERRORS,
                         ids=[c[0] for c in STARTUP_ERRORS])
def test_kafka_startup_errors(case, bootstrap, props, pattern, outbox_db, relays, tmp_path):
    """Each a clear error at start-up and exit code 1; the password never
    shows, neither in the relay's log nor in `check`."""
    kafka_props = props()
    secret = next((p.split("=", 1)[1] for p in kafka_props if p.startswith("sasl.password=")), None)
    name = f"r-{case}"
    cfg = secure_config(tmp_path / "relay.conf", outbox_db, name, bootstrap, kafka_props)
    if case == "scram-old-librdkafka":
        version = relay_cmd("--version").stdout
        librdkafka = tuple(int(x) for x in re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", version).groups())
        if librdkafka >= (2, 6, 1):
            # a fixed librdkafka: SCRAM works, with the listed ACLs
            pytest.skip(f"librdkafka {librdkafka} has the SCRAM fix; the SASL tests cover it")
    r = relays(cfg)
    assert r.wait_exit(60) == 1, r.text()
    r.wait_log(r"error relay: .*" + pattern, 1)
    assert_secret_never_shown(r.text(), secret=secret)
    if case == "wrong-password":  # `check` waits 10 s for the broker: once
        check = relay_cmd("check", "-c", cfg)
        assert check.returncode == 1, check.stdout + check.stderr
        assert "kafka: FAILED" in check.stdout, check.stdout
        assert_secret_never_shown(check.stdout, check.stderr, secret=secret)


@pytest.fixture
def tls_login(outbox_db):
    """A least-privilege login (member of outbox_relay) that pg_hba.conf
    admits only over TLS with its password (deploy/local/up: role
    outbox_tls_login). Yields (user, password)."""
    user, password = f"relay_tls_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    dbname = urlsplit(outbox_db).path.lstrip("/")
    psql(PG_URL, "-c", """DO $$ BEGIN
                             CREATE ROLE outbox_tls_login NOLOGIN;
                           EXCEPTION WHEN duplicate_object THEN NULL; END $$""")
    psql(PG_URL, "-c", f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE outbox_relay, outbox_tls_login",
         "-c", f"GRANT CONNECT ON DATABASE {dbname} TO {user}")
    yield user, password
    psql(PG_URL, "-c", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'")
    psql(outbox_db, "-c", f"DROP OWNED BY {user}")
    psql(PG_URL, "-c", f"DROP ROLE {user}")


def tls_conninfo(db_url, user, password, ca="ca.crt", sslmode="verify-full"):
    u = urlsplit(db_url)
    return (f"host={u.hostname} port={u.port} dbname={u.path.lstrip('/')} user={user} "
            f"password={password} sslmode={sslmode} sslrootcert={TLS / ca}")


def test_postgres_verify_full_least_privilege(outbox_db, topics, relays, tls_login, tmp_path):
    """sslmode=verify-full against the local CA, logged in as a member of
    outbox_relay only; the same login without TLS is refused by pg_hba.conf
    and cannot write outbox rows."""
    user, password = tls_login
    conninfo = tls_conninfo(outbox_db, user, password)
    with psycopg2.connect(conninfo) as c, c.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("INSERT INTO outbox.event(topic, payload) VALUES ('x', 'y')")
    with pytest.raises(psycopg2.OperationalError, match="rejects connection"):
        psycopg2.connect(tls_conninfo(outbox_db, user, password, sslmode="disable"))
    tps = topics(1)
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-pgtls", **{"postgres.conninfo": conninfo})
    conn = connect(outbox_db)
    insert_rows(conn, tps, 0, 100)
    r = relays(cfg)
    wait_for(drained(conn), 60, "the rows")
    assert r.stop() == 0
    check_exactly_once(read_all(tps), range(100))
    assert_secret_never_shown(r.text(), secret=password)


@pytest.mark.parametrize("case,ca,password,pattern", [
    ("unknown-ca", "other-ca.crt", None, r"certificate verify failed"),
    ("wrong-password", "ca.crt", "Wr0ng-password", r"password authentication failed"),
])
def test_postgres_startup_errors(case, ca, password, pattern, outbox_db, relays, tls_login,
                                 tmp_path):
    """A CA that did not sign the server's certificate, a wrong password:
    a clear error at start-up, exit code 1, the password never shown."""
    user, good = tls_login
    secret = password or good
    cfg = write_config(tmp_path / "relay.conf", outbox_db, "r-pgerr",
                       **{"postgres.conninfo": tls_conninfo(outbox_db, user, secret, ca=ca)})
    r = relays(cfg)
    assert r.wait_exit(60) == 1, r.text()
    r.wait_log(r"error relay: could not connect to PostgreSQL: .*" + pattern, 1)
    assert_secret_never_shown(r.text(), secret=secret)
