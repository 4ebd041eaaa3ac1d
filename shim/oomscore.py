"""The OOM score every railcar process runs at: containerd's oom_score_adj plus one.

runc's shim makes itself a little more killable than containerd, and what it starts inherits that:
a container whose spec sets no `process.oomScoreAdj` (`ctr run`, nerdctl) and each exec into it
run at containerd's score + 1. railcar's processes come from three places, so the score is set in
each: `start` takes it first (a zygote or cold daemon it spawns inherits it); a zygote's spare
daemon was forked before any `start` asked, so it takes the score its `start` sends, and so does
each forker worker (they fork the containers) before it serves a request. The zygote and a spare's
forker process, which make no container themselves, keep the score of the `start` that started
the zygote: the same unless containerd's own score changed meanwhile.

Written with CAP_SYS_RESOURCE, a score is also the floor of the writer and its children, which
only that capability in the host's user namespace goes below: the runtime writes a container's
own `oomScoreAdj` before it enters a user namespace, as runc does.
"""

import os

MAX = 1000


def for_shim() -> int | None:
    """containerd's score + 1 (at most 1000); containerd is the parent of `start`. None if unknown."""
    try:
        with open(f"/proc/{os.getppid()}/oom_score_adj") as f:
            return min(int(f.read()) + 1, MAX)
    except (OSError, ValueError):
        return None


def take(score: object) -> None:
    """Run at `score` from now on, best effort: lowering it needs CAP_SYS_RESOURCE, and a score
    that cannot be set leaves the process as killable as it was, which harms nothing."""
    if not isinstance(score, int) or isinstance(score, bool):
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
    except OSError:
        pass
