"""The zygote's own helpers (its request path runs end to end in test_bootstrap)."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from railcar.shim import zygote
from railcar.shim.bootstrap import zygote_accepts


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


def test_the_socket_is_published_listening_replaces_a_stale_one_and_yields_to_a_live_one(tmp_path) -> None:
    path = str(tmp_path / "zygote.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as dead:
        dead.bind(path)  # a killed zygote's file: nothing listens on it
    first = zygote._Server.publish(path)
    assert first is not None and zygote_accepts(path)
    assert sorted(os.listdir(tmp_path)) == ["zygote.sock"]  # the private name is gone
    assert zygote._Server.publish(path) is None  # a live zygote keeps it
    first.close()
    assert not os.path.exists(path)


def test_a_zygote_leaves_a_socket_that_another_one_published_since(tmp_path) -> None:
    path = str(tmp_path / "zygote.sock")
    old = zygote._Server.publish(path)
    old.sock.close()  # it stopped accepting (stopped, or about to exit)...
    new = zygote._Server.publish(path)  # ...so the next zygote replaced its file
    assert new is not None
    old.close()  # the old one's exit must not remove the new one's socket
    assert zygote_accepts(path)
    new.close()
    assert not os.path.exists(path)
