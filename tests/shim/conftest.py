"""Helpers for driving the real `containerd-shim-railcar-v2` binary from tests."""

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio
from google.protobuf import empty_pb2

from railcar.shim.events import SERVICE
from railcar.ttrpc_proto import Code, TtrpcError
from railcar.ttrpc_proto.api import events_ttrpc_pb2
from railcar.ttrpc_proto.server import Server

def run_shim(args: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: bytes = b"",
             extra_python: list[str] = (), prefix: list[str] = ()) -> subprocess.CompletedProcess:
    """One short-lived shim command, as containerd runs it (cwd = bundle, stdout+stderr captured),
    run through `prefix` if given (`unshare ...`).

    The zygote and pools are off unless `env` turns them on: a test that wants a zygote starts and
    stops its own, and a container that names no group gets a daemon of its own.
    """
    env = {**os.environ, "RAILCAR_ZYGOTE": "0", "RAILCAR_POOL_SIZE": "1", **(env or {})}
    return subprocess.run([*prefix, sys.executable, *extra_python, "-m", "railcar.shim", *args], cwd=cwd, input=stdin,
                          capture_output=True, env=env, timeout=30)


def children_named(pid: int, comm: str) -> list[int]:
    """The direct children of `pid` whose comm is `comm`."""
    found = []
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        for child in f.read().split():
            try:
                with open(f"/proc/{child}/comm") as c:
                    if c.read().strip() == comm:
                        found.append(int(child))
            except (FileNotFoundError, ProcessLookupError):  # gone, or reaped between open and read
                pass
    return found


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle directory with a minimal config.json; annotations can be rewritten by the test."""
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "rootfs").mkdir()
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": {}}))
    return path


@pytest.fixture
def address() -> str:
    """A containerd address unique to this test, so the shim socket name is too."""
    return f"/run/railcar-test-{uuid.uuid4().hex[:12]}/containerd.sock"


class FakeContainerd:
    """Records forwarded envelopes; fails the first `failures` calls with UNAVAILABLE."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[events_ttrpc_pb2.Envelope, dict]] = []

    async def forward(self, req: events_ttrpc_pb2.ForwardRequest, ctx) -> empty_pb2.Empty:
        if self.failures:
            self.failures -= 1
            raise TtrpcError(Code.UNAVAILABLE, "containerd is restarting")
        self.received.append((req.envelope, ctx.metadata))
        return empty_pb2.Empty()

    async def serve(self, path: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        server = Server()
        server.register(SERVICE, {"Forward": (events_ttrpc_pb2.ForwardRequest, self.forward)})
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen()
        with sock:
            await server.serve(sock, task_status=task_status)
