"""The ``Container`` object: create / start / state / kill / pids / exec / pause / resume /
update / stats / delete, per the OCI runtime-spec lifecycle.

Only ``create`` and ``exec`` fork (they must be called from a plain, non-async process whose
ancestor is a child subreaper: the init and exec processes are re-parented there and never waited
for here). Every other verb works from the state on disk alone, from any process or thread.
"""

import errno
import json
import logging
import os
import select
import signal
import stat
from dataclasses import dataclass
from typing import Callable

from . import security
from .cgroups import Cgroup, open_cgroup
from .channel import PeerGone
from .errors import ContainerExists, ContainerNotFound, InvalidState, RuntimeFailure, SpecError
from .process import PROC_NS, Launch, Spawned, kill_and_wait, spawn_exec, spawn_init
from .seccomp import send_listener
from .spec import Spec, load_spec, parse_process, personality_of, shares_pid_namespace
from .state import (CONFIG_FILE, EXEC_FIFO, Record, container_dir, exiting, is_alive,
                    read_record, remove_directory, start_time, write_record)
from .syscalls import readable

DEFAULT_ROOT = "/run/railcar"

log = logging.getLogger(__name__)


@dataclass
class CreateResult:
    pid: int
    console_fd: int | None     # pty master; the caller owns it
    started: int               # the process's start time (state.start_time): its identity beyond a pid


@dataclass
class ContainerState:
    id: str
    status: str                # "creating" | "created" | "running" | "paused" | "stopped"
    pid: int
    bundle: str
    annotations: dict[str, str]


def _run_hooks(kind: str, hooks: list, state: dict) -> None:
    from .hooks import run_hooks   # only containers with hooks pay for the import
    run_hooks(kind, hooks, state)


def _in_container_hooks(spec: Spec) -> Callable[[str, list, dict], None] | None:
    """What the init runs createContainer and startContainer hooks with. Imported here, before the
    fork: the init runs startContainer hooks after pivot_root, where railcar is out of its reach."""
    if not (spec.hooks.get("createContainer") or spec.hooks.get("startContainer")):
        return None
    from .hooks import run_hooks
    return run_hooks


class Container:
    """A container known by its state directory ``<root>/<id>``."""

    def __init__(self, directory: str, record: Record) -> None:
        self._dir = directory
        self._record = record

    id = property(lambda self: self._record.id)
    bundle = property(lambda self: self._record.bundle)
    init_pid = property(lambda self: self._record.init_pid)
    cgroup_state = property(lambda self: self._record.cgroup)  # `Cgroup.to_state()`, for `Cgroup.from_state`

    # --- create ---------------------------------------------------------------------------

    @classmethod
    def create(cls, container_id: str, bundle: str, *, root: str = DEFAULT_ROOT,
               stdio: tuple[int, int, int] | None = None,
               terminal: bool | None = None) -> tuple["Container", CreateResult]:
        """Set the container up and leave its init blocked before execve of the user program.

        Any failure raises ``RuntimeFailure`` (``SpecError`` for config.json) and leaves nothing
        behind: no state directory, cgroup, mount or process.
        """
        spec = load_spec(bundle)
        if spec.process is None:
            raise SpecError("process", "is required to create a container")
        if not os.path.isdir(spec.root_path):
            raise SpecError("root.path", f"{spec.root_path} is not a directory" if os.path.exists(spec.root_path)
                            else f"{spec.root_path} does not exist")
        plan = security.prepare(spec.process.raw, spec.linux.raw)
        directory = container_dir(root, container_id)
        os.makedirs(root, 0o711, exist_ok=True)
        try:
            os.mkdir(directory, 0o711)
        except FileExistsError:
            raise ContainerExists(container_id) from None
        record = Record(id=container_id, bundle=spec.bundle, oci_version=spec.oci_version,
                        annotations=spec.annotations)
        cgroup: Cgroup | None = None
        oom_kills: int | None = None
        spawned = None
        try:
            with open(os.path.join(directory, CONFIG_FILE), "w") as f:
                json.dump(spec.raw, f)
            _make_exec_fifo(os.path.join(directory, EXEC_FIFO), spec)
            cgroup = _unused(open_cgroup(spec.linux.cgroups_path, container_id))
            record.cgroup = cgroup.to_state()
            write_record(directory, record)   # from here on, delete can find the cgroup
            cgroup.create(_with_allowed_devices(spec))
            oom_kills = _oom_kills(cgroup)  # a reused cgroup may have counted kills already
            container = cls(directory, record)

            def on_forked(pid: int) -> None:
                started = start_time(pid)
                if started is None:
                    raise RuntimeFailure("namespaces", "the container init died right away")
                record.init_pid, record.init_start_time = pid, started
                write_record(directory, record)
                state = container._hook_state("creating")
                for kind in ("prestart", "createRuntime"):
                    if spec.hooks.get(kind):
                        _run_hooks(kind, spec.hooks[kind], state)

            _give_stdio(stdio, spec.linux.raw, spec.process.user.uid)
            fifo = os.open(os.path.join(directory, EXEC_FIFO), os.O_PATH | os.O_CLOEXEC)
            try:
                launch = Launch(spec=spec, process=spec.process, stdio=stdio,
                                terminal=spec.process.terminal if terminal is None else terminal,
                                cgroup=cgroup, security=plan, run_hooks=_in_container_hooks(spec),
                                hook_state=container._hook_state("creating"),
                                exec_fifo=fifo, session_keyring=_session_keyring(container_id),
                                personality=spec.linux.personality,
                                seccomp_listener=container._listener_to_agent(plan, "creating"))
                spawned = spawn_init(launch, on_forked)
            finally:
                os.close(fifo)
            record.created = True
            write_record(directory, record)
        except BaseException as e:
            # A helper that died without a word while the OOM killer struck in its cgroup was its victim.
            oom_killed = isinstance(e, PeerGone) and oom_kills is not None and _oom_kills(cgroup) > oom_kills
            if spawned is not None:   # parked in its cgroup (which it has to leave first) and ours
                _kill_parked(spawned, record.init_start_time)
            if cgroup is not None:
                cgroup.destroy()
            remove_directory(directory)
            if spec.hooks.get("poststop"):   # runtime-spec: a failed create ends as a delete does (runc too)
                cls(directory, record)._run_poststop(spec.hooks["poststop"])
            if oom_killed:
                limit = ((spec.linux.resources or {}).get("memory") or {}).get("limit")
                cause = (f"linux.resources.memory.limit ({limit}) is too low" if limit is not None and limit > 0
                         else "memory is short on the host or in a parent cgroup")
                raise RuntimeFailure("cgroups", "the OOM killer killed the container while it was being "
                                                f"set up: {cause}") from None
            raise
        return container, CreateResult(spawned.pid, spawned.console_fd, spawned.started)

    @classmethod
    def load(cls, container_id: str, *, root: str = DEFAULT_ROOT) -> "Container":
        directory = container_dir(root, container_id)
        try:
            record = read_record(directory, container_id)
        except ContainerNotFound:
            if not os.path.isdir(directory):
                raise
            # A creator crashed before writing anything: nothing to kill, only the dir to drop.
            record = Record(id=container_id, bundle="")
        return cls(directory, record)

    # --- queries ----------------------------------------------------------------------------

    def _cgroup(self) -> Cgroup | None:
        return Cgroup.from_state(self._record.cgroup) if self._record.cgroup else None

    def _alive(self) -> bool:
        return is_alive(self._record.init_pid, self._record.init_start_time)

    def status(self) -> str:
        if not self._alive():
            return "stopped" if self._record.created or not self._record.init_pid else "creating"
        if not self._record.created:
            return "creating"
        cgroup = self._cgroup()
        if cgroup is not None and cgroup.frozen():
            return "paused"
        return "created" if os.path.exists(os.path.join(self._dir, EXEC_FIFO)) else "running"

    def state(self) -> ContainerState:
        status = self.status()
        return ContainerState(self.id, status, 0 if status == "stopped" else self.init_pid,
                              self.bundle, dict(self._record.annotations))

    def _hook_state(self, status: str) -> dict:
        return {"ociVersion": self._record.oci_version, "id": self.id, "status": status,
                "pid": self.init_pid if status != "stopped" else 0, "bundle": self.bundle,
                "annotations": dict(self._record.annotations)}

    def _listener_to_agent(self, plan: security.SecurityPlan, status: str) -> Callable[[int, int], None] | None:
        """What sends a process's seccomp listener to the agent at linux.seccomp.listenerPath, with
        the container's state as `status` (runc's: creating for the init, running for an exec)."""
        program = plan.seccomp
        if program is None or not program.notifies:
            return None
        return lambda pid, listener: send_listener(program, self._hook_state(status), pid, listener)

    def _stored_config(self) -> dict:
        """The config.json saved at create (validated then)."""
        with open(os.path.join(self._dir, CONFIG_FILE), "rb") as f:
            return json.load(f)

    def _stored_hooks(self, kind: str) -> list:
        """The ``kind`` hooks only: start and delete need no more, so they skip re-validating."""
        return (self._stored_config().get("hooks") or {}).get(kind) or []

    def pids(self) -> list[int]:
        cgroup = self._cgroup()
        return cgroup.pids() if cgroup is not None else []

    # --- verbs ------------------------------------------------------------------------------

    def _open_init(self, verb: str) -> int:
        """A pidfd for the init, verified against the recorded start time (pid reuse)."""
        try:
            pidfd = os.pidfd_open(self.init_pid)
        except (ProcessLookupError, ValueError, OSError):
            raise InvalidState(verb, "stopped") from None
        if not self._alive():
            os.close(pidfd)
            raise InvalidState(verb, "stopped")
        return pidfd

    def start(self) -> None:
        """Let the parked init execve the user program; returns once it has been let go."""
        status = self.status()
        if status != "created":
            raise InvalidState("start", status)
        fifo_path = os.path.join(self._dir, EXEC_FIFO)
        pidfd = self._open_init("start")
        try:
            fifo = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            os.close(pidfd)
            raise InvalidState("start", "running") from None
        try:
            poller = select.poll()
            poller.register(fifo, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            while True:
                ready = dict(poller.poll())
                if ready.get(fifo, 0) & (select.POLLIN | select.POLLHUP):
                    if os.read(fifo, 1):
                        break
                if pidfd in ready:
                    raise RuntimeFailure("start", "the container init exited before start")
        finally:
            os.close(fifo)
            os.close(pidfd)
        os.unlink(fifo_path)
        hooks = self._stored_hooks("poststart")
        if hooks:
            try:
                _run_hooks("poststart", hooks, self._hook_state("running"))
            except RuntimeFailure:
                self.kill(signal.SIGKILL, all=True)
                raise

    def kill(self, sig: int, *, all: bool = False) -> None:
        """Signal the init, or with ``all`` every process of the container (its cgroup: also those
        that outlived the init, which only a container without a pid namespace of its own has).
        As in runc, SIGKILL goes to the whole cgroup of such a container, and a paused container is
        thawed after a SIGKILL (on cgroup v1, a frozen process would not die)."""
        cgroup = self._cgroup()
        if sig == signal.SIGKILL and self.shares_pids():
            all = True
        if all and cgroup is not None:
            cgroup.kill_all(sig)
            return
        pidfd = self._open_init("kill")
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            raise InvalidState("kill", "stopped") from None
        finally:
            os.close(pidfd)
        if sig == signal.SIGKILL and cgroup is not None:
            try:
                if cgroup.frozen():
                    cgroup.thaw()
            except (OSError, RuntimeFailure) as e:  # the SIGKILL went out: not a failed kill (runc ignores it too)
                log.warning("container %s: cannot thaw after SIGKILL: %s", self.id, e)

    def shares_pids(self) -> bool:
        """No pid namespace of its own (an unreadable config counts as such: a sweep too many
        costs nothing, one too few leaves processes behind)."""
        try:
            return shares_pid_namespace(self._stored_config().get("linux"))
        except (OSError, ValueError, AttributeError):
            return True

    def exec(self, process: dict, *, stdio: tuple[int, int, int] | None = None,
             terminal: bool = False) -> CreateResult:
        """Run another process in the container's namespaces and cgroup; returns once it
        execve'd. Its pid is re-parented to the caller's subreaper like the init."""
        # The container's state first, as runc's: a stopped one (or one half deleted, its config.json
        # gone) answers "stopped", whatever the process asks for.
        pidfd = self._open_init("exec")
        ns_fds: list[tuple[int, int]] = []
        try:
            proc = parse_process(process)
            # Only linux (seccomp, id mappings) is needed from the config validated at create: no re-validation.
            linux = self._stored_config().get("linux") or {}
            plan = security.prepare(process, linux)
            _give_stdio(stdio, linux, proc.user.uid)
            for name, flag in PROC_NS:
                theirs = f"/proc/{self.init_pid}/ns/{name}"
                try:
                    if _same_inode(os.stat(theirs), os.stat(f"/proc/self/ns/{name}")):
                        continue
                except OSError:   # a namespace type this kernel lacks, or the init is gone
                    continue
                ns_fds.append((os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), flag))
            if not self._alive():   # the pid was reused while we opened: not our container
                raise InvalidState("exec", "stopped")
            try:
                spawned = spawn_exec(Launch(spec=None, process=proc, stdio=stdio, terminal=terminal,
                                            cgroup=self._cgroup(), security=plan, ns_fds=ns_fds,
                                            init_pid=self.init_pid, session_keyring=_session_keyring(self.id),
                                            personality=personality_of(linux),
                                            seccomp_listener=self._listener_to_agent(plan, "running")))
            except RuntimeFailure as e:
                # An exec racing its container's end: the init's exit kills what is in its pid
                # namespace, and the helper reports only the symptom (a process that died without a
                # word, a pipe to it broken). The container's end is the answer, as before the race.
                # (The pidfd tells whether the pid is still the init's; then its state whether it is
                # exiting: it is, from before it kills the others.)
                if (isinstance(e, PeerGone) or e.stage == "internal") and (readable(pidfd, 0)
                                                                          or exiting(self.init_pid)):
                    raise InvalidState("exec", "stopped") from None
                raise
        finally:
            os.close(pidfd)
            for fd, _ in ns_fds:
                os.close(fd)
        return CreateResult(spawned.pid, spawned.console_fd, spawned.started)

    def pause(self) -> None:
        self._require_cgroup("pause").freeze()

    def resume(self) -> None:
        self._require_cgroup("resume").thaw()

    def update(self, resources: dict) -> None:
        """New limits. Device rules stay as create set them (as runc's update leaves them): CRI sends
        the spec's whole resources, whose rules alone would drop the deny-all and the defaults."""
        if isinstance(resources, dict):
            resources = {k: v for k, v in resources.items() if k != "devices"}
        self._require_cgroup("update").update(resources)

    def stats(self) -> dict:
        return self._require_cgroup("stats").stats()

    def _require_cgroup(self, verb: str) -> Cgroup:
        cgroup = self._cgroup()
        if cgroup is None:
            raise RuntimeFailure(verb, f"container {self.id!r} has no cgroup")
        return cgroup

    def delete(self, *, force: bool = False) -> None:
        """Remove everything create made; a no-op for an already deleted container.

        A created container is killed as runc does; a running or paused one only with ``force``.
        """
        if not os.path.isdir(self._dir):
            return
        status = self.status()
        if status in ("running", "paused") and not force:
            raise InvalidState("delete", f"{status} (use force)")
        cgroup = self._cgroup()
        # No waiting for the init to die here: a dying pid-namespace init only finishes once the
        # caller has reaped the namespace's other zombies, and the caller may be the very thread
        # that reaps. The cgroup removal below waits for the processes. Without a pid namespace of
        # its own, processes can outlive a stopped init: they go too (as in runc's destroy).
        alive = self._alive()
        if cgroup is not None and (alive or self.shares_pids()):
            cgroup.kill_all(signal.SIGKILL)
        elif alive:
            self.kill(signal.SIGKILL)
        if cgroup is not None:
            cgroup.destroy()
        hooks = self._stored_hooks("poststop") if self._record.created else None
        # The state goes before the hooks run, as in runc's destroy: a delete whose process dies
        # while they run (its worker killed) leaves the next delete nothing to do, hooks included.
        remove_directory(self._dir)
        if hooks:
            self._run_poststop(hooks)

    def _run_poststop(self, hooks: list) -> None:
        """Run them with the state of a stopped container, from the record in memory (its files
        are gone by now)."""
        try:
            _run_hooks("poststop", hooks, self._hook_state("stopped"))
        except RuntimeFailure as e:   # runtime-spec: log it, and the delete goes on
            log.warning("container %s: %s; deleting anyway", self.id, e)


def _session_keyring(container_id: str) -> str:
    """The name of the container's session keyring, which its init makes and its execs join (runc's)."""
    return f"_ses.{container_id}"


def _unused(cgroup: Cgroup) -> Cgroup:
    """`cgroup`, if no process is in it and it is not frozen. As runc does, railcar refuses to share
    a cgroup: killing one container would kill the other (Delete sweeps what is left in it)."""
    if cgroup.pids():
        raise RuntimeFailure("cgroups", f"linux.cgroupsPath: cgroup {cgroup.path} is not empty")
    if cgroup.frozen():
        raise RuntimeFailure("cgroups", f"linux.cgroupsPath: cgroup {cgroup.path} is frozen")
    return cgroup


def _oom_kills(cgroup: Cgroup) -> int:
    """The cgroup's OOM kill count; 0 if it cannot be read (only an explanation depends on it)."""
    try:
        return cgroup.oom_kills()
    except Exception:
        return 0


def _kill_parked(spawned: Spawned, started: int) -> None:
    """Undo a successful spawn_init when create fails after it: SIGKILL the parked init and wait
    until it is gone (it has no children: it dies at once, and a zombie leaves its cgroup), then
    close its pty master. Through a pidfd checked against the start time: never a reused pid."""
    if spawned.console_fd is not None:
        os.close(spawned.console_fd)
    try:
        pidfd = os.pidfd_open(spawned.pid)
    except ProcessLookupError:
        return
    try:
        if is_alive(spawned.pid, started):
            kill_and_wait(pidfd)
    finally:
        os.close(pidfd)


# What every container may use whatever linux.resources.devices says (runc's AllowedDevices, as
# (type, major, minor, access), None a wildcard): making any device node (opening one still needs
# a rule), the default /dev nodes, the pty multiplexer and slaves, /dev/tty, and /dev/net/tun
# (runc kept it for the tools that cannot add a rule). Not the host's /dev/console (5:1).
_ALLOWED_DEVICES = (("c", None, None, "m"), ("b", None, None, "m"),
                    *((t, ma, mi, "rwm") for t, ma, mi in (
                        ("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9),
                        ("c", 5, 0), ("c", 5, 2), ("c", 136, None), ("c", 10, 200))))


def _with_allowed_devices(spec: Spec) -> dict:
    """``linux.resources`` with the device rules the cgroup gets, as runc builds them: deny
    everything (a container reaches no device its rules do not allow, even if they do not start
    with a deny), the spec's own rules, then the default devices. ``linux.devices`` makes nodes,
    not rules: containerd adds a rule for each device it lists."""
    resources = dict(spec.linux.resources or {})
    resources["devices"] = [
        {"allow": False, "access": "rwm"},
        *(resources.get("devices") or []),
        *({"allow": True, "type": t, **({} if ma is None else {"major": ma}),
           **({} if mi is None else {"minor": mi}), "access": access} for t, ma, mi, access in _ALLOWED_DEVICES)]
    return resources


def _make_exec_fifo(path: str, spec: Spec) -> None:
    """The FIFO the init parks on, writable by the container's root (as runc makes it)."""
    os.mkfifo(path, 0o600)
    os.chmod(path, 0o622)   # mkfifo's mode went through the umask
    uid = _host_id(spec.linux.raw.get("uidMappings"), 0) or 0
    gid = _host_id(spec.linux.raw.get("gidMappings"), 0) or 0
    if uid or gid:
        os.chown(path, uid, gid)


def _give_stdio(stdio: tuple[int, int, int] | None, linux: dict, uid: int) -> None:
    """As runc: make the process's user the owner of its stdio pipes, so that it may open them
    again (/dev/stdout is /proc/self/fd/1, which checks the pipe's permissions: a program logging
    to /dev/stdout as a non-root user lost its output). Done here, as host root, with the user's
    host uid: inside a user namespace the pipes' owner (host root) is not mapped. /dev/null, what
    the user owns already, and what the kernel will not hand over are left as they are."""
    host_uid = _host_id(linux.get("uidMappings"), uid)
    if stdio is None or host_uid is None:
        return
    for fd in set(stdio):
        st = os.fstat(fd)
        if st.st_uid == host_uid or (stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)):
            continue
        try:
            os.fchown(fd, host_uid, -1)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise


def _host_id(mappings: list | None, container_id: int) -> int | None:
    """The host id of `container_id` under linux.uidMappings or gidMappings (JSON validated at
    create): itself without mappings, None if they leave it out."""
    if not mappings:
        return container_id
    return next((m["hostID"] + container_id - m["containerID"] for m in mappings
                 if m["containerID"] <= container_id < m["containerID"] + m["size"]), None)


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
