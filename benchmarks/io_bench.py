"""stdio throughput: producer -> pipe -> railcar.io -> FIFO -> reader, against `cat` as the ceiling.

Producer and reader are coreutils (`head -c N /dev/zero`, `cat FIFO > /dev/null`), so the middle
hop is what differs between rows:

  cat (ceiling)     a C `cat` copies the pipe into the FIFO
  railcar splice    railcar.io's pump forced onto splice(2)
  railcar copy      railcar.io's pump forced onto read/write (what non-pipe targets use)
  ProcessIO         the public API end to end (picks splice for a FIFO target)

Every pipe and FIFO keeps the kernel's capacity, as ProcessIO leaves them (so that a process waits
for its reader, as under runc), so all rows share the same plumbing. Each row runs --rounds times,
interleaved; the median is printed in MiB/s.

    .venv/bin/python benchmarks/io_bench.py [--mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable

import trio

from railcar.io import ProcessIO
from railcar.io.fds import FdSet
from railcar.io.pump import pump
from railcar.io.targets import open_output_path


def producer(size: int, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=stdout)


def reader(fifo: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["cat", fifo], stdout=subprocess.DEVNULL)


async def finished(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        status = await trio.to_thread.run_sync(process.wait)
        if status != 0:
            raise SystemExit(f"{process.args} exited with {status}")


async def via_cat(size: int, fifo: str) -> None:
    consumer = reader(fifo)
    read_end, write_end = os.pipe()
    head = producer(size, write_end)
    with open(fifo, "wb") as fifo_writer:
        cat = subprocess.Popen(["cat"], stdin=read_end, stdout=fifo_writer)
    os.close(read_end)
    os.close(write_end)
    await finished(head, cat, consumer)


async def via_pump(size: int, fifo: str, *, splice: bool) -> None:
    fds = FdSet()
    sink = open_output_path(fifo, fds)
    assert sink is not None   # (None only when asked to need a client)
    consumer = reader(fifo)
    read_end, write_end = fds.pipe()
    os.set_blocking(read_end, False)
    head = producer(size, write_end)
    fds.close(write_end)
    await pump(read_end, sink.fd, label="bench", splice=splice)
    fds.close_all()
    await finished(head, consumer)


async def via_process_io(size: int, fifo: str) -> None:
    pio = await ProcessIO.open("", fifo, "", terminal=False)
    assert pio.container_stdio is not None
    consumer = reader(fifo)
    head = producer(size, pio.container_stdio[1])
    pio.close_container_side()
    await pio.run()
    await pio.aclose()
    await finished(head, consumer)


async def main(size: int, rounds: int) -> None:
    cases: dict[str, Callable[[str], Awaitable[None]]] = {
        "cat (ceiling)": lambda fifo: via_cat(size, fifo),
        "railcar splice": lambda fifo: via_pump(size, fifo, splice=True),
        "railcar copy": lambda fifo: via_pump(size, fifo, splice=False),
        "ProcessIO (auto)": lambda fifo: via_process_io(size, fifo),
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory(prefix="railcar-io-bench-") as tmp:
        for round_ in range(rounds):
            for name, case in cases.items():
                fifo = os.path.join(tmp, f"{round_}-{len(rates[name])}-{name.split()[1 if ' ' in name else 0]}")
                os.mkfifo(fifo)
                start = time.perf_counter()
                await case(fifo)
                rates[name].append(size / (1 << 20) / (time.perf_counter() - start))
                os.unlink(fifo)
    ceiling = statistics.median(rates["cat (ceiling)"])
    print(f"{size >> 20} MiB per run, median of {rounds} rounds")
    print(f"{'path':<18} {'MiB/s':>9} {'vs cat':>7}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:<18} {median:9.0f} {median / ceiling:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB pushed through per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.mib << 20, args.rounds)
