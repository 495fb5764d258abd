"""The guides against the repository: every file the README, the operations
guide, the design page and the alert rules name exists, every section they
cite by name is a heading, and the quick start needs nothing it does not make."""
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("OUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
# docs/sql.md belongs to the SQL side; its references are checked there.
GUIDES = ["README.md", "deploy/README.md", "docs/design.md"]
CITING = GUIDES + ["deploy/prometheus/alerts.yml", "deploy/systemd/outbox-relay.service",
                   "deploy/kubernetes/deployment.yaml", "deploy/kubernetes/configmap.yaml",
                   "deploy/kubernetes/secret.yaml", "deploy/docker-compose.yml", "scripts/quickstart"]
# Folders whose files the guides name; a name with a wildcard or a
# placeholder is not a file.
PATH_RE = re.compile(r"(?<![\w./-])((?:deploy|docs|tests|scripts|conf|bench|sql|relay)/[\w./-]*\w)")


def text(rel):
    return (ROOT / rel).read_text()


def headings(rel):
    return {re.sub(r"`", "", m.group(1)).strip()
            for m in re.finditer(r"^#+\s+(.*)$", text(rel), re.M)}


def test_every_named_file_exists():
    missing = []
    for rel in CITING:
        for m in PATH_RE.finditer(text(rel)):
            name = m.group(1).rstrip(".")
            if any(c in name for c in "*<>{}") or name.startswith("relay/outbox-relay"):
                continue
            if name == "deploy/outbox-relay":  # kubectl's deployment/NAME, not a file
                continue
            if not (ROOT / name).exists():
                missing.append(f"{rel}: {name}")
    assert not missing, "\n".join(missing)


def test_no_reference_to_a_design_file_outside_the_repository():
    for rel in CITING:
        assert not re.search(r"DESIGN(\.md| §)", text(rel)), rel
    assert (ROOT / "docs/design.md").exists()


def test_cited_sections_are_headings():
    """'(deploy/README.md, "Exit code 5")' and the like, and a guide's own
    '"Poison row: publishing stopped" below'."""
    cited = []
    for rel in CITING:
        body = text(rel)
        for m in re.finditer(r"(README\.md|deploy/README\.md|docs/design\.md|docs/sql\.md),?\s+"
                             r"(?:section\s+)?[\"'“]([^\"'”]+)[\"'”]", body):
            target = m.group(1)
            if target == "README.md" and body[max(0, m.start() - 7):m.start()].endswith("deploy/"):
                continue
            cited.append((rel, target, " ".join(m.group(2).split())))
        for m in re.finditer(r"\"([A-Z][^\"\n]{2,60})\" (?:below|above)", body):
            cited.append((rel, rel, m.group(1)))
    # The README's own sections are cited as 'the README's "What can break it"'.
    for rel in CITING:
        for m in re.finditer(r"README's \"([^\"]+)\"", text(rel)):
            cited.append((rel, "README.md", m.group(1)))
    assert cited
    wrong = []
    for rel, target, section in cited:
        heads = headings(target)
        if not any(h == section or h.startswith(section) or section in h for h in heads):
            # bold run-in headings (**What can break it.**) count too
            if f"**{section}" not in text(target):
                wrong.append(f"{rel} cites {target}, \"{section}\": no such section")
    assert not wrong, "\n".join(wrong)


def test_quickstart_needs_no_topic_tool():
    """The quick start works on a fresh broker (which creates no topic on its
    own) with no admin tool: conf/relay.conf, which the quick start's relay
    runs with, has the relay create "orders" itself (topics.create)."""
    lines = [ln.strip() for ln in text("scripts/quickstart").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    exec_ = [i for i, ln in enumerate(lines) if ln.startswith("exec ")]
    assert exec_ and exec_[0] == len(lines) - 1 and "-c conf/relay.conf" in lines[-1], lines
    assert not any(re.search(r"create_topic|kafka-topics|create_topics", ln) for ln in lines), lines
    conf = re.sub(r"#[^\n]*", "", text("conf/relay.conf"))
    group = re.search(r"^topics = \{(.*?)^\};", conf, re.M | re.S)
    assert group and re.search(r"^\s*create = true;", group.group(1), re.M), conf
    # The README tells the reader that the relay keeps the first shell, and
    # that no other tool is needed.
    readme = text("README.md")
    assert "second shell" in readme
    assert "The quick start works on a fresh broker with no other tool" in readme
    assert "`topics.create = true`" in readme


def test_create_topic_creates_and_leaves_an_existing_one_alone():
    from confluent_kafka.admin import AdminClient
    topic = "docs-create-topic-" + uuid.uuid4().hex[:8]
    script = ROOT / "deploy/local/create_topic.py"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0})
    try:
        first = subprocess.run(["/usr/bin/python3", script, BOOTSTRAP, topic, "2"],
                               capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f'topic "{topic}" created (2 partitions)' in first.stdout
        deadline = time.monotonic() + 30
        while True:
            md = admin.list_topics(topic, timeout=10).topics[topic]
            if md.error is None and len(md.partitions) == 2:
                break
            assert time.monotonic() < deadline, md.error
            time.sleep(0.2)
        again = subprocess.run(["/usr/bin/python3", script, BOOTSTRAP, topic, "2"],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and f'topic "{topic}" exists' in again.stdout, \
            again.stdout + again.stderr
    finally:
        admin.delete_topics([topic])[topic].result(30)
