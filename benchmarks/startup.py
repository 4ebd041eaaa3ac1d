"""Container start-up (one at a time and a burst at once), exec latency, stdout throughput and shim
memory: railcar against runc and crun.

All runtimes run through one private containerd, interleaved round by round so that machine noise
falls on all of them alike; medians and ratios against runc are printed. crun 1.8 refuses this
hybrid cgroup host, so it runs through ../shared/tools/crun-hybrid (crun in a private mount
namespace that hides the v2 mount), as the runc binary of containerd's runc-v2 shim. Every
benchmarked command's exit status is checked: a failing create is fast and would flatter us.
railcar's first `start` launches its warm zygote (the first run is cold; medians absorb it); shims it
forked are found through their bundles' shim.pid, and the zygote is stopped at the end. railcar's
memory counts every process it keeps: each daemon with its forker and the forker's spare worker,
and the zygote with its spare daemon (a per-node cost, shared by all containers), plus any memfd
copy of the interpreter they run from (railcar's fallback where it cannot seal through an
overlayfs: most of such a copy is mapped by nobody, so in no PSS); it is printed
right away, again once spare workers have been retired, and once more after the zygote was
stopped, as it stops when no container started for RAILCAR_ZYGOTE_IDLE (10 minutes). The containerd
gets a namespace of its own, whose runtime state directory is removed at the end. `--busy N` runs
the latency benchmarks again with N busy loops (shell `while :; do :; done`) competing for the CPUs,
as on a loaded node: it shows how much longer each runtime's chain of processes takes then.

    .venv/bin/python benchmarks/startup.py [--rounds N] [--burst N] [--megabytes N] [--containers N]
                                           [--busy N] [--skip-memory] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "packaging"))
import devenv  # noqa: E402

from railcar.shim import paths  # noqa: E402

CRUN_HYBRID = (HERE.parent.parent / "shared" / "tools" / "crun-hybrid").resolve()
RUNTIMES: dict[str, list[str]] = {
    "railcar": ["--runtime", "io.containerd.railcar.v2"],
    "runc": ["--runtime", "io.containerd.runc.v2"],
    "crun": ["--runtime", "io.containerd.runc.v2", "--runc-binary", str(CRUN_HYBRID)],
}
SHIM_BINARIES = {"runc": "containerd-shim-runc-v2", "crun": "containerd-shim-runc-v2"}


def timed(cd: devenv.Containerd, *args: str, what: str) -> float:
    start = time.perf_counter()
    result = cd.ctr(*args, timeout=120)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{what} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return elapsed


def report(title: str, unit: str, samples: dict[str, list[float]], scale: float = 1.0) -> None:
    print(f"\n{title}")
    base = statistics.median(samples["runc"]) if samples.get("runc") else None
    for name, values in samples.items():
        med = statistics.median(values)
        ratio = f"  {med / base:5.2f}x runc" if base else ""
        print(f"  {name:8s} median {med * scale:9.1f} {unit}  (n={len(values)}){ratio}")


def bench_run(cd: devenv.Containerd, image: str, rounds: int) -> None:
    samples: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    for i in range(rounds):
        for name, flags in RUNTIMES.items():
            samples[name].append(timed(cd, "run", "--rm", *flags, image, f"b-{name}-{i}", "/bin/true",
                                       what=f"{name} run"))
    report("ctr run --rm IMAGE /bin/true", "ms", samples, 1000)


def bench_exec(cd: devenv.Containerd, image: str, rounds: int) -> None:
    """Also what the execs cost the container's cgroup (page faults and CPU time), for all rounds:
    whatever of the runtime's own work runs inside the container's cgroup is charged to it."""
    samples: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    charges: dict[str, list[tuple[int, int]]] = {}
    for name, flags in RUNTIMES.items():
        timed(cd, "run", "-d", *flags, image, f"x-{name}", "sleep", "1000", what=f"{name} run -d")
    try:
        inits = {name: task_pid(cd, f"x-{name}") for name in RUNTIMES}
        charges = {name: [charged(pid)] for name, pid in inits.items()}
        for i in range(rounds):
            for name in RUNTIMES:
                samples[name].append(timed(cd, "task", "exec", "--exec-id", f"e{i}", f"x-{name}", "/bin/true",
                                           what=f"{name} exec"))
        for name, pid in inits.items():
            charges[name].append(charged(pid))
    finally:
        for name in RUNTIMES:
            cd.ctr("task", "kill", "-s", "SIGKILL", f"x-{name}")
            cd.ctr("task", "delete", "-f", f"x-{name}")
            cd.ctr("container", "delete", f"x-{name}")
    report("ctr task exec CONTAINER /bin/true", "ms", samples, 1000)
    print("  charged to the container's cgroup per exec (all rounds):")
    for name, ((faults0, cpu0), (faults1, cpu1)) in charges.items():
        print(f"  {name:8s} {(faults1 - faults0) / rounds:6.0f} page faults, {(cpu1 - cpu0) / rounds / 1e6:5.2f} ms CPU")


def task_pid(cd: devenv.Containerd, container_id: str) -> int:
    """The pid of a task's init, from `ctr task ls`."""
    for line in cd.ctr("task", "ls").stdout.decode().splitlines():
        fields = line.split()
        if fields and fields[0] == container_id:
            return int(fields[1])
    raise SystemExit(f"no task {container_id}")


def charged(pid: int) -> tuple[int, int]:
    """Page faults and CPU nanoseconds counted so far in the cgroup of `pid` (a container's init),
    from v1's memory and cpuacct hierarchies or v2's one."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["unified"]:
            paths[controller] = path
    if "memory" in paths:
        stat = Path(f"/sys/fs/cgroup/memory{paths['memory']}/memory.stat").read_text()
        cpu = int(Path(f"/sys/fs/cgroup/cpuacct{paths['cpuacct']}/cpuacct.usage").read_text())
    else:
        stat = Path(f"/sys/fs/cgroup{paths['unified']}/memory.stat").read_text()
        usage = Path(f"/sys/fs/cgroup{paths['unified']}/cpu.stat").read_text().split()
        cpu = int(usage[usage.index("usage_usec") + 1]) * 1000
    return next(int(line.split()[1]) for line in stat.splitlines() if line.startswith("pgfault ")), cpu


def bench_burst(cd: devenv.Containerd, image: str, rounds: int, width: int) -> None:
    """`width` ctr run --rm at once (a node starting many pods, compose up): the time until all ended."""
    samples: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    names = list(RUNTIMES)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:  # each follows each in turn
            cmds = [["ctr", "--address", cd.address, "--namespace", cd.namespace, "run", "--rm",
                     *RUNTIMES[name], image, f"p-{name}-{i}-{j}", "/bin/true"] for j in range(width)]
            start = time.perf_counter()
            procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cd.env)
                     for cmd in cmds]
            try:
                errors = [proc.communicate(timeout=120)[1] for proc in procs]
            finally:
                for proc in procs:  # a ctr that hung must not outlive the benchmark
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            samples[name].append(time.perf_counter() - start)
            for proc, err in zip(procs, errors):
                if proc.returncode != 0:
                    raise SystemExit(f"{name} parallel run failed ({proc.returncode}): "
                                     f"{err.decode(errors='replace')}")
    report(f"{width} x ctr run --rm IMAGE /bin/true at once", "ms", samples, 1000)


def bench_throughput(cd: devenv.Containerd, image: str, megabytes: int) -> None:
    samples: dict[str, list[float]] = {}
    for name, flags in RUNTIMES.items():
        cmd = ["ctr", "--address", cd.address, "--namespace", cd.namespace, "run", "--rm", *flags, image,
               f"t-{name}", "head", "-c", str(megabytes * 1000 * 1000), "/dev/zero"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cd.env)
        received = 0
        while chunk := proc.stdout.read(1 << 20):
            received += len(chunk)
        err = proc.stderr.read()
        if proc.wait() != 0 or received != megabytes * 1000 * 1000:
            raise SystemExit(f"{name} throughput run failed: got {received} bytes, {err.decode(errors='replace')}")
        samples[name] = [time.perf_counter() - start]
    report(f"{megabytes} MB of stdout through ctr run", "s", samples)


def pss_kib(pid: int) -> int:
    """`pid`'s PSS; 0 if it is gone (a spare worker retires when it will)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def railcar_shim_pids(cd: devenv.Containerd, ids: list[str]) -> tuple[list[int], list[int]]:
    """railcar daemons (forked by the zygote, so not findable by name) from their bundles' shim.pid,
    and each daemon's forker with its spare worker: together they are the per-shim cost."""
    daemons = sorted({int((cd.bundle(cid) / "shim.pid").read_text()) for cid in ids})
    helpers = []
    for pid in daemons:
        for forker in children(pid, "railcar-forker"):
            helpers += [forker, *children(forker, "railcar-worker")]
    return daemons, helpers


def children(pid: int, *comms: str) -> list[int]:
    """The children of `pid` whose comm is one of `comms`."""
    try:
        kids = map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        return [kid for kid in kids if Path(f"/proc/{kid}/comm").read_text().strip() in comms]
    except OSError:
        return []


def zygote_group(cd: devenv.Containerd) -> list[int]:
    """The zygote and its spare daemon with the spare's forker and worker (the daemons it forked are
    counted apart), and any spare left by a zygote that is gone."""
    found = []
    for pid in cd.started_processes("railcar-zygote", "railcar-spare"):
        found.append(pid)
        for forker in children(pid, "railcar-forker"):
            found += [forker, *children(forker, "railcar-worker")]
    return found


def shim_pids(binary: str, namespace: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].decode(errors="replace").endswith(binary) and b"start" not in cmdline \
                and namespace.encode() in cmdline:
            pids.append(int(entry))
    return pids


SETTLE = 3.0  # seconds: railcar retires a forker's spare worker after 2 s without requests


def sealed_copies_kib(pids: list[int]) -> int:
    """The memfd copies of the interpreter these processes run from: railcar's sealing where it cannot
    make its private overlayfs. The pages of a copy that no process maps are memory in no PSS, so each
    copy counts whole, once (its mapped pages are then counted twice: an overstatement)."""
    copies = {}
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/exe").startswith("/memfd:"):
                exe = os.stat(f"/proc/{pid}/exe")
                copies[exe.st_dev, exe.st_ino] = exe.st_size
        except OSError:
            continue
    return sum(copies.values()) // 1024


def shim_memory(cd: devenv.Containerd, name: str, ids: list[str]) -> str:
    """Shim processes and PSS per container now, for `ids` of runtime `name`."""
    count = len(ids)
    split = ""
    total = 0
    if name == "railcar":
        # The zygote is a per-node cost, but only railcar has one: its share is counted.
        daemons, forkers = railcar_shim_pids(cd, ids)
        zygotes = zygote_group(cd)
        pids = daemons + forkers + zygotes
        total = sealed_copies_kib(pids)
        split = "  (daemons {:.2f}, forkers and spare workers {:.2f}, zygote and spare daemon {:.2f}".format(
            *(sum(map(pss_kib, group)) / count / 1024 for group in (daemons, forkers, zygotes)))
        split += f", memfd copies {total / count / 1024:.2f})" if total else ")"
    else:
        pids = shim_pids(SHIM_BINARIES[name], cd.namespace)
    total += sum(pss_kib(p) for p in pids)
    return f"{len(pids):2d} shim processes, {total / count / 1024:6.2f} MiB PSS per container{split}"


MEMORY_LAYOUTS = (
    # label, railcar flags, runc flags: each container names no group (railcar pools them, runc's shim
    # serves each alone); each in a pod of its own (railcar pools the pods, runc's shim serves each
    # pod alone); each names a group of its own (a daemon each, as runc); all in one pod, the first
    # container named after it, as CRI names a pod's sandbox container
    ("default", lambda name, cid: [], lambda name, cid: []),
    ("a pod each", lambda name, cid: ["--annotation", f"io.kubernetes.cri.sandbox-id={cid}"],
     lambda name, cid: ["--annotation", f"io.kubernetes.cri.sandbox-id={cid}"]),
    ("a daemon each", lambda name, cid: ["--annotation", f"io.containerd.railcar.v2.group={cid}"], None),
    ("one pod", lambda name, cid: ["--annotation", f"io.kubernetes.cri.sandbox-id={cid.rsplit('-', 1)[0]}-0"],
     lambda name, cid: ["--annotation", f"io.kubernetes.cri.sandbox-id={cid.rsplit('-', 1)[0]}-0"]),
)


def bench_memory(cd: devenv.Containerd, image: str, count: int) -> None:
    print(f"\nshim PSS per running container ({count} containers each; at once and {SETTLE:.0f} s later)")
    for layout, railcar_flags, runc_flags in MEMORY_LAYOUTS:
        for name, flags in RUNTIMES.items():
            extra_of = railcar_flags if name == "railcar" else runc_flags
            if name == "crun" or extra_of is None:
                continue  # crun: the same Go shim as runc
            ids = [f"m-{name}-{layout.replace(' ', '')}-{i}" for i in range(count)]
            try:
                for cid in ids:
                    timed(cd, "run", "-d", *flags, *extra_of(name, cid), image, cid, "sleep", "1000",
                          what=f"{name} run -d")
                print(f"  {name:8s} {layout:14s} {shim_memory(cd, name, ids)}")
                time.sleep(SETTLE)
                print(f"  {'':8s} {'settled':14s} {shim_memory(cd, name, ids)}")
                if name == "railcar":  # as once no container started for RAILCAR_ZYGOTE_IDLE (10 min)
                    cd.stop_zygotes()
                    print(f"  {'':8s} {'zygote gone':14s} {shim_memory(cd, name, ids)}")
            finally:
                for cid in ids:
                    cd.ctr("task", "kill", "-s", "SIGKILL", cid)
                for cid in ids:
                    cd.ctr("task", "delete", "-f", cid)
                    cd.ctr("container", "delete", cid)


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--burst", type=int, default=10, help="containers started at once (0: skip)")
    parser.add_argument("--busy", type=int, default=0, help="busy loops for a second, loaded round (0: skip)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    venv_bin = Path(sys.executable).parent
    compile_railcar()
    with tempfile.TemporaryDirectory(prefix="railcar-bench-") as work:
        cd = devenv.start_containerd(Path(work), extra_path=[str(venv_bin)])
        cd.namespace = f"railcar-bench-{os.getpid()}"  # its cgroup parent and runtime state dir are ours
        try:
            image = devenv.busybox_image(cd)
            bench_latency(cd, image, args.rounds, args.burst)
            if args.busy:
                loops = f"{args.busy} busy loop" + ("s" if args.busy > 1 else "")
                print(f"\n--- again, with {loops} on {os.cpu_count()} CPUs ---")
                with busy_loops(args.busy):
                    bench_latency(cd, image, args.rounds, args.burst)
            if not args.skip_throughput:
                bench_throughput(cd, image, args.megabytes)
            if not args.skip_memory:
                bench_memory(cd, image, args.containers)
        finally:
            cd.stop()
            cd.stop_zygotes()
            try:
                os.rmdir(paths.runtime_root(cd.namespace))
            except OSError:
                pass


def bench_latency(cd: devenv.Containerd, image: str, rounds: int, burst: int) -> None:
    bench_run(cd, image, rounds)
    bench_exec(cd, image, rounds)
    if burst:
        bench_burst(cd, image, max(3, rounds // 3), burst)


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """`count` shells spinning on the CPU, for as long as the block runs."""
    loops = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def compile_railcar() -> None:
    """Write railcar's bytecode caches, as an installed package has them. With PYTHONDONTWRITEBYTECODE
    set (as in this environment), a module edited since its last compile would otherwise be compiled
    again by every `start` and `delete` and charged to railcar's start-up."""
    with open(HERE.parent / "pyproject.toml", "rb") as f:
        folders = tomllib.load(f)["tool"]["setuptools"]["package-dir"].values()
    for folder in folders:
        compileall.compile_dir(HERE.parent / folder, quiet=1)


if __name__ == "__main__":
    main()
