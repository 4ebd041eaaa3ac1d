"""ttrpc unary round trips over a unix socket: railcar's client against railcar's server.

    .venv/bin/python benchmarks/ttrpc_bench.py [--calls N] [--concurrency C]

The server runs in its own process (as a shim would) and answers containerd.task.v2.Task/Connect;
the client measures sequential latency (p50/p99) and throughput with C calls in flight on one
connection. Prints numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import trio

from railcar.ttrpc_proto.api import task_v2_pb2
from railcar.ttrpc_proto.client import connect_unix
from railcar.ttrpc_proto.server import CallContext, Server

TASK = "containerd.task.v2.Task"


async def _serve(path: str) -> None:
    async def connect(req: task_v2_pb2.ConnectRequest, ctx: CallContext) -> task_v2_pb2.ConnectResponse:
        return task_v2_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=1, version="bench")

    server = Server()
    server.register(TASK, {"Connect": (task_v2_pb2.ConnectRequest, connect)})
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(64)
    print("ready", flush=True)
    await server.serve(sock)


async def _measure(path: str, calls: int, concurrency: int) -> None:
    request = task_v2_pb2.ConnectRequest(id="bench")
    async with connect_unix(path) as client:
        for _ in range(min(500, calls)):  # warm-up
            await client.call(TASK, "Connect", request, task_v2_pb2.ConnectResponse)
        latencies = []
        start = time.perf_counter()
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            await client.call(TASK, "Connect", request, task_v2_pb2.ConnectResponse)
            latencies.append(time.perf_counter_ns() - t0)
        sequential = calls / (time.perf_counter() - start)
        latencies.sort()
        p50 = latencies[len(latencies) // 2] / 1e3
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1e3

        async def worker(n: int) -> None:
            for _ in range(n):
                await client.call(TASK, "Connect", request, task_v2_pb2.ConnectResponse)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker, calls // concurrency)
        concurrent = (calls // concurrency * concurrency) / (time.perf_counter() - start)
    print(f"ttrpc unary Connect over a unix socket, {calls} calls")
    print(f"  sequential: {sequential:8.0f} calls/s   p50 {p50:7.1f} us   p99 {p99:7.1f} us   "
          f"mean {statistics.fmean(latencies) / 1e3:7.1f} us")
    print(f"  {concurrency:3d} in flight: {concurrent:8.0f} calls/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        try:
            trio.run(_serve, args.serve)
        except KeyboardInterrupt:
            pass
        return 0
    with tempfile.TemporaryDirectory(prefix="ttrpc-bench-") as tmp:
        path = os.path.join(tmp, "bench.sock")
        server = subprocess.Popen([sys.executable, __file__, "--serve", path], stdout=subprocess.PIPE)
        try:
            assert server.stdout is not None and server.stdout.readline() == b"ready\n"
            trio.run(_measure, path, args.calls, args.concurrency)
        finally:
            server.terminate()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
