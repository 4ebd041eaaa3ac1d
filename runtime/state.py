"""What a container leaves on disk under the state root, and the pid-reuse-safe liveness check.

``<root>/<id>/`` holds ``state.json`` (init pid and its start time, bundle, cgroup, annotations,
whether create finished), ``config.json`` (the spec as created, for exec and hooks) and, until
start, the ``exec.fifo`` the parked init blocks on. That is all another process needs to kill and
clean up the container after its creator crashed.
"""

import json
import os
import shutil
from dataclasses import dataclass, field

from .errors import ContainerNotFound, RuntimeFailure

STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
EXEC_FIFO = "exec.fifo"


@dataclass
class Record:
    """The contents of state.json."""
    id: str
    bundle: str
    oci_version: str = "1.0.2"     # the spec's, echoed in the state hooks receive
    init_pid: int = 0
    init_start_time: int = 0
    created: bool = False          # false while create is still setting the init up
    cgroup: dict | None = None     # Cgroup.to_state()
    annotations: dict = field(default_factory=dict)


def container_dir(root: str, container_id: str) -> str:
    if (not container_id or "/" in container_id or container_id in (".", "..")
            or "\0" in container_id):
        raise RuntimeFailure("state", f"invalid container id {container_id!r}")
    return os.path.join(root, container_id)


def write_record(directory: str, record: Record) -> None:
    """Atomically replace state.json, so a crash never leaves a half-written file."""
    tmp = os.path.join(directory, f".{STATE_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(vars(record)).encode())   # fields are JSON values: no asdict copy
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(directory, STATE_FILE))


def remove_directory(directory: str) -> None:
    """Remove a container's directory, its record first: a removal cut short (its process killed
    in the middle) leaves a directory without a record, which `Container.load` takes for the
    leftover of a creator that crashed, and the next delete removes. Were the record left and the
    saved config gone, every later delete, and so every create of that id, would fail."""
    try:
        os.unlink(os.path.join(directory, STATE_FILE))
    except FileNotFoundError:
        pass
    shutil.rmtree(directory, ignore_errors=True)


def read_record(directory: str, container_id: str) -> Record:
    try:
        with open(os.path.join(directory, STATE_FILE), "rb") as f:
            return Record(**json.load(f))
    except FileNotFoundError:
        raise ContainerNotFound(container_id) from None
    except (ValueError, TypeError) as e:   # not JSON, not an object, or fields this version lacks
        raise RuntimeFailure("state", f"{directory}/{STATE_FILE} is corrupt: {e}") from None


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if the pid is gone."""
    try:   # os.read, not open(): every verb asks, and a buffered file costs 4 more syscalls
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        stat = os.read(fd, 4096)
    except ProcessLookupError:   # exited and reaped between open and read
        return None
    finally:
        os.close(fd)
    # The command name may contain spaces and parentheses: split after the last ')'.
    return stat[stat.rindex(b")") + 2:].split()


def start_time(pid: int, *, zombie: bool = False) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if the pid is gone or dead.

    A zombie or dead process counts as gone: it will never run container code again; with
    `zombie`, a zombie counts (it has not been reaped: its pid is not free yet).
    """
    rest = _stat(pid)
    if rest is None or rest[0] in (b"X", b"x") or (rest[0] == b"Z" and not zombie):
        return None
    return int(rest[19])


_PF_EXITING = 0x4   # linux/sched.h: in do_exit


def exiting(pid: int) -> bool:
    """Whether `pid` is gone, dead or on its way out. A pid namespace's init stays in its exit,
    not yet a zombie, until every process that exit killed in the namespace has been reaped."""
    rest = _stat(pid)
    return rest is None or rest[0] in (b"Z", b"X", b"x") or bool(int(rest[6]) & _PF_EXITING)


def is_alive(pid: int, expected_start: int) -> bool:
    """True if ``pid`` still is the process we recorded (never a reused pid)."""
    return pid > 0 and start_time(pid) == expected_start
