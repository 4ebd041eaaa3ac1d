"""Fixtures for railcar.io tests: FIFOs, and a guard that every test leaves no fd and no child behind."""

import glob
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _children() -> set[int]:
    pids: set[int] = set()
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with open(path) as f:
            pids.update(int(p) for p in f.read().split())
    return pids


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Compare open fds and child processes before and after the test (trio's own fds included)."""
    fds_before = set(os.listdir("/proc/self/fd"))
    children_before = _children()
    yield
    assert set(os.listdir("/proc/self/fd")) - fds_before == set(), "fds leaked"
    assert _children() - children_before == set(), "child processes left behind"


@pytest.fixture(autouse=True)
def late_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most tests here open the client's reader after ProcessIO.open, as a client that comes late:
    open waits for it only briefly. The wait itself has a test of its own."""
    from railcar.io import ProcessIO

    monkeypatch.setattr(ProcessIO, "client_wait", 0.05)


@pytest.fixture
def fifo(tmp_path: Path) -> Callable[[str], str]:
    """mkfifo under the test's tmp dir, as a containerd client does before Create."""

    def make(name: str) -> str:
        path = str(tmp_path / name)
        os.mkfifo(path, 0o600)
        return path

    return make
