"""Interoperability with Go ttrpc: a real containerd 1.6 (private root, state and sockets) and its runc shim.

* our client publishes a TaskExit through containerd's ttrpc ``Events.Forward`` and ``ctr events`` shows it;
* ``railcar-ttrpc`` reads ``State``/``Connect`` of a container run by the stock runc-v2 shim.
Each test checks it left no container, shim, mount or cgroup behind.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from google.protobuf import empty_pb2, timestamp_pb2

from railcar.ttrpc_proto import Code, TtrpcError, typeurl
from railcar.ttrpc_proto.api import events_task_pb2, events_ttrpc_pb2, task_v2_pb2
from railcar.ttrpc_proto.client import connect_unix

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EVENTS = "containerd.services.events.ttrpc.v1.Events"
TASK = "containerd.task.v2.Task"
CGROUP_PARENT = f"railcar-test-ttrpc-{os.getpid()}"


def _devenv():
    spec = importlib.util.spec_from_file_location("railcar_devenv", REPO / "packaging" / "devenv.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def _our_cgroups() -> list[Path]:
    return [p for p in (Path(h, CGROUP_PARENT) for h in _devenv().cgroup_hierarchies()) if p.is_dir()]


def _remove_cgroups() -> None:
    for parent in _our_cgroups():
        for leaf in sorted(parent.rglob("*"), reverse=True):
            if leaf.is_dir():
                leaf.rmdir()
        parent.rmdir()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("containerd"):
        pytest.skip("needs root and containerd")
    devenv = _devenv()
    workdir = tmp_path_factory.mktemp("containerd")
    cd = devenv.start_containerd(workdir)
    try:
        cd.image = devenv.busybox_image(cd)
        yield cd
    finally:
        cd.stop()
        _remove_cgroups()
    assert _mounts_under(workdir) == []


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _forward_request(cd, topic: str, container_id: str) -> events_ttrpc_pb2.ForwardRequest:
    event = events_task_pb2.TaskExit(container_id=container_id, id=container_id, pid=4242, exit_status=7,
                                     exited_at=_now())
    return events_ttrpc_pb2.ForwardRequest(envelope=events_ttrpc_pb2.Envelope(
        timestamp=_now(), namespace=cd.namespace, topic=topic, event=typeurl.pack(event)))


async def test_forwarded_task_exit_shows_up_in_ctr_events(containerd) -> None:
    cd = containerd
    container_id = f"railcar-probe-{os.getpid()}"
    metadata = {"containerd-namespace-ttrpc": cd.namespace}
    watcher = await trio.lowlevel.open_process(
        ["ctr", "--address", cd.address, "events"], stdout=subprocess.PIPE, env=cd.env)
    seen = b""
    try:
        async with connect_unix(cd.ttrpc_address) as client:
            with pytest.raises(TtrpcError) as info:  # containerd validates the topic: Go's status reaches us
                await client.call(EVENTS, "Forward", _forward_request(cd, "tasks/exit", container_id),
                                  empty_pb2.Empty, timeout=5, metadata=metadata)
            assert info.value.code == Code.INVALID_ARGUMENT
            # ctr subscribes asynchronously; publish until its output shows the event (bounded, not timed)
            for _ in range(50):
                reply = await client.call(EVENTS, "Forward", _forward_request(cd, "/tasks/exit", container_id),
                                          empty_pb2.Empty, timeout=5, metadata=metadata)
                assert reply == empty_pb2.Empty()
                with trio.move_on_after(0.2):
                    while container_id.encode() not in seen:
                        seen += await watcher.stdout.receive_some(65536)
                if container_id.encode() in seen:
                    break
    finally:
        watcher.terminate()
        await watcher.wait()
        await watcher.stdout.aclose()
    line = next(line for line in seen.decode().splitlines() if container_id in line)
    assert f" {cd.namespace} /tasks/exit " in line
    payload = json.loads(line.split(" /tasks/exit ", 1)[1])
    assert payload["container_id"] == container_id and payload["pid"] == 4242 and payload["exit_status"] == 7


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "railcar.ttrpc_proto.cli", *args], capture_output=True,
                          text=True, timeout=60)


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie. If the test process is a child subreaper (another suite's
    fixture may have made it one) the orphaned shim is re-parented to us: reap it then."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    state, ppid = fields[0], int(fields[1])
    if state == "Z" and ppid == os.getpid():
        os.waitpid(pid, 0)
    return state == "Z"


def _wait_gone(pid: int) -> None:
    for _ in range(600):  # generous: the whole suite shares 2 cores
        if _exited(pid):
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} is still alive")


def test_cli_reads_state_and_connect_from_the_runc_shim(containerd) -> None:
    cd = containerd
    cid = f"ttrpc-runc-{os.getpid()}"
    run = cd.ctr("run", "-d", "--runtime", "io.containerd.runc.v2", "--cgroup", f"/{CGROUP_PARENT}/{cid}",
                 cd.image, cid, "sleep", "600")
    assert run.returncode == 0, run.stderr
    shim_pid = None
    try:
        address = (cd.bundle(cid) / "address").read_text().strip()
        assert address.startswith("unix://")

        state = _cli("call", address, TASK, "State", json.dumps({"id": cid}))
        assert state.returncode == 0, state.stderr
        state_json = json.loads(state.stdout)
        assert state_json["id"] == cid and state_json["status"] == "RUNNING" and state_json["pid"] > 0
        assert state_json["bundle"] == str(cd.bundle(cid))
        assert any(p.joinpath(cid).is_dir() for p in _our_cgroups())  # so the cleanup check below means something

        connect = _cli("call", address, TASK, "Connect", json.dumps({"id": cid}))
        assert connect.returncode == 0, connect.stderr
        connect_json = json.loads(connect.stdout)
        assert connect_json["task_pid"] == state_json["pid"]
        shim_pid = connect_json["shim_pid"]
        assert Path(f"/proc/{shim_pid}/exe").resolve().name == "containerd-shim-runc-v2"

        missing = _cli("call", address, TASK, "State", json.dumps({"id": cid, "exec_id": "nope"}))
        assert missing.returncode == 1 and "NOT_FOUND (5)" in missing.stderr

        results = trio.run(_concurrent_states, address, cid)
        assert {r.pid for r in results} == {state_json["pid"]}
    finally:
        cd.ctr("task", "kill", "-s", "SIGKILL", cid)
        for _ in range(600):  # delete fails while the task is still stopping
            deleted = cd.ctr("task", "delete", cid)
            if deleted.returncode == 0 or b"not found" in deleted.stderr:
                break
            time.sleep(0.1)
        cd.ctr("container", "delete", cid)
    if shim_pid is not None:
        _wait_gone(shim_pid)
    assert cid.encode() not in cd.ctr("container", "ls", "-q").stdout
    assert not any(p.joinpath(cid).exists() for p in _our_cgroups())


async def _concurrent_states(address: str, cid: str) -> list[task_v2_pb2.StateResponse]:
    """Many calls in flight at once on one connection to a Go ttrpc server."""
    results: list[task_v2_pb2.StateResponse] = []
    async with connect_unix(address) as client:
        async def one() -> None:
            results.append(await client.call(TASK, "State", task_v2_pb2.StateRequest(id=cid),
                                             task_v2_pb2.StateResponse, timeout=5))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
    return results
