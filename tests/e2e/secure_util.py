"""Helpers for the tests on the broker's secured listeners
(tests/e2e/test_security.py): the listeners and files deploy/local/up made,
relay configurations for them, and ACLs through Kafka's own Admin client
(deploy/local/kafka/SecurityAdmin.java: Debian 12's confluent-kafka 1.7 has
no ACL calls)."""
import os
import subprocess
from pathlib import Path

from conftest import BOOTSTRAP, ROOT

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


def mtls_props(cert="client"):
    return ["security.protocol=SSL", f"ssl.ca.location={TLS / 'ca.crt'}",
            f"ssl.certificate.location={TLS / (cert + '.crt')}",
            f"ssl.key.location={TLS / (cert + '.key')}"]


class SecurityAdmin:
    """SecurityAdmin.java serving on a pipe, over the PLAINTEXT listener (whose
    principal is the super user): add, remove, list and clear ACLs."""

    def __init__(self):
        assert JARS, "OUTBOX_KAFKA_JARS is not set: source the env file of deploy/local/up"
        self.proc = subprocess.Popen(
            ["java", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             f"-Dlog4j2.configurationFile={ROOT / 'deploy/local/kafka/log4j2-tools.xml'}",
             "-cp", f"{JARS}/*", str(ROOT / "deploy/local/kafka/SecurityAdmin.java"),
             BOOTSTRAP, "serve"],
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
