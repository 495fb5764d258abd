"""The Debian package (scripts/package-deb, deploy/debian/package.cmake):
built with CPack, then installed on this machine with dpkg, used, removed and
purged, leaving the machine as it was.

It takes root (dpkg -i), as scripts/test runs; instances of this test on one
machine take turns (a lock), and it refuses to start when an outbox-relay
package or its files are already there, which it would otherwise purge.
"""
import fcntl
import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from test_artifacts import (BOOTSTRAP, ROOT, as_user, example_db, free_port, psql,  # noqa: F401
                            relay_bin, run, systemd_unit)

PKG = "outbox-relay"
SHARE = "/usr/share/outbox-relay"
UNIT = "/lib/systemd/system/outbox-relay.service"
CONFFILE = "/etc/outbox-relay/relay.conf"
# The link `systemctl enable` makes for the unit's WantedBy=multi-user.target.
ENABLED = "/etc/systemd/system/multi-user.target.wants/outbox-relay.service"
VERSION = re.search(r"project\(outbox-relay VERSION ([\d.]+)", (ROOT / "CMakeLists.txt").read_text()).group(1)


def expected_files():
    """{installed path: file of the repository it is a copy of}; the binary
    and the unit are built, so they map to None."""
    files = {"/usr/bin/outbox-relay": None, UNIT: None,
             CONFFILE: ROOT / "conf/production.conf",
             "/usr/share/doc/outbox-relay/relay.conf.example": ROOT / "conf/relay.conf",
             f"{SHARE}/grafana/outbox-relay.json": ROOT / "deploy/grafana/outbox-relay.json",
             f"{SHARE}/prometheus/alerts.yml": ROOT / "deploy/prometheus/alerts.yml"}
    for sql in [ROOT / "sql/install.sql", *(ROOT / "sql/lib").glob("*.sql"),
                *(ROOT / "sql/migrations").glob("*.sql")]:
        files[f"{SHARE}/{sql.relative_to(ROOT)}"] = sql
    return files


def dpkg_status():
    """dpkg's status of the package, "" when it is not installed at all
    (not even its configuration files)."""
    out = run("dpkg-query", "-W", "-f=${Status}", PKG)
    status = out.stdout.strip() if out.returncode == 0 else ""
    return "" if status.endswith(" not-installed") else status


def machine_state():
    """What the package may touch: the accounts, the units enabled, and
    every path it installs (with its parent folders of its own)."""
    def digest(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    paths = set(expected_files()) | {"/etc/outbox-relay", SHARE, "/usr/share/doc/outbox-relay", ENABLED}
    wants = os.path.dirname(ENABLED)
    return {"passwd": digest("/etc/passwd"), "group": digest("/etc/group"),
            "wants": sorted(os.listdir(wants)) if os.path.isdir(wants) else None,
            "present": sorted(p for p in paths if os.path.lexists(p))}


@pytest.fixture
def dpkg_turn():
    """Root, and this machine's dpkg to ourselves as far as this test goes:
    an exclusive flock on /var/lib/dpkg (dpkg's own locks are fcntl locks
    on files inside it, which this does not touch) makes two runs of the
    suite on one machine take turns instead of purging each other's
    install."""
    if os.geteuid() != 0:
        pytest.skip("installing a package takes root: run the suite as root, as scripts/test does")
    for tool in ("dpkg", "dpkg-deb", "dpkg-query", "dpkg-shlibdeps", "cpack", "objdump"):
        assert shutil.which(tool), f"{tool} is missing: bash scripts/install-deps.sh"
    fd = os.open("/var/lib/dpkg", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = machine_state()
        assert not dpkg_status(), f"{PKG} is known to dpkg already ({dpkg_status()}): the test would " \
            f"purge it; dpkg --purge {PKG} first if it is a leftover"
        assert not before["present"], f"already on this machine: {before['present']}"
        yield before
    finally:
        os.close(fd)


@pytest.mark.serial  # dpkg -i / purge system-wide, roles.sql, a build on every CPU
def test_package_installs_works_and_purges(dpkg_turn, example_db, tmp_path):
    before = dpkg_turn
    out = run("bash", ROOT / "scripts/package-deb", tmp_path / "build", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    (deb,) = out.stdout.split()
    assert Path(deb).name == f"{PKG}_{VERSION}-1_{run('dpkg', '--print-architecture').stdout.strip()}.deb"

    # ---- the package file
    listing = run("dpkg-deb", "-c", deb).stdout
    files = {re.sub(r"^\.", "", line.split()[-1]) for line in listing.splitlines() if line[0] == "-"}
    assert files == set(expected_files()), listing
    assert run("dpkg-deb", "-I", deb, "conffiles").stdout.split() == [CONFFILE]
    tree = tmp_path / "tree"
    assert run("dpkg-deb", "-x", deb, tree).returncode == 0
    for path, source in expected_files().items():
        if source is not None:
            assert (tree / path.lstrip("/")).read_bytes() == source.read_bytes(), path
    binary = tree / "usr/bin/outbox-relay"
    assert b"OUTBOX_RELAY_CRASH_AT" not in binary.read_bytes(), "crash points in the packaged binary"
    assert b"OUTBOX_RELAY_CRASH_AT" in relay_bin().read_bytes(), \
        "the test build has crash points, so the check above can tell them apart"
    assert ".debug_info" not in run("objdump", "-h", binary).stdout, "stripped"
    # Depends: one package for each shared library the binary needs, the
    # package that holds it here (dpkg-shlibdeps derived it the same way).
    needed = re.findall(r"NEEDED\s+(\S+)", run("objdump", "-p", binary).stdout)
    assert "libpq.so.5" in needed and "librdkafka.so.1" in needed
    owners = set()
    for lib in needed:
        owner = run("dpkg-query", "-S", f"*/{lib}")
        assert owner.returncode == 0, f"no Debian package has {lib}"
        owners.add(owner.stdout.split(":")[0])
    depends = run("dpkg-deb", "-f", deb, "Depends").stdout.strip()
    assert {re.sub(r"\s*\(.*\)", "", d.strip()) for d in depends.split(",")} == owners, depends
    assert all("(>=" in d for d in depends.split(",") if "libc6" in d), "versions from the symbols"

    # ---- install
    try:
        out = run("dpkg", "-i", deb)
        assert out.returncode == 0, out.stdout + out.stderr
        assert dpkg_status() == "install ok installed"
        listed = set(run("dpkg", "-L", PKG).stdout.split())
        for path in expected_files():
            assert path in listed and os.path.isfile(path), path
        conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PKG).stdout.split()
        assert conffiles == [CONFFILE, hashlib.md5(Path(CONFFILE).read_bytes()).hexdigest()], conffiles
        assert oct(os.stat(CONFFILE).st_mode & 0o777) == "0o644", "relay.conf holds no secrets"

        version = run("/usr/bin/outbox-relay", "--version")
        assert version.returncode == 0 and version.stdout.splitlines()[0] == f"outbox-relay {VERSION}", \
            version.stdout + version.stderr

        # The schema from the installed SQL, then `check` of the installed
        # binary against it and the local Kafka, as the relay's own login.
        db = example_db
        psql(db, "-f", f"{SHARE}/sql/install.sql")
        psql(db, "-v", "relay_password=relay-test", "-v", "writer_password=app-test",
             "-f", ROOT / "deploy/compose/roles.sql")
        conf = tmp_path / "relay.conf"
        conf.write_text('relay = { name = "package-test"; };\n'
                        f'kafka = {{ bootstrap_servers = "{BOOTSTRAP}"; '
                        'checkpoint_topic = "ckpt-package-test"; };\n'
                        f'http = {{ listen = "127.0.0.1:{free_port()}"; }};\n')
        env = {**os.environ, "OUTBOX_PG_CONNINFO": as_user(db, "relay", "relay-test")}
        check = run("/usr/bin/outbox-relay", "check", "-c", conf, env=env, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        schema = int(re.search(r"#define OUTBOX_SCHEMA_VERSION (\d+)",
                               (ROOT / "relay/version.h.in").read_text()).group(1))
        assert f"postgresql: ok (outbox schema version {schema})" in check.stdout, check.stdout
        assert re.search(r"^kafka: ok \(\d+ broker", check.stdout, re.M), check.stdout

        # The unit runs the installed binary and verifies as installed.
        exec_start = [v for s, k, v in systemd_unit(Path(UNIT).read_text()) if k == "ExecStart"]
        assert exec_start == [f"/usr/bin/outbox-relay run -c {CONFFILE}"]
        assert "DynamicUser=yes" in Path(UNIT).read_text(), "no system user: the unit needs none"
        out = run("systemd-analyze", "verify", UNIT)
        assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
        # Enabled by the administrator (systemctl works on the files without
        # systemd running), so that the purge must take the link away too.
        out = run("systemctl", "enable", "outbox-relay.service")
        assert os.path.islink(ENABLED), out.stdout + out.stderr

        # ---- remove: the conffile stays, as dpkg keeps configuration
        out = run("dpkg", "--remove", PKG)
        assert out.returncode == 0, out.stdout + out.stderr
        assert dpkg_status() == "deinstall ok config-files"
        assert os.path.isfile(CONFFILE) and not os.path.exists("/usr/bin/outbox-relay")
        assert not os.path.exists(SHARE) and not os.path.exists(UNIT)
    finally:
        # ---- purge: nothing is left, whatever failed above
        out = run("dpkg", "--purge", PKG)
        after = machine_state()
        # This test's own `systemctl enable` is never left behind.
        if os.path.islink(ENABLED):
            os.unlink(ENABLED)
        if before["wants"] is None and os.path.isdir(os.path.dirname(ENABLED)) \
                and not os.listdir(os.path.dirname(ENABLED)):
            os.rmdir(os.path.dirname(ENABLED))
    assert out.returncode == 0, out.stdout + out.stderr
    assert not dpkg_status(), dpkg_status()
    assert after == before
