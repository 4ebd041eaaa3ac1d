"""The reaper routes exits by pid and keeps those nobody waited for yet."""

import os
import signal

import trio

from railcar.runtime.state import start_time
from railcar.shim.reaper import Reaper, exit_status


def _spawn(script: str) -> int:
    """`script` in a shell whose signals are at their defaults, whatever this process inherited (a
    command run in the background by a shell without job control has SIGINT and SIGQUIT ignored)."""
    return os.posix_spawn("/bin/sh", ["/bin/sh", "-c", script], os.environ,
                          setsigdef=(signal.SIGINT, signal.SIGQUIT, signal.SIGTERM))


async def _reaped(reaper: Reaper, pid: int) -> None:
    """Until the reaper has `pid`'s exit kept, nobody having asked for it."""
    while not reaper.has_exited(pid):
        await trio.sleep(0.01)


async def test_exit_before_wait_is_kept_and_routed_by_pid() -> None:
    reaper = Reaper()
    async with trio.open_nursery() as nursery:
        await nursery.start(reaper.run)
        first, second = _spawn("exit 3"), _spawn("sleep 0.2; exit 4")
        await _reaped(reaper, first)
        assert exit_status(await reaper.wait(second)) == 4
        assert exit_status(await reaper.wait(first)) == 3
        assert not reaper.has_exited(first)  # each exit is claimed once
        nursery.cancel_scope.cancel()


async def test_signal_deaths_are_128_plus_signal_and_waits_are_concurrent() -> None:
    reaper = Reaper()
    results: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(reaper.run)
        pids = [_spawn("exec sleep 30") for _ in range(3)]

        async def wait(pid: int) -> None:
            results[pid] = exit_status(await reaper.wait(pid))

        async with trio.open_nursery() as waiters:
            for pid in pids:
                waiters.start_soon(wait, pid)
            await trio.sleep(0.05)
            for pid, sig in zip(pids, (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)):
                os.kill(pid, sig)
        nursery.cancel_scope.cancel()
    assert [results[p] for p in pids] == [137, 143, 130]


async def test_an_exit_kept_for_a_number_the_kernel_gave_again_is_not_the_new_process_s() -> None:
    """An orphan's exit nobody claimed stays kept under its pid; when a new process of ours gets
    that number, `adopt` drops it (else the new process would be reported exited at once, and a
    Kill refused as "already finished"). The kernel's part, giving a number again, is played by
    moving a kept exit to another pid."""
    reaper = Reaper()
    async with trio.open_nursery() as nursery:
        await nursery.start(reaper.run)
        orphan, new, logger = _spawn("exit 3"), _spawn("exec sleep 30"), _spawn("exec sleep 30")
        new_started = start_time(new, zombie=True)   # no await since the spawn: the reaper has not run
        await _reaped(reaper, orphan)
        reaper._exited[new] = reaper._exited.pop(orphan)
        reaper.adopt(new, new_started)   # still there: the exit kept is an earlier process's
        assert not reaper.has_exited(new)
        reaper._exited[logger] = 0
        reaper.adopt(logger, start_time(logger, zombie=True))   # just spawned: not reaped yet
        assert not reaper.has_exited(logger)
        for pid in (new, logger):
            os.kill(pid, signal.SIGTERM)
            assert exit_status(await reaper.wait(pid)) == 143
        nursery.cancel_scope.cancel()


async def test_a_new_process_reaped_before_it_was_adopted_keeps_its_exit() -> None:
    """The forker's reply comes after the process runs: a quick one may be reaped by then. Its exit
    is kept, also when its number went to a stranger meanwhile (the start time tells them apart)."""
    reaper = Reaper()
    async with trio.open_nursery() as nursery:
        await nursery.start(reaper.run)
        quick, stranger = _spawn("exit 5"), _spawn("exec sleep 30")
        started = start_time(quick, zombie=True)
        await _reaped(reaper, quick)
        reaper.adopt(quick, started)
        assert exit_status(await reaper.wait(quick)) == 5
        quicker = _spawn("exit 4")
        await _reaped(reaper, quicker)
        reaper.adopt(quicker, None)   # reaped before its start time could be read
        assert exit_status(await reaper.wait(quicker)) == 4
        again = _spawn("exit 6")
        started = start_time(again, zombie=True)
        await _reaped(reaper, again)
        reaper._exited[stranger] = reaper._exited.pop(again)   # its number, now the stranger's
        reaper.adopt(stranger, started)
        assert exit_status(await reaper.wait(stranger)) == 6
        os.kill(stranger, signal.SIGKILL)
        assert exit_status(await reaper.wait(stranger)) == 137
        nursery.cancel_scope.cancel()
