"""outbox.c against the real PostgreSQL through tests/unit/outbox_pg_check.c:

- issue 12 item 8: outbox_wait() on a socket numbered above 1024
  (FD_SETSIZE): the check takes every descriptor below 1100, connects,
  LISTENs and waits; the wait must honour its timeout and wake on a NOTIFY.
  With select()/FD_SET it wrote past the fd_set (SIGSEGV in the plain build).
- issue 12 item 3: outbox_reserve_topics() registers the topics so that the
  database refuses rows aimed at them, and is fenced by the generation."""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import RELAY_BIN, SANITIZED

PG_CHECK = Path(os.environ.get("OUTBOX_PG_CHECK_BIN",
                               Path(RELAY_BIN).resolve().parents[1] / "tests/unit/outbox_pg_check"))


def run_check(mode, url, expected_oks):
    env = dict(os.environ)
    if SANITIZED:
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=86")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=87")
    out = subprocess.run([str(PG_CHECK), mode, url], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok: ") == expected_oks, out.stdout


@pytest.mark.sanitizer
def test_wait_on_a_socket_above_fd_setsize(outbox_db):
    run_check("fd", outbox_db, 6)


@pytest.mark.sanitizer
def test_reserve_topics_refuses_rows(outbox_db):
    run_check("reserve", outbox_db, 6)
