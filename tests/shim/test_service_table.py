"""Answers the service decides from its process table alone, in states a real run passes through only
briefly (unit tests: no forker, reaper or events are reached)."""

import logging
import signal
import subprocess

import pytest
import trio
import trio.testing

from railcar.runtime.cgroups.errors import CgroupError
from railcar.shim.forker import ForkerError
from railcar.shim.process import Process, Status
from railcar.shim.service import GO_ZERO_TIME_SECONDS, Task, TaskService
from railcar.ttrpc_proto import Code, TtrpcError
from railcar.ttrpc_proto.api import task_v2_pb2 as pb


def _service_with(task: Task) -> TaskService:
    """A service holding only `task`: State reads the table and nothing else (no forker, reaper or events)."""
    service = TaskService(namespace="ns", root="/nonexistent", forker=None, reaper=None, publisher=None,
                          nursery=None, logger=logging.getLogger("test"), log_bundle="")
    service.tasks[task.id] = task
    task.created.set()  # its Create has ended
    return service


async def test_state_during_delete_reports_stopped_not_the_internal_deleted() -> None:
    """Delete marks the process DELETED and then awaits stdio, the runtime and the unmount before it
    drops the task; a State in that window must still answer with a containerd Status value."""
    init = Process("c1", "", pid=42, exit_status=137, exited_at_ns=1_000_000_000)
    exec_ = Process("c1", "e1", pid=43, exit_status=1, exited_at_ns=2_000_000_000)
    for process in (init, exec_):
        process.apply("start")
        process.apply("exit")
        process.apply("delete")
    service = _service_with(Task("c1", "/bundle", init, execs={"e1": exec_}))
    for exec_id, pid, code in [("", 42, 137), ("e1", 43, 1)]:
        response = await service.state(pb.StateRequest(id="c1", exec_id=exec_id), None)
        assert (response.status, response.pid, response.exit_status) == (Status.STOPPED, pid, code)


async def test_no_exec_is_added_or_started_once_the_init_is_reaped() -> None:
    """Between the init's reaping and its recorded exit (stdio drain, execs killed and waited) the init
    still reads RUNNING; an exec let in then would run in a dead container and could publish its exit
    after the init's, which must be the last (containerd #10589): FailedPrecondition, as runc answers."""
    init = Process("c1", "", pid=42)
    init.apply("start")
    waiting = Process("c1", "e1", spec={"args": ["true"]})
    service = _service_with(Task("c1", "/bundle", init, execs={"e1": waiting}))
    init.reaped = True
    for method, request in [("exec", pb.ExecProcessRequest(id="c1", exec_id="e2")),
                            ("start", pb.StartRequest(id="c1", exec_id="e1"))]:
        with pytest.raises(TtrpcError) as info:
            await getattr(service, method)(request, None)
        assert info.value.code == Code.FAILED_PRECONDITION and "not running" in info.value.message
    assert list(service.tasks["c1"].execs) == ["e1"] and not waiting.starting


async def test_the_init_exit_waits_for_an_exec_start_in_flight() -> None:
    """An exec whose Start was under way when the init was reaped has no pid yet; the init's exit
    must still wait for it (its exec-started, then its exit) so that the init's exit stays the last."""
    init = Process("c1", "", pid=42)
    init.apply("start")
    starting = Process("c1", "e1", spec={"args": ["true"]}, starting=True)
    task = Task("c1", "/bundle", init, execs={"e1": starting})
    service = _service_with(task)
    finished = trio.Event()

    async def init_exit() -> None:
        await service._before_init_exit(task)
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(init_exit)
        await trio.testing.wait_all_tasks_blocked()
        assert not finished.is_set()
        starting.pid = 43  # the Start ends, and the exec's own exit is already published
        starting.exited.set()
        starting.started.set()
    assert finished.is_set()


async def test_deleting_an_exec_while_its_start_is_in_flight_waits_for_the_start() -> None:
    """A Delete that ran while Start spawned the exec dropped a CREATED, pid-less entry; Start then
    attached a live process nothing tracked any more. Delete judges what Start made instead."""
    init = Process("c1", "", pid=42)
    init.apply("start")
    starting = Process("c1", "e1", spec={"args": ["true"]}, starting=True)
    service = _service_with(Task("c1", "/bundle", init, execs={"e1": starting}))
    refused: list[Code] = []

    async def delete() -> None:
        with pytest.raises(TtrpcError) as info:
            await service.delete(pb.DeleteRequest(id="c1", exec_id="e1"), None)
        refused.append(info.value.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(delete)
        await trio.testing.wait_all_tasks_blocked()
        assert "e1" in service.tasks["c1"].execs and not refused
        starting.pid = 43  # the Start ends: the exec runs
        starting.apply("start")
        starting.started.set()
    assert refused == [Code.FAILED_PRECONDITION] and "e1" in service.tasks["c1"].execs


async def test_a_process_that_never_exited_reports_go_zero_time_not_1970() -> None:
    """containerd 1.6 decodes timestamps into non-nullable Go times: "no exit time" is Go's zero time
    (0001-01-01, as runc sends it); a zero protobuf Timestamp would read as a real exit in 1970."""
    init = Process("c1", "", pid=42)
    init.apply("start")
    service = _service_with(Task("c1", "/bundle", init, execs={"e1": Process("c1", "e1", spec={})}))
    state = await service.state(pb.StateRequest(id="c1"), None)
    deleted = await service.delete(pb.DeleteRequest(id="c1", exec_id="e1"), None)
    for stamp in (state.exited_at, deleted.exited_at):
        assert (stamp.seconds, stamp.nanos) == (GO_ZERO_TIME_SECONDS, 0)


async def test_updates_of_one_task_run_one_at_a_time(monkeypatch) -> None:
    """A failed Update puts back the values it found: run beside another, it could undo that one's."""
    init = Process("c1", "", pid=42)
    init.apply("start")
    service = _service_with(Task("c1", "/bundle", init))
    running, most = 0, 0

    async def call(op: str, args: dict, fds=(), spec_of: str = "") -> tuple[dict, list[int]]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.01)
        running -= 1
        return {}, []

    monkeypatch.setattr(service, "_call", call)
    request = pb.UpdateTaskRequest(id="c1")
    request.resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
    request.resources.value = b'{"cpu": {"shares": 512}}'
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(service.update, request, None)
    assert most == 1



async def test_an_exited_exec_cannot_be_resized_and_the_init_always_can() -> None:
    """runc's shim refuses a ResizePty for an exec that exited, and resizes an init's console in
    any state (a process without a console has nothing to resize)."""
    init = Process("c1", "", pid=42)
    exec_ = Process("c1", "e1", pid=43)
    for process in (init, exec_):
        process.apply("start")
        process.apply("exit")
    service = _service_with(Task("c1", "/bundle", init, execs={"e1": exec_}))
    with pytest.raises(TtrpcError) as info:
        await service.resize_pty(pb.ResizePtyRequest(id="c1", exec_id="e1", width=80, height=24), None)
    assert info.value.code is Code.FAILED_PRECONDITION and "resize a stopped" in info.value.message
    await service.resize_pty(pb.ResizePtyRequest(id="c1", width=80, height=24), None)


async def test_a_start_whose_worker_died_kills_the_init_even_without_a_forker() -> None:
    """The kill after a Start whose worker died goes through the forker; with none to take it (one
    that died and is not replaced yet), the daemon kills the init itself: its child until reaped."""
    class NoForker:
        async def call(self, op: str, args: dict, fds: tuple = ()) -> None:
            raise ForkerError("internal", "the forker process is gone")

    class Reaper:
        def has_exited(self, pid: int) -> bool:
            return False

    init_process = subprocess.Popen(["sleep", "30"])
    try:
        init = Process("c1", "", pid=init_process.pid)
        task = Task("c1", "/bundle", init)
        task.oom_armed.set()
        service = _service_with(task)
        service._forker, service._reaper = NoForker(), Reaper()
        with pytest.raises(TtrpcError) as info:
            await service.start(pb.StartRequest(id="c1"), None)
        assert info.value.code is Code.INTERNAL
        assert init_process.wait(timeout=10) == -signal.SIGKILL
    finally:
        init_process.kill()
        init_process.wait()


async def test_a_start_sent_while_its_create_runs_answers_once_that_create_failed() -> None:
    """containerd never sends it, but a Start that comes while its Create still runs must not wait
    forever for a Create that then fails: it answers NotFound, as Delete does then."""
    init = Process("c1", "")
    task = Task("c1", "/bundle", init)
    service = _service_with(task)
    task.created = trio.Event()  # its Create still runs
    codes = []

    async def start() -> None:
        with pytest.raises(TtrpcError) as info:
            await service.start(pb.StartRequest(id="c1"), None)
        codes.append(info.value.code)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start)
            await trio.testing.wait_all_tasks_blocked()
            del service.tasks["c1"]  # the Create failed
            task.created.set()
    assert codes == [Code.NOT_FOUND]


async def test_a_cgroup_that_cannot_be_read_answers_not_found() -> None:
    """Stats and Pids of a container whose cgroup files the kernel refuses answer NOT_FOUND with the
    file named, as for a cgroup that is gone, rather than an UNKNOWN with a traceback in the log."""
    class Unreadable:
        version = 1

        def stats(self) -> dict:
            raise CgroupError("reading /sys/fs/cgroup/memory/c1/memory.stat: Permission denied")

        pids = stats

    init = Process("c1", "", pid=42)
    init.apply("start")
    task = Task("c1", "/bundle", init)
    task.cgroup = Unreadable()
    service = _service_with(task)
    for method, request in [("stats", pb.StatsRequest(id="c1")), ("pids", pb.PidsRequest(id="c1"))]:
        with pytest.raises(TtrpcError) as info:
            await getattr(service, method)(request, None)
        assert info.value.code == Code.NOT_FOUND and "memory.stat: Permission denied" in info.value.message
