"""The Prometheus alert rules: valid, and alerting as their unit tests say."""
import shutil
import subprocess
from pathlib import Path

DIR = Path(__file__).resolve().parents[2] / "deploy/prometheus"


def promtool(*args):
    assert shutil.which("promtool"), "promtool is missing: scripts/install-deps.sh installs it"
    return subprocess.run(["promtool", *args], cwd=DIR, capture_output=True, text=True)


def test_rules_are_valid():
    out = promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


def test_rules_fire_as_specified():
    out = promtool("test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
