"""The shim's fd limit: raised for the daemons, given back to what they start.

Go raises a program's soft RLIMIT_NOFILE to its hard limit when it starts and, since Go 1.21, gives
its children the old soft limit back. So containerd starts its shims with systemd's soft 1024,
runc's shim raises its own, and what it starts gets 1024 again: the limit that programs using
select() rely on. railcar does the same. The zygote and a cold daemon raise it: a pooled daemon
serves up to 16 containers, ~10 fds each and ~9 more per running exec. A forker worker, whose
children are the containers' processes and the hooks, takes the old limit back first thing. A
binary:// logger gets it right after it is spawned: posix_spawn cannot set limits, so the logger
may already have started by then.
"""

import resource

_given: int | None = None  # the soft limit this process had before raise_soft (None: never raised)


def raise_soft() -> None:
    """The soft RLIMIT_NOFILE up to the hard one; the old one is kept for `give_back`."""
    global _given
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        return  # serve with the limit as it is
    _given = soft


def give_back(pid: int = 0) -> None:
    """Set the soft limit of `pid` (0: this process) back to what it was before `raise_soft`, never
    above its hard limit; best effort: a process gone or a limit refused changes nothing else."""
    if _given is None:
        return
    try:
        hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(_given, hard), hard))
    except (OSError, ValueError):
        pass
