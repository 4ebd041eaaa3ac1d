"""The `delete` command: clean up one container from what is on disk, after its shim is gone.

containerd runs it after every task deletion and whenever a shim died or cannot be reached, with a
5 s deadline, and reads stdout as a DeleteResponse. It therefore works from the bundle and the
runtime's state directory alone, touches only the container named by `-id` (a grouped shim may still
serve others), succeeds when everything is already gone, and prints nothing but the response.
"""

import os
import sys
import time
from _signal import SIGKILL  # the C module: signal.py builds its enums (~7 ms of every `delete`)

from . import paths, pool, wire
from .flags import Flags

PID_FILE = "init.pid"
SHIM_PID_FILE = "shim.pid"
DELETED_FILE = "railcar-deleted"  # the daemon's answer to `delete`, once it removed everything itself


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def recorded_exit(bundle: str) -> tuple[int, int] | None:
    """(exit status, exit time in ns) the daemon recorded for the init process, if it lived to see it."""
    text = _read(os.path.join(bundle, paths.EXIT_FILE))
    try:
        status, when = (text or "").split()
        return int(status), int(when)
    except ValueError:
        return None


def _write(path: str, data: bytes) -> None:
    """A small file, written whole. An error names it: a full disk fails the flush at close, which
    Python reports without the file's name."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def record_exit(bundle: str, status: int, when_ns: int) -> None:
    """Written by the daemon when the init exits, so `delete` can report the real status later."""
    tmp = os.path.join(bundle, "." + paths.EXIT_FILE)
    _write(tmp, f"{status} {when_ns}".encode())
    os.rename(tmp, os.path.join(bundle, paths.EXIT_FILE))


def record_pids(bundle: str, init_pid: int) -> None:
    """Written by the daemon after Create: the init pid `delete` reports, and the daemon's own pid
    (for operators and tools: the daemon may have been forked by the zygote, not run by name)."""
    for name, pid in ((PID_FILE, init_pid), (SHIM_PID_FILE, os.getpid())):
        _write(os.path.join(bundle, name), str(pid).encode())


def clear_records(bundle: str) -> None:
    """Forget the exit and the delete answer a previous task left in this bundle directory, so that
    `delete` never reports them for the new one (containerd makes a fresh bundle per task, but a
    directory can outlive a crash)."""
    for name in (DELETED_FILE, paths.EXIT_FILE):
        try:
            os.unlink(os.path.join(bundle, name))
        except FileNotFoundError:
            pass


def record_deleted(bundle: str, answer: bytes) -> None:
    """Written by the daemon once its Delete destroyed the container and unmounted the rootfs: the
    DeleteResponse the `delete` that containerd runs right after is to print. That `delete` then has
    nothing to do; the installed launcher prints the file without even starting Python."""
    tmp = os.path.join(bundle, "." + DELETED_FILE)
    _write(tmp, answer)
    os.rename(tmp, os.path.join(bundle, DELETED_FILE))


def _destroy_container(container_id: str, namespace: str) -> str | None:
    """Force-delete the container's runtime state (kills what is left); returns a warning, if any."""
    from railcar.runtime import Container, ContainerNotFound
    from railcar.runtime.errors import RuntimeFailure

    try:
        container = Container.load(container_id, root=paths.runtime_root(namespace))
    except ContainerNotFound:
        return None  # already gone: nothing to do
    except (RuntimeFailure, OSError) as e:  # a state it cannot read: left for an operator, and said so
        return f"delete container {container_id}: {e}"
    try:
        container.delete(force=True)
    except (RuntimeFailure, OSError) as e:
        return f"delete container {container_id}: {e}"
    return None


def _unmount_rootfs(bundle: str) -> str | None:
    from railcar.runtime.mounts import unmount_all

    rootfs = os.path.join(bundle, "rootfs")
    try:
        unmount_all(rootfs)
    except OSError as e:
        return f"unmount {rootfs}: {e}"
    return None


def _remove_socket_if_unused(bundle: str, container_id: str) -> str | None:
    """Remove the shim socket unless another bundle of this namespace still points at it (a group).
    A pool's member leaves it instead, and the pool goes if its daemon is dead, under the pool's
    lock: the socket may be a newer daemon's (see pool.py). A warning if that failed."""
    address = _read(os.path.join(bundle, paths.ADDRESS_FILE))
    if not address or not address.startswith("unix://"):
        return None
    if os.path.exists(os.path.join(bundle, pool.MARKER_FILE)):
        try:
            pool.Members(address[len("unix://"):]).depart(container_id)
        except OSError as e:
            return f"leave the pool of {address}: {e}"
        return None
    me = os.path.realpath(bundle)
    with os.scandir(os.path.dirname(me)) as siblings:  # not glob: it imports re, 6 ms of a 5 s budget path
        for sibling in siblings:
            if sibling.path != me and _read(os.path.join(sibling.path, paths.ADDRESS_FILE)) == address:
                return None
    try:
        os.unlink(address[len("unix://"):])
    except OSError:
        pass
    return None


def delete(flags: Flags) -> bytes:
    """Clean up the `-id` container and return the DeleteResponse bytes to print."""
    if not flags.id:
        raise ValueError("delete needs -id")
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    try:
        with open(os.path.join(bundle, DELETED_FILE), "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    pid_text = _read(os.path.join(bundle, PID_FILE))
    pid = int(pid_text) if pid_text and pid_text.isdigit() else 0
    warnings = [_destroy_container(flags.id, flags.namespace), _unmount_rootfs(bundle),
                _remove_socket_if_unused(bundle, flags.id)]
    for warning in warnings:
        if warning:
            print(warning, file=sys.stderr)
    exit_info = recorded_exit(bundle)
    if exit_info is None:
        exit_info = (128 + SIGKILL, time.time_ns())
    return wire.delete_response(pid, *exit_info)
