"""process.scheduler, process.ioPriority, linux.personality and CPU affinity, on the real kernel:
what the init and an exec run with, and the errors that name the field."""

import os
import signal
import subprocess

import pytest

from railcar.runtime import RuntimeFailure

from .conftest import BUSYBOX, create_captured, exec_captured, finish

# nice and policy (fields 19 and 41 of /proc/<pid>/stat), the I/O priority, the machine uname reports
SHOW = "cut -d' ' -f19,41 /proc/self/stat; ionice; uname -m"


def _exec(container, **process) -> list[str]:
    ran = exec_captured(container, {"args": ["sh", "-c", SHOW], "cwd": "/", "user": {"uid": 0, "gid": 0},
                                    **process})
    assert ran.status == 0, ran.output
    return ran.output.splitlines()


def test_the_init_and_an_exec_run_with_their_scheduler_io_priority_and_the_container_personality(
        make_bundle, state_root) -> None:
    """An exec takes the scheduler and I/O priority of its own process (containerd copies the
    container's into it) and the container's personality."""
    def edit(c: dict) -> None:
        c["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
        c["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE", "priority": 0}
        c["linux"]["personality"] = {"domain": "LINUX32"}

    host_io = subprocess.run([BUSYBOX, "ionice"], capture_output=True, text=True, check=True).stdout.strip()
    bundle = make_bundle(["sh", "-c", f"{SHOW}; echo END; sleep 100"], edit=edit)
    container, created = create_captured(bundle, state_root)
    container.start()
    try:
        init = created.read_until("END\n")   # before the kill below
        same = _exec(container, scheduler={"policy": "SCHED_BATCH", "nice": 7},
                     ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 6})
        own = _exec(container, scheduler={"policy": "SCHED_IDLE"})
        plain = _exec(container)
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)
    assert init.splitlines() == ["7 3", "idle", "i686", "END"]
    assert same == ["7 3", "best-effort: prio 6", "i686"]
    assert own == ["0 5", host_io, "i686"]
    assert plain[1:] == [host_io, "i686"] and plain[0].split()[1] == "0"


def test_a_scheduler_the_kernel_refuses_fails_create_naming_it(make_bundle, state_root) -> None:
    """SCHED_DEADLINE with a runtime above its deadline is refused by sched_setattr(2)."""
    scheduler = {"policy": "SCHED_DEADLINE", "runtime": 2_000_000, "deadline": 1_000_000, "period": 3_000_000}
    bundle = make_bundle(["true"], edit=lambda c: c["process"].update(scheduler=scheduler))
    with pytest.raises(RuntimeFailure, match=r"process\.scheduler: cannot set it: sched_setattr: Invalid argument$"):
        create_captured(bundle, state_root)
    assert not os.path.exists(os.path.join(state_root, bundle.id))


def _allowed(status: str) -> str:
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list:"))


def _policy(stat: str) -> int:
    return int(stat.rsplit(")", 1)[1].split()[38])   # field 41 of /proc/<pid>/stat


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin the caller to fewer")
def test_sched_deadline_works_for_a_caller_pinned_to_fewer_cpus(make_bundle, state_root) -> None:
    """The kernel refuses SCHED_DEADLINE to a process whose CPUs do not cover its root domain: the
    affinity the caller's pinning left is reset before the scheduler is set, as runc orders it.
    (A deadline task cannot fork: the init and the exec run `cat` alone.)"""
    deadline = {"policy": "SCHED_DEADLINE", "runtime": 1_000_000, "deadline": 10_000_000, "period": 10_000_000}
    bundle = make_bundle(["cat", "/proc/self/stat"], edit=lambda c: c["process"].update(scheduler=deadline))
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        container, created = create_captured(bundle, state_root)
        try:
            ran = exec_captured(container, {"args": ["cat", "/proc/self/stat"], "cwd": "/",
                                            "user": {"uid": 0, "gid": 0}, "scheduler": deadline})
            container.start()
        finally:
            init = finish(container, created)
    finally:
        os.sched_setaffinity(0, saved)
    assert (init.status, ran.status) == (0, 0), (init.output, ran.output)
    assert (_policy(init.output), _policy(ran.output)) == (6, 6)


@pytest.mark.cgroup_v2   # also in the v2 guest: there only a cpuset the cgroup enables resets an affinity
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell affinities apart")
def test_an_exec_runs_on_its_final_cpus_and_nothing_inherits_its_callers_pinning(make_bundle, state_root) -> None:
    """Called from a process pinned to one CPU (as under a containerd given CPUAffinity=), the init
    and an exec without execCPUAffinity run on every CPU the cgroup allows, as runc resets them; an
    exec with `final` runs there; an `initial` that cannot be taken fails the exec, naming it."""
    saved = os.sched_getaffinity(0)
    first, last = min(saved), max(saved)
    every = _allowed(open("/proc/self/status").read())
    bundle = make_bundle(["sleep", "100"])
    show = {"args": ["cat", "/proc/self/status"], "cwd": "/", "user": {"uid": 0, "gid": 0}}
    os.sched_setaffinity(0, {first})
    try:
        container, created = create_captured(bundle, state_root)
        try:
            container.start()
            with open(f"/proc/{created.result.pid}/status") as f:
                init = _allowed(f.read())
            plain = exec_captured(container, show)
            final = exec_captured(container, {**show, "execCPUAffinity": {"initial": str(first), "final": str(last)}})
            with pytest.raises(RuntimeFailure, match=r"process\.execCPUAffinity\.initial: cannot run on CPUs 8000"):
                exec_captured(container, {**show, "execCPUAffinity": {"initial": "8000"}})
        finally:
            container.kill(signal.SIGKILL)
            finish(container, created)
    finally:
        os.sched_setaffinity(0, saved)
    assert (init, _allowed(plain.output), _allowed(final.output)) == (every, every, str(last))
