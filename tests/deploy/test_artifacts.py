"""The deployment artifacts of deploy/, each checked by a tool rather than by eye.

Validators (pinned in tests/deploy/requirements.txt, installed into their own
virtual environment, $OUTBOX_DEPLOY_TOOLS, default /opt/outbox-relay-deploy-tools):
  Dockerfile          hadolint; BuildKit's parser (package "dockerfile") for the
                      structure; the release build and the health check run here
  docker-compose.yml  `docker-compose config` (the Compose CLI, needs no engine)
  systemd unit        `systemd-analyze verify` and `systemd-analyze security`
  Kubernetes          kubernetes-validate --strict (bundled schemas, offline)
  relay.conf files    the relay binary itself (`outbox-relay check`)
  SQL and the writer  real PostgreSQL and Kafka of deploy/local/up

Only a check that needs a Docker engine is skipped (this machine has none),
with the reason. Everything else fails when its tool is missing.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "systemd/outbox-relay.service"
K8S = DEPLOY / "kubernetes"
TOOLS = Path(os.environ.get("OUTBOX_DEPLOY_TOOLS", "/opt/outbox-relay-deploy-tools"))
RELAY_BIN = Path(os.environ.get("OUTBOX_RELAY_BIN", ROOT / "build/relay/outbox-relay"))
PG_URL = os.environ.get("OUTBOX_PG_URL", "postgresql://postgres@127.0.0.1:55432/outbox")
BOOTSTRAP = os.environ.get("OUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
# Kubernetes versions the manifests are validated against: the oldest with
# every field they use (PodDisruptionBudget.unhealthyPodEvictionPolicy is
# there from 1.27) and the newest the validator knows.
K8S_VERSIONS = ["1.27.0", "1.37.0"]
# Environment variables the relay reads instead of the file (relay/config.c).
SECRET_ENV = {"OUTBOX_PG_CONNINFO", "OUTBOX_KAFKA_BOOTSTRAP_SERVERS",
              "OUTBOX_KAFKA_SASL_USERNAME", "OUTBOX_KAFKA_SASL_PASSWORD"}
INSTALL_HINT = ("/usr/bin/python3 -m venv /opt/outbox-relay-deploy-tools && "
                "/opt/outbox-relay-deploy-tools/bin/pip install -r tests/deploy/requirements.txt "
                "(scripts/install-deps.sh does this)")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def tool(name):
    """A validator from the tools' virtual environment; failing, not skipping,
    when it is missing: every one of them installs on this machine."""
    path = TOOLS / "bin" / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is missing: {INSTALL_HINT}"
    return found


def run(*args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    return subprocess.run([str(a) for a in args], **kw)


def tools_python(code, *args):
    """Run Python code with the tools' interpreter (which has PyYAML and
    BuildKit's parser); its stdout is JSON."""
    out = run(tool("python3"), "-c", code, *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def load_yaml(path):
    return tools_python("import json, sys, yaml\n"
                        "print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))", path)


def relay_bin():
    assert RELAY_BIN.exists(), f"{RELAY_BIN} is missing: bash scripts/build.sh build"
    return RELAY_BIN


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conf_options(text):
    """{group: {option: raw value}} of a relay.conf in this project's layout
    (groups "name = {", one "option = value;" a line, arrays over lines)."""
    groups, group = {}, None
    for line in re.sub(r"#[^\n]*", "", text).splitlines():
        if m := re.match(r"\s*([a-z_]+)\s*=\s*\{\s*$", line):
            group = groups.setdefault(m.group(1), {})
        elif re.match(r"\s*\};\s*$", line):
            group = None
        elif group is not None and (m := re.match(r"\s*([a-z_]+)\s*=\s*(.*?);?\s*$", line)):
            group[m.group(1)] = m.group(2).strip().strip('"')
    return groups


def conf_value(conf, group, option):
    """An option of a relay.conf, or its default from conf/relay.conf (which
    lists every option with its default)."""
    if option in conf.get(group, {}):
        return conf[group][option]
    return conf_options((ROOT / "conf/relay.conf").read_text())[group][option]


# What a stop may take beyond the relay's bound (the lease release, the
# producer's shutdown): the margin the recipes document.
STOP_MARGIN_S = 30


def stop_bound_s(conf):
    """The longest a SIGTERM may take (README.md, "Standby, fencing and
    signals"): the commit retried until the transaction timeout, its last
    attempt, then the abort or the database advance, one commit timeout each."""
    return (int(conf_value(conf, "kafka", "transaction_timeout_ms"))
            + 2 * int(conf_value(conf, "kafka", "commit_timeout_ms"))) / 1000


def dockerfile_instructions():
    """BuildKit's parse of deploy/Dockerfile: [{cmd, value, flags, line}]."""
    return tools_python(
        "import dockerfile, json, sys\n"
        "print(json.dumps([{'cmd': c.cmd.upper(), 'value': list(c.value), 'flags': list(c.flags),\n"
        "                   'json': c.json, 'line': c.start_line}\n"
        "                  for c in dockerfile.parse_file(sys.argv[1])]))", DOCKERFILE)


def stages():
    out = []
    for ins in dockerfile_instructions():
        if ins["cmd"] == "FROM":
            out.append([])
        out[-1].append(ins)
    return out


def apt_installed(stage):
    """Package names that a stage's RUN lines give to apt-get install."""
    names = []
    for ins in stage:
        if ins["cmd"] != "RUN":
            continue
        for part in re.split(r"&&|;", " ".join(ins["value"])):
            words = part.split()
            if "apt-get" in words and "install" in words:
                names += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return names


def systemd_unit(text):
    """[(section, key, value)] of a unit file, repeated keys kept."""
    items, section = [], None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        else:
            key, _, value = line.partition("=")
            items.append((section, key.strip(), value.strip()))
    return items


def in_private_mounts(script):
    """Run a shell script in a private mount namespace where a tmpfs covers
    /usr/local/bin and holds the built relay: the unit's real ExecStart path
    exists for systemd-analyze, and the host is not changed."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("systemd-analyze needs the unit's ExecStart binary at /usr/local/bin; "
                    "the test puts it there in a private mount namespace, which takes root and "
                    "unshare(1): run the suite as root, as scripts/test does")
    sa = shutil.which("systemd-analyze")
    assert sa, "systemd-analyze is missing: apt-get install systemd (harmless in a container)"
    return run("unshare", "--mount", "--propagation", "private", "sh", "-ec",
               "mount -t tmpfs tmpfs /usr/local/bin\n"
               f"cp '{relay_bin()}' /usr/local/bin/outbox-relay\n" + script)


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:  # not listening (yet)
        return 0, str(e)


# --------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------
def test_dockerfile_passes_hadolint():
    out = run(tool("hadolint"), "--no-color", "--failure-threshold", "style", DOCKERFILE)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_dockerfile_structure():
    build, final = stages()
    assert build[0]["value"] == ["debian:12", "AS", "build"]
    assert final[0]["value"] == ["debian:12-slim"], "the runtime stage is Debian 12 slim"
    assert len(stages()) == 2

    build_runs = " ".join(" ".join(i["value"]) for i in build if i["cmd"] == "RUN")
    assert "-DOUTBOX_CRASH_POINTS=OFF" in build_runs, "release builds leave the crash points out"
    assert {"build-essential", "cmake", "pkg-config", "libpq-dev", "librdkafka-dev",
            "libconfig-dev", "libmicrohttpd-dev", "libcmocka-dev"} <= set(apt_installed(build))

    # The runtime stage: the shared libraries and CA certificates, nothing to build with.
    assert sorted(apt_installed(final)) == sorted(
        ["libpq5", "librdkafka1", "libconfig9", "libmicrohttpd12", "ca-certificates"])
    final_text = " ".join(" ".join(i["value"]) for i in final)
    for banned in ("-dev", "build-essential", "cmake", "gcc", "make ", "curl", "wget"):
        assert banned not in final_text, f"{banned!r} in the runtime stage"
    copies = [i for i in final if i["cmd"] == "COPY"]
    assert [i["value"] for i in copies if "--from=build" in i["flags"]] == \
        [["/out/bin/outbox-relay", "/usr/local/bin/outbox-relay"]]
    assert all("--from=build" in i["flags"] or i["value"][0] == "conf/relay.conf" for i in copies)

    # Non-root, numerically (Kubernetes' runAsNonRoot can only check a number),
    # and in force from the USER line to the end.
    users = [i for i in final if i["cmd"] == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0]["value"][0].partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid.isdigit() and int(gid) >= 1000
    cmds = [i["cmd"] for i in final]
    assert cmds.index("USER") < cmds.index("ENTRYPOINT")
    assert not any(c == "RUN" for c in cmds[cmds.index("USER"):]), "RUN after USER runs as non-root"

    health = [i for i in final if i["cmd"] == "HEALTHCHECK"]
    assert len(health) == 1 and health[0]["value"][0] == "CMD" and health[0]["json"]
    assert "/healthz" in " ".join(health[0]["value"])
    entry = [i for i in final if i["cmd"] == "ENTRYPOINT"][0]
    assert entry["json"] and entry["value"] == ["/usr/local/bin/outbox-relay"]
    assert [i["value"] for i in final if i["cmd"] == "CMD"] == [["run", "-c", "/etc/outbox-relay/relay.conf"]]
    assert [i["value"] for i in final if i["cmd"] == "EXPOSE"] == [["8080"]]


def installed_closure(packages):
    """The packages and everything they depend on (Depends, Pre-Depends),
    from dpkg's database: what `apt-get install` of them brings along."""
    seen, todo = set(), list(packages)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        out = run("dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", pkg)
        assert out.returncode == 0, f"{pkg} is not installed here: {out.stderr}"
        for alt in filter(None, (a.strip() for a in out.stdout.split(","))):
            names = [re.sub(r"[:\s(].*", "", x.strip()) for x in alt.split("|")]
            present = [n for n in names if run("dpkg-query", "-W", n).returncode == 0]
            todo += present[:1]
    return seen


def test_runtime_stage_has_every_library_the_binary_needs():
    """Each shared library the relay links against (NEEDED) belongs to a
    Debian package that the runtime stage installs, or that one of those
    depends on. The binary here is built on Debian 12, as in the build stage."""
    assert shutil.which("objdump") and shutil.which("dpkg-query"), "binutils and dpkg are needed"
    installed = apt_installed(stages()[1])
    closure = installed_closure(installed)
    dyn = run("objdump", "-p", relay_bin())
    needed = re.findall(r"NEEDED\s+(\S+)", dyn.stdout)
    assert "libpq.so.5" in needed and "librdkafka.so.1" in needed, dyn.stdout
    for lib in needed:
        owner = run("dpkg-query", "-S", f"*/{lib}")
        assert owner.returncode == 0, f"no Debian package has {lib}"
        pkg = owner.stdout.split(":")[0]
        assert pkg in closure, f"{lib} comes from {pkg}, which the runtime stage does not install"
    # And each installed package is there for a reason: a NEEDED library or the CA certificates.
    owners = {run("dpkg-query", "-S", f"*/{lib}").stdout.split(":")[0] for lib in needed}
    assert set(installed) - owners == {"ca-certificates"}


def test_build_stage_runs_here(tmp_path):
    """The build stage, replayed on this Debian 12 machine: only the files its
    COPY lines bring, then its own RUN commands (all but the apt-get install,
    whose packages scripts/install-deps.sh installs here), with its absolute
    paths moved under a temporary root. The result is at the path the
    runtime stage copies from, runs, and has no crash points (which the test
    build has, so the check can tell them apart)."""
    build, final = stages()
    root = tmp_path / "fs"
    prefixes = ("/src", "/build", "/out")

    def here(text):
        return re.sub(r"(?<![\w.~-])(/src|/build|/out)(?=/|\b)", lambda m: f"{root}{m.group(1)}", text)

    workdir = None
    ran = 0
    for ins in build[1:]:
        if ins["cmd"] == "WORKDIR":
            assert ins["value"][0] in prefixes, ins
            workdir = Path(here(ins["value"][0]))
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins["cmd"] == "COPY":
            *srcs, dest = ins["value"]
            target = workdir / dest
            for src in srcs:
                if (ROOT / src).is_dir():
                    shutil.copytree(ROOT / src, target if dest.endswith("/") and src.endswith("/")
                                    else target / Path(src).name, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / src, target / Path(src).name)
        elif ins["cmd"] == "RUN" and "apt-get" not in " ".join(ins["value"]):
            cmd = here(" ".join(ins["value"]))
            out = run("sh", "-c", cmd, cwd=workdir, timeout=900)
            assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            ran += 1
        elif ins["cmd"] not in ("RUN", "COPY", "WORKDIR"):
            raise AssertionError(f"unexpected {ins['cmd']} in the build stage: replay it here")
    assert ran >= 1
    (src,) = [i["value"][0] for i in final if i["cmd"] == "COPY" and "--from=build" in i["flags"]]
    release = Path(here(src))
    assert release.exists(), f"the runtime stage copies {src}, which the build stage did not make"
    out = run(release, "--version")
    assert out.returncode == 0 and out.stdout.startswith("outbox-relay "), out.stderr
    assert b"OUTBOX_RELAY_CRASH_AT" not in release.read_bytes(), "crash points in the release build"
    assert b"OUTBOX_RELAY_CRASH_AT" in relay_bin().read_bytes(), \
        "the test build has crash points, so this check can tell the two apart"
    assert b".debug_info" not in run("objdump", "-h", release).stdout.encode(), "stripped"


def test_healthcheck_command_against_the_relay(tmp_path):
    """The HEALTHCHECK command, exactly as written, with the port the image
    sets in OUTBOX_HEALTH_PORT pointed at a real relay: it passes on the
    relay's /healthz (200 while its loop is alive, here waiting for an
    unreachable database) and fails on a 503 and on a closed port."""
    final = stages()[1]
    argv = [i for i in final if i["cmd"] == "HEALTHCHECK"][0]["value"][1:]
    env_lines = [i["value"] for i in final if i["cmd"] == "ENV"]
    assert ["OUTBOX_HEALTH_PORT", "8080"] in env_lines

    def check(port):
        return run(*argv, env={**os.environ, "OUTBOX_HEALTH_PORT": str(port)}, timeout=30).returncode

    port = free_port()
    conf = tmp_path / "relay.conf"
    conf.write_text((DEPLOY / "compose/relay.conf").read_text()
                    .replace('listen = "0.0.0.0:8080";', f'listen = "127.0.0.1:{port}";'))
    env = {**os.environ, "OUTBOX_PG_CONNINFO": "host=127.0.0.1 port=1 connect_timeout=1",
           "OUTBOX_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    log = open(tmp_path / "relay.log", "wb")
    relay = subprocess.Popen([relay_bin(), "run", "-c", conf], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while check(port) != 0:
            assert relay.poll() is None, (tmp_path / "relay.log").read_text()
            assert time.monotonic() < deadline, "health check never passed on the relay"
            time.sleep(0.2)
        assert http_get(port, "/healthz")[0] == 200
        assert http_get(port, "/readyz")[0] == 503, "no database: not ready, yet alive"
    finally:
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(30) == 0
        log.close()
    assert check(port) != 0, "closed port"

    # A server that answers 503 on /healthz.
    srv = subprocess.Popen([sys.executable, "-c", (
        "import http.server, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(503); self.end_headers(); self.wfile.write(b'stuck')\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()"), str(port)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert check(port) != 0, "503 must fail the health check"
    finally:
        srv.kill()
        srv.wait()


def test_image_builds_and_runs_with_a_docker_engine(tmp_path):
    docker = shutil.which("docker")
    if not docker or run(docker, "info", timeout=30).returncode != 0:
        pytest.skip("no Docker engine on this machine (the docker CLI, if any, is only a client): "
                    "`docker build` of deploy/Dockerfile is not run; hadolint, the BuildKit parse "
                    "and the release build above stand in (deploy/README.md, 'What is verified')")
    tag = f"outbox-relay-test:{uuid.uuid4().hex[:8]}"
    out = run(docker, "build", "-f", DOCKERFILE, "-t", tag, ROOT, timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    try:
        out = run(docker, "run", "--rm", tag, "--version")
        assert out.returncode == 0 and out.stdout.startswith("outbox-relay "), out.stderr
        out = run(docker, "run", "--rm", "--entrypoint", "id", tag, "-u")
        assert out.stdout.strip() == "10001"
        out = run(docker, "run", "--rm", "--entrypoint", "dpkg-query", tag, "-W", "-f=${Package}\\n")
        pkgs = set(out.stdout.split())
        assert {"libpq5", "librdkafka1", "libconfig9", "libmicrohttpd12", "ca-certificates"} <= pkgs
        assert not {p for p in pkgs if p.endswith("-dev") or p in ("gcc", "cmake", "make", "curl")}
        # the health check passes once the relay serves /healthz (database unreachable: alive, not ready)
        conf = tmp_path / "relay.conf"
        conf.write_text((DEPLOY / "compose/relay.conf").read_text())
        conf.chmod(0o644)
        cid = run(docker, "run", "-d", "--rm", "-v", f"{conf}:/etc/outbox-relay/relay.conf:ro",
                  "-e", "OUTBOX_PG_CONNINFO=host=127.0.0.1 port=1 connect_timeout=1", tag).stdout.strip()
        try:
            deadline = time.monotonic() + 120
            while run(docker, "inspect", "-f", "{{.State.Health.Status}}", cid).stdout.strip() != "healthy":
                assert time.monotonic() < deadline, run(docker, "logs", cid).stderr
                time.sleep(2)
        finally:
            run(docker, "stop", "-t", "30", cid)
    finally:
        run(docker, "rmi", "-f", tag)


# --------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------
def compose_config():
    out = run(tool("docker-compose"), "-f", COMPOSE, "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_config_accepts_the_file():
    out = run(tool("docker-compose"), "-f", COMPOSE, "config", "--quiet")
    assert out.returncode == 0, out.stderr
    assert not out.stderr.strip(), f"warnings: {out.stderr}"


def test_compose_wiring():
    cfg = compose_config()
    svc = cfg["services"]
    assert set(svc) == {"postgres", "kafka", "schema", "topics", "relay-a", "relay-b",
                        "writer", "consumer"}
    assert svc["postgres"]["image"] == "postgres:15"
    assert svc["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in svc["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "KRaft"

    def mounts(s):
        return {v["target"]: Path(v["source"]) for v in svc[s].get("volumes", [])}

    for name in ("relay-a", "relay-b"):
        r = svc[name]
        assert Path(r["build"]["context"]) == ROOT and r["build"]["dockerfile"] == "deploy/Dockerfile"
        assert mounts(name) == {"/etc/outbox-relay/relay.conf": DEPLOY / "compose/relay.conf"}
        assert r["depends_on"]["schema"]["condition"] == "service_completed_successfully"
        assert r["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert r["read_only"] and r["cap_drop"] == ["ALL"]
        assert set(r["environment"]) - {"OUTBOX_HEALTH_PORT"} <= SECRET_ENV
        # compose reports stop_grace_period in its own duration format
        grace = r["stop_grace_period"]
        assert re.fullmatch(r"(\d+m)?(\d+s)?", grace), grace
        secs = sum(int(n) * (60 if u == "m" else 1) for n, u in re.findall(r"(\d+)([ms])", grace))
        bound = stop_bound_s(conf_options((DEPLOY / "compose/relay.conf").read_text()))
        assert secs >= bound + STOP_MARGIN_S, f"stop grace period {secs} s: the relay's stop bound is {bound} s"
    assert svc["relay-a"]["image"] == svc["relay-b"]["image"]

    # Every file the one-shot and example services mount exists.
    for name in ("schema", "writer"):
        for src in mounts(name).values():
            assert src.exists(), src
    schema_cmd = " ".join(svc["schema"]["command"])
    for f in ("/opt/outbox/sql/install.sql", "/opt/outbox/compose/roles.sql",
              "/opt/outbox/examples/schema.sql"):
        assert f in schema_cmd
    assert svc["writer"]["depends_on"]["schema"]["condition"] == "service_completed_successfully"
    assert svc["writer"]["environment"]["PGUSER"] == "app"
    assert "read_committed" in svc["consumer"]["command"]


# --------------------------------------------------------------------------
# relay.conf files: the same shape as conf/relay.conf, and accepted by the relay
# --------------------------------------------------------------------------
def k8s_relay_conf():
    cm = [d for d in load_yaml(K8S / "configmap.yaml") if d["kind"] == "ConfigMap"][0]
    return cm["data"]["relay.conf"]


def test_relay_confs_have_the_shape_of_conf_relay_conf(tmp_path):
    reference = conf_options((ROOT / "conf/relay.conf").read_text())
    confs = {"deploy/compose/relay.conf": (DEPLOY / "compose/relay.conf").read_text(),
             "deploy/kubernetes/configmap.yaml": k8s_relay_conf()}
    for where, text in confs.items():
        got = conf_options(text)
        assert {g: set(o) for g, o in got.items()} == {g: set(o) for g, o in reference.items()}, where
        assert got["http"]["listen"] == "0.0.0.0:8080", f"{where}: reachable from outside the container"
        assert got["postgres"]["conninfo"] == "", f"{where}: the password comes from the environment"
        # One checkpoint topic per relay group, named as the default would be.
        assert got["kafka"]["checkpoint_topic"] == "outbox-relay.checkpoints." + got["relay"]["name"], where

    # The relay itself parses each: `check` reports the configuration first,
    # then fails fast on the closed ports given for PostgreSQL and Kafka.
    env = {**os.environ, "OUTBOX_PG_CONNINFO": "host=127.0.0.1 port=1 connect_timeout=1",
           "OUTBOX_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    procs = {}
    for i, (where, text) in enumerate(confs.items()):
        path = tmp_path / f"relay-{i}.conf"
        path.write_text(text)
        procs[where] = (path, subprocess.Popen([relay_bin(), "check", "-c", path], env=env,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for where, (path, p) in procs.items():
        out, err = p.communicate(timeout=60)
        assert re.search(rf"^config {re.escape(str(path))}: ok \(relay \"[A-Za-z0-9._-]+\"\)$", out, re.M), \
            f"{where}: {out}{err}"
        assert p.returncode == 1 and "postgresql: FAILED" in out


def test_production_conf_can_be_scraped(tmp_path):
    """conf/production.conf (the systemd recipe's relay.conf) listens where
    Prometheus can reach it: deploy/README.md says to scrape every relay."""
    got = conf_options((ROOT / "conf/production.conf").read_text())
    listen = got.get("http", {}).get("listen", conf_value(got, "http", "listen"))
    host = listen.rsplit(":", 1)[0].strip("[]")
    assert host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."), listen
    env = {**os.environ, "OUTBOX_PG_CONNINFO": "host=127.0.0.1 port=1 connect_timeout=1",
           "OUTBOX_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    out = run(relay_bin(), "check", "-c", ROOT / "conf/production.conf", env=env, timeout=60)
    assert re.search(r"^config \S+: ok ", out.stdout, re.M), out.stdout + out.stderr


# --------------------------------------------------------------------------
# systemd
# --------------------------------------------------------------------------
def test_systemd_unit_verifies():
    out = in_private_mounts(f"systemd-analyze verify '{UNIT}'")
    # verify exits 0 on unknown keys too, and only warns: no output is the bar.
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), \
        out.stdout + out.stderr


def test_systemd_unit_exposure_is_low(tmp_path):
    """systemd-analyze security rates the sandboxing from 0 (locked down) to
    10 (none): the unit must stay at 2.0 or below; the same ExecStart with no
    hardening rates far above, so the check can fail."""
    bare = tmp_path / "bare-relay.service"
    bare.write_text("[Service]\nType=notify\n"
                    "ExecStart=/usr/local/bin/outbox-relay run -c /etc/outbox-relay/relay.conf\n")
    out = in_private_mounts(f"systemd-analyze security --offline=yes '{UNIT}'; "
                            f"systemd-analyze security --offline=yes '{bare}'")
    levels = [float(x) for x in re.findall(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)]
    assert len(levels) == 2, out.stdout + out.stderr
    assert levels[0] <= 2.0, out.stdout
    assert levels[1] > 5.0


def test_systemd_unit_settings():
    items = systemd_unit(UNIT.read_text())
    svc = {}
    for section, key, value in items:
        if section == "Service":
            svc.setdefault(key, []).append(value)
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["ExecStart"] == "/usr/local/bin/outbox-relay run -c /etc/outbox-relay/relay.conf"
    assert one["Restart"] == "on-failure"
    prevent = " ".join(svc["RestartPreventExitStatus"]).split()
    assert "5" in prevent, "exit 5 needs an operator: no restart loop"
    assert "3" not in prevent and "1" not in prevent, "fenced (3) restarts as a standby"
    assert one["EnvironmentFile"].lstrip("-").startswith("/etc/outbox-relay/")
    # The unit runs conf/production.conf (deploy/README.md, "systemd").
    stop = re.fullmatch(r"(\d+)s", one["TimeoutStopSec"])
    bound = stop_bound_s(conf_options((ROOT / "conf/production.conf").read_text()))
    assert stop and int(stop.group(1)) >= bound + STOP_MARGIN_S, \
        f"TimeoutStopSec={one['TimeoutStopSec']}: the relay's stop bound is {bound} s"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
                       "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
                       "ProtectControlGroups": "yes", "MemoryDenyWriteExecute": "yes",
                       "DynamicUser": "yes",
                       "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}.items():
        assert one.get(key) == value, key
    assert "@system-service" in svc["SystemCallFilter"]
    install = [(k, v) for s, k, v in items if s == "Install"]
    assert ("WantedBy", "multi-user.target") in install


# --------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------
def test_kubernetes_manifests_validate_offline():
    """kubernetes-validate --strict (unknown fields are errors) against the
    schemas bundled in its wheel; in a network namespace with no network,
    when we may create one, to show that it needs none."""
    files = sorted(K8S.glob("*.yaml"))
    assert {f.name for f in files} == {"configmap.yaml", "secret.yaml", "deployment.yaml",
                                       "poddisruptionbudget.yaml"}
    cmd = [tool("kubernetes-validate"), "--strict", "--no-warn"]
    for v in K8S_VERSIONS:
        cmd += ["-k", v]
    cmd += files
    if os.geteuid() == 0 and shutil.which("unshare"):
        cmd = ["unshare", "--net", *cmd]
    out = run(*cmd)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == len(files) * len(K8S_VERSIONS), out.stdout


def test_kubernetes_validator_rejects_a_broken_manifest(tmp_path):
    bad = tmp_path / "deployment.yaml"
    bad.write_text((K8S / "deployment.yaml").read_text().replace("readinessProbe:", "readinesProbe:"))
    out = run(tool("kubernetes-validate"), "--strict", "-k", K8S_VERSIONS[0], bad)
    assert out.returncode != 0 and "readinesProbe" in out.stdout + out.stderr


def test_kubernetes_deployment_settings():
    docs = {d["kind"]: d for f in sorted(K8S.glob("*.yaml")) for d in load_yaml(f)}
    dep, pdb, secret = docs["Deployment"], docs["PodDisruptionBudget"], docs["Secret"]
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert spec["replicas"] == 2, "leader + standby"
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                   "prometheus.io/path": "/metrics"}
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["args"] == ["run", "-c", "/etc/outbox-relay/relay.conf"]
    assert {"requests", "limits"} <= set(c["resources"]) and "memory" in c["resources"]["limits"]

    # Non-root as the image's user, read-only, no capabilities.
    user = [i for i in stages()[1] if i["cmd"] == "USER"][0]["value"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f'{pod["securityContext"]["runAsUser"]}:{pod["securityContext"]["runAsGroup"]}' == user
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]

    # Stop bound: SIGTERM may take transaction timeout + 2 commit timeouts.
    bound = stop_bound_s(conf_options(k8s_relay_conf()))
    assert pod["terminationGracePeriodSeconds"] >= bound + STOP_MARGIN_S, bound

    # The ConfigMap lands where the args point; the Secret holds only the
    # variables the relay reads (relay/config.c), all placeholders.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == set(vols) == {"config", "postgres-ca"}
    mount, vol = mounts["config"], vols["config"]
    assert mount["mountPath"] == "/etc/outbox-relay" and mount["readOnly"] is True
    assert vol["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert vol["configMap"]["items"] == [{"key": "relay.conf", "path": "relay.conf"}]
    # The PostgreSQL CA: optional, read-only, and every sslrootcert the
    # Secret's file names (its example included) is a file that volume holds.
    ca_mount, ca_vol = mounts["postgres-ca"], vols["postgres-ca"]
    assert ca_mount["readOnly"] is True and ca_vol["configMap"]["optional"] is True
    ca_files = {f'{ca_mount["mountPath"]}/{i["path"]}' for i in ca_vol["configMap"]["items"]}
    roots = re.findall(r"sslrootcert=([^&'\"\s]+)", (K8S / "secret.yaml").read_text())
    assert roots and set(roots) <= ca_files, (roots, ca_files)
    assert c["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    config_c = (ROOT / "relay/config.c").read_text()
    for key in secret["stringData"]:
        assert key in SECRET_ENV and f'"{key}"' in config_c, key
    assert all("CHANGE-ME" in v for v in secret["stringData"].values())


# --------------------------------------------------------------------------
# The SQL steps of deploy/README.md and the example writer, on the real
# PostgreSQL and Kafka of deploy/local/up, with the least-privilege roles.
# --------------------------------------------------------------------------
def as_user(url, user, password=None):
    u = urlsplit(url)
    cred = f"{user}:{password}" if password else user
    return urlunsplit(u._replace(netloc=f"{cred}@{u.hostname}:{u.port or 5432}"))




def psql(url, *args, user=None, check=True):
    if user:
        url = as_user(url, user)
    out = run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, *args)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture
def example_db():
    assert shutil.which("psql"), "psql is missing (postgresql-client)"
    up = run("psql", "-X", "-d", PG_URL, "-c", "SELECT 1", timeout=15)
    assert up.returncode == 0, f"PostgreSQL of deploy/local/up is not reachable at {PG_URL}: {up.stderr}"
    name = "deploy_" + uuid.uuid4().hex[:10]
    psql(PG_URL, "-c", f"CREATE DATABASE {name}")
    yield urlunsplit(urlsplit(PG_URL)._replace(path="/" + name))
    psql(PG_URL, "-c", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
         "-c", f"DROP DATABASE IF EXISTS {name}", check=False)


@pytest.mark.serial  # runs deploy/compose/roles.sql: cluster-wide fixed logins
def test_least_privilege_roles_and_the_example_writer(example_db, tmp_path):
    """install.sql, then compose/roles.sql and examples/schema.sql, then the
    writer as "app": its events are in the outbox; "app" and "relay" can do
    what their roles allow and nothing else; the relay, logged in as "relay"
    with deploy/compose/relay.conf, passes `check` and publishes the events
    to Kafka exactly once."""
    db = example_db
    psql(db, "-f", ROOT / "sql/install.sql")
    psql(db, "-v", "relay_password=relay-test", "-v", "writer_password=app-test",
         "-f", DEPLOY / "compose/roles.sql")
    psql(db, "-v", "relay_password=relay-test", "-v", "writer_password=app-test",
         "-f", DEPLOY / "compose/roles.sql")  # twice: harmless
    psql(db, "-f", DEPLOY / "examples/schema.sql")
    assert psql(db, "-c", "SELECT rolcanlogin FROM pg_roles WHERE rolname IN ('relay', 'app')").stdout.split() \
        == ["t", "t"]

    pg = urlsplit(db)
    writer_env = {**os.environ, "PGHOST": pg.hostname, "PGPORT": str(pg.port or 5432),
                  "PGDATABASE": pg.path.lstrip("/"),
                  "PGUSER": "app", "PGPASSWORD": "app-test", "WRITER_COUNT": "3", "WRITER_INTERVAL": "0"}
    out = run("sh", DEPLOY / "examples/writer.sh", env=writer_env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(re.findall(r"^writer: order and outbox event: \d+ \d+$", out.stdout, re.M)) == 3, out.stdout
    rows = psql(db, "-F", "|", "-c", "SELECT id, topic, convert_from(key, 'UTF8'), convert_from(payload, 'UTF8') "
                "FROM outbox.event ORDER BY id").stdout.split("\n")
    rows = [r.split("|") for r in rows if r]
    assert [r[1] for r in rows] == ["orders"] * 3 and [r[2] for r in rows] == ["order-1", "order-2", "order-3"]

    # Least privilege, both ways.
    denied = [("app", "SELECT payload FROM outbox.event"),
              ("app", "DELETE FROM outbox.event"),
              ("app", "SELECT * FROM outbox.relay_state"),
              ("relay", "INSERT INTO outbox.event (topic) VALUES ('x')"),
              ("relay", "DELETE FROM outbox.event"),
              ("relay", "SELECT outbox.relay_forget('x')"),
              ("relay", "SELECT * FROM shop.orders")]
    for user, sql in denied:
        out = psql(db, "-c", sql, user=user, check=False)
        assert out.returncode != 0 and "permission denied" in out.stderr, (user, sql, out.stderr)
    psql(db, "-c", "SELECT count(*) FROM outbox.event", user="relay")

    # The relay as "relay", with the compose relay.conf. Only what differs on
    # this machine changes: PostgreSQL and Kafka addresses (environment, as in
    # compose), the HTTP port, and a name and checkpoint topic of its own on
    # the shared local broker.
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0})
    deadline = time.monotonic() + 90  # the broker of deploy/local/up may be restarting
    while True:
        try:
            existing = admin.list_topics(timeout=10).topics
            break
        except Exception as e:
            assert time.monotonic() < deadline, f"Kafka of deploy/local/up is not reachable at {BOOTSTRAP}: {e}"
            time.sleep(1)
    if "orders" not in existing:
        for f in admin.create_topics([NewTopic("orders", 3, 1)]).values():
            try:
                f.result(30)
            except Exception as e:  # created concurrently: fine
                assert "TOPIC_ALREADY_EXISTS" in str(e), e
    name = "deploy-test-" + uuid.uuid4().hex[:8]
    port = free_port()
    conf = tmp_path / "relay.conf"
    text = (DEPLOY / "compose/relay.conf").read_text()
    for old, new in [('name = "outbox-relay-compose";', f'name = "{name}";'),
                     ('checkpoint_topic = "outbox-relay.checkpoints.outbox-relay-compose";',
                      f'checkpoint_topic = "ckpt-{name}";'),
                     ('listen = "0.0.0.0:8080";', f'listen = "127.0.0.1:{port}";')]:
        assert old in text
        text = text.replace(old, new)
    conf.write_text(text)
    relay_url = as_user(db, "relay", "relay-test")
    env = {**os.environ, "OUTBOX_PG_CONNINFO": relay_url, "OUTBOX_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP}
    out = run(relay_bin(), "check", "-c", conf, env=env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "postgresql: ok (outbox schema version" in out.stdout and "kafka: ok" in out.stdout

    log = open(tmp_path / "relay.log", "wb")
    relay = subprocess.Popen([relay_bin(), "run", "-c", conf], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if relay.poll() is not None:
                raise AssertionError((tmp_path / "relay.log").read_text())
            assert time.monotonic() < deadline, (tmp_path / "relay.log").read_text()
            st = http_get(port, "/status")[1] if relay.poll() is None else ""
            if psql(db, "-c", "SELECT count(*) FROM outbox.event").stdout.strip() == "0" and \
                    '"role":"leader"' in st:
                break
            time.sleep(0.3)
    finally:
        relay.send_signal(signal.SIGTERM)
        code = relay.wait(60)
        log.close()
    assert code == 0, (tmp_path / "relay.log").read_text()

    # Read "orders" read_committed: each of our three events exactly once
    # (the topic is shared with other runs: match on the payload).
    cons = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "deploy-test-unused",
                     "isolation.level": "read_committed", "enable.auto.commit": False,
                     "enable.partition.eof": True, "log_level": 0})
    parts = [TopicPartition("orders", p, OFFSET_BEGINNING)
             for p in cons.list_topics("orders", timeout=10).topics["orders"].partitions]
    pending, seen = {p.partition for p in parts}, []
    cons.assign(parts)
    deadline = time.monotonic() + 60
    try:
        while pending:
            assert time.monotonic() < deadline, "reading orders timed out"
            for m in cons.consume(1000, 0.5):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    pending.discard(m.partition())
                elif m.value() is not None and m.value().decode() in {r[3] for r in rows}:
                    seen.append((m.key().decode(), m.value().decode(), dict(m.headers() or [])))
    finally:
        cons.close()
    assert sorted((k, v) for k, v, _ in seen) == sorted((r[2], r[3]) for r in rows)
    assert sorted(h["outbox-id"].decode() for _, _, h in seen) == sorted(r[0] for r in rows)
