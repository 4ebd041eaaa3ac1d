"""The reaper routes exits by pid and keeps those nobody waited for yet."""

import os
import signal

import trio

from railcar.shim.reaper import Reaper, exit_status


def _spawn(script: str) -> int:
    return os.posix_spawn("/bin/sh", ["/bin/sh", "-c", script], os.environ)


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
    Kill refused as "already finished"). An exit of the new process itself, reaped before it was
    adopted, stays."""
    reaper = Reaper()
    async with trio.open_nursery() as nursery:
        await nursery.start(reaper.run)
        orphan, new = _spawn("exit 3"), _spawn("exec sleep 30")
        await _reaped(reaper, orphan)
        reaper._exited[new] = reaper._exited.pop(orphan)   # the number given again: the kernel's part
        reaper.adopt(new)
        assert not reaper.has_exited(new)
        os.kill(new, signal.SIGTERM)
        assert exit_status(await reaper.wait(new)) == 143
        quick = _spawn("exit 5")
        await _reaped(reaper, quick)
        reaper.adopt(quick)   # reaped before it was adopted: its own exit
        assert exit_status(await reaper.wait(quick)) == 5
        nursery.cancel_scope.cancel()
