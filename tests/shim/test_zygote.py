"""The zygote's own helpers (its request path runs end to end in test_bootstrap)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from railcar.shim import zygote


def test_priming_runs_in_a_named_child_that_keeps_no_inherited_fd(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """After each `start` it served, the zygote primes cgroup migration in a throwaway child: one
    that holds none of the zygote's sockets (nor the listener being passed on), reaps its own
    children, and returns at once, leaving the wait to that child."""
    report = tmp_path / "report.json"

    def fake_prime() -> None:
        report.write_text(json.dumps({
            "comm": Path("/proc/self/comm").read_text().strip(),
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
            "sigchld_default": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
        }))

    monkeypatch.setattr(zygote, "prime", fake_prime)
    r, w = os.pipe()  # stands for the zygote's sockets
    try:
        zygote._prime_cgroup_migration()
        pid, status = os.waitpid(-1, 0)
    finally:
        os.close(r)
        os.close(w)
    assert os.waitstatus_to_exitcode(status) == 0
    seen = json.loads(report.read_text())
    assert seen["comm"] == zygote.PRIME_NAME
    assert max(seen["fds"]) <= 3  # stdio, and the fd listdir itself opened
    assert seen["sigchld_default"]
