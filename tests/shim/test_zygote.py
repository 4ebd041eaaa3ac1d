"""The zygote's own helpers (its request path runs end to end in test_bootstrap)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from railcar.shim import zygote


def test_sigterm_ends_the_zygote_through_its_cleanup() -> None:
    with pytest.raises(SystemExit):
        zygote._sigterm_handler(os.getpid())(signal.SIGTERM, None)


def test_sigterm_in_a_child_forked_with_the_handler_skips_the_zygotes_cleanup() -> None:
    """A child (a spare) forked a moment before it resets the handler must not run main's
    `finally`, which would unlink the socket the live zygote still serves."""
    handler = zygote._sigterm_handler(os.getpid())
    pid = os.fork()
    if pid == 0:
        code = 1  # reached only if the handler raised SystemExit into this code
        try:
            signal.signal(signal.SIGTERM, handler)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGTERM
