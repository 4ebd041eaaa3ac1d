"""The `start` command: find or spawn the shim daemon for a container's group and print its address.

containerd runs `start` once per container, reads stdout+stderr (one pipe) as the address and waits
for EOF on that pipe. So this module prints exactly one `unix://` address, never writes to stderr on
success, and makes sure the daemon holds no copy of the pipe. It imports only the standard library's
lightest modules: its wall time is most of a container's start latency budget. So it uses `_socket`
(socket.py builds enums) and speaks `marshal` to the zygote (json pulls in `re`): ~25 ms less.
"""

import errno
import fcntl
import itertools
import marshal
import os
import struct
import sys
import time
from _collections_abc import Callable  # loaded at startup; collections.abc costs ~2 ms a `start`
from _socket import AF_UNIX, SCM_RIGHTS, SOCK_CLOEXEC, SOCK_SEQPACKET, SOCK_STREAM, SOL_SOCKET, socket

from . import oomscore, paths, pool
from .flags import Flags

GROUP_ANNOTATION = "io.containerd.railcar.v2.group"
POD_ANNOTATION = "io.kubernetes.cri.sandbox-id"
_ZYGOTE_TIMEOUT = 5.0
_ZYGOTE_READY_WAIT = 5.0  # a zygote is ready ~0.3 s after its spawn here (its imports and first spare)
_ZYGOTE_POLL = 0.005


class StartError(RuntimeError):
    """`start` cannot produce an address; the message is what containerd shows its client."""


def groups(bundle: str) -> tuple[str | None, str | None]:
    """The group the bundle's config.json names (railcar's group annotation) and its pod (the CRI
    sandbox id); None for each it does not name.

    A config that names neither annotation is not parsed at all (json costs ~15 ms of imports and
    its own parse): Create validates the spec anyway, and the names contain nothing a JSON encoder
    escapes, so they cannot be present without appearing verbatim.
    """
    config_path = os.path.join(bundle, "config.json")
    try:
        with open(config_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise StartError(f"cannot read {config_path}: {e}") from e
    if GROUP_ANNOTATION.encode() not in data and POD_ANNOTATION.encode() not in data:
        return None, None
    import json

    try:
        spec = json.loads(data)
    except ValueError as e:
        raise StartError(f"cannot read {config_path}: {e}") from e
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    found: list[str | None] = []
    for name in (GROUP_ANNOTATION, POD_ANNOTATION):
        value = annotations.get(name) if isinstance(annotations, dict) else None
        if not isinstance(value, str) or not value:
            found.append(None)
            continue
        if "/" in value or "\0" in value or value in (".", ".."):
            raise StartError(f"annotation {name}={value}: a group name is not a path")
        if value.startswith(pool.GROUP_PREFIX):
            raise StartError(f"annotation {name}={value}: groups named {pool.GROUP_PREFIX}* are railcar's pools")
        found.append(value)
    return found[0], found[1]


def zygote_accepts(path: str) -> bool:
    """Whether a zygote accepts on `path` (see `pool.probe`); it creates its socket only once ready."""
    return pool.probe(path, SOCK_SEQPACKET) == "live"


def _listen(path: str) -> socket | None:
    """Bind and listen on `path`; None when a daemon already serves it (a slow one too: a connect
    that timed out is not a dead daemon). A dead daemon's socket is replaced. `start`s take turns
    on the socket directory's lock from bind to listen, so that none finds another's socket bound
    but not yet listening, takes it for dead and replaces it: a group would get two daemons."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # no file to leave behind
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _ in range(2):
            listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)
            try:
                listener.bind(path)
            except OSError as e:
                listener.close()
                if e.errno != errno.EADDRINUSE:
                    raise StartError(f"cannot listen on {path}: {e}") from e
                if pool.probe(path) != "dead":
                    return None
                try:
                    os.unlink(path)
                except FileNotFoundError:  # its daemon removed it as it left
                    pass
                continue
            os.chmod(path, 0o600)
            listener.listen(128)
            return listener
        raise StartError(f"cannot listen on {path}: a stale socket keeps coming back")
    finally:
        os.close(lock)  # releases it


def write_address(bundle: str, address: str) -> None:
    """Write `<bundle>/address` atomically (containerd reads it back after a restart)."""
    tmp = os.path.join(bundle, "." + paths.ADDRESS_FILE)
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, address.encode())
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(bundle, paths.ADDRESS_FILE))


ZYGOTE_ENV = "RAILCAR_ZYGOTE"  # "0" disables the zygote: every daemon is spawned cold


def _only_inheritable(keep: int) -> None:
    """Make every descriptor above stderr except `keep` close-on-exec.

    A leaked copy of containerd's stdout pipe in a daemon would make containerd wait for EOF
    forever (reference §1.4), and Python does not touch fds it inherited.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def _daemon_flags(flags: Flags, bundle: str) -> list[str]:
    return Flags(namespace=flags.namespace, address=flags.address, publish_binary=flags.publish_binary,
                 id=flags.id, bundle=bundle, debug=flags.debug).to_argv()


def _spawn_daemon(daemon_flags: list[str], listener: socket, env: dict[str, str]) -> int:
    """Run a cold daemon with the listener as fd 3, stdio on /dev/null, in its own process group."""
    high = fcntl.fcntl(listener.fileno(), fcntl.F_DUPFD, 10)  # never 3, so the dup2 below clears CLOEXEC
    _only_inheritable(high)
    try:
        return os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "railcar.shim", *daemon_flags],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                (os.POSIX_SPAWN_DUP2, 0, 1),
                (os.POSIX_SPAWN_DUP2, 0, 2),
                (os.POSIX_SPAWN_DUP2, high, 3),
            ],
            setpgroup=0,
        )
    finally:
        os.close(high)


def _spawn_zygote() -> int | None:
    """Spawn a zygote (it exits at once if one is ready already); its pid, None if it could not
    be spawned."""
    _only_inheritable(-1)
    try:
        return os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "railcar.shim.zygote"],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                (os.POSIX_SPAWN_DUP2, 0, 1),
                (os.POSIX_SPAWN_DUP2, 0, 2),
            ],
            setsid=True,
        )
    except OSError:
        return None  # only an optimisation: the daemon is spawned cold


def _start_zygote() -> bool:
    """Make sure a zygote is ready, starting one if need be; False if none is within
    _ZYGOTE_READY_WAIT seconds (a loaded host: then this daemon is spawned cold, as ready now).

    Concurrent `start`s take turns on a lock (the zygote socket's directory's), so that a burst of them
    spawns one zygote, not one each (every one imports for ~0.25 s of CPU before it could find it
    had lost)."""
    deadline = time.monotonic() + _ZYGOTE_READY_WAIT
    path = paths.zygote_socket()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    lock = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # no file to leave
    try:
        while not _try_lock(lock):
            if time.monotonic() > deadline:
                return False
            time.sleep(_ZYGOTE_POLL)
        if zygote_accepts(path):  # the one a `start` before us started
            return True
        zygote = _spawn_zygote()
        while zygote is not None:
            if zygote_accepts(path):
                return True
            if os.waitpid(zygote, os.WNOHANG)[0] == zygote:  # it failed, or found one ready
                return zygote_accepts(path)
            if time.monotonic() > deadline:
                return False
            time.sleep(_ZYGOTE_POLL)
        return False
    finally:
        os.close(lock)  # releases it


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _fork_from_zygote(daemon_flags: list[str], bundle: str, listener: socket,
                      env: dict[str, str], oom_score: int | None) -> int | None:
    """Ask a running zygote to fork the daemon, to run at `oom_score`; None when there is none (or it failed).

    A zygote that took the request and the listener but gave no answer (it was stopped meanwhile,
    or is stuck) may have passed the listener on to a spare: a second daemon on the same listener
    would split the container's calls between two daemons, so that is a StartError."""
    conn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)
    conn.settimeout(_ZYGOTE_TIMEOUT)
    try:
        try:
            conn.connect(paths.zygote_socket())
            request = {"flags": daemon_flags, "env": env, "cwd": bundle, "oom_score_adj": oom_score}
            conn.sendmsg([marshal.dumps(request)], [(SOL_SOCKET, SCM_RIGHTS, struct.pack("i", listener.fileno()))])
        except OSError:
            return None
        try:
            reply = marshal.loads(conn.recv(4096))
        except ConnectionResetError:  # it closed with the request unread: nobody has the listener
            return None
        except (OSError, ValueError, EOFError, TypeError) as e:
            raise StartError(f"the zygote took the request but did not answer: {e or 'no reply'}") from e
    finally:
        conn.close()
    pid = reply.get("pid") if isinstance(reply, dict) else None
    return pid if isinstance(pid, int) and pid > 0 else None


def _drain_stdin() -> None:
    """Consume the options Any containerd may write on stdin: the same it sends with Create (the task
    options, else the runtime options: measured with `ctr run --runtime-config-path --uidmap`, whose
    ConfigPath containerd 1.6 then hands to neither), which Create checks (options.py)."""
    if os.isatty(0):
        return
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass


def start(flags: Flags) -> str:
    """Find or spawn the daemon for this container's group (or pool); return the address to print."""
    if not flags.id:
        raise StartError("start needs -id")
    if not flags.address:
        raise StartError("start needs -address")
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    group, pod = groups(bundle)
    if group is None and pool.size() > 1 and pool.poolable(flags.id):
        address = _join_pool(flags, bundle, pod)
    else:
        _unmark_pooled(bundle)
        path = paths.socket_path(flags.address, flags.namespace, group or pod or flags.id)
        listener = _listen(path)
        address = _use(bundle, path) if listener is None else _serve_new(flags, bundle, path, listener)
    _drain_stdin()
    return address


def _join_pool(flags: Flags, bundle: str, pod: str | None) -> str:
    """The address of the daemon of this container's pod (see `_join_pod`), or else of the first
    pool of this containerd and namespace with room, after recording this container as its
    member. A pool whose daemon is dead gets a new one (see pool.py)."""
    try:
        if pod and pod != flags.id:
            address = _join_pod(flags, bundle, pod)
            if address is not None:
                return address
        limit = pool.size()
        for index in itertools.count():
            address = _try_pool(flags, bundle, index, limit)
            if address is not None:
                return address
        raise AssertionError("unreachable")
    except OSError as e:  # the pool's directory, a member file, a fork
        raise StartError(f"cannot join a pool: {e}") from e


def _join_pod(flags: Flags, bundle: str, pod: str) -> str | None:
    """Join the daemon serving pod `pod`, so that one daemon serves a pod, as with runc's shim:
    CRI names a pod's sandbox container after the pod, containerd keeps bundles side by side, and
    the sandbox's bundle names its daemon in its address file (containerd finds a sandbox's shim
    the same way). A pool is joined whatever its size, while its daemon answers, still holds the
    sandbox and runs this copy of railcar (after an upgrade a pod's new containers get the new
    code: runc's old pod shim would run the new runc binary for them). A daemon of the pod's own
    (pools were off when the pod started) is used while it lives, and only on the pod's group
    socket. None if there is none of these: the container then joins the first pool with room,
    which works alike."""
    try:
        with open(os.path.join(os.path.dirname(bundle), pod, paths.ADDRESS_FILE)) as f:
            address = f.read()
    except (OSError, ValueError):
        return None
    path = address.removeprefix("unix://")
    if not address.startswith("unix://") or os.path.dirname(path) != paths.SOCKET_DIR:
        return None
    members = pool.Members(path)
    if not members.exists():
        if path != paths.socket_path(flags.address, flags.namespace, pod) or pool.probe(path) == "dead":
            return None
        _unmark_pooled(bundle)
        return _use(bundle, path)
    if pool.probe(path, answer=True) != "live":  # (asked before the lock, which others wait for)
        return None
    lock = members.lock_existing(pool.LOCK_WAIT)
    if lock is None:
        return None
    try:
        if pool.probe(path) != "live" or not members.has(pod) or members.code() != paths.code_identity():
            return None   # (another copy's daemon: after an upgrade a pod's new containers get the new code)
        return _as_member(members, flags.id, bundle, lambda: _use(bundle, path))
    finally:
        os.close(lock)


def _try_pool(flags: Flags, bundle: str, index: int, limit: int) -> str | None:
    """Join pool `index` if it has room (fewer than `limit` members) and its daemon, if any,
    answers; the address, or None."""
    path = paths.socket_path(flags.address, flags.namespace, pool.group(index))
    members = pool.Members(path)
    # (Asked before the lock, which others wait for; not of a full pool, which this passes by.)
    if len(members.names()) < limit and pool.probe(path, answer=True) == "busy":
        return None
    lock = members.lock()
    try:
        state = pool.probe(path)
        if state == "busy" or (state == "live" and len(members.names()) >= limit):
            return None  # a daemon that does not answer is not taken for dead: its containers live
        if state == "dead":
            for name in members.names():  # they were its dead daemon's
                members.remove(name)
        def address() -> str:
            listener = None if state == "live" else _listen(path)
            if listener is None:  # live, or a plain group that happens to have this name
                return _use(bundle, path)
            members.record_code()
            return _serve_new(flags, bundle, path, listener)

        return _as_member(members, flags.id, bundle, address)
    finally:
        os.close(lock)


def _as_member(members: pool.Members, container_id: str, bundle: str, address: Callable[[], str]) -> str:
    """Record `container_id` as a member of the pool (under its lock) and mark its bundle, then
    `address()`; the member goes again if any of it fails."""
    try:
        members.add(container_id)
        _mark_pooled(bundle)
        return address()
    except BaseException:
        members.remove(container_id)
        raise


def _mark_pooled(bundle: str) -> None:
    """Tell `delete` that this bundle's daemon serves a pool (see cleanup.py)."""
    try:
        os.close(os.open(os.path.join(bundle, pool.MARKER_FILE), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise StartError(f"cannot write {bundle}/{pool.MARKER_FILE}: {e}") from e


def _unmark_pooled(bundle: str) -> None:
    """A bundle directory can outlive a crash: `delete` must not take this one for a pool's."""
    try:
        os.unlink(os.path.join(bundle, pool.MARKER_FILE))
    except OSError:  # none (as nearly always); an unwritable bundle fails later, with its reason
        pass


def _use(bundle: str, path: str) -> str:
    """Point the bundle at the live daemon on `path`; the address."""
    address = "unix://" + path
    try:
        write_address(bundle, address)
    except OSError as e:
        raise StartError(f"cannot write {bundle}/{paths.ADDRESS_FILE}: {e}") from e
    return address


def _serve_new(flags: Flags, bundle: str, path: str, listener: socket) -> str:
    """Have a daemon serve `listener` (forked by the zygote, else spawned); the address. The daemon
    learns which socket file it was given (SOCKET_ID_ENV): by the time it looks, `start` may have
    given up on it and another daemon may own the path."""
    score = oomscore.for_shim()
    oomscore.take(score)  # before a zygote or daemon is spawned: they inherit it
    try:
        address = _use(bundle, path)
        daemon_flags = _daemon_flags(flags, bundle)
        socket_id = paths.socket_id(path)
        if socket_id is None:  # the daemon would take whatever is on the path later for its own
            raise StartError(f"{path} is gone right after it was bound")
        env = {**os.environ, paths.SOCKET_ID_ENV: socket_id}
        use_zygote = os.environ.get(ZYGOTE_ENV) != "0"
        pid = _fork_from_zygote(daemon_flags, bundle, listener, env, score) if use_zygote else None
        if pid is None and use_zygote:
            # The first container (or the first after the zygote idled out) waits for a zygote too:
            # a daemon spawned cold shares no page with any other, for as long as its container
            # runs (17 MiB of PSS and its forker 14, against 7.4 and 3.8 forked; the latency is
            # about the same, as a cold daemon imports as much before it can answer Create).
            if _start_zygote():
                pid = _fork_from_zygote(daemon_flags, bundle, listener, env, score)
        if pid is None:
            pid = _spawn_daemon(daemon_flags, listener, env)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        listener.close()
    return address
