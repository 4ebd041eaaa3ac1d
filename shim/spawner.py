"""The Spawner railcar.io uses for binary:// loggers, wired to the shim's one reaper."""

import os

from railcar.io.spawner import DefaultSpawner

from .reaper import Reaper


class ReaperSpawner(DefaultSpawner):
    """posix_spawn as railcar.io does it (no Python runs in the child, so it is safe inside trio),
    but the exit comes from the shim's reaper: its waitpid(-1) loop would steal it from a pidfd."""

    def __init__(self, reaper: Reaper) -> None:
        super().__init__()
        self._reaper = reaper

    def spawn(self, argv: list[str], env: dict[str, str], fds: dict[int, int]) -> int:
        pid = super().spawn(argv, env, fds)
        os.close(self._pidfds.pop(pid))
        return pid

    async def wait(self, pid: int) -> int:
        return os.waitstatus_to_exitcode(await self._reaper.wait(pid))
