"""Polling for the tests: a bounded wait for a condition the kernel or a daemon makes true later."""

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
