"""create + start + wait + delete of /bin/true: railcar's library beside `runc run` and `crun run`;
then exec of /bin/true into a running container beside `runc exec` and `crun exec`.

Same bundle (from `runc spec`, busybox-static rootfs), interleaved rounds, medians and ratios.
crun 1.8 refuses this hybrid cgroup host, so it runs through ../shared/tools/crun-hybrid, which
hides the v2 mount in a private mount namespace (an extra `unshare` + `bash` per run is included
in its figure). railcar runs in-process, as the shim's forker calls it: the fork of an
already-imported interpreter is the point.

    .venv/bin/python benchmarks/runtime_bench.py [ROUNDS]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from railcar.runtime import Container
from railcar.runtime import syscalls as sc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "packaging"))
import devenv  # noqa: E402

CRUN_HYBRID = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tools",
                           "crun-hybrid")
CGROUP_PARENT = f"/railcar-bench-{os.getpid()}"


def make_bundle(base: str, name: str, args: list[str], cgroup: str) -> str:
    bundle = os.path.join(base, name)
    os.makedirs(os.path.join(bundle, "rootfs", "bin"))
    shutil.copy2("/bin/busybox", os.path.join(bundle, "rootfs", "bin", "busybox"))
    os.symlink("busybox", os.path.join(bundle, "rootfs", "bin", "true"))
    for d in ("proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(bundle, "rootfs", d))
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/{cgroup}"
    with open(path, "w") as f:
        json.dump(config, f)
    return bundle


def run_railcar(bundle: str, root: str, n: int) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    try:
        container, result = Container.create(f"rc{n}", bundle, root=root, stdio=(null,) * 3)
    finally:
        os.close(null)
    container.start()
    while os.waitpid(-1, 0)[0] != result.pid:
        pass
    container.delete()


def run_cli(argv: list[str], bundle: str, root: str, n: int) -> None:
    subprocess.run([*argv, "--root", root, "run", "--bundle", bundle, f"cli{n}"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def exec_railcar(container: Container) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    try:
        result = container.exec({"args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"],
                                 "user": {"uid": 0, "gid": 0}}, stdio=(null,) * 3)
    finally:
        os.close(null)
    while os.waitpid(-1, 0)[0] != result.pid:
        pass


def cli(argv: list[str], root: str, *args: str) -> None:
    subprocess.run([*argv, "--root", root, *args], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)


def interleaved(runners: dict[str, Callable[[int], None]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    for n in range(rounds + 1):           # round 0 warms caches and is not counted
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(n)
            if n:
                times[name].append(time.perf_counter() - t0)
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print(f"{title}, {len(times['railcar'])} interleaved rounds, median ms:")
    for name, ms in medians.items():
        print(f"  {name:8s} {ms:8.1f} ms   (min {min(times[name]) * 1000:.1f})")
    for other in ("runc", "crun"):
        print(f"  railcar / {other}: {medians['railcar'] / medians[other]:.2f}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    base = tempfile.mkdtemp(prefix="railcar-bench-")
    clis = {"runc": ["runc"], "crun": [CRUN_HYBRID]}
    roots = {name: os.path.join(base, f"state-{name}") for name in ("railcar", *clis)}
    sleepers: list[Callable[[], None]] = []   # stops the exec targets, newest first
    try:
        bundle = make_bundle(base, "true", ["/bin/true"], "bench")
        runners = {"railcar": lambda n: run_railcar(bundle, roots["railcar"], n)}
        for name, argv in clis.items():
            runners[name] = lambda n, argv=argv, root=roots[name]: run_cli(argv, bundle, root, n)
        lifecycle = interleaved(runners, rounds)

        for name in roots:
            sleeper = make_bundle(base, f"sleep-{name}", ["/bin/busybox", "sleep", "1000"],
                                  f"sleep-{name}")
            if name == "railcar":
                target, _ = Container.create("sleeper", sleeper, root=roots[name])
                sleepers.insert(0, lambda target=target: target.delete(force=True))
                target.start()
                runners[name] = lambda n, target=target: exec_railcar(target)
            else:
                argv, root = clis[name], roots[name]
                cli(argv, root, "run", "-d", "--bundle", sleeper, "sleeper")
                sleepers.insert(0, lambda argv=argv, root=root: cli(argv, root, "delete", "-f",
                                                                    "sleeper"))
                runners[name] = lambda n, argv=argv, root=root: cli(argv, root, "exec", "sleeper",
                                                                    "/bin/true")
        execs = interleaved(runners, rounds)
    finally:
        for stop in sleepers:
            stop()
        shutil.rmtree(base, ignore_errors=True)
        for hierarchy in devenv.cgroup_hierarchies():
            parent = os.path.join(hierarchy, CGROUP_PARENT.lstrip("/"))
            if os.path.isdir(parent):
                for child in os.listdir(parent):
                    if os.path.isdir(os.path.join(parent, child)):
                        os.rmdir(os.path.join(parent, child))
                os.rmdir(parent)
    report("create+start+wait+delete of /bin/true", lifecycle)
    report("exec of /bin/true into a running container (until it exited)", execs)
    print("  (crun through crun-hybrid: +1 unshare and bash per run)")


if __name__ == "__main__":
    main()
