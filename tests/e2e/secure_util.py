"""Helpers for the tests on the brokers' secured listeners
(tests/e2e/test_security.py, tests/e2e/test_scram.py): the listeners and
files deploy/local/up made, relay configurations for them, the ACLs
deploy/README.md lists, and ACLs through Kafka's own Admin client
(deploy/local/kafka/SecurityAdmin.java: Debian 12's confluent-kafka 1.7 has
no ACL calls)."""
import collections
import os
import subprocess
from pathlib import Path

from conftest import BOOTSTRAP, ROOT, write_config

STATE = os.environ.get("OUTBOX_LOCAL_STATE", "/var/tmp/outbox-relay-local")
TLS = Path(os.environ.get("OUTBOX_TLS_DIR", f"{STATE}/tls"))
SASL_BOOTSTRAP = os.environ.get("OUTBOX_KAFKA_SASL_BOOTSTRAP", "127.0.0.1:19096")
MTLS_BOOTSTRAP = os.environ.get("OUTBOX_KAFKA_MTLS_BOOTSTRAP", "127.0.0.1:19097")
SASL_USER = os.environ.get("OUTBOX_KAFKA_SASL_USER", "outbox-relay")
MTLS_USER = "outbox-relay-mtls"  # the CN of client.crt (deploy/local/tls)
JARS = os.environ.get("OUTBOX_KAFKA_JARS", "")


def kafka_password():
    return (TLS / "kafka-password").read_text().strip()


def sasl_props(mechanism="PLAIN", password=None, ca="ca.crt"):
    return ["security.protocol=SASL_SSL", f"sasl.mechanism={mechanism}",
            f"sasl.username={SASL_USER}", f"sasl.password={password or kafka_password()}",
            f"ssl.ca.location={TLS / ca}"]


Acl = collections.namedtuple("Acl", "resource name pattern op")


def readme_acls(name, outbox_topics, ckpt, dlq=None):
    """The ACLs of deploy/README.md ("Kafka security") for relay `name`."""
    acls = [Acl("TRANSACTIONAL_ID", name, "LITERAL", "WRITE")]
    for t in outbox_topics:
        acls += [Acl("TOPIC", t, "LITERAL", "WRITE"),
                 Acl("TOPIC", t, "LITERAL", "DESCRIBE_CONFIGS")]
    acls += [Acl("TOPIC", ckpt, "LITERAL", "READ"), Acl("TOPIC", ckpt, "LITERAL", "WRITE")]
    if dlq:
        acls.append(Acl("TOPIC", dlq, "LITERAL", "WRITE"))
    return acls


def grant(admin, principal, acls):
    """Exactly `acls` for the principal: every other ACL of it removed."""
    admin.clear(principal)
    for a in acls:
        admin.add(principal, a)
    assert admin.list(principal) == {f"{a.resource}:{a.name}:{a.pattern}:{a.op}" for a in acls}


def secure_config(path, db_url, name, bootstrap, props, **opts):
    return write_config(path, db_url, name, **{"kafka.bootstrap_servers": bootstrap,
                                                "kafka.properties": props, **opts})


def assert_secret_never_shown(*texts, secret=None):
    secret = secret or kafka_password()
    for t in texts:
        assert secret not in t, "the password appears in the relay's output"


def mtls_props(cert="client"):
    return ["security.protocol=SSL", f"ssl.ca.location={TLS / 'ca.crt'}",
            f"ssl.certificate.location={TLS / (cert + '.crt')}",
            f"ssl.key.location={TLS / (cert + '.key')}"]


class SecurityAdmin:
    """SecurityAdmin.java serving on a pipe, over a PLAINTEXT listener (whose
    principal is the super user): add, remove, list and clear ACLs. By
    default on the broker of deploy/local/up with its 4.1.1 jars; the Kafka
    3.9 broker of deploy/local/scram-broker passes its own listener and jars."""

    def __init__(self, bootstrap=BOOTSTRAP, jars=JARS):
        assert jars, "OUTBOX_KAFKA_JARS is not set: source the env file of deploy/local/up"
        # Kafka 4 logs through log4j2, Kafka 3.9 through log4j 1 (reload4j):
        # each reads its own property and ignores the other.
        self.proc = subprocess.Popen(
            ["java", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             f"-Dlog4j2.configurationFile={ROOT / 'deploy/local/kafka/log4j2-tools.xml'}",
             f"-Dlog4j.configuration=file:{ROOT / 'deploy/local/kafka39/log4j.properties'}",
             "-cp", f"{jars}/*", str(ROOT / "deploy/local/kafka/SecurityAdmin.java"),
             bootstrap, "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        assert reply.startswith("ok"), f"{line}: {reply}"
        return reply[3:]

    def add(self, principal, acl):
        self.ask(f"add User:{principal} {acl.resource} {acl.name} {acl.pattern} {acl.op}")

    def remove(self, principal, acl):
        self.ask(f"remove User:{principal} {acl.resource} {acl.name} {acl.pattern} {acl.op}")

    def list(self, principal):
        return set(self.ask(f"list User:{principal}").split())

    def clear(self, principal):
        self.ask(f"clear User:{principal}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)
