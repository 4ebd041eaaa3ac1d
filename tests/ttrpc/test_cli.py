"""railcar-ttrpc against a task service served by our own server (the Go shim is in test_interop)."""

import json
import socket
import sys

import pytest
import trio
from google.protobuf import empty_pb2, timestamp_pb2

from railcar.ttrpc_proto import Code, TtrpcError, typeurl
from railcar.ttrpc_proto.api import runc_options_pb2, task_v2_pb2, types_task_pb2
from railcar.ttrpc_proto.cli import to_jsonable
from railcar.ttrpc_proto.server import CallContext, Server

TASK = "containerd.task.v2.Task"


def fake_task_server() -> Server:
    async def state(req: task_v2_pb2.StateRequest, ctx: CallContext) -> task_v2_pb2.StateResponse:
        if req.id != "c1":
            raise TtrpcError(Code.NOT_FOUND, f"container {req.id}: not found")
        return task_v2_pb2.StateResponse(id="c1", pid=42, status=types_task_pb2.RUNNING,
                                         exited_at=timestamp_pb2.Timestamp(seconds=-62135596800))

    async def pids(req: task_v2_pb2.PidsRequest, ctx: CallContext) -> task_v2_pb2.PidsResponse:
        info = typeurl.pack(runc_options_pb2.ProcessDetails(exec_id="ex1"))
        return task_v2_pb2.PidsResponse(processes=[types_task_pb2.ProcessInfo(pid=42),
                                                   types_task_pb2.ProcessInfo(pid=43, info=info)])

    async def update(req: task_v2_pb2.UpdateTaskRequest, ctx: CallContext) -> empty_pb2.Empty:
        if dict(req.annotations) != {"a": "b"}:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"unexpected annotations {dict(req.annotations)}")
        return empty_pb2.Empty()

    server = Server()
    server.register(TASK, {"State": (task_v2_pb2.StateRequest, state), "Pids": (task_v2_pb2.PidsRequest, pids),
                           "Update": (task_v2_pb2.UpdateTaskRequest, update)})
    return server


async def run_cli(*args: str) -> tuple[int, str, str]:
    result = await trio.run_process([sys.executable, "-m", "railcar.ttrpc_proto.cli", *args],
                                    capture_stdout=True, capture_stderr=True, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.fixture
async def socket_path(tmp_path):
    path = str(tmp_path / "shim.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(8)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake_task_server().serve, sock)
        yield path
        nursery.cancel_scope.cancel()
    sock.close()


async def test_cli_prints_the_response_as_json(socket_path: str) -> None:
    rc, out, err = await run_cli("call", f"unix://{socket_path}", TASK, "State", '{"id": "c1"}')
    assert (rc, err) == (0, "")
    assert json.loads(out) == {"id": "c1", "pid": 42, "status": "RUNNING", "exited_at": "0001-01-01T00:00:00Z"}


async def test_cli_expands_any_fields(socket_path: str) -> None:
    rc, out, _ = await run_cli("call", socket_path, TASK, "Pids", '{"id": "c1"}')
    assert rc == 0
    assert json.loads(out) == {"processes": [
        {"pid": 42}, {"pid": 43, "info": {"@type": "containerd.runc.v1.ProcessDetails", "exec_id": "ex1"}}]}


async def test_cli_sends_maps_and_prints_empty(socket_path: str) -> None:
    assert await run_cli("call", socket_path, TASK, "Update", '{"id": "c1", "annotations": {"a": "b"}}') == (0, "{}\n", "")


async def test_cli_reports_error_status(socket_path: str) -> None:
    rc, out, err = await run_cli("call", socket_path, TASK, "State", '{"id": "zz"}')
    assert (rc, out) == (1, "")
    assert err.strip() == "railcar-ttrpc: containerd.task.v2.Task/State failed: NOT_FOUND (5): container zz: not found"


async def test_cli_reports_a_method_the_server_lacks(socket_path: str) -> None:
    rc, _, err = await run_cli("call", socket_path, TASK, "Kill", '{"id": "c1", "signal": 9}')
    assert rc == 1 and "UNIMPLEMENTED (12): method Kill" in err


async def test_cli_usage_errors(tmp_path) -> None:
    missing = str(tmp_path / "nothing.sock")
    rc, _, err = await run_cli("call", missing, TASK, "State")
    assert rc == 2 and f"cannot connect to {missing}: No such file or directory" in err
    rc, _, err = await run_cli("call", missing, TASK, "Frobnicate")
    assert rc == 2 and "unknown method 'Frobnicate' of containerd.task.v2.Task; its methods: Checkpoint" in err
    rc, _, err = await run_cli("call", missing, "containerd.task.v9.Task", "State")
    assert rc == 2 and "unknown service 'containerd.task.v9.Task'" in err
    rc, _, err = await run_cli("call", missing, TASK, "State", '{"nope": 1}')
    assert rc == 2 and "invalid JSON for containerd.task.v2.StateRequest" in err
    rc, _, err = await run_cli("call", missing, TASK, "State", "-m", "novalue")
    assert rc == 2 and "--metadata wants KEY=VALUE" in err


def test_to_jsonable_keeps_unknown_and_json_any_readable() -> None:
    msg = task_v2_pb2.ExecProcessRequest(id="c", spec=typeurl.pack_json(typeurl.PROCESS, {"args": ["sh"]}))
    assert to_jsonable(msg) == {"id": "c", "spec": {"@type": typeurl.PROCESS, "value": {"args": ["sh"]}}}
    msg = task_v2_pb2.StatsResponse(stats={"type_url": "x.Unknown", "value": b"\x00\x01"})
    assert to_jsonable(msg) == {"stats": {"@type": "x.Unknown", "value_base64": "AAE="}}


def test_to_jsonable_wraps_well_known_scalars() -> None:
    msg = task_v2_pb2.StatsResponse(stats=typeurl.pack(timestamp_pb2.Timestamp(seconds=5)))
    assert to_jsonable(msg) == {"stats": {"@type": "google.protobuf.Timestamp", "value": "1970-01-01T00:00:05Z"}}
