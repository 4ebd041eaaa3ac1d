"""The forked helpers: the intermediate that enters namespaces and the container init / exec.

Caller ── fork ──▶ intermediate: joins the cgroup, setns() into namespaces given by path,
                   unshares the new ones (user first; the caller writes its id maps), then forks
  └────────────────────▶ init: pid 1 of the new pid namespace; rootfs, pivot_root, process setup,
                         then parks on the exec FIFO until ``start``, then execve.
The intermediate exits as soon as it reported the init's pid, so the init is re-parented to the
caller's child subreaper; the caller only ever waits for the intermediate, never for the init.
An exec's intermediate stays out of the container's cgroup: the exec process is in it before it
does anything (on v1 it moves itself first thing, on v2 the caller moves it; see _exec_intermediate).

Every stage reports over one SOCK_SEQPACKET channel (``channel``); a failure anywhere comes back
as ``RuntimeFailure(stage, cause)`` and the half-made init is killed (via a pidfd, so a reused
pid is never hit). Helpers are non-dumpable and close every fd they do not need right after fork;
the init closes everything but 0-2 immediately before execve.
"""

import errno
import fcntl
import os
import resource
import _signal
import signal
import socket
import stat
import struct
import termios
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, NoReturn

from . import procfs, rootfs
from . import syscalls as sc
from .channel import (Channel, Console, ExecForked, Failed, HooksDone, IdsMapped, InitForked, Joined, MapIds,
                      MountSource, MountTree, Parked, PeerGone, ListenerPassed, RootfsReady, SeccompListener)
from .errors import RuntimeFailure
from .mounts import open_in_root
from .spec import MAX_CPU, RLIM_UNLIMITED, SCHED_POLICIES, IdMapping, Mount, Namespace, Process, Spec
from .state import start_time

if TYPE_CHECKING:
    from .cgroups import Cgroup
    from .security import SecurityPlan

NS_FLAGS = {"user": sc.CLONE_NEWUSER, "mount": sc.CLONE_NEWNS, "pid": sc.CLONE_NEWPID,
            "network": sc.CLONE_NEWNET, "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS,
            "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME}
# /proc/PID/ns names, in the order an exec joins them (user first: it owns the others).
PROC_NS = (("user", sc.CLONE_NEWUSER), ("mnt", sc.CLONE_NEWNS), ("pid", sc.CLONE_NEWPID),
           ("net", sc.CLONE_NEWNET), ("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
           ("cgroup", sc.CLONE_NEWCGROUP), ("time", sc.CLONE_NEWTIME))
HELPER_TITLE = "railcar init"  # the command line of a helper that goes into a container (see _run_child)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEY_USR_SEARCH = 0x00080000  # linux/key.h: the key's owner may search it
KEY_OTH_SEARCH = 0x00000008  # anyone may
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1  # linux/sockios.h, linux/if.h


def _helper_title() -> tuple[int, bytes]:
    """HELPER_TITLE over our argument strings (as much as fits, NUL-padded): where, and what to write.
    Worked out once, on import: every helper forked from this process has them at that address."""
    address, size = sc.command_line_area()
    return address, HELPER_TITLE.encode()[:max(size - 1, 0)].ljust(size, b"\0")


_TITLE_AT, _TITLE = _helper_title()


@dataclass
class Launch:
    """Everything the forked helpers need, prepared in the caller before fork."""
    spec: Spec | None                   # init only (an exec needs just its process)
    process: Process
    stdio: tuple[int, int, int] | None
    terminal: bool
    cgroup: "Cgroup | None" = None
    security: "SecurityPlan | None" = None
    run_hooks: Callable[[str, list, dict], None] | None = None
    hook_state: dict | None = None      # init only: the container state, but for the pid HooksDone brings
    exec_fifo: int = -1                 # init only: O_PATH fd of the FIFO it parks on
    ns_fds: list[tuple[int, int]] = field(default_factory=list)   # exec only: (fd, nstype)
    init_pid: int = 0                   # exec only: the container's init (its cgroup may be the one to join)
    session_keyring: str | None = None  # the container's own session keyring ("_ses.<id>", as runc names it)
    personality: int | None = None      # linux.personality's domain, for the init and every exec
    # With SCMP_ACT_NOTIFY rules: (pid, listener fd) -> sends it to the agent, in the caller.
    seccomp_listener: Callable[[int, int], None] | None = None
    # The signals the caller has away from their default action, which its helpers inherit and the
    # container's process sets back before its execve (set by _fork_helper, see _default_signals).
    signals: tuple[int, ...] = ()

    def keep_fds(self) -> set[int]:
        fds = {*(self.stdio or ()), *(fd for fd, _ in self.ns_fds)}
        return fds | {self.exec_fifo} if self.exec_fifo >= 0 else fds


@dataclass
class Spawned:
    pid: int
    console_fd: int | None
    started: int | None   # its start time (state.start_time); None: it was reaped already


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Turn any failure inside the block into ``RuntimeFailure(name, cause)``."""
    try:
        yield
    except RuntimeFailure:
        raise
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise RuntimeFailure(name, f"{e.strerror or e}{where}") from None
    except Exception as e:
        raise RuntimeFailure(name, f"{type(e).__name__}: {e}") from None


# --- caller side ---------------------------------------------------------------------------

def spawn_init(launch: Launch, on_forked: Callable[[int], None]) -> Spawned:
    """Fork the intermediate and the init; return once the init is parked before execve.

    ``on_forked(pid)`` runs in the caller once the init exists in its namespaces and has its
    mounts up (record the pid, run prestart/createRuntime hooks). The init mounts while the
    intermediate is still reporting, so its RootfsReady may overtake InitForked: both are awaited
    in either order.
    """
    parent, child = Channel.pair()
    helper = _fork_helper(parent, child, launch, _intermediate)
    with ExitStack() as owned:
        owned.callback(parent.close)
        # Reaped only at the end: its exit overlaps with our work and the init's.
        owned.enter_context(_reaping(helper))
        namespaces: dict[tuple, int] = {}   # the idmapped binds' user namespaces, one per mapping
        owned.callback(lambda: [os.close(fd) for fd in namespaces.values()])
        pid, mounted = 0, False
        asked: list[int] = []   # idmapped binds the init asked for before we knew its pid
        while not (pid and mounted):
            msg, fds = parent.recv("rootfs" if pid else "namespaces", MapIds, InitForked, MountSource, RootfsReady)
            if isinstance(msg, MapIds):
                linux = launch.spec.linux
                with stage("namespaces"):
                    _write_id_maps(msg.pid, linux.uid_mappings, linux.gid_mappings)
                if linux.time_offsets and any(ns.type == "time" and not ns.path for ns in linux.namespaces):
                    _write_time_offsets(msg.pid, linux.time_offsets)   # (unshared with the user namespace)
                parent.send(IdsMapped())
            elif isinstance(msg, InitForked):
                pid = msg.pid
                pidfd = _own(owned, fds)
            elif isinstance(msg, MountSource):
                asked.append(msg.index)
            else:
                mounted = True
            while pid and asked:
                tree = _idmapped_tree(launch.spec, asked.pop(0), pid, pidfd, namespaces)
                try:
                    parent.send(MountTree(), [tree])
                finally:
                    os.close(tree)
        on_forked(pid)
        parent.send(HooksDone(pid))
        console = None
        while True:
            msg, fds = parent.recv("process", Console, SeccompListener, Parked)
            if isinstance(msg, Parked):
                return Spawned(pid, console, _started(pid, pidfd))
            if isinstance(msg, Console):
                console = _own_console(owned, fds)
                continue
            _pass_listener(launch, pid, _closed_by(owned, fds))
            parent.send(ListenerPassed())


def spawn_exec(launch: Launch) -> Spawned:
    """Fork a process into the namespaces in ``launch.ns_fds``; return once it has execve'd."""
    parent, child = Channel.pair()
    helper = _fork_helper(parent, child, launch, _exec_intermediate)
    with ExitStack() as owned:
        owned.callback(parent.close)
        owned.enter_context(_reaping(helper))   # as in spawn_init: reaped at the end
        # The intermediate's report and the exec process's may arrive in either order.
        pid = parked = console = None
        listener: list[int] | None = None
        while pid is None or parked is None:
            msg, fds = parent.recv("process", ExecForked, Console, SeccompListener, Parked)
            if isinstance(msg, ExecForked):
                pid = msg.pid
                pidfd = _own(owned, fds)
                if launch.cgroup is not None and launch.cgroup.version == 2 and not msg.joined:
                    # it waits at its gate, its pid held by its parent
                    with stage("cgroups"):
                        if os.waitid(os.P_PID, helper, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                            raise RuntimeFailure("cgroups", "the exec's helper died before the process "
                                                            "was moved into the container's cgroup")
                        launch.cgroup.join(launch.init_pid, pid=pid)
                parent.send(Joined())
            elif isinstance(msg, Console):
                console = _own_console(owned, fds)
            elif isinstance(msg, SeccompListener):
                listener = _closed_by(owned, fds)
            else:
                parked = msg
            if listener is not None and pid is not None:   # the process waits for this to go on
                _pass_listener(launch, pid, listener)
                listener = None
                parent.send(ListenerPassed())
        parent.wait_closed("exec")   # the channel is close-on-exec: EOF means execve worked
        return Spawned(pid, console, _started(pid, pidfd))


def _started(pid: int, pidfd: int) -> int | None:
    """The start time of our new process `pid`, or None if it has been reaped already (a short exec
    may have been, by the caller's subreaper). The pidfd, signalled after the read, tells whether
    /proc/<pid> was still that process when it was read."""
    started = start_time(pid, zombie=True)
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return None
    return started


def _closed_by(owned: ExitStack, fds: list[int]) -> list[int]:
    """``fds``, closed when ``owned`` unwinds."""
    for fd in fds:
        owned.callback(os.close, fd)
    return fds


def _pass_listener(launch: Launch, pid: int, fds: list[int]) -> None:
    """Send process `pid`'s seccomp listener on to the agent."""
    if launch.seccomp_listener is None or len(fds) != 1:
        raise RuntimeFailure("seccomp", "a seccomp listener came that nobody asked for")
    launch.seccomp_listener(pid, fds[0])


def _own(owned: ExitStack, fds: list[int]) -> int:
    """Hold the pidfd of a half-made process that came with its report until ``owned`` unwinds, and
    return it; if that is by an error, the process is killed and waited for first (through the
    pidfd: a reused pid is never hit)."""
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise RuntimeFailure("process", "a helper reported a process without its pidfd")
    pidfd = fds[0]

    def release(failed: type[BaseException] | None, *_: object) -> None:
        try:
            if failed is not None:
                kill_and_wait(pidfd)
        finally:
            os.close(pidfd)
    owned.push(release)
    return pidfd


def _own_console(owned: ExitStack, fds: list[int]) -> int:
    """The pty master that came with a Console message; closed by ``owned`` only if spawning
    fails after all (on success the caller of spawn_* owns it)."""
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise RuntimeFailure("process", "a helper reported a terminal without its pty master")
    console = fds[0]
    owned.push(lambda failed, *_: os.close(console) if failed is not None else None)
    return console


def _fork_helper(parent: Channel, child: Channel, launch: Launch,
                 body: Callable[[Channel, Launch], None]) -> int:
    keep = launch.keep_fds() | {child.fileno()}
    launch.signals = sc.signals_not_default()
    # Straight into the cgroup where it offers that (v2, or a hybrid host's v2 tree), else as usual
    # (the intermediate joins then).
    try:
        target = launch.cgroup.open_fork_target(
            "exec helper" if launch.init_pid else "init helper") if launch.cgroup is not None else None
    except OSError:   # (the cgroup gone, say): the intermediate's join says what is wrong
        target = None
    pid = _forked_into(target, single_threaded=False)
    if pid is None:
        pid = os.fork()
    if pid == 0:
        _run_child(child, keep, body, launch, from_caller=True)
    child.close()
    return pid


def _forked_into(target: int | None, single_threaded: bool, at_limit: str = "") -> int | None:
    """fork_into_cgroup into the cgroup v2 directory `target`, which this closes (in both processes);
    None if there is no target, or the kernel or glibc refused (a kernel before 5.7, a cgroup that
    takes no process): the caller forks as usual, and the process is moved in, slower. At the pids
    limit (EAGAIN) that would take the cgroup over it: with `at_limit` (what was to be forked), that
    fails instead."""
    if target is None:
        return None
    try:
        return sc.fork_into_cgroup(target, single_threaded)
    except OSError as e:
        if at_limit and e.errno == errno.EAGAIN:
            raise RuntimeFailure("cgroups", f"{at_limit} cannot be forked into the container's cgroup: it is "
                                            "at its pids limit") from None
        return None
    finally:
        os.close(target)


@contextmanager
def _reaping(helper: int) -> Iterator[None]:
    """Wait for our own intermediate after the block; kill it first if the block failed."""
    try:
        yield
    except BaseException:
        os.kill(helper, signal.SIGKILL)
        raise
    finally:
        os.waitpid(helper, 0)


def kill_and_wait(pidfd: int) -> None:
    """SIGKILL a half-made process and wait until it is dead (we are not its parent)."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        return
    sc.readable(pidfd)


def _write_id_maps(pid: int, uid_maps: tuple[IdMapping, ...], gid_maps: tuple[IdMapping, ...],
                   where: str = "linux") -> None:
    """The id maps of `pid`'s new user namespace; `where` names the spec object they come from."""
    def fmt(maps: tuple[IdMapping, ...]) -> bytes:
        return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps).encode()

    for name, field, maps in (("uid_map", "uidMappings", uid_maps), ("gid_map", "gidMappings", gid_maps)):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, fmt(maps))
        except OSError as e:
            raise RuntimeFailure("namespaces", f"{where}.{field}: the kernel refused them ({e.strerror}): "
                                               "ranges that overlap, more than 340 of them, or host ids "
                                               "this runtime may not map?") from None
        finally:
            os.close(fd)


def _idmapped_tree(spec: Spec, index: int, init: int, pidfd: int, namespaces: dict[tuple, int]) -> int:
    """spec.mounts[index] as an idmapped detached mount, made as runc 1.2 makes it: by a child of
    ours that keeps our user namespace (mount_setattr MOUNT_ATTR_IDMAP needs privilege over the
    file system and the mapping, which the init, in the container's, lacks) but joins the init's
    mount namespace. There the source is what the init would bind at this point of its mounts, and
    the clone keeps the locks the kernel put on the mounts copied into a less privileged namespace
    (a clone made in ours would let the container unmount what hides host files below a submount,
    or make a read-only mount writable)."""
    m = spec.mounts[index]
    where = f"mounts[{index}] ({m.source} on {m.destination})"
    with stage("rootfs"):
        if m.idmap_userns_path:   # the one the init joined, through the init: the pidfd check covers it
            userns = os.open(f"/proc/{init}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            namespaces[(m.idmap_userns_path, index)] = userns
        else:
            key = (m.uid_mappings, m.gid_mappings)
            if key not in namespaces:
                namespaces[key] = _mapping_userns(m.uid_mappings, m.gid_mappings, f"mounts[{index}]")
            userns = namespaces[key]
        try:
            mnt = os.open(f"/proc/{init}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            mnt = -1
    try:
        if mnt < 0 or sc.readable(pidfd, 0):   # the pid was the init's when we opened it
            raise PeerGone("rootfs", "the container init died while it was being set up")
        ours, theirs = Channel.pair()
        pid = os.fork()
        if pid == 0:
            _run_child(theirs, {theirs.fileno(), mnt, userns}, _make_idmapped_tree, mnt, userns, m,
                       os.path.join(spec.bundle, m.source), where, from_caller=True)
        theirs.close()
        try:
            _, fds = ours.recv("rootfs", MountTree)
        finally:
            ours.close()
            os.waitpid(pid, 0)
    finally:
        if mnt >= 0:
            os.close(mnt)
    return fds[0]


def _make_idmapped_tree(ch: Channel, mnt: int, userns: int, m: Mount, source: str, where: str) -> None:
    sc.setns(mnt, sc.CLONE_NEWNS)
    recursive = "rbind" in m.options or "bind" not in m.options   # type "bind" alone is rbind
    try:
        tree = sc.clone_tree(source, recursive)
    except OSError as e:
        raise RuntimeFailure("rootfs", f"{where}: cannot bind it: {e.strerror}") from None
    try:
        sc.idmap_tree(tree, userns, m.idmap_recursive, source)
    except OSError as e:
        hint = " (a file system without idmapped mounts on this kernel?)" if e.errno == errno.EINVAL else ""
        raise RuntimeFailure("rootfs", f"{where}: cannot idmap it: {e.strerror}{hint}") from None
    ch.send(MountTree(), [tree])


def _idmapped_tree_of(ch: Channel, index: int) -> int:
    """In the init: ask the caller for spec.mounts[index], idmapped (see _idmapped_tree)."""
    ch.send(MountSource(index))
    _, fds = ch.recv("rootfs", MountTree)
    return fds[0]


def _mapping_userns(uid_maps: tuple[IdMapping, ...], gid_maps: tuple[IdMapping, ...], where: str) -> int:
    """An fd of a new user namespace with these mappings, which only that fd holds: an idmapped
    mount's. A child unshares it and waits while we write its maps and open it."""
    ready, unshared = os.pipe2(os.O_CLOEXEC)
    hold, release = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready)
            os.close(release)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(unshared, b"1")
            os.read(hold, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(unshared)
    os.close(hold)
    try:
        if os.read(ready, 1) != b"1":
            raise RuntimeFailure("namespaces", f"{where}: cannot make a user namespace for its mappings")
        _write_id_maps(pid, uid_maps, gid_maps, where)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready)
        os.close(release)
        os.waitpid(pid, 0)


# --- helper side (forked; never returns into the caller's code) ----------------------------

def _run_child(ch: Channel, keep: set[int], body: Callable[..., None], *args: object,
               from_caller: bool = False) -> NoReturn:
    """``from_caller``: for a helper forked by the caller, not by another helper. It is still in the
    caller's mount namespace: its stdio becomes the host's /dev/null there (see _null_stdio), and
    its command line HELPER_TITLE. What it forks in the container's namespaces inherits both. A
    helper is seen in the container's pid namespace (a created container's init, an exec's process
    before its execve), where the caller's command line would show the host's (the interpreter's
    path, the daemon's arguments); runc's helpers read `runc init`."""
    code = 1
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        _close_fds_except(keep | {0, 1, 2})
        if from_caller:
            sc.write_memory(_TITLE_AT, _TITLE)
            _null_stdio(keep)
        body(ch, *args)
        code = 0
    except BaseException as e:
        failure = e if isinstance(e, RuntimeFailure) else RuntimeFailure(
            "internal", f"{type(e).__name__}: {e}")
        try:
            ch.send(Failed(failure.stage, failure.message))
        except BaseException:
            pass
    finally:
        os._exit(code)


def _null_stdio(keep: set[int]) -> None:
    """A helper goes into the container's namespaces, where a process with CAP_SYS_PTRACE may open
    its /proc/<pid>/fd: its 0-2 must not stay the daemon's, whose stderr is a FIFO on the host (in a
    pool, the log of another container's bundle). It reports on its channel; its process's own
    stdio comes in `keep`. The host's /dev/null: opened before any setns, never a container's path."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in {0, 1, 2} - keep - {null}:
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _close_fds_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 30)


def _join_cgroup(launch: Launch) -> None:
    """First thing in an init's intermediate, before any setns/unshare and fork: the container's
    processes must never run a line outside its cgroup."""
    if launch.cgroup is not None:
        with stage("cgroups"):
            launch.cgroup.join(launch.init_pid)


def _fork_child(ch: Channel, launch: Launch, body: Callable[..., None], *args: object,
                keep: frozenset[int] = frozenset()) -> int:
    """Fork the init or exec process from an intermediate; it keeps only the channel, ``launch``'s fds
    and `keep`. An init's intermediate is in the container's cgroup by then, so the init needs room
    for two processes under its pids limit for that moment."""
    try:
        pid = os.fork()
    except BlockingIOError:
        raise RuntimeFailure("process", "cannot fork the process: a pids limit is reached (the container's "
                                        "linux.resources.pids.limit, or the host's)") from None
    except OSError as e:
        if e.errno != errno.ENOMEM:
            raise
        # What fork says in a pid namespace whose init has exited (an exec racing the container's
        # end: its init is a zombie, not reaped yet), as well as when memory runs out.
        raise RuntimeFailure("process", "cannot fork the process: the pid namespace it is in has no init "
                                        "any more (the container has exited), or memory ran out") from None
    if pid == 0:
        _run_child(ch, launch.keep_fds() | {ch.fileno()} | keep, body, launch, *args)
    return pid


def _intermediate(ch: Channel, launch: Launch) -> None:
    linux = launch.spec.linux
    _join_cgroup(launch)
    _set_oom_score(launch.process)
    with stage("namespaces"):
        joins = sorted(((i, ns) for i, ns in enumerate(linux.namespaces) if ns.path),
                       key=lambda pair: pair[1].type != "user")
        fds = [(_open_namespace(i, ns), NS_FLAGS[ns.type]) for i, ns in joins]
        _setns_all(fds, [f"linux.namespaces[{i}] ({ns.type} {ns.path})" for i, ns in joins])
        new = {ns.type for ns in linux.namespaces if not ns.path}
        # A new time namespace with offsets comes with a new user namespace, at once: its offsets are
        # then written by the caller with the id maps, as runc's parent writes them (our own
        # /proc/self is host root's: we are not dumpable, and no longer host root).
        early = {"user"} | ({"time"} & new if linux.time_offsets else set()) if "user" in new else set()
        if early:
            _unshare(early)
            ch.send(MapIds(os.getpid()))
            ch.recv("namespaces", IdsMapped)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        _unshare(new - early)
        if "network" in new:
            _loopback_up()
        if "time" in new - early and linux.time_offsets:
            _write_time_offsets("self", linux.time_offsets)
    pid = _fork_child(ch, launch, _init)
    _report_forked(ch, InitForked(pid), pid)


def _write_time_offsets(pid: int | str, offsets: tuple[tuple[str, int, int], ...]) -> None:
    """linux.timeOffsets of `pid`'s new time namespace, before any process is in it."""
    with stage("namespaces"), open(f"/proc/{pid}/timens_offsets", "w") as f:
        f.write("".join(f"{c} {s} {n}\n" for c, s, n in offsets))


def _unshare(kinds: set[str]) -> None:
    """New namespaces of `kinds` (linux.namespaces without a path); a refusal names them."""
    flags = 0
    for kind in kinds:
        flags |= NS_FLAGS[kind]
    try:
        sc.unshare(flags)
    except OSError as e:
        raise RuntimeFailure("namespaces", f"linux.namespaces: cannot make new {', '.join(sorted(kinds))} "
                                           f"namespaces: {os.strerror(e.errno)}") from None


def _set_oom_score(proc: Process) -> None:
    """process.oomScoreAdj, written as runc writes it: by a helper still in the host's user
    namespace, which the container's processes inherit it from. Inside a user namespace a process
    cannot go below the floor its ancestors set with CAP_SYS_RESOURCE (the kernel checks that
    capability in the host's namespace): every railcar process runs at containerd's score + 1."""
    if proc.oom_score_adj is None:
        return
    try:
        procfs.write("self/oom_score_adj", str(proc.oom_score_adj))
    except OSError as e:
        raise RuntimeFailure("process", f"process.oomScoreAdj: cannot set {proc.oom_score_adj}: "
                                        f"{e.strerror} (lowering it needs CAP_SYS_RESOURCE; containerd's "
                                        "CRI clamps it with restrict_oom_score_adj)") from None


def _loopback_up() -> None:
    """Bring `lo` up in the network namespace we just made, before the createRuntime hooks look at it,
    as runc does: a new namespace's loopback is down, and CNI configurations (nerdctl's, for one)
    leave it to the runtime, so without this 127.0.0.1 is unreachable in the container."""
    request = struct.pack("16sH22x", b"lo", 0)  # struct ifreq: the name, then ifr_flags
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            (flags,) = struct.unpack_from("16xH", fcntl.ioctl(s, _SIOCGIFFLAGS, request))
            fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))
    except OSError as e:
        raise RuntimeFailure("namespaces",
                             f"cannot bring up lo in the new network namespace: {e.strerror}") from None


def _open_namespace(index: int, ns: Namespace) -> int:
    try:
        return os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise RuntimeFailure("namespaces", f"linux.namespaces[{index}] ({ns.type}): cannot open "
                                           f"{ns.path}: {e.strerror}") from None


def _setns_all(fds: list[tuple[int, int]], names: list[str] | None = None) -> None:
    """Join each namespace; a failure names it (`names`, in the order of `fds`) when given."""
    joined_user = False
    for i, (fd, nstype) in enumerate(fds):
        try:
            sc.setns(fd, nstype)
        except OSError as e:
            if names is None:
                raise
            hint = (" (not a namespace of that type, or one that cannot be joined from here?)"
                    if e.errno == errno.EINVAL else "")
            raise RuntimeFailure("namespaces", f"{names[i]}: cannot join it: {os.strerror(e.errno)}{hint}") from None
        os.close(fd)
        joined_user |= nstype == sc.CLONE_NEWUSER
    if joined_user:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def _make_cwd(cwd: str) -> None:
    """Make the init's working directory if the image lacks it (runc does; only for the init)."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(open_in_root(root, cwd, "dir"))
    except OSError as e:
        raise RuntimeFailure("process", f"process.cwd {cwd!r}: {e.strerror}") from None
    finally:
        os.close(root)


def _init(ch: Channel, launch: Launch) -> None:
    spec = launch.spec
    userns = spec.linux.namespace("user") is not None
    # The mounts go up first; then the caller records our pid and runs the prestart and
    # createRuntime hooks (which may look at them), as runtime-spec and runc order it.
    with stage("rootfs"):
        rootfs.prepare(spec, userns, lambda index: _idmapped_tree_of(ch, index))
    ch.send(RootfsReady())
    hooks_done, _ = ch.recv("rootfs", HooksDone)
    hook_state = {**(launch.hook_state or {}), "pid": hooks_done.pid}
    with stage("rootfs"):
        os.chdir(spec.root_path)  # where createContainer hooks run (runc's too): not the host's /
    _hooks(launch, "createContainer", hook_state)
    with stage("rootfs"):
        rootfs.pivot(spec.root_path)
        _make_cwd(spec.process.cwd)  # before the root may turn read-only, as runc does
        rootfs.finalize(spec)
    with stage("rootfs"):
        proc = procfs.root()   # checked now, before a seccomp filter may go in
    ready = _prepare_process(launch, ch)
    ch.send(Parked())  # ready to execve
    ch.close()
    # Blocks until `start` opens the FIFO for reading. Reopened through /proc/self/fd of the checked
    # procfs, which works for ourselves even non-dumpable and after the user switch; the FIFO's path
    # is not reachable from here (the caller opened it: a user-namespaced init may not even
    # traverse the state root).
    try:
        started = procfs.reopen(proc, launch.exec_fifo, os.O_WRONLY)
        os.write(started, b"0")
        os.close(started)
        os.close(launch.exec_fifo)
        os.close(proc)
        _hooks(launch, "startContainer", {**hook_state, "status": "running"})
    except BaseException as e:
        _die(ready.stdio[2], f"railcar: before exec: {e}")
    _execve(ready, launch, None)


def _exec_intermediate(ch: Channel, launch: Launch) -> None:
    """Unlike an init's, stays out of the container's cgroup: its exec process is in it before it
    does anything, as runc's is. On v1 the process moves itself, first thing, writing "0" to the
    `tasks` files we open here on the host: a move of oneself skips the global lock that moving
    another process takes (which costs an RCU grace period, 7-15 ms, whoever makes it). On v2,
    where every move takes that lock, we fork it straight into the cgroup (fork_into_cgroup), from
    the host's cgroup namespace and with the host's credentials, which the kernel checks: the
    container's user and cgroup namespaces are joined by the process itself, after. Where that
    fork is refused (a cgroup whose init made it a parent, which takes no process; a kernel before
    5.7; but not at the pids limit, see below), we fork as usual, and the caller
    moves the process by its pid, in the host's namespaces and with its credentials (which every
    kernel accepts), while it waits at a gate; we hold its pid meanwhile (our child, unreaped even
    if killed; the caller checks that we still live), so no other process can be moved in by that
    number. So railcar's own Python work in this helper is not charged to the container. A move is
    not counted against pids.max, so an exec into a container at its pids limit (its own, or a
    pod's) is refused before, as runc's fails there (its init's threads are forks). Per exec of /bin/true
    through ctr, the container's cgroup is charged ~390 page faults and 4-5 ms of CPU, against 874
    and 9.1 ms when this helper joined first; runc's exec ~140 and 3.5-5 ms (benchmarks/startup.py)."""
    affinity = launch.process.exec_cpu_affinity
    if affinity is not None and affinity.initial:   # first: this helper's work runs there too
        _set_affinity(affinity.initial, "process.execCPUAffinity.initial")
    tasks: list[tuple[str, int]] = []
    target = None
    if launch.cgroup is not None:
        with stage("cgroups"):   # the host's files, from the host's mounts
            reached = launch.cgroup.pids_limit_reached(launch.init_pid)
            if reached is not None:
                raise RuntimeFailure("cgroups", f"the container is at its pids limit ({reached}): the exec's "
                                                "process would take it over")
            tasks = launch.cgroup.open_tasks() if launch.cgroup.version == 1 else []  # type: ignore[attr-defined]  (v1's)
            target = launch.cgroup.open_fork_target("exec")
    _set_oom_score(launch.process)
    later = [ns for ns in launch.ns_fds if target is not None and ns[1] in (sc.CLONE_NEWCGROUP, sc.CLONE_NEWUSER)]
    with stage("namespaces"):
        _setns_all([ns for ns in launch.ns_fds if ns not in later])
    launch.ns_fds = []   # closed: their numbers may be the gate's now, which the exec process must not hold
    gate, release = os.pipe2(os.O_CLOEXEC)
    keep = frozenset({gate, *(fd for _, fd in tasks), *(fd for fd, _ in later)})
    pid = _forked_into(target, single_threaded=True, at_limit="the exec's process")   # a helper: forked, so it is
    if pid == 0:
        _run_child(ch, launch.keep_fds() | {ch.fileno()} | keep, _exec_process, launch, gate, tasks, later)
    joined = pid is not None
    if pid is None:
        with stage("namespaces"):
            _setns_all(later)
        pid = _fork_child(ch, launch, _exec_process, gate, tasks, [], keep=keep)
    os.close(gate)
    for fd in [*(fd for _, fd in tasks), *(fd for fd, _ in later if joined)]:
        os.close(fd)
    _report_forked(ch, ExecForked(pid, joined), pid)
    ch.recv("cgroups", Joined)
    os.write(release, b"1")


def _report_forked(ch: Channel, report: object, pid: int) -> None:
    """Tell the caller our child's pid, with a pidfd of it: opened here, while it is our child and
    cannot have been reaped. The caller could not open one by pid: a short exec may have exited
    and been reaped by the caller's subreaper by then (we exit right after this)."""
    ch.send(report, [os.pidfd_open(pid)])


def _exec_process(ch: Channel, launch: Launch, gate: int, tasks: list[tuple[str, int]],
                  later: list[tuple[int, int]]) -> None:
    """Is in the container's cgroup before it opens anything of the container's: the cgroup's device
    rules and limits cover all of it. Forked into it (v2), it joins the user and cgroup namespaces
    its intermediate left to it (`later`) first. On v1 it moves itself first thing, writing "0" to
    the `tasks` files its intermediate opened; otherwise it waits at `gate` while the caller moves
    it. EOF at the gate means the intermediate failed (the caller kills us too): we leave at once."""
    with stage("namespaces"):
        _setns_all(later)
    if tasks:
        with stage("cgroups"):
            launch.cgroup.join_opened(tasks)  # type: ignore[attr-defined]  (v1's)
    if os.read(gate, 1) != b"1":
        os._exit(1)
    os.close(gate)
    ready = _prepare_process(launch, ch)
    ch.send(Parked())  # ready to execve
    # The channel stays open (close-on-exec) so the caller sees EOF exactly when execve worked.
    _execve(ready, launch, ch)


@dataclass
class _Ready:
    path: str
    stdio: tuple[int, int, int]
    env: dict[str, str]


def _prepare_process(launch: Launch, ch: Channel) -> _Ready:
    """Inside the container's root: scheduling, stdio/pty, rlimits, user, cwd, executable; and a
    seccomp filter with a listener. The pty master and the listener go to the caller on ``ch``."""
    proc = launch.process
    plan = launch.security

    def hand_over(listener: int) -> None:
        """As runc's init waits for its parent: no call of ours or the program's runs with a
        filter whose agent may never get its listener."""
        ch.send(SeccompListener(), [listener])
        ch.recv("seccomp", ListenerPassed)
    with stage("process"):
        _schedule(launch)   # first: an exec's `final` CPUs as soon as it is in its cgroup
        os.setsid()
        if launch.terminal:
            console, slave = os.openpty()   # /dev/ptmx of the container's devpts
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            if proc.console_size is not None:
                fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *proc.console_size, 0, 0))
            if os.fstat(slave).st_uid != proc.user.uid:  # as runc: the group stays devpts's (gid=5, tty)
                os.fchown(slave, proc.user.uid, -1)
            if launch.spec is not None:
                _mount_console(slave)
            ch.send(Console(), [console])   # the pty master is the caller's now, not ours
            os.close(console)
            stdio = (slave, slave, slave)
        elif launch.stdio is not None:
            stdio = launch.stdio
        else:
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            stdio = (null, null, null)
        for i, rl in enumerate(proc.rlimits):
            limit = getattr(resource, rl.type, None)
            if limit is None:
                raise RuntimeFailure("process", f"process.rlimits[{i}]: {rl.type} is not known here")
            try:
                resource.setrlimit(limit, tuple(resource.RLIM_INFINITY if v == RLIM_UNLIMITED else v
                                                for v in (rl.soft, rl.hard)))
            except (OSError, ValueError, OverflowError) as e:  # ValueError: Python's word for EPERM here
                raise RuntimeFailure("process", f"process.rlimits[{i}]: cannot set {rl.type} to {rl.soft}/"
                                                f"{rl.hard}: {e} (raising a hard limit needs "
                                                "CAP_SYS_RESOURCE, and RLIMIT_NOFILE stays under "
                                                "fs.nr_open)") from None
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            cwd = open_in_root(root, proc.cwd)  # an exec's must exist: a typo must make nothing
        except OSError as e:
            raise RuntimeFailure("process", f"process.cwd {proc.cwd!r}: {e.strerror}") from None
        finally:
            os.close(root)
    env = _environment(proc)  # as root, who may read the container's /etc/passwd
    if launch.session_keyring is not None:
        _join_session_keyring(launch)
    with stage("security"):
        if plan is not None:
            plan.before_user_switch(hand_over)
    with stage("user"):
        os.setgroups(list(proc.user.additional_gids))
        os.setresgid(proc.user.gid, proc.user.gid, proc.user.gid)
        os.setresuid(proc.user.uid, proc.user.uid, proc.user.uid)
    with stage("security"):
        if plan is not None:
            plan.after_user_switch()
    with stage("process"):
        try:
            os.fchdir(cwd)
        except OSError as e:
            raise RuntimeFailure("process", f"process.cwd {proc.cwd!r}: {e.strerror}") from None
        finally:
            os.close(cwd)
        os.getcwd()   # raises if the cwd is not reachable from our root
        if proc.user.umask is not None:
            os.umask(proc.user.umask)
        path = _lookup(proc.args[0], proc.env)
    with stage("security"):
        if plan is not None:
            plan.before_report(hand_over)
    return _Ready(path, stdio, env)


# Every CPU number a mask can hold (the kernel's NR_CPUS is at most 8192): the kernel keeps a
# process within its cgroup's cpuset and the CPUs that exist, whatever else the mask names.
_ALL_CPUS = range(MAX_CPU + 1)


def _schedule(launch: Launch) -> None:
    """Scheduling as runc sets it, with the privileges the process has before its user switch. The
    CPU affinity comes first, as runc sets it from outside before its init goes on: an exec with
    execCPUAffinity.final takes that; one with only `initial` (which its intermediate took) keeps
    what the kernel made of it on entering the cgroup; any other process gets every CPU its cgroup
    allows, so that it does not inherit the pinning of containerd, which railcar's processes
    inherit (runc resets it likewise; SCHED_DEADLINE is refused to a process pinned narrower than
    its root domain). Then process.scheduler, process.ioPriority and linux.personality."""
    proc = launch.process
    affinity = proc.exec_cpu_affinity if launch.spec is None else None
    if affinity is not None and affinity.final:
        _set_affinity(affinity.final, "process.execCPUAffinity.final")
    elif affinity is None or not affinity.initial:
        try:
            os.sched_setaffinity(0, _ALL_CPUS)
        except OSError:
            pass   # as runc: it only warns; the process keeps the CPUs it inherited
    if proc.scheduler is not None:
        s = proc.scheduler
        try:
            sc.sched_setattr(s.policy, nice=s.nice, priority=s.priority, flags=s.flags, runtime=s.runtime,
                             deadline=s.deadline, period=s.period)
        except OSError as e:
            hint = f" ({_SCHED_EPERM.get(s.policy, _NICE_EPERM)})" if e.errno == errno.EPERM else ""
            raise RuntimeFailure("process", f"process.scheduler: cannot set it: {e.strerror}{hint}") from None
    if proc.io_priority is not None:
        try:
            sc.ioprio_set(proc.io_priority)
        except OSError as e:
            hint = (" (IOPRIO_CLASS_RT needs CAP_SYS_ADMIN or CAP_SYS_NICE, in the host's user namespace)"
                    if e.errno == errno.EPERM else "")
            raise RuntimeFailure("process", f"process.ioPriority: cannot set it: {e.strerror}{hint}") from None
    if launch.personality is not None:
        try:
            sc.personality(launch.personality)
        except OSError as e:
            raise RuntimeFailure("process", f"linux.personality: cannot set it: {e.strerror}") from None


# Why sched_setattr(2) says EPERM, by policy (the others: a negative nice).
_RT_EPERM = ("a real-time policy needs CAP_SYS_NICE in the host's user namespace, and cpu.rt_runtime_us in "
             "the container's cgroup where the kernel schedules real-time tasks by group")
_SCHED_EPERM = {SCHED_POLICIES["SCHED_FIFO"]: _RT_EPERM, SCHED_POLICIES["SCHED_RR"]: _RT_EPERM,
                SCHED_POLICIES["SCHED_DEADLINE"]: "SCHED_DEADLINE needs CAP_SYS_NICE in the host's user namespace, "
                                                  "and CPUs (its cpuset, execCPUAffinity.final) that cover its "
                                                  "root domain"}
_NICE_EPERM = "a negative nice needs CAP_SYS_NICE in the host's user namespace, or RLIMIT_NICE"


def _set_affinity(cpus: frozenset[int], where: str) -> None:
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as e:
        raise RuntimeFailure("process", f"{where}: cannot run on CPUs {_cpu_text(cpus)}: {e.strerror} (none of "
                                        "them is online, or in the container's cpuset)") from None


def _cpu_text(cpus: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cpus))) if len(cpus) <= 16 else f"{min(cpus)}..{max(cpus)} ({len(cpus)} CPUs)"


def _join_session_keyring(launch: Launch) -> None:
    """Leave the session keyring inherited from the shim (without systemd, root's user-session keyring
    of the host: its keys, even those only their possessor may read, would be the container's, and
    every container would share it). As runc does, the init makes the container's own, which its
    owner (with a user namespace, anyone: the owner is outside it) may search, so that an exec of
    the same user joins it by name; a kernel without keyrings is no error."""
    with stage("process"):
        try:
            key = sc.join_session_keyring(launch.session_keyring)
            if launch.spec is not None:
                search = KEY_OTH_SEARCH if launch.spec.linux.namespace("user") is not None else KEY_USR_SEARCH
                sc.set_key_permissions(key, sc.key_permissions(key) | search)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise RuntimeFailure("process", f"cannot join a session keyring of its own: {e.strerror}") from None


def _mount_console(slave: int) -> None:
    """The init's terminal is also /dev/console, as runc makes it: programs that write to the console
    reach the terminal. The pty is bound on a file made in the container's /dev (or on the one there:
    a regular file or a device, never through a symlink, which could point anywhere). A /dev that
    cannot take the file (a read-only root without a /dev of its own) goes without."""
    try:
        made = os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        os.fchmod(made, 0o666)
        os.close(made)
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno == errno.EROFS:
            return
        raise RuntimeFailure("process", f"/dev/console for the terminal: {e.strerror}") from None
    target = os.open("/dev/console", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = os.fstat(target).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            raise RuntimeFailure("process", "/dev/console for the terminal: the container's is not a file "
                                            "or a device (a symlink?)")
        sc.mount(f"/proc/self/fd/{slave}", f"/proc/self/fd/{target}", None, sc.MS_BIND)
    except OSError as e:
        raise RuntimeFailure("process", f"/dev/console for the terminal: {e.strerror}") from None
    finally:
        os.close(target)


def _environment(proc: Process) -> dict[str, str]:
    """process.env, with HOME from the user's entry in the container's /etc/passwd ("/" without
    one) when it has none, as runc sets it: images expect a HOME."""
    env = dict(e.split("=", 1) for e in proc.env)
    if "HOME" not in env:
        env["HOME"] = _home_of(proc.user.uid)
    return env


def _home_of(uid: int) -> str:
    """The home directory of `uid` in /etc/passwd (of the container: we are in its root), or "/".
    The image's file may be anything: only a regular file is read, and only its first MiB."""
    try:
        fd = os.open("/etc/passwd", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return "/"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "/"
        data = os.read(fd, 1 << 20)
    except OSError:
        return "/"
    finally:
        os.close(fd)
    for line in data.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5] or "/"
    return "/"


def _lookup(prog: str, env: tuple[str, ...]) -> str:
    """PATH lookup inside the container, as execvp would, so errors surface at create."""
    if "/" in prog:
        candidates = [prog]
    else:
        path = next((e[5:] for e in reversed(env) if e.startswith("PATH=")), DEFAULT_PATH)
        candidates = [os.path.join(d or ".", prog) for d in path.split(":")]
    found = [c for c in candidates if os.path.isfile(c)]
    for c in found:
        allowed = sc.may_execute(c)   # as execve checks: our capabilities count
        if allowed or (allowed is None and os.stat(c).st_mode & 0o111):   # refused: the mode bits, as runc
            return c
    # Each message holds the words of runc's (the errno's text, "executable file not found in $PATH"):
    # dockerd turns those into exit status 127 or 126 and a client error, and log scrapers match them.
    if "/" in prog:
        if found:
            raise RuntimeFailure("process", f"process.args[0]: {prog!r} in the container is not executable: "
                                            "permission denied")
        if os.path.isdir(prog):
            raise RuntimeFailure("process", f"process.args[0]: {prog!r} in the container is a directory")
        raise RuntimeFailure("process", f"process.args[0]: {prog!r} in the container: no such file or directory")
    skipped = f" ({found[0]!r} is not executable)" if found else ""  # a PATH search passes such files over
    raise RuntimeFailure("process", f"process.args[0]: {prog!r}: executable file not found in $PATH, in the "
                                    f"container{skipped}")


def _hooks(launch: Launch, kind: str, state: dict) -> None:
    hooks = launch.spec.hooks.get(kind)
    if hooks and launch.run_hooks is not None:
        with stage("hooks"):
            launch.run_hooks(kind, hooks, state)


def _execve(ready: _Ready, launch: Launch, report: Channel | None) -> NoReturn:
    """Install stdio as 0-2, close everything else, reset signals, seccomp last, execve.

    A failure goes to ``report`` (kept open, close-on-exec) or, with nobody listening any more
    (an init after start), to the process's stderr.
    """
    try:
        with stage("exec"):
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in ready.stdio]
            for target, fd in enumerate(high):
                os.dup2(fd, target, inheritable=True)
            _close_fds_except({0, 1, 2} | ({report.fileno()} if report else set()))
            _default_signals(launch.signals)
        with stage("security"):
            if launch.security is not None:
                launch.security.last()
        with stage("exec"):
            os.execve(ready.path, list(launch.process.args), ready.env)
    except RuntimeFailure as e:
        if report is None:
            _die(2, f"railcar: {e}")
        report.send(Failed(e.stage, e.message))
        os._exit(127)


def _default_signals(signals: tuple[int, ...]) -> None:
    """Unblock every signal and set `signals` (all that were not at their default when the caller
    forked our first helper: no helper changes one) to their default action: an ignored one would
    stay ignored across execve, and one caught until then would run railcar's handler in the
    container's process (the daemon's faulthandler on SIGUSR1 would write a traceback of host paths
    to its stderr). The list was read from the kernel, outside the container's cgroup: Python's
    table does not know faulthandler's handlers, nor those a C library sets, nor glibc's 32 and 33."""
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())   # (`signal`'s would build enums of the old mask)
    for sig in signals:
        try:
            sc.default_signal_action(sig)
        except OSError:
            pass


def _die(fd: int, message: str) -> NoReturn:
    """An init that failed after its start, with nobody listening any more: the error to its
    stderr, and exit 1, as runc's init exits then."""
    try:
        os.write(fd, message.encode() + b"\n")
    finally:
        os._exit(1)
