"""The task service end to end without containerd: a real daemon (spawned by `start`), the real
runtime and a fake events service, driven over ttrpc the way containerd drives it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from google.protobuf import any_pb2, empty_pb2

from railcar.runtime import Container
from railcar.shim import cleanup
from railcar.shim.daemon import FORKER_MIN_LIFE
from railcar.ttrpc_proto import Code, TtrpcError
from railcar.ttrpc_proto.api import mount_pb2, runtimeoptions_pb2, task_v2_pb2 as pb
from railcar.ttrpc_proto.client import connect_unix
from railcar.ttrpc_proto.typeurl import pack_json

from tests.polling import eventually, pid_gone, wait_gone

from .conftest import FakeContainerd, children_named, run_shim

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging"))
import devenv  # noqa: E402

TASK = "containerd.task.v2.Task"
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def _spec(args: list[str], cgroups_path: str) -> dict:
    return {
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/", "env": [PATH_ENV], "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"cgroupsPath": cgroups_path, "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]},
    }


class Shim:
    """A ttrpc client on one daemon, with call helpers that return the response or raise TtrpcError."""

    def __init__(self, client, container_id: str) -> None:
        self.client = client
        self.id = container_id

    async def __call__(self, method: str, request, response_type=empty_pb2.Empty):
        return await self.client.call(TASK, method, request, response_type, timeout=30)

    async def code_of(self, method: str, request) -> Code:
        with pytest.raises(TtrpcError) as info:
            await self(method, request)
        return info.value.code


@pytest.fixture
def namespace() -> Iterator[str]:
    """A containerd namespace of the test's own. A test that passed removed its runtime state
    directory, checking that it was empty (`_remove_runtime_dir`); one that failed half-way leaves
    its containers' state there, removed now."""
    name = f"railcar-shim-test-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(Path("/run/railcar") / name, ignore_errors=True)


@pytest.fixture
def cgroup_parent(tmp_path: Path) -> str:
    """The tests' cgroup parent; afterwards, whatever a failed test left is removed (then reported):
    daemons named in shim.pid files, processes in our cgroups, mounts under tmp_path."""
    parent = f"/railcar-test-shim-{os.getpid()}"
    yield parent
    leaks = []
    for shim_pid in tmp_path.rglob("shim.pid"):
        pid = int(shim_pid.read_text())
        if not pid_gone(pid):
            leaks.append(f"shim daemon {pid}")
            os.kill(pid, signal.SIGKILL)
    for address in tmp_path.rglob("address"):
        socket_file = Path(address.read_text().removeprefix("unix://"))
        if socket_file.exists() and eventually(lambda: not socket_file.exists(), timeout=2) is False:
            leaks.append(f"socket {socket_file}")
            socket_file.unlink()
    leftovers = [Path(h, parent.lstrip("/")) for h in devenv.cgroup_hierarchies()]
    children = [d for leftover in leftovers if leftover.is_dir() for d in leftover.iterdir() if d.is_dir()]
    for child in children:   # killed, and thawed in any hierarchy: a frozen v1 task never dies
        for pid in (child / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        for thaw, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            if (child / thaw).exists():
                (child / thaw).write_text(value)
    for child in children:
        leaks.append(f"cgroup {child}")
        assert eventually(lambda: not (child / "cgroup.procs").read_text().strip())
        child.rmdir()
    for leftover in leftovers:
        if leftover.is_dir():
            leftover.rmdir()
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(str(tmp_path))]
    for mount in reversed(mounts):
        leaks.append(f"mount {mount}")
        subprocess.run(["umount", "-l", mount], check=False)
    assert not leaks, f"left behind: {leaks}"


async def _start(namespace: str, address: str, container_id: str, bundle: Path,
                 env: dict[str, str] | None = None) -> str:
    """`start` as containerd runs it; the daemon's ttrpc address."""
    result = await trio.to_thread.run_sync(lambda: run_shim(
        ["-namespace", namespace, "-address", address, "-id", container_id, "start"], bundle, env=env))
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


@asynccontextmanager
async def _shim_with_events(namespace: str, address: str, container_id: str, bundle: Path,
                            tmp_path: Path, env: dict[str, str] | None = None
                            ) -> AsyncIterator[tuple[Shim, FakeContainerd]]:
    """A daemon for `container_id` publishing to a fake containerd, and a client on it. The block must
    end with Shutdown: the fake serves until the daemon is gone, so no event it published is lost."""
    fake = FakeContainerd()
    events_path = str(tmp_path / "events.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve, events_path)
        daemon = await _start(namespace, address, container_id, bundle,
                              env={"TTRPC_ADDRESS": events_path, **(env or {})})
        async with connect_unix(daemon) as client:
            shim = Shim(client, container_id)
            daemon_pid = (await shim("Connect", pb.ConnectRequest(id=container_id), pb.ConnectResponse)).shim_pid
            yield shim, fake
        assert await trio.to_thread.run_sync(wait_gone, daemon_pid)
        nursery.cancel_scope.cancel()


def _remove_runtime_dir(namespace: str, created: bool = True) -> None:
    """The namespace's runtime state directory (there if a task was `created`) must be empty: no
    container's state is left. Remove it."""
    runtime_dir = Path("/run/railcar") / namespace
    if created or runtime_dir.exists():
        assert not list(runtime_dir.iterdir())
        runtime_dir.rmdir()


async def test_the_whole_task_api(bundle: Path, address: str, namespace: str, cgroup_parent: str,
                                  tmp_path: Path) -> None:
    devenv.busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(_spec(["sleep", "1000"], f"{cgroup_parent}/c1")))
    async with _shim_with_events(namespace, address, "c1", bundle, tmp_path) as (shim, fake):
        await _exercise(shim, bundle)
    topics = [(e.topic, _who(e)) for e, _ in fake.received]
    assert topics == [
        ("/tasks/create", "c1"), ("/tasks/start", "c1"),
        ("/tasks/exec-added", "e1"), ("/tasks/exec-added", "no-args"), ("/tasks/exec-started", "e1"),
        ("/tasks/exit", "e1"),
        ("/tasks/paused", "c1"), ("/tasks/resumed", "c1"),
        ("/tasks/exit", "c1"), ("/tasks/delete", "c1"),
    ]
    _remove_runtime_dir(namespace)


def _who(envelope) -> str:
    from railcar.ttrpc_proto.typeurl import unpack

    event = unpack(envelope.event)
    return getattr(event, "exec_id", "") or getattr(event, "id", "") or event.container_id


async def _exercise(shim: Shim, bundle: Path) -> None:
    create = pb.CreateTaskRequest(id="c1", bundle=str(bundle))
    pid = (await shim("Create", create, pb.CreateTaskResponse)).pid
    assert pid > 0
    assert await shim.code_of("Create", create) == Code.ALREADY_EXISTS
    connected = await shim("Connect", pb.ConnectRequest(id="c1"), pb.ConnectResponse)
    assert connected.task_pid == pid and connected.shim_pid != os.getpid()
    state = await shim("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert (state.status, state.pid, state.bundle) == (1, pid, str(bundle))  # CREATED
    # The cgroup comes with Create's reply from the runtime (the daemon never reads config.json).
    assert [p.pid for p in (await shim("Pids", pb.PidsRequest(id="c1"), pb.PidsResponse)).processes] == [pid]
    assert (await shim("Stats", pb.StatsRequest(id="c1"), pb.StatsResponse)).stats.type_url
    assert await shim.code_of("Checkpoint", pb.CheckpointTaskRequest(id="c1")) == Code.UNIMPLEMENTED
    assert await shim.code_of("State", pb.StateRequest(id="nope")) == Code.NOT_FOUND

    async with trio.open_nursery() as nursery:
        waited: list = []

        async def wait_init() -> None:  # Wait is in flight before Start, as the Go client does it
            waited.append(await shim("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse))

        nursery.start_soon(wait_init)
        assert (await shim("Start", pb.StartRequest(id="c1"), pb.StartResponse)).pid == pid
        assert (await shim("State", pb.StateRequest(id="c1"), pb.StateResponse)).status == 2  # RUNNING
        assert await shim.code_of("Start", pb.StartRequest(id="c1")) == Code.FAILED_PRECONDITION

        pids = await shim("Pids", pb.PidsRequest(id="c1"), pb.PidsResponse)
        assert pid in [p.pid for p in pids.processes]
        stats = await shim("Stats", pb.StatsRequest(id="c1"), pb.StatsResponse)
        assert stats.stats.type_url in ("io.containerd.cgroups.v1.Metrics", "io.containerd.cgroups.v2.Metrics")
        resources = pack_json("types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
                              {"pids": {"limit": 100}})
        await shim("Update", pb.UpdateTaskRequest(id="c1", resources=resources))
        bad = pack_json("types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", {"pids": {"limit": "x"}})
        with pytest.raises(TtrpcError) as info:  # no config.json is involved: the message says whose field it is
            await shim("Update", pb.UpdateTaskRequest(id="c1", resources=bad))
        assert info.value.code == Code.INVALID_ARGUMENT and info.value.message.startswith("the update's linux."), \
            info.value.message
        for method, request, named in [
            ("Update", pb.UpdateTaskRequest(id="c1", resources=any_pb2.Any(value=b"{nope")), "resources"),
            ("Exec", pb.ExecProcessRequest(id="c1", exec_id="bad", spec=any_pb2.Any(value=b"[]")), "exec spec"),
            ("Exec", pb.ExecProcessRequest(id="c1", exec_id="", spec=any_pb2.Any(value=b"{}")), "exec id"),
        ]:
            with pytest.raises(TtrpcError) as info:
                await shim(method, request)
            assert info.value.code == Code.INVALID_ARGUMENT and named in info.value.message

        process = {"args": ["sh", "-c", "exit 3"], "cwd": "/", "env": [PATH_ENV]}
        spec = pack_json("types.containerd.io/opencontainers/runtime-spec/1/Process", process)
        await shim("Exec", pb.ExecProcessRequest(id="c1", exec_id="e1", spec=spec))
        assert await shim.code_of("Exec", pb.ExecProcessRequest(id="c1", exec_id="e1", spec=spec)) \
            == Code.ALREADY_EXISTS
        assert await shim.code_of("Kill", pb.KillRequest(id="c1", exec_id="e1", signal=9)) \
            == Code.FAILED_PRECONDITION  # not started: no pid
        no_args = pack_json("types.containerd.io/opencontainers/runtime-spec/1/Process", {"cwd": "/"})
        await shim("Exec", pb.ExecProcessRequest(id="c1", exec_id="no-args", spec=no_args))
        for _ in range(2):  # a failed Start is refused for its cause again, not as "being started"
            with pytest.raises(TtrpcError) as info:
                await shim("Start", pb.StartRequest(id="c1", exec_id="no-args"))
            assert info.value.code == Code.INVALID_ARGUMENT and info.value.message.startswith("the exec's process.args")
        await shim("Delete", pb.DeleteRequest(id="c1", exec_id="no-args"), pb.DeleteResponse)
        await shim("Start", pb.StartRequest(id="c1", exec_id="e1"), pb.StartResponse)
        exec_exit = await shim("Wait", pb.WaitRequest(id="c1", exec_id="e1"), pb.WaitResponse)
        assert exec_exit.exit_status == 3
        assert await shim.code_of("Kill", pb.KillRequest(id="c1", exec_id="e1", signal=9)) == Code.NOT_FOUND
        deleted = await shim("Delete", pb.DeleteRequest(id="c1", exec_id="e1"), pb.DeleteResponse)
        assert deleted.exit_status == 3
        assert await shim.code_of("Delete", pb.DeleteRequest(id="c1", exec_id="e1")) == Code.NOT_FOUND

        await shim("Pause", pb.PauseRequest(id="c1"))
        assert (await shim("State", pb.StateRequest(id="c1"), pb.StateResponse)).status == 4  # PAUSED
        assert await shim.code_of("Exec", pb.ExecProcessRequest(id="c1", exec_id="e2", spec=spec)) \
            == Code.FAILED_PRECONDITION
        assert await shim.code_of("Delete", pb.DeleteRequest(id="c1")) == Code.FAILED_PRECONDITION
        await shim("Resume", pb.ResumeRequest(id="c1"))

        assert await shim.code_of("Kill", pb.KillRequest(id="c1", signal=200)) == Code.INVALID_ARGUMENT
        await shim("Kill", pb.KillRequest(id="c1", signal=0))  # only asks whether it is there
        await shim("Kill", pb.KillRequest(id="c1", signal=signal.SIGKILL))
    assert waited[0].exit_status == 137 and waited[0].exited_at.seconds > 0
    state = await shim("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert (state.status, state.exit_status) == (3, 137)  # STOPPED
    assert await shim.code_of("Kill", pb.KillRequest(id="c1", signal=9)) == Code.NOT_FOUND
    await shim("Shutdown", pb.ShutdownRequest(id="c1"))  # still holds a task: keeps running
    deleted = await shim("Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
    assert (deleted.pid, deleted.exit_status) == (pid, 137)
    assert await shim.code_of("Delete", pb.DeleteRequest(id="c1")) == Code.NOT_FOUND
    assert not os.path.ismount(bundle / "rootfs")
    await shim("Shutdown", pb.ShutdownRequest(id="c1"))


async def test_an_exec_runs_in_a_container_whose_init_is_not_started_yet(bundle: Path, address: str, namespace: str,
                                                                         cgroup_parent: str, tmp_path: Path) -> None:
    """As with runc's shim: a client that lost its `ctr run` between Create and Start can exec into
    the CREATED task; the exec runs in the container (its pid namespace: the init, still waiting for
    its Start, is its pid 1), and the init starts afterwards."""
    devenv.busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(_spec(["sh", "-c", "echo init > /init-ran"], f"{cgroup_parent}/c1")))
    async with _shim_with_events(namespace, address, "c1", bundle, tmp_path) as (shim, _):
        await shim("Create", pb.CreateTaskRequest(id="c1", bundle=str(bundle)), pb.CreateTaskResponse)
        probe = {"args": ["sh", "-c", "echo $$ > /exec-saw; cat /proc/1/comm >> /exec-saw; exit 4"], "cwd": "/",
                 "env": [PATH_ENV]}
        spec = pack_json("types.containerd.io/opencontainers/runtime-spec/1/Process", probe)
        await shim("Exec", pb.ExecProcessRequest(id="c1", exec_id="early", spec=spec))
        await shim("Start", pb.StartRequest(id="c1", exec_id="early"), pb.StartResponse)
        assert (await shim("Wait", pb.WaitRequest(id="c1", exec_id="early"), pb.WaitResponse)).exit_status == 4
        own_pid, init_comm = (bundle / "rootfs" / "exec-saw").read_text().split("\n", 1)
        assert 1 < int(own_pid) < 100 and init_comm.strip()  # in the container's pid namespace, its init there
        assert not (bundle / "rootfs" / "init-ran").exists()
        assert (await shim("State", pb.StateRequest(id="c1"), pb.StateResponse)).status == 1  # CREATED
        await shim("Delete", pb.DeleteRequest(id="c1", exec_id="early"), pb.DeleteResponse)
        await shim("Start", pb.StartRequest(id="c1"), pb.StartResponse)
        assert (await shim("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse)).exit_status == 0
        assert (bundle / "rootfs" / "init-ran").read_text() == "init\n"
        await shim("Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
        await shim("Shutdown", pb.ShutdownRequest(id="c1"))
    _remove_runtime_dir(namespace)


async def test_an_exec_started_while_its_create_runs_waits_and_never_runs_if_the_create_fails(
        bundle: Path, address: str, namespace: str, cgroup_parent: str, tmp_path: Path) -> None:
    """containerd knows a task only once its Create answered; another client can Exec and Start an
    exec while the Create runs. That Start waits for the Create: here the Create fails after the
    container was made (its init.pid cannot be written: the disk is full), and the exec must not
    run in the container being undone."""
    devenv.busybox_rootfs(bundle / "rootfs")
    spec = _spec(["sleep", "1000"], f"{cgroup_parent}/c1")
    spec["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "1"]}]}  # a Create that takes 1 s
    (bundle / "config.json").write_text(json.dumps(spec))
    (bundle / "init.pid").symlink_to("/dev/full")
    probe = pack_json("types.containerd.io/opencontainers/runtime-spec/1/Process",
                      {"args": ["touch", "/exec-ran"], "cwd": "/", "env": [PATH_ENV]})
    async with _shim_with_events(namespace, address, "c1", bundle, tmp_path) as (shim, _):
        codes = {}

        async def create() -> None:
            codes["create"] = await shim.code_of("Create", pb.CreateTaskRequest(id="c1", bundle=str(bundle)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            await trio.sleep(0.5)  # the Create waits for its hook
            await shim("Exec", pb.ExecProcessRequest(id="c1", exec_id="early", spec=probe))
            codes["start"] = await shim.code_of("Start", pb.StartRequest(id="c1", exec_id="early"))
        assert codes == {"create": Code.UNKNOWN, "start": Code.FAILED_PRECONDITION}, codes
        assert not (bundle / "rootfs" / "exec-ran").exists()
        await shim("Shutdown", pb.ShutdownRequest(id="c1"))
    _remove_runtime_dir(namespace)


async def test_a_closeio_before_the_exec_started_still_ends_its_stdin(bundle: Path, address: str, namespace: str,
                                                                      cgroup_parent: str, tmp_path: Path) -> None:
    """ctr sends CloseIO as soon as its input ends, which can be while the exec's Start runs: before
    its stdio exists. It is kept and applied then; else `cat` waits for an EOF that never comes."""
    devenv.busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(_spec(["sleep", "1000"], f"{cgroup_parent}/c1")))
    stdin = tmp_path / "exec-stdin"
    os.mkfifo(stdin)
    async with _shim_with_events(namespace, address, "c1", bundle, tmp_path) as (shim, _):
        await shim("Create", pb.CreateTaskRequest(id="c1", bundle=str(bundle)), pb.CreateTaskResponse)
        await shim("Start", pb.StartRequest(id="c1"), pb.StartResponse)
        cat = pack_json("types.containerd.io/opencontainers/runtime-spec/1/Process",
                        {"args": ["cat"], "cwd": "/", "env": [PATH_ENV]})
        writer = os.open(stdin, os.O_RDWR)  # the client's end (as ctr's: open before the Exec, never blocking)
        os.write(writer, b"hi\n")
        await shim("Exec", pb.ExecProcessRequest(id="c1", exec_id="in", spec=cat, stdin=str(stdin)))
        await shim("CloseIO", pb.CloseIORequest(id="c1", exec_id="in", stdin=True))
        await shim("Start", pb.StartRequest(id="c1", exec_id="in"), pb.StartResponse)
        os.close(writer)  # the client's input ended: the last writer is gone once CloseIO was applied
        with trio.fail_after(10):
            assert (await shim("Wait", pb.WaitRequest(id="c1", exec_id="in"), pb.WaitResponse)).exit_status == 0
        await shim("Kill", pb.KillRequest(id="c1", signal=signal.SIGKILL))
        await shim("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse)
        await shim("Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
        await shim("Shutdown", pb.ShutdownRequest(id="c1"))
    _remove_runtime_dir(namespace)


async def test_a_resume_that_ends_a_container_killed_while_paused_succeeds(bundle: Path, address: str,
                                                                           namespace: str, cgroup_parent: str,
                                                                           tmp_path: Path) -> None:
    """Pause, SIGTERM, Resume (docker stop of a paused container): the signal waits for the thaw,
    and the init, exiting on it, may have its exit recorded before the runtime's answer to the
    Resume. The Resume did happen and must not fail with "cannot resume a stopped process" (it did
    in 12 of 30 tries through ctr; runc's shim never fails it). Five rounds: the race goes either
    way (the old code failed in each of two runs). (A SIGKILL is different: the runtime thaws for it, as runc does, so the exit comes first
    and a Resume after it fails under runc too.)"""
    devenv.busybox_rootfs(bundle / "rootfs")
    ready = bundle / "rootfs" / "ready"
    script = "trap 'exit 3' TERM; touch /ready; while :; do sleep 0.05; done"
    async with _shim_with_events(namespace, address, "r0", bundle, tmp_path) as (shim, fake):
        for i in range(5):
            cid = f"r{i}"
            (bundle / "config.json").write_text(json.dumps(_spec(["sh", "-c", script], f"{cgroup_parent}/{cid}")))
            await shim("Create", pb.CreateTaskRequest(id=cid, bundle=str(bundle)), pb.CreateTaskResponse)
            await shim("Start", pb.StartRequest(id=cid), pb.StartResponse)
            assert await trio.to_thread.run_sync(eventually, ready.exists)   # the trap is set
            ready.unlink()
            outcomes: list[Code | None] = []

            async def pause() -> None:
                try:
                    await shim("Pause", pb.PauseRequest(id=cid))
                    outcomes.append(None)
                except TtrpcError as e:
                    outcomes.append(e.code)

            async with trio.open_nursery() as nursery:   # two at once: one pauses, one is refused
                nursery.start_soon(pause)
                nursery.start_soon(pause)
            assert sorted(outcomes, key=str) == [Code.FAILED_PRECONDITION, None]
            await shim("Kill", pb.KillRequest(id=cid, signal=signal.SIGTERM))
            await trio.sleep(0.05)   # as far apart as two ctr commands (back to back, the race is rarer)
            await shim("Resume", pb.ResumeRequest(id=cid))
            with trio.fail_after(10):
                assert (await shim("Wait", pb.WaitRequest(id=cid), pb.WaitResponse)).exit_status == 3
            await shim("Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
        await shim("Shutdown", pb.ShutdownRequest(id="r0"))
    topics = [e.topic for e, _ in fake.received]
    assert (topics.count("/tasks/paused"), topics.count("/tasks/resumed"), topics.count("/tasks/exit")) == (5, 5, 5)
    _remove_runtime_dir(namespace)


async def test_failed_creates_name_the_problem_and_leave_nothing(bundle: Path, address: str, namespace: str,
                                                                 cgroup_parent: str) -> None:
    devenv.busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(_spec([], f"{cgroup_parent}/bad")))
    async with connect_unix(await _start(namespace, address, "bad", bundle)) as client:
        shim = Shim(client, "bad")
        with pytest.raises(TtrpcError) as info:
            await shim("Create", pb.CreateTaskRequest(id="bad", bundle=str(bundle)))
        assert info.value.code == Code.INVALID_ARGUMENT and "process.args" in info.value.message
        # all is undone: the `delete` containerd runs next finds its answer (as `delete` would give it)
        answer = pb.DeleteResponse.FromString((bundle / cleanup.DELETED_FILE).read_bytes())
        assert (answer.pid, answer.exit_status) == (0, 137) and answer.exited_at.seconds > 0
        (bundle / "config.json").write_text(json.dumps(_spec(["true"], f"{cgroup_parent}/bad")))
        with pytest.raises(TtrpcError) as info:
            await shim("Create", pb.CreateTaskRequest(id="bad", bundle=str(bundle), stdout="bogus:///x"))
        assert info.value.code == Code.INVALID_ARGUMENT and "bogus:///x" in info.value.message
        config_file = any_pb2.Any(type_url="runtimeoptions.v1.Options",
                                  value=runtimeoptions_pb2.Options(config_path="/etc/x.toml").SerializeToString())
        with pytest.raises(TtrpcError) as info:
            await shim("Create", pb.CreateTaskRequest(id="bad", bundle=str(bundle), options=config_file))
        assert info.value.code == Code.INVALID_ARGUMENT and "ConfigPath '/etc/x.toml'" in info.value.message
        assert await shim.code_of("State", pb.StateRequest(id="bad")) == Code.NOT_FOUND
        pid = (await shim("Connect", pb.ConnectRequest(id="bad"), pb.ConnectResponse)).shim_pid
        await shim("Shutdown", pb.ShutdownRequest(id="bad"))
    assert await trio.to_thread.run_sync(wait_gone, pid)
    _remove_runtime_dir(namespace, created=False)


async def test_a_create_refused_for_a_leftover_container_removes_it(bundle: Path, address: str, namespace: str,
                                                                    cgroup_parent: str) -> None:
    """A container of the id left by a crash (its runtime state, a parked init): the runtime refuses
    the Create, and its undo removes the leftover, as the `delete` containerd runs next would have
    (runc's shim's does: runc delete --force). That `delete` then finds the answer recorded."""
    devenv.busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(_spec(["sleep", "1000"], f"{cgroup_parent}/left")))
    root = Path("/run/railcar") / namespace
    null = os.open(os.devnull, os.O_RDWR)
    try:   # (not from a thread: the runtime forks)
        init_pid = Container.create("left", str(bundle), root=str(root), stdio=(null, null, null))[0].init_pid
    finally:
        os.close(null)
    async with connect_unix(await _start(namespace, address, "left", bundle)) as client:
        shim = Shim(client, "left")
        with pytest.raises(TtrpcError) as info:
            await shim("Create", pb.CreateTaskRequest(id="left", bundle=str(bundle)))
        assert "exists" in info.value.message
        assert not (root / "left").exists()
        assert await trio.to_thread.run_sync(wait_gone, init_pid)
        answer = pb.DeleteResponse.FromString((bundle / cleanup.DELETED_FILE).read_bytes())
        assert (answer.pid, answer.exit_status) == (0, 137)
        pid = (await shim("Connect", pb.ConnectRequest(id="left"), pb.ConnectResponse)).shim_pid
        await shim("Shutdown", pb.ShutdownRequest(id="left"))
    assert await trio.to_thread.run_sync(wait_gone, pid)
    _remove_runtime_dir(namespace)


async def test_a_created_task_can_be_deleted_without_start(bundle: Path, address: str, namespace: str,
                                                           cgroup_parent: str, tmp_path: Path) -> None:
    devenv.busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(_spec(["sleep", "1000"], f"{cgroup_parent}/never")))
    async with _shim_with_events(namespace, address, "never", bundle, tmp_path) as (shim, fake):
        pid = (await shim("Create", pb.CreateTaskRequest(id="never", bundle=str(bundle)), pb.CreateTaskResponse)).pid
        deleted = await shim("Delete", pb.DeleteRequest(id="never"), pb.DeleteResponse)
        assert (deleted.pid, deleted.exit_status) == (pid, 137)
        await shim("Shutdown", pb.ShutdownRequest(id="never"))
    # never started: no start and no exit event (containerd's README: delete follows create)
    assert [e.topic for e, _ in fake.received] == ["/tasks/create", "/tasks/delete"]
    assert wait_gone(pid)
    _remove_runtime_dir(namespace)


async def test_a_daemon_whose_tasks_are_deleted_leaves_without_a_shutdown(bundle: Path, address: str,
                                                                          namespace: str, cgroup_parent: str,
                                                                          tmp_path: Path) -> None:
    """containerd sends Shutdown after a Delete; restarted in between, it never does. The daemon
    then leaves once it has served no task for its grace period, as it does when no Create came."""
    devenv.busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(_spec(["sleep", "1000"], f"{cgroup_parent}/idle")))
    async with _shim_with_events(namespace, address, "idle", bundle, tmp_path,
                                 env={"RAILCAR_SHIM_GRACE": "1"}) as (shim, fake):
        await shim("Create", pb.CreateTaskRequest(id="idle", bundle=str(bundle)), pb.CreateTaskResponse)
        await trio.sleep(1.5)  # a task keeps it, however long
        await shim("State", pb.StateRequest(id="idle"), pb.StateResponse)
        await shim("Delete", pb.DeleteRequest(id="idle"), pb.DeleteResponse)
    # (the block's end waits until the daemon is gone)
    socket_file = (bundle / "address").read_text().removeprefix("unix://")
    assert not os.path.exists(socket_file)
    _remove_runtime_dir(namespace)


async def test_a_delete_cancelled_while_its_create_runs_changes_nothing(bundle: Path, address: str,
                                                                        namespace: str, cgroup_parent: str,
                                                                        tmp_path: Path) -> None:
    """containerd deletes a task whose Create it gave up on, and that Delete may be cut short in turn
    (its deadline, or containerd restarting). The task must stay as the Create leaves it: created,
    so that it can still be killed and deleted."""
    devenv.busybox_rootfs(bundle / "rootfs")
    spec = _spec(["sleep", "1000"], f"{cgroup_parent}/slow")
    spec["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "1.5"]}]}  # a slow Create
    (bundle / "config.json").write_text(json.dumps(spec))
    async with _shim_with_events(namespace, address, "slow", bundle, tmp_path) as (shim, fake):
        created: list = []

        async def create() -> None:
            created.append(await shim("Create", pb.CreateTaskRequest(id="slow", bundle=str(bundle)),
                                      pb.CreateTaskResponse))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            await trio.sleep(0.3)
            with pytest.raises((TtrpcError, trio.TooSlowError)):
                await shim.client.call(TASK, "Delete", pb.DeleteRequest(id="slow"), pb.DeleteResponse, timeout=0.5)
        state = await shim("State", pb.StateRequest(id="slow"), pb.StateResponse)
        assert (state.status, state.pid) == (1, created[0].pid)  # CREATED
        await shim("Kill", pb.KillRequest(id="slow", signal=signal.SIGKILL))
        await shim("Wait", pb.WaitRequest(id="slow"), pb.WaitResponse)  # (a Delete before the exit is refused)
        deleted = await shim("Delete", pb.DeleteRequest(id="slow"), pb.DeleteResponse)
        assert (deleted.pid, deleted.exit_status) == (created[0].pid, 137)
        await shim("Shutdown", pb.ShutdownRequest(id="slow"))
    _remove_runtime_dir(namespace)


@pytest.mark.parametrize("deadline", [None, 0.5])
async def test_a_start_whose_worker_died_in_a_poststart_hook_kills_the_init(
        bundle: Path, address: str, namespace: str, cgroup_parent: str, tmp_path: Path, deadline: float | None) -> None:
    """A Start whose worker died after it let the init go (here in a poststart hook) fails, and the
    init, which would run on while it reads CREATED, is killed, as when a poststart hook fails;
    also when the Start's caller gave up first (its deadline passed while the hook ran)."""
    devenv.busybox_rootfs(bundle / "rootfs")
    hook_pid = tmp_path / "hook.pid"
    spec = _spec(["sleep", "1000"], f"{cgroup_parent}/poststart")
    spec["hooks"] = {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {hook_pid}; exec sleep 30"]}]}
    (bundle / "config.json").write_text(json.dumps(spec))
    daemon = await _start(namespace, address, "poststart", bundle)
    async with connect_unix(daemon) as client:
        shim = Shim(client, "poststart")
        created = await shim("Create", pb.CreateTaskRequest(id="poststart", bundle=str(bundle)), pb.CreateTaskResponse)
        daemon_pid = (await shim("Connect", pb.ConnectRequest(id="poststart"), pb.ConnectResponse)).shim_pid
        codes = []
        async with trio.open_nursery() as nursery:
            async def start() -> None:
                with pytest.raises(TtrpcError) as info:
                    await shim.client.call(TASK, "Start", pb.StartRequest(id="poststart"), pb.StartResponse,
                                           timeout=deadline or 30)
                codes.append(info.value.code)

            nursery.start_soon(start)
            assert await trio.to_thread.run_sync(eventually, lambda: hook_pid.exists() and hook_pid.read_text())
            hook = int(hook_pid.read_text())
            worker = int(Path(f"/proc/{hook}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if deadline:
                await trio.sleep(2 * deadline)
            os.kill(worker, signal.SIGKILL)
        os.kill(hook, signal.SIGKILL)  # (now the daemon's, which reaps it)
        assert codes == [Code.DEADLINE_EXCEEDED if deadline else Code.INTERNAL]
        with trio.fail_after(10):
            waited = await shim("Wait", pb.WaitRequest(id="poststart"), pb.WaitResponse)
        assert waited.exit_status == 137
        deleted = await shim("Delete", pb.DeleteRequest(id="poststart"), pb.DeleteResponse)
        assert (deleted.pid, deleted.exit_status) == (created.pid, 137)
        await shim("Shutdown", pb.ShutdownRequest(id="poststart"))
    assert await trio.to_thread.run_sync(wait_gone, daemon_pid)
    _remove_runtime_dir(namespace)


async def _forker_replaced(daemon_pid: int) -> int:
    """Kill the daemon's forker, once it has lived long enough to be replaced: the new one's pid."""
    await trio.sleep(FORKER_MIN_LIFE)
    [forker] = children_named(daemon_pid, "railcar-forker")
    os.kill(forker, signal.SIGKILL)
    found: list[int] = []

    def replaced() -> bool:  # (the old one may still be listed, a zombie not yet reaped)
        found[:] = children_named(daemon_pid, "railcar-forker")
        return len(found) == 1 and found != [forker]

    assert await trio.to_thread.run_sync(eventually, replaced)
    return found[0]


async def test_a_daemon_replaces_a_forker_that_died_and_leaves_when_the_new_one_dies_at_once(
        bundle: Path, address: str, namespace: str, cgroup_parent: str) -> None:
    """Every container operation goes through the forker: one that died is replaced, and the
    daemon's containers are served on (a kill, a delete and a new container go through the new
    one). A forker that dies right after it was forked would keep dying: the daemon then leaves at
    once, as if it had crashed, and containerd's `delete` (run for each of its containers) cleans up."""
    devenv.busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(_spec(["sleep", "1000"], f"{cgroup_parent}/orphan")))
    daemon = await _start(namespace, address, "orphan", bundle)
    async with connect_unix(daemon) as client:
        shim = Shim(client, "orphan")
        created = await shim("Create", pb.CreateTaskRequest(id="orphan", bundle=str(bundle)), pb.CreateTaskResponse)
        await shim("Start", pb.StartRequest(id="orphan"), pb.StartResponse)
        daemon_pid = (await shim("Connect", pb.ConnectRequest(id="orphan"), pb.ConnectResponse)).shim_pid
        await _forker_replaced(daemon_pid)
        await shim("Kill", pb.KillRequest(id="orphan", signal=signal.SIGKILL))
        await shim("Wait", pb.WaitRequest(id="orphan"), pb.WaitResponse)  # (a Delete before the exit is refused)
        deleted = await shim("Delete", pb.DeleteRequest(id="orphan"), pb.DeleteResponse)
        assert (deleted.pid, deleted.exit_status) == (created.pid, 137)
        await shim("Create", pb.CreateTaskRequest(id="orphan", bundle=str(bundle)), pb.CreateTaskResponse)
        await shim("Start", pb.StartRequest(id="orphan"), pb.StartResponse)
        os.kill(await _forker_replaced(daemon_pid), signal.SIGKILL)
    assert await trio.to_thread.run_sync(wait_gone, daemon_pid)
    assert not os.path.exists(daemon.removeprefix("unix://"))
    deleted = await trio.to_thread.run_sync(lambda: run_shim(
        ["-namespace", namespace, "-address", address, "-id", "orphan", "delete"], bundle))
    assert deleted.returncode == 0, deleted.stderr
    _remove_runtime_dir(namespace)


async def test_one_daemon_serves_two_tasks_and_deleting_one_spares_the_other(
        bundle: Path, address: str, namespace: str, cgroup_parent: str, tmp_path: Path) -> None:
    bundles = {}
    layer = devenv.busybox_rootfs(tmp_path / "layer")  # mounted by the shim, as a snapshot would be
    for name in ("ga", "gb"):
        b = tmp_path / name
        (b / "rootfs").mkdir(parents=True)
        spec = _spec(["sleep", "1000"], f"{cgroup_parent}/{name}")
        spec["annotations"] = {"io.kubernetes.cri.sandbox-id": "pod"}
        (b / "config.json").write_text(json.dumps(spec))
        os.mkfifo(b / "log", 0o700)
        bundles[name] = b
    readers = {name: os.open(b / "log", os.O_RDWR | os.O_NONBLOCK) for name, b in bundles.items()}  # containerd's
    addresses = set()
    for name, b in bundles.items():
        addresses.add(await _start(namespace, address, name, b))
    assert len(addresses) == 1
    process = {"args": ["echo", "alone"], "cwd": "/", "env": [PATH_ENV]}
    spec = pack_json("types.containerd.io/opencontainers/runtime-spec/1/Process", process)
    async with connect_unix(addresses.pop()) as client:
        shim = Shim(client, "ga")
        rootfs = [mount_pb2.Mount(type="bind", source=str(layer), options=["rbind", "ro"])]
        for name, b in bundles.items():
            await shim("Create", pb.CreateTaskRequest(id=name, bundle=str(b), rootfs=rootfs), pb.CreateTaskResponse)
            await shim("Start", pb.StartRequest(id=name), pb.StartResponse)
        for round_ in range(2):
            exec_id = f"e{round_}"
            await shim("Exec", pb.ExecProcessRequest(id="gb", exec_id=exec_id, spec=spec))
            await shim("Start", pb.StartRequest(id="gb", exec_id=exec_id), pb.StartResponse)
            assert (await shim("Wait", pb.WaitRequest(id="gb", exec_id=exec_id), pb.WaitResponse)).exit_status == 0
            await shim("Delete", pb.DeleteRequest(id="gb", exec_id=exec_id), pb.DeleteResponse)
            if round_ == 0:  # the first task goes; the second keeps working
                await shim("Kill", pb.KillRequest(id="ga", signal=9))
                await shim("Wait", pb.WaitRequest(id="ga"), pb.WaitResponse)
                await shim("Delete", pb.DeleteRequest(id="ga"), pb.DeleteResponse)
                os.close(readers.pop("ga"))  # containerd drops the bundle and its log FIFO
                await shim("Shutdown", pb.ShutdownRequest(id="ga"))
        assert (await shim("State", pb.StateRequest(id="gb"), pb.StateResponse)).status == 2
        await shim("Kill", pb.KillRequest(id="gb", signal=9))
        await shim("Wait", pb.WaitRequest(id="gb"), pb.WaitResponse)
        await shim("Delete", pb.DeleteRequest(id="gb"), pb.DeleteResponse)
        shim_pid = (await shim("Connect", pb.ConnectRequest(id="gb"), pb.ConnectResponse)).shim_pid
        await shim("Shutdown", pb.ShutdownRequest(id="gb"))
    assert await trio.to_thread.run_sync(wait_gone, shim_pid)
    logged = os.read(readers["gb"], 1 << 20).decode()
    os.close(readers["gb"])
    assert "railcar shim exiting" in logged  # the daemon moved its log to the bundle still alive
    _remove_runtime_dir(namespace)
