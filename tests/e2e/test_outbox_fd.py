"""Issue 12 item 8: outbox_wait() on a socket numbered above 1024 (FD_SETSIZE).
tests/unit/outbox_fd_check.c takes every descriptor below 1100, connects to
a real PostgreSQL, LISTENs and waits: the wait must honour its timeout and
wake on a NOTIFY. With select()/FD_SET it wrote past the fd_set (the ASan
build reports a stack-buffer-overflow)."""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import RELAY_BIN, SANITIZED

FD_CHECK = Path(os.environ.get("OUTBOX_FD_CHECK_BIN",
                               Path(RELAY_BIN).resolve().parents[1] / "tests/unit/outbox_fd_check"))


@pytest.mark.sanitizer
def test_wait_on_a_socket_above_fd_setsize(outbox_db):
    env = dict(os.environ)
    if SANITIZED:
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=86")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=87")
    out = subprocess.run([str(FD_CHECK), outbox_db], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok: ") == 6, out.stdout
