"""Polling for the tests: a bounded wait for a condition the kernel or a daemon makes true later, and
the one question about a process the tests poll most: is it gone?"""

import time
from collections.abc import Callable


def eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll `predicate` until it holds; False if it still does not after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def pid_gone(pid: int) -> bool:
    """Whether `pid` no longer runs: gone, or dead (a zombie nobody reaped yet, or on its way out)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # the latter: reaped between open and read
        return True


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether `pid` stopped running within `timeout` seconds."""
    return eventually(lambda: pid_gone(pid), timeout)
