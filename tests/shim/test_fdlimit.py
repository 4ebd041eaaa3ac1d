"""fdlimit: the daemon's raised fd limit, and the old one given back to what it starts."""

import resource
import subprocess

import pytest

from railcar.shim import fdlimit


@pytest.fixture
def low_soft_limit(monkeypatch):
    """This process as containerd (Go 1.21+) starts a shim: a soft fd limit of 256; put back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip("needs a hard fd limit above 256")
    monkeypatch.setattr(fdlimit, "_given", None)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_process_started_after_the_raise_gets_the_old_soft_limit_back(low_soft_limit) -> None:
    """What ReaperSpawner does for a binary:// logger, right after posix_spawn."""
    hard = low_soft_limit
    fdlimit.raise_soft()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    child = subprocess.Popen(["sleep", "10"])
    try:
        assert resource.prlimit(child.pid, resource.RLIMIT_NOFILE) == (hard, hard)   # inherited
        fdlimit.give_back(child.pid)
        assert resource.prlimit(child.pid, resource.RLIMIT_NOFILE) == (256, hard)
    finally:
        child.kill()
        child.wait()


def test_nothing_is_given_back_without_a_raise(low_soft_limit) -> None:
    hard = low_soft_limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # nothing for raise_soft to do
    fdlimit.raise_soft()
    fdlimit.give_back()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
