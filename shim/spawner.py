"""The Spawner railcar.io uses for binary:// loggers, wired to the shim's one reaper."""

import os

from railcar.io.spawner import spawn_with_fds
from railcar.runtime.state import start_time

from . import fdlimit
from .reaper import Reaper


class ReaperSpawner:
    """posix_spawn as railcar.io does it (no Python runs in the child, so it is safe inside trio),
    with the exit taken from the shim's reaper: its waitpid(-1) loop would steal it from anyone else."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper

    def spawn(self, argv: list[str], env: dict[str, str], fds: dict[int, int]) -> int:
        pid = spawn_with_fds(argv, env, fds)
        self._reaper.adopt(pid, start_time(pid, zombie=True))   # not reaped yet: the reaper has not run since
        fdlimit.give_back(pid)
        return pid

    async def wait(self, pid: int) -> int:
        return os.waitstatus_to_exitcode(await self._reaper.wait(pid))
