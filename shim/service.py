"""The task service: containerd's 17 task verbs mapped onto the runtime, io/ and the process table.

Requests run concurrently (one trio task each); Wait simply awaits the process's `exited` event.
Everything that may fork goes through the forker; the OOM watcher and stats read the container's
cgroup directly. Lifecycle legality lives in `process.TRANSITIONS`, ordering of events in
`_watch` (start before exit, execs before init, OOM before exit, output drained before exit).
"""

import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from google.protobuf import empty_pb2, json_format

from railcar.io import ProcessIO, StdioError
from railcar.runtime.errors import RuntimeFailure
from railcar.ttrpc_proto import Code, TtrpcError
from railcar.ttrpc_proto.api import events_task_pb2 as ev
from railcar.ttrpc_proto.api import cgroups_v1_pb2, cgroups_v2_pb2, runc_options_pb2, task_v2_pb2 as pb
from railcar.ttrpc_proto.typeurl import pack

from . import cleanup, options, wire
from . import log as shim_log
from .events import Publisher
from .forker import Forker, ForkerError
from .process import Process, Status
from .reaper import Reaper, exit_status
from .spawner import ReaperSpawner

if TYPE_CHECKING:
    from railcar.runtime.cgroups import Cgroup
    from railcar.runtime.cgroups.interface import OomWatcher

EMPTY = empty_pb2.Empty()
DRAIN_TIMEOUT = 2.0
EXEC_EXIT_TIMEOUT = 5.0
EXIT_WAIT_TIMEOUT = 10.0  # seconds Delete waits for a SIGKILLed created process to be reaped
GO_ZERO_TIME_SECONDS = -62135596800  # 0001-01-01: "no time" to containerd's non-nullable Go timestamps
OOM_RECHECK_DELAYS = (0.0, 0.01, 0.02, 0.05, 0.1)
OOM_ARM_DELAY = 0.001  # seconds: long enough for Create's reply to leave first
_FORKER_CODES = {"spec": Code.INVALID_ARGUMENT, "not_found": Code.NOT_FOUND, "runtime": Code.UNKNOWN,
                 "internal": Code.INTERNAL}


def _error(e: ForkerError, spec_of: str = "config.json") -> TtrpcError:
    """The forker's failure as containerd gets it; a refused spec names its document (`spec_of`)."""
    message = f"{spec_of} {e.message}" if e.kind == "spec" else e.message
    return TtrpcError(_FORKER_CODES.get(e.kind, Code.UNKNOWN), message)


@dataclass
class Task:
    """One container: its bundle, init process, execs, cgroup and what must be undone on Delete."""

    id: str
    bundle: str
    init: Process
    execs: dict[str, Process] = field(default_factory=dict)
    rootfs_mounted: bool = False
    shares_pids: bool = False  # no pid namespace of its own: processes can outlive the init
    cgroup: "Cgroup | None" = None  # for stats, pids and OOM
    oom_watcher: "OomWatcher | None" = None
    oom_armed: trio.Event = field(default_factory=trio.Event)  # the OOM watch is set up (or failed)
    created: trio.Event = field(default_factory=trio.Event)  # its Create has ended, made or failed
    lock: trio.Lock = field(default_factory=trio.Lock)


class TaskService:
    """The state of one shim daemon: its tasks, and the handlers containerd calls."""

    def __init__(self, *, namespace: str, root: str, forker: Forker, reaper: Reaper, publisher: Publisher,
                 nursery: trio.Nursery, logger: logging.Logger, log_bundle: str,
                 removed: Callable[[str], None] | None = None) -> None:
        self.namespace = namespace
        self._removed = removed  # told each container id that stops being served (a pool's member)
        self._log_bundle = log_bundle  # whose `log` FIFO is our fd 2
        self.root = root
        self.tasks: dict[str, Task] = {}
        self.tasks_changed = trio.Event()  # set (and replaced) whenever a task is added or forgotten
        self.shutdown_requested = trio.Event()  # Shutdown with no tasks left
        self._forker = forker
        self._reaper = reaper
        self._events = publisher
        self._nursery = nursery
        self._log = logger
        self._spawner = ReaperSpawner(reaper)

    # ---- lookup helpers -------------------------------------------------------------------

    def _task(self, container_id: str) -> Task:
        task = self.tasks.get(container_id)
        if task is None:
            raise TtrpcError(Code.NOT_FOUND, f"container {container_id} not created")
        return task

    def _process(self, container_id: str, exec_id: str) -> tuple[Task, Process]:
        task = self._task(container_id)
        if not exec_id:
            return task, task.init
        process = task.execs.get(exec_id)
        if process is None:
            raise TtrpcError(Code.NOT_FOUND, f"process does not exist {exec_id}")
        return task, process

    async def _call(self, op: str, args: dict[str, Any], fds: tuple[int, ...] | list[int] = (),
                    spec_of: str = "config.json") -> tuple[Any, list[int]]:
        """Run `op` in a worker. `spec_of` names what a field a SpecError names is in: config.json,
        or the OCI Process of an exec, or the LinuxResources of an Update."""
        try:
            return await self._forker.call(op, args, fds)
        except ForkerError as e:
            raise _error(e, spec_of) from None

    async def _open_io(self, process: Process) -> ProcessIO:
        try:
            return await ProcessIO.open(process.stdin, process.stdout, process.stderr, terminal=process.terminal,
                                        container_id=process.container_id, namespace=self.namespace,
                                        spawner=self._spawner)
        except StdioError as e:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"stdio: {e}") from None

    def _attach(self, process: Process, pio: ProcessIO, result: dict[str, Any], fds: list[int]) -> None:
        """Bind a freshly created process to its stdio and start forwarding and watching it."""
        pio.close_container_side()
        if fds:
            pio.attach_console(fds[0])
        process.io = pio
        if process.stdin_closed:
            pio.close_stdin()
        process.pid = result["pid"]
        self._reaper.adopt(process.pid, result["started"])
        self._nursery.start_soon(self._guarded, pio.run, f"stdio of {process.id}")
        self._nursery.start_soon(self._guarded, self._watch, f"exit watch of {process.id}", process)

    async def _guarded(self, fn: Callable[..., Awaitable[None]], what: str, *args: Any) -> None:
        """Run a background task whose failure must cost one process its forwarding or events,
        never the daemon and every other container it serves."""
        try:
            await fn(*args)
        except Exception:
            self._log.exception("%s failed", what)

    # ---- exits ----------------------------------------------------------------------------

    async def _watch(self, process: Process) -> None:
        """Wait for the process to exit, then record and publish it in the order containerd needs."""
        status = await self._reaper.wait(process.pid)
        process.reaped = True
        exited_at = time.time_ns()
        task = self.tasks.get(process.container_id)
        if not process.exec_id and task is not None and task.shares_pids and self._outlived(task):
            await self._kill_rest(task)  # first: what outlived the init may hold its stdout open
        if process.io is not None:
            await process.io.drained(timeout=DRAIN_TIMEOUT)
        if process.starting:
            await process.started.wait()
        if not process.exec_id and task is not None:
            await self._before_init_exit(task)
        process.exit_status = exit_status(status)
        process.exited_at_ns = exited_at
        was_started = process.status is not Status.CREATED
        process.apply("exit")
        if not process.exec_id and task is not None:
            try:
                cleanup.record_exit(task.bundle, process.exit_status, exited_at)
            except OSError as e:  # only `delete` after a crash reads it: the exit must still be recorded here
                self._log.warning("cannot record the exit of %s in its bundle: %s", task.id, e)
        if was_started:
            self._events.publish(ev.TaskExit(container_id=process.container_id, id=process.id, pid=process.pid,
                                             exit_status=process.exit_status, exited_at=_timestamp(exited_at)))
        process.exited.set()

    async def _before_init_exit(self, task: Task) -> None:
        """The init's exit is published last: kill what is left, let running execs publish their exits,
        and report an OOM kill first (CRI marks OOMKilled only if TaskOOM arrives)."""
        self._check_oom(task)
        for p in list(task.execs.values()):
            if p.starting:
                await p.started.wait()  # a Start in flight has no pid yet, but its exit must come first too
        running = [p for p in task.execs.values() if p.pid and not p.exited.is_set()]
        if running:
            await self._kill_rest(task)
            with trio.move_on_after(EXEC_EXIT_TIMEOUT):
                for p in running:
                    await p.exited.wait()

    async def _kill_rest(self, task: Task) -> None:
        """SIGKILL whatever is left in the cgroup of a task whose init exited."""
        try:
            await self._call("kill", {"id": task.id, "root": self.root, "signal": signal.SIGKILL, "all": True})
        except TtrpcError as e:
            self._log.warning("killing the rest of %s: %s", task.id, e)

    @staticmethod
    def _outlived(task: Task) -> bool:
        """Whether processes outlived the init of a container without a pid namespace of its own
        (a child it left running, or a process exec'd into it). They are killed with it, as
        runc's shim does, or they would hold its cgroup after Delete."""
        try:
            return task.cgroup is None or bool(task.cgroup.pids())
        except Exception:  # whatever it is, the init's exit must still be recorded: kill to be sure
            return True

    def _check_oom(self, task: Task) -> int:
        """Publish TaskOOM if the cgroup's OOM-kill count grew since the last look; returns the growth."""
        if task.oom_watcher is None:
            return 0
        try:
            kills = task.oom_watcher.read()
        except OSError:
            return 0
        if kills:
            self._log.info("container %s: %d processes killed for lack of memory", task.id, kills)
            self._events.publish(ev.TaskOOM(container_id=task.id))
        return kills

    async def _watch_oom(self, task: Task) -> None:
        """Publish OOM kills as they happen. cgroup v1 signals when the OOM begins, a moment before
        the kernel counts the kill, so a wake-up without a kill is looked at again shortly after."""
        watcher = task.oom_watcher
        try:
            while task.id in self.tasks and task.oom_watcher is watcher:
                await trio.lowlevel.wait_readable(watcher.fileno())
                for delay in OOM_RECHECK_DELAYS:
                    if self._check_oom(task) or task.oom_watcher is not watcher:
                        break
                    await trio.sleep(delay)
        except (OSError, trio.ClosedResourceError):
            return  # the watcher was closed by Delete

    async def _arm_oom_watch(self, task: Task) -> None:
        """Set up the OOM watch just after Create answered: a fresh daemon's first one takes a few
        ms, which containerd need not wait for. Start and Delete wait for it, so an OOM kill of a
        started container is always seen and no watcher outlives its task."""
        try:
            await trio.sleep(OOM_ARM_DELAY)
            if self.tasks.get(task.id) is task:
                self._start_oom_watch(task)
        finally:
            task.oom_armed.set()

    def _start_oom_watch(self, task: Task) -> None:
        try:
            if task.cgroup is None:
                raise ValueError("the runtime made no cgroup")
            task.oom_watcher = task.cgroup.oom_watcher()
        except Exception as e:  # no memory controller: run without OOM events
            self._log.warning("no OOM notifications for %s: %s", task.id, e)
            return
        self._log.debug("watching %s for OOM kills (cgroup v%d)", task.cgroup, task.cgroup.version)
        self._nursery.start_soon(self._guarded, self._watch_oom, f"OOM watch of {task.id}", task)

    def _stop_oom_watch(self, task: Task) -> None:
        watcher, task.oom_watcher = task.oom_watcher, None
        if watcher is not None:
            trio.lowlevel.notify_closing(watcher.fileno())
            watcher.close()

    # ---- the task API ---------------------------------------------------------------------

    async def create(self, req: pb.CreateTaskRequest, ctx: Any) -> pb.CreateTaskResponse:
        if req.id in self.tasks:
            raise TtrpcError(Code.ALREADY_EXISTS, f"container {req.id}: already exists")
        if req.checkpoint or req.parent_checkpoint:
            raise TtrpcError(Code.UNIMPLEMENTED, "checkpoint restore is not supported by railcar")
        try:
            options.check(req.options)
        except options.OptionsError as e:
            raise TtrpcError(Code.INVALID_ARGUMENT, str(e)) from None
        began = time.perf_counter()
        bundle = req.bundle or os.getcwd()
        init = Process(req.id, "", req.stdin, req.stdout, req.stderr, req.terminal)
        task = Task(req.id, bundle, init)
        self.tasks[req.id] = task
        self._tasks_changed()
        pio: ProcessIO | None = None
        try:
            cleanup.clear_records(bundle)
            pio = await self._open_io(init)
            mounts = [{"type": m.type, "source": m.source, "options": list(m.options)} for m in req.rootfs]
            task.rootfs_mounted = bool(mounts)  # from here on: the undo unmounts (which is idempotent)
            result, fds = await self._call("create", {"id": req.id, "bundle": bundle, "root": self.root,
                                                      "terminal": req.terminal, "mounts": mounts},
                                           pio.container_stdio or ())
            self._attach(init, pio, result, fds)
            task.shares_pids = result["shares_pids"]
            if result["cgroup"] is not None:
                from railcar.runtime.cgroups import Cgroup  # (loaded by the zygote, and by a worker anyway)

                task.cgroup = Cgroup.from_state(result["cgroup"])
            cleanup.record_pids(bundle, init.pid)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._undo_create(task, pio)
            raise
        finally:
            task.created.set()
        self._nursery.start_soon(self._guarded, self._arm_oom_watch, f"OOM watch set-up of {task.id}", task)
        self._events.publish(ev.TaskCreate(
            container_id=req.id, bundle=bundle, rootfs=list(req.rootfs), checkpoint=req.checkpoint, pid=init.pid,
            io=ev.TaskIO(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, terminal=req.terminal)))
        self._log.debug("created %s (pid %d) in %.1f ms", req.id, init.pid, (time.perf_counter() - began) * 1e3)
        return pb.CreateTaskResponse(pid=init.pid)

    async def _undo_create(self, task: Task, pio: ProcessIO | None) -> None:
        """Remove whatever a failed Create made, and what the `delete` containerd runs next (it does
        after every shim it talked to disconnects) would remove: the rootfs mounts, and a container
        of this id, whether a worker that died half-way left it, or a crash before this Create
        (which the runtime then refused: it exists), in one forker call (deleting none is a no-op).
        Once that is done, that `delete` has nothing left to do: its answer is recorded for it, as
        after a Delete, so that it does not start Python to find that out (50 ms of a failed
        `ctr run`, measured; runc's is Go)."""
        self._forget(task)
        removal: dict[str, Any] = {"id": task.id, "root": self.root, "force": True}
        if task.rootfs_mounted:
            removal["unmount"] = os.path.join(task.bundle, "rootfs")
        cleaned = await self._quiet_call("delete", removal)
        if pio is not None:
            await pio.aclose()
        if cleaned:   # what `delete` answers for a container with no process: killed, now (as runc's shim)
            self._record_deleted(task, wire.delete_response(0, 128 + signal.SIGKILL, time.time_ns()))

    async def _sigkill(self, task: Task, process: Process, *, all: bool) -> None:
        """SIGKILL `process` (with `all`, every process of an init's container). The runtime kills an
        init, checking it is still the one it made; an exec, or an init the runtime could not reach
        (no forker), is killed directly: our child (we are its subreaper) until reaped, so its pid
        is nobody else's."""
        killed = not process.exec_id and await self._quiet_call(
            "kill", {"id": task.id, "root": self.root, "signal": signal.SIGKILL, "all": all})
        if not killed and not process.reaped and not self._reaper.has_exited(process.pid):
            os.kill(process.pid, signal.SIGKILL)

    async def _quiet_call(self, op: str, args: dict[str, Any]) -> bool:
        """A cleanup step whose failure is logged, not raised; returns whether it succeeded."""
        try:
            await self._call(op, args)
        except TtrpcError as e:
            self._log.warning("%s during cleanup: %s", op, e)
            return False
        return True

    async def start(self, req: pb.StartRequest, ctx: Any) -> pb.StartResponse:
        task, process = self._process(req.id, req.exec_id)
        if process.exec_id:  # (containerd knows no task before its Create answered: another client may)
            await task.created.wait()
        process.check("start")
        if process.starting:
            raise TtrpcError(Code.FAILED_PRECONDITION, f"process {process.id} is already being started")
        # An exec may start while the init waits for its own Start (its namespaces, mounts and cgroup
        # are there), as runc's shim lets it; not in a container whose Create failed.
        if process.exec_id and (self.tasks.get(req.id) is not task or not task.init.pid or task.init.reaped
                                or task.init.status not in (Status.CREATED, Status.RUNNING, Status.PAUSED)):
            raise _init_not_running(task)
        process.starting = True
        process.started = trio.Event()  # a failed earlier Start set the old one
        try:
            if process.exec_id:
                pio = await self._open_io(process)
                try:
                    result, fds = await self._call("exec", {"id": task.id, "root": self.root, "process": process.spec,
                                                            "terminal": process.terminal}, pio.container_stdio or (),
                                                   spec_of="the exec's")
                except BaseException:
                    await pio.aclose()
                    raise
                self._attach(process, pio, result, fds)
                process.apply("start")
                self._events.publish(ev.TaskExecStarted(container_id=task.id, exec_id=process.exec_id,
                                                        pid=process.pid))
            else:
                await task.created.wait()  # (a Start sent while its Create runs: containerd never does)
                if self.tasks.get(req.id) is not task:  # its Create failed
                    raise TtrpcError(Code.NOT_FOUND, f"container {req.id} not created")
                await task.oom_armed.wait()
                try:
                    await self._forker.call("start", {"id": task.id, "root": self.root})
                except ForkerError as e:
                    if e.kind == "internal":  # its worker died, maybe in a poststart hook: the init may
                        # run, let go, while it reads CREATED. It goes, as the runtime kills it when a
                        # poststart hook fails (runc too), even if the Start's caller gave up meanwhile.
                        with trio.CancelScope(shield=True):
                            await self._sigkill(task, process, all=True)
                    raise _error(e) from None
                process.apply("start")
                self._events.publish(ev.TaskStart(container_id=task.id, pid=process.pid))
        except BaseException:
            process.starting = False  # still CREATED: a later Start may try again
            raise
        finally:
            process.started.set()  # the exit may be published now (after the start event, if any)
        return pb.StartResponse(pid=process.pid)

    async def delete(self, req: pb.DeleteRequest, ctx: Any) -> pb.DeleteResponse:
        """Up to the state change, a Delete cancelled (containerd's deadline, or containerd gone) has
        changed nothing; from there on it runs to the end, or the task would stay in the table,
        deleted, with nobody to reap or remove it. A Delete that comes while its Create still runs
        (containerd's clean-up after a Create it gave up on) waits for what that Create makes, as
        runc's shim does, instead of marking a process deleted that is still being made."""
        task = self._task(req.id)
        await task.created.wait()
        if self.tasks.get(req.id) is not task:  # its Create failed (and maybe another began)
            raise TtrpcError(Code.NOT_FOUND, f"container {req.id} not created")
        _, exited = self._process(req.id, req.exec_id)
        if exited.exited.is_set() and exited.io is not None:
            # What a paused client has yet to get: outside the lock, so that Deletes wait side by side,
            # as runc's shim waits for its copies. It changes nothing, so a cancelled Delete stays a no-op.
            await exited.io.flush(DRAIN_TIMEOUT)
        async with task.lock:
            task, process = self._process(req.id, req.exec_id)
            if process.starting:
                await process.started.wait()  # judge what the Start in flight made, not the entry it fills in
            process.check("delete")
            if process.status is Status.CREATED and process.pid:
                # A created init (or an exec whose Start failed half-way) is killed, then reaped as usual.
                await self._sigkill(task, process, all=False)
                with trio.move_on_after(EXIT_WAIT_TIMEOUT):
                    await process.exited.wait()
                if not process.exited.is_set():
                    raise TtrpcError(Code.UNKNOWN, f"process {process.id} did not exit after SIGKILL")
            with trio.CancelScope(shield=True):
                process.apply("delete")
                if process.io is not None:
                    await process.io.aclose()
                response = pb.DeleteResponse(pid=process.pid, exit_status=process.exit_status,
                                             exited_at=_timestamp(process.exited_at_ns))
                if process.exec_id:
                    del task.execs[process.exec_id]
                    return response
                for other in task.execs.values():
                    if other.io is not None:
                        await other.io.aclose()
                await task.oom_armed.wait()
                self._stop_oom_watch(task)
                removal = {"id": task.id, "root": self.root, "force": True}
                if task.rootfs_mounted:
                    removal["unmount"] = os.path.join(task.bundle, "rootfs")
                if await self._quiet_call("delete", removal):
                    self._record_deleted(task, wire.delete_response(process.pid, process.exit_status,
                                                                    process.exited_at_ns))
                self._forget(task)
                if task.bundle == self._log_bundle:
                    self._move_log()
                self._events.publish(ev.TaskDelete(container_id=task.id, pid=process.pid,
                                                   exit_status=process.exit_status,
                                                   exited_at=_timestamp(process.exited_at_ns)))
                return response

    def _record_deleted(self, task: Task, answer: bytes) -> None:
        """Leave the answer of the `delete` containerd runs next in the bundle (cleanup.record_deleted)."""
        try:
            cleanup.record_deleted(task.bundle, answer)
        except OSError as e:  # then `delete` checks everything itself (and finds it gone)
            self._log.warning("cannot record the delete answer of %s: %s", task.id, e)

    def _forget(self, task: Task) -> None:
        if self.tasks.pop(task.id, None) is not None:
            self._tasks_changed()
            if self._removed is not None:
                self._removed(task.id)

    def _tasks_changed(self) -> None:
        self.tasks_changed.set()
        self.tasks_changed = trio.Event()

    def _move_log(self) -> None:
        """Our fd 2 is the log FIFO of a bundle containerd is about to remove, and a FIFO without a
        reader fails every write with EPIPE. A grouped daemon moves its log to the FIFO of a task it
        still serves (the forker's workers log to our fd 2, which each request carries)."""
        for other in self.tasks.values():
            fd = shim_log.open_fifo(other.bundle)
            if fd is None:
                continue
            shim_log.redirect_stderr(fd)
            self._log_bundle = other.bundle
            return

    async def exec(self, req: pb.ExecProcessRequest, ctx: Any) -> empty_pb2.Empty:
        if not req.exec_id:  # "" addresses the init: such an exec could never be started, waited or deleted
            raise TtrpcError(Code.INVALID_ARGUMENT, "exec id must not be empty")
        task = self._task(req.id)
        task.init.check("exec")
        if task.init.reaped:
            raise _init_not_running(task)
        if req.exec_id in task.execs:
            raise TtrpcError(Code.ALREADY_EXISTS, f"id {req.exec_id}: already exists")
        spec = _json_object(req.spec.value, "exec spec (an OCI Process)")
        spec["terminal"] = req.terminal
        task.execs[req.exec_id] = Process(req.id, req.exec_id, req.stdin, req.stdout, req.stderr, req.terminal,
                                          spec=spec)
        self._events.publish(ev.TaskExecAdded(container_id=req.id, exec_id=req.exec_id))
        return EMPTY

    async def state(self, req: pb.StateRequest, ctx: Any) -> pb.StateResponse:
        task, process = self._process(req.id, req.exec_id)
        status = process.status
        if status is Status.DELETED:
            status = Status.STOPPED  # Delete is tearing it down; containerd's enum has no "deleted"
        if process.exec_id and status is Status.RUNNING and task.init.status is Status.PAUSED:
            status = Status.PAUSED
        pio = process.io
        return pb.StateResponse(
            id=process.id, bundle=task.bundle, pid=process.pid, status=int(status),
            stdin=pio.stdin_path if pio else process.stdin, stdout=pio.stdout_path if pio else process.stdout,
            stderr=pio.stderr_path if pio else process.stderr, terminal=process.terminal,
            exit_status=process.exit_status, exited_at=_timestamp(process.exited_at_ns), exec_id=process.exec_id)

    async def kill(self, req: pb.KillRequest, ctx: Any) -> empty_pb2.Empty:
        if not 0 <= req.signal <= signal.SIGRTMAX:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"Kill: {req.signal} is not a signal number (0-{signal.SIGRTMAX:d})")
        task, process = self._process(req.id, req.exec_id)
        sweep = req.all and not process.exec_id
        process.check("kill all" if sweep else "kill")
        if process.starting:
            await process.started.wait()  # a Kill racing the Start it follows signals what Start made
        if not process.pid:
            raise TtrpcError(Code.FAILED_PRECONDITION, "process not created")
        if sweep:
            await self._call("kill", {"id": task.id, "root": self.root, "signal": req.signal, "all": True})
            return EMPTY
        if process.reaped or self._reaper.has_exited(process.pid):
            raise TtrpcError(Code.NOT_FOUND, "process already finished")
        if process.exec_id:
            try:
                os.kill(process.pid, req.signal)
            except ProcessLookupError:
                raise TtrpcError(Code.NOT_FOUND, "process already finished") from None
        else:
            await self._call("kill", {"id": task.id, "root": self.root, "signal": req.signal, "all": False})
        return EMPTY

    async def pids(self, req: pb.PidsRequest, ctx: Any) -> pb.PidsResponse:
        task = self._task(req.id)
        for p in list(task.execs.values()):
            if p.starting:
                await p.started.wait()  # an exec being started is in the cgroup before we know its pid
        try:
            pids = task.cgroup.pids() if task.cgroup is not None else [task.init.pid]
        except (OSError, RuntimeFailure) as e:  # (a cgroup's file that cannot be read: CgroupError)
            raise TtrpcError(Code.NOT_FOUND, f"cgroup pids: {e}") from None
        by_pid = {p.pid: p.exec_id for p in task.execs.values() if p.pid}
        response = pb.PidsResponse()
        for pid in pids:
            info = response.processes.add(pid=pid)
            if pid in by_pid:
                info.info.CopyFrom(pack(runc_options_pb2.ProcessDetails(exec_id=by_pid[pid])))
        return response

    async def pause(self, req: pb.PauseRequest, ctx: Any) -> empty_pb2.Empty:
        await self._freeze_verb(req.id, "pause", ev.TaskPaused)
        return EMPTY

    async def resume(self, req: pb.ResumeRequest, ctx: Any) -> empty_pb2.Empty:
        await self._freeze_verb(req.id, "resume", ev.TaskResumed)
        return EMPTY

    async def _freeze_verb(self, container_id: str, verb: str, event: type) -> None:
        """Pause or resume: the lifecycle table allows `verb` before the runtime runs it, so a refused
        verb never reaches the cgroup; the state moves and the event goes out only once it is done.

        The init may exit while the runtime works: a container killed while paused (docker stop,
        `ctr task kill` then `resume`) dies as it thaws, and its exit can be recorded before the
        thaw's answer comes. The verb still happened, so it succeeds, as under runc's shim, which
        moves the state under the same lock as the exit; only the state stays the exit's."""
        task = self._task(container_id)
        task.init.check(verb)
        await self._call(verb, {"id": task.id, "root": self.root})
        if task.init.status not in (Status.STOPPED, Status.DELETED):   # (a second Pause at once still fails)
            task.init.apply(verb)
        self._events.publish(event(container_id=task.id))

    async def checkpoint(self, req: pb.CheckpointTaskRequest, ctx: Any) -> empty_pb2.Empty:
        raise TtrpcError(Code.UNIMPLEMENTED, "checkpoint is not supported by railcar")

    async def resize_pty(self, req: pb.ResizePtyRequest, ctx: Any) -> empty_pb2.Empty:
        _, process = self._process(req.id, req.exec_id)
        if process.exec_id:
            process.check("resize")  # an exec that exited is refused, as by runc's shim
        if process.io is not None:
            try:
                process.io.resize(req.width, req.height)
            except ValueError as e:
                raise TtrpcError(Code.INVALID_ARGUMENT, str(e)) from None
        return EMPTY

    async def close_io(self, req: pb.CloseIORequest, ctx: Any) -> empty_pb2.Empty:
        _, process = self._process(req.id, req.exec_id)
        if process.io is not None:
            process.io.close_stdin()
        else:  # ctr closes its stdin as soon as its input ends: that can be while Start still runs
            process.stdin_closed = True
        return EMPTY

    async def update(self, req: pb.UpdateTaskRequest, ctx: Any) -> empty_pb2.Empty:
        task = self._task(req.id)
        task.init.check("update")
        resources = _json_object(req.resources.value, "resources (OCI LinuxResources)")
        # One at a time: an Update that fails puts back the values it found, which must not undo
        # what another Update, run by another worker meanwhile, has written.
        async with task.lock:
            await self._call("update", {"id": task.id, "root": self.root, "resources": resources},
                             spec_of="the update's")
        return EMPTY

    async def wait(self, req: pb.WaitRequest, ctx: Any) -> pb.WaitResponse:
        _, process = self._process(req.id, req.exec_id)
        await process.exited.wait()
        return pb.WaitResponse(exit_status=process.exit_status, exited_at=_timestamp(process.exited_at_ns))

    async def stats(self, req: pb.StatsRequest, ctx: Any) -> pb.StatsResponse:
        task = self._task(req.id)
        if task.cgroup is None:
            raise TtrpcError(Code.NOT_FOUND, "cgroup does not exist")
        try:
            metrics = task.cgroup.stats()  # control files of a cgroupfs: no thread to wait for them
        except (OSError, RuntimeFailure) as e:
            raise TtrpcError(Code.NOT_FOUND, f"cgroup stats: {e}") from None
        message = (cgroups_v1_pb2 if task.cgroup.version == 1 else cgroups_v2_pb2).Metrics()
        json_format.ParseDict(metrics, message, ignore_unknown_fields=True)
        response = pb.StatsResponse()
        response.stats.CopyFrom(pack(message))
        return response

    async def connect(self, req: pb.ConnectRequest, ctx: Any) -> pb.ConnectResponse:
        task = self.tasks.get(req.id)
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=task.init.pid if task else 0, version="2")

    async def shutdown(self, req: pb.ShutdownRequest, ctx: Any) -> empty_pb2.Empty:
        if not self.tasks:
            self.shutdown_requested.set()
        return EMPTY

    def methods(self, module: Any) -> dict[str, tuple[type, Callable[[Any, Any], Awaitable[Any]]]]:
        """The handler table for `containerd.task.v2.Task` (module task_v2_pb2) or the identical v3."""
        return {
            "State": (module.StateRequest, self.state),
            "Create": (module.CreateTaskRequest, self.create),
            "Start": (module.StartRequest, self.start),
            "Delete": (module.DeleteRequest, self.delete),
            "Pids": (module.PidsRequest, self.pids),
            "Pause": (module.PauseRequest, self.pause),
            "Resume": (module.ResumeRequest, self.resume),
            "Checkpoint": (module.CheckpointTaskRequest, self.checkpoint),
            "Kill": (module.KillRequest, self.kill),
            "Exec": (module.ExecProcessRequest, self.exec),
            "ResizePty": (module.ResizePtyRequest, self.resize_pty),
            "CloseIO": (module.CloseIORequest, self.close_io),
            "Update": (module.UpdateTaskRequest, self.update),
            "Wait": (module.WaitRequest, self.wait),
            "Stats": (module.StatsRequest, self.stats),
            "Connect": (module.ConnectRequest, self.connect),
            "Shutdown": (module.ShutdownRequest, self.shutdown),
        }


def _init_not_running(task: Task) -> TtrpcError:
    """Why an exec is refused. Exec and Start also refuse once the init is reaped, though it reads
    RUNNING until its exit is recorded (after the stdio drain and the execs' exits): an exec let in
    then would run in a dead container and could publish its exit after the init's, which must be
    the last (containerd #10589)."""
    return TtrpcError(Code.FAILED_PRECONDITION, f"container {task.id} init process is not running")


def _timestamp(ns: int) -> Any:
    """A protobuf Timestamp of `ns` since the epoch; 0 (not exited) is Go's zero time, which containerd
    reads as "no time" (a zero Timestamp would be a real time in 1970)."""
    from google.protobuf import timestamp_pb2

    if not ns:
        return timestamp_pb2.Timestamp(seconds=GO_ZERO_TIME_SECONDS)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def _json_object(data: bytes, what: str) -> dict:
    """The JSON object containerd packed into an Any ({} when empty); INVALID_ARGUMENT naming `what`
    otherwise, so a bad request never reaches the runtime."""
    try:
        value = json.loads(data or b"{}")
    except ValueError as e:
        raise TtrpcError(Code.INVALID_ARGUMENT, f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise TtrpcError(Code.INVALID_ARGUMENT, f"{what} must be a JSON object, got {type(value).__name__}")
    return value
