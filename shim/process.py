"""Processes (a container's init and its execs) and the lifecycle rules every task verb obeys.

Like h11's `_state.py`, the legal moves are one table: a verb either names the state it leads to or
is absent, and an absent verb fails with the error containerd expects for that state. The service
never checks a state by hand, so an illegal call cannot slip through a forgotten `if`.
"""

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from railcar.ttrpc_proto import Code, TtrpcError

if TYPE_CHECKING:
    from railcar.io import ProcessIO


class Status(enum.IntEnum):
    """containerd.v1.types.Status, plus DELETED which containerd never sees (the process is gone)."""

    UNKNOWN = 0
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    PAUSING = 5
    DELETED = 100


C, R, S, P, D = Status.CREATED, Status.RUNNING, Status.STOPPED, Status.PAUSED, Status.DELETED

# (state, verb) -> next state. Verbs that do not change the state map to the state itself.
TRANSITIONS: dict[tuple[Status, str], Status] = {
    (C, "start"): R,
    (C, "exit"): S,
    (R, "exit"): S,
    (P, "exit"): S,
    (R, "pause"): P,
    (P, "resume"): R,
    (C, "delete"): D,
    (S, "delete"): D,
    (C, "kill"): C,
    (R, "kill"): R,
    (P, "kill"): P,
    (C, "kill all"): C,  # the init's whole cgroup: also once the init exited, as runc's kill --all
    (R, "kill all"): R,
    (P, "kill all"): P,
    (S, "kill all"): S,
    (C, "exec"): C,
    (R, "exec"): R,
    (C, "update"): C,
    (R, "update"): R,
    (P, "update"): P,
    (C, "resize"): C,  # checked for an exec only: runc's shim resizes an init's console whatever its state
    (R, "resize"): R,
    (P, "resize"): P,
}

# The error for a verb that is not legal in a state, when it differs from FailedPrecondition.
_REFUSALS: dict[tuple[Status, str], tuple[Code, str]] = {
    (S, "kill"): (Code.NOT_FOUND, "process already finished"),
    (S, "start"): (Code.FAILED_PRECONDITION, "cannot start a stopped process"),
}


def refusal(status: Status, verb: str) -> TtrpcError:
    """The error for `verb` in `status`: NotFound once deleted or finished, else FailedPrecondition."""
    if status is Status.DELETED:
        return TtrpcError(Code.NOT_FOUND, f"cannot {verb} a deleted process")
    code, message = _REFUSALS.get((status, verb), (Code.FAILED_PRECONDITION, ""))
    return TtrpcError(code, message or f"cannot {verb} a {status.name.lower()} process")


@dataclass
class Process:
    """One process the shim tracks: its stdio, pid, lifecycle state and exit."""

    container_id: str
    exec_id: str  # "" for the init process
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    spec: dict[str, Any] | None = None  # the OCI Process of an exec
    pid: int = 0
    status: Status = Status.CREATED
    exit_status: int = 0
    exited_at_ns: int = 0
    io: "ProcessIO | None" = None  # once opened
    stdin_closed: bool = False  # CloseIO came before `io` was attached (during an exec's Start)
    reaped: bool = False  # the pid was reaped: signalling it would hit whoever reuses the number
    starting: bool = False  # a Start is under way: its start event must precede the exit event
    exited: trio.Event = field(default_factory=trio.Event)  # set once the exit is recorded and published
    started: trio.Event = field(default_factory=trio.Event)  # set once the start event was queued

    @property
    def id(self) -> str:
        """What containerd calls this process: the exec id, or the container id for the init."""
        return self.exec_id or self.container_id

    def check(self, verb: str) -> Status:
        """The state `verb` leads to; raises the containerd-facing error if it is illegal now."""
        nxt = TRANSITIONS.get((self.status, verb))
        if nxt is None:
            raise refusal(self.status, verb)
        return nxt

    def apply(self, verb: str) -> None:
        """Check `verb` and move to the state it leads to."""
        self.status = self.check(verb)
