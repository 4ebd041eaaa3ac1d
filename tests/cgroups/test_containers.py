"""cgroups, security and hooks seen from inside real containers (railcar.runtime.Container).

Run on the v1 host and, marked cgroup_v2, again in the pure-v2 guest. The bundles, the
subreaper and the leak check (mounts, processes, cgroups, netns, fds) are the runtime tests'.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import stat

import pytest
from google.protobuf import json_format

from railcar.runtime import Container, ContainerNotFound, RuntimeFailure, mountinfo, syscalls
from railcar.runtime.cgroups import CgroupV1, CgroupV2, open_cgroup
from railcar.runtime.security import CAP_NUMBERS
from railcar.ttrpc_proto.api import cgroups_v1_pb2, cgroups_v2_pb2
from tests.runtime.conftest import (  # noqa: F401 - fixtures are used by name
    DEFAULT_CAPS, busybox_base, container_cgroup_parent, create_captured, exec_captured, finish, make_bundle,
    no_leaks, read_console, run_container, state_root, subreaper)
from tests.runtime.conftest import wait_for as wait_for_exit

from .conftest import HYBRID, v2_only, wait_for

pytestmark = pytest.mark.cgroup_v2  # these run in the v2 guest too (and on the v1 host)


def mask(names: list[str]) -> str:
    return f"{sum(1 << CAP_NUMBERS[n] for n in names):016x}"


def status_of(output: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in output.splitlines() if ":\t" in line)


def cgroup_of(bundle) -> CgroupV1 | CgroupV2:
    return open_cgroup(bundle.config["linux"]["cgroupsPath"], bundle.id)  # type: ignore[return-value]


def cgroup_file(bundle, v1: tuple[str, str], v2: str) -> str:
    cg = cgroup_of(bundle)
    path = f"{cg.dir(v1[0])}/{v1[1]}" if isinstance(cg, CgroupV1) else f"{cg.dir}/{v2}"
    with open(path) as f:
        return f.read().strip()


def set_resources(**resources: object):
    def edit(config: dict) -> None:
        config["linux"]["resources"].update(resources)
    return edit


# -- the cgroup mount ---------------------------------------------------------------------

# The pids hierarchy's process list as the container's cgroup mount shows it (v1 or v2 host).
_LIST_PROCS = "cat /sys/fs/cgroup/pids/cgroup.procs /sys/fs/cgroup/cgroup.procs 2>/dev/null"


@pytest.mark.parametrize("cgroupns", [False, True])
def test_the_cgroup_mount_shows_the_container_its_own_cgroup_only(make_bundle, state_root, cgroupns) -> None:
    """Its processes are all the container's (the host's, in other pid namespaces, would read as
    0), with or without a cgroup namespace, in which /proc/self/cgroup reads "/"; and no cgroup2
    tree of a hybrid host is in it, as with runc. In a cgroup namespace its mounts are new ones whose
    source is "cgroup", as the spec names it and runc mounts it, for cgroup2 as well; on v1 they are
    in a tmpfs whose source is "tmpfs", and systemd's is "systemd", as runc's."""
    def edit(config: dict) -> None:
        if cgroupns:
            config["linux"]["namespaces"].append({"type": "cgroup"})

    sources = "awk '$5 ~ \"^/sys/fs/cgroup/?\" { for (i = 7; $i != \"-\"; i++); print \"source=\" $(i + 2) }' " \
              "/proc/self/mountinfo"
    ran = run_container(make_bundle(["sh", "-c", f"{_LIST_PROCS}; ls /sys/fs/cgroup; {sources}"], edit=edit),
                        state_root)
    assert ran.status == 0, ran.output
    procs = [line for line in ran.output.splitlines() if line.isdigit()]
    assert procs and "0" not in procs, ran.output
    assert "unified" not in ran.output.split()
    if cgroupns:
        top, *hierarchies = [w.removeprefix("source=") for w in ran.output.split() if w.startswith("source=")]
        if os.path.isdir("/sys/fs/cgroup/memory"):   # v1: a tmpfs holding one mount per hierarchy
            assert (top, set(hierarchies)) == ("tmpfs", {"cgroup", "systemd"}), ran.output
        else:
            assert (top, hierarchies) == ("cgroup", []), ran.output


@v2_only
def test_without_a_cgroup_namespace_a_privileged_container_sees_the_hierarchy_its_paths_name(make_bundle,
                                                                                            state_root) -> None:
    """A privileged pod on v2 gets no cgroup namespace (containerd's CRI), so /proc/self/cgroup names
    its cgroup from the host's root: with CAP_SYS_ADMIN, which could mount the hierarchy anyway, the
    mount shows it whole, as runc's does, and that path is there. Without it, the own subtree only."""
    script = "p=$(cut -d: -f3 /proc/self/cgroup); test -d /sys/fs/cgroup$p && echo found || echo missing"

    def holding(*sets: str):
        def edit(config: dict) -> None:
            caps = config["process"]["capabilities"]
            for name in sets:
                caps[name] = [*caps[name], "CAP_SYS_ADMIN"]
        return edit

    options = cgroup2_options()
    ran = run_container(make_bundle(["sh", "-c", script], edit=holding("bounding", "effective", "permitted")),
                        state_root)
    assert ran.output.split() == ["found"], ran.output
    assert cgroup2_options() == options   # (a new mount in the host's cgroup namespace would reset them)
    for sets in ((), ("bounding",)):   # in the bounding set alone, with no_new_privs, it is not held
        ran = run_container(make_bundle(["sh", "-c", script], edit=holding(*sets)), state_root)
        assert ran.output.split() == ["missing"], (sets, ran.output)


def cgroup2_options() -> str:
    """The super options of the host's cgroup2 mount (nsdelegate, memory_recursiveprot...)."""
    return next(m.super_options for m in mountinfo.read() if m.point == "/sys/fs/cgroup")


@v2_only
def test_an_exec_joins_the_init_in_the_child_cgroup_it_moved_to(make_bundle, state_root) -> None:
    """docker-in-docker, kind nodes and systemd move their init into a child cgroup and enable
    controllers below the container's, which v2 then refuses processes (EBUSY): as runc's, an exec
    joins the init's cgroup instead."""
    def edit(config: dict) -> None:
        config["linux"]["namespaces"].append({"type": "cgroup"})
        for m in config["mounts"]:
            if m["type"] == "cgroup":
                m["options"] = [o for o in m["options"] if o != "ro"]

    bundle = make_bundle(["sh", "-c", "mkdir /sys/fs/cgroup/init && echo 1 > /sys/fs/cgroup/init/cgroup.procs && "
                                      "echo +pids > /sys/fs/cgroup/cgroup.subtree_control && exec sleep 100"],
                         edit=edit)
    container, created = create_captured(bundle, state_root)
    try:
        container.start()
        moved = f"{cgroup_of(bundle).dir}/init/cgroup.procs"
        wait_for(lambda: os.path.exists(moved) and open(moved).read().split() == [str(created.result.pid)]
                 and "pids" in open(f"{cgroup_of(bundle).dir}/cgroup.subtree_control").read(), "the init moved")
        ran = exec_captured(container, {"args": ["cat", "/proc/self/cgroup"], "cwd": "/"})
        assert (ran.status, ran.output) == (0, "0::/init\n")
        with open(f"{cgroup_of(bundle).dir}/init/pids.max", "w") as f:
            f.write("1")   # the init alone: that limit is the one the exec would go over
        with pytest.raises(RuntimeFailure, match="at its pids limit .*/init/pids.max 1"):
            container.exec({"args": ["true"], "cwd": "/"})
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)


# -- security -------------------------------------------------------------------------------

def test_capabilities_and_no_new_privs_are_exactly_the_spec(make_bundle, state_root) -> None:
    ran = run_container(make_bundle(["cat", "/proc/self/status"]), state_root)
    assert ran.status == 0, ran.output
    st = status_of(ran.output)
    assert st["CapBnd"] == st["CapPrm"] == st["CapEff"] == mask(DEFAULT_CAPS)
    assert st["CapInh"] == st["CapAmb"] == mask([])
    assert st["NoNewPrivs"] == "1"


def test_non_root_user_with_ambient_capability(make_bundle, state_root) -> None:
    one = ["CAP_NET_BIND_SERVICE"]

    def edit(config: dict) -> None:
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        config["process"]["capabilities"] = {"bounding": one + ["CAP_KILL"], "effective": one, "permitted": one,
                                             "inheritable": one, "ambient": one}
        config["process"]["noNewPrivileges"] = False

    ran = run_container(make_bundle(["cat", "/proc/self/status"], edit=edit), state_root)
    assert ran.status == 0, ran.output
    st = status_of(ran.output)
    assert st["Uid"].split()[0] == "1000"
    assert st["CapBnd"] == mask(one + ["CAP_KILL"])
    assert st["CapPrm"] == st["CapEff"] == st["CapInh"] == st["CapAmb"] == mask(one)
    assert st["NoNewPrivs"] == "0"


def test_seccomp_filter_and_errno(make_bundle, state_root) -> None:
    def edit(config: dict) -> None:
        config["root"]["readonly"] = False
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV}]}

    ran = run_container(make_bundle(["sh", "-c", "grep Seccomp: /proc/self/status; mkdir /tmp/x"], edit=edit),
                        state_root)
    assert ran.status == 1
    assert "Seccomp:\t2" in ran.output
    assert os.strerror(errno.EXDEV) in ran.output


@pytest.mark.parametrize("forked_into_it", [True, False])
def test_the_init_and_an_exec_are_in_the_v2_cgroup_forked_into_it_or_moved(make_bundle, state_root, monkeypatch,
                                                                           forked_into_it) -> None:
    """On a pure v2 host the init's intermediate is forked into the container's cgroup, which it
    would join first thing, and so is an exec's process (its intermediate stays out). On a hybrid
    host both intermediates are forked into the cgroup2 tree's group at the cgroupsPath, where runc
    puts them (systemd tracks processes through that tree). Where the kernel or glibc does not
    allow that: moved in."""
    if not HYBRID and not isinstance(open_cgroup("/x", "x"), CgroupV2):
        pytest.skip("needs cgroup v2: a pure v2 host, or a hybrid one (this test VM)")
    forks, moves = [], []   # seen here: forks into the cgroup that we make, moves by pid that we make

    def fork_into_cgroup(fd: int, single_threaded: bool = False) -> int:
        if not forked_into_it:
            raise OSError(errno.ENOSYS, "clone3")
        pid = real_fork(fd, single_threaded)
        if pid:
            forks.append(pid)
        return pid

    def join(self: CgroupV2, init_pid: int = 0, pid: int = 0) -> None:
        if pid:
            moves.append(pid)
        real_join(self, init_pid, pid)
    real_fork, real_join = syscalls.fork_into_cgroup, CgroupV2.join
    monkeypatch.setattr(syscalls, "fork_into_cgroup", fork_into_cgroup)
    monkeypatch.setattr(CgroupV2, "join", join)
    bundle = make_bundle(["sleep", "100"])
    single_threaded = len(os.listdir("/proc/self/task")) == 1
    container, created = create_captured(bundle, state_root)
    try:
        container.start()
        ran = exec_captured(container, {"args": ["sh", "-c", "grep -h ^0:: /proc/self/cgroup /proc/1/cgroup"],
                                        "cwd": "/"})
        assert ran.output.split() == [f"0::{cgroup_of(bundle).path}"] * 2
        # here: both intermediates (hybrid), or the init's (v2: its intermediate forks the exec's
        # process); only from a single-threaded process (a test before may have left pytest a thread)
        assert len(forks) == (0 if not (forked_into_it and single_threaded) else 2 if HYBRID else 1)
        assert len(moves) == (0 if forked_into_it or HYBRID else 1)   # v2: the exec's process, unless born there
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)


def test_an_update_leaves_the_device_rules_create_set(make_bundle, state_root) -> None:
    """CRI's Update sends the spec's whole resources, device rules too: as runc's update, they are
    not applied again (alone they would drop the defaults, /dev/null among them)."""
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    try:
        container.update({"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 50}})
        ran = exec_captured(container, {"args": ["sh", "-c", "echo x > /dev/null && echo written"], "cwd": "/"})
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)
    assert (ran.status, ran.output.split()) == (0, ["written"]), ran


def test_a_program_is_found_under_a_profile_that_refuses_the_access_check(make_bundle, state_root) -> None:
    """Without no_new_privs the filter is in when args[0] is checked: where it refuses faccessat,
    the mode bits decide, as runc does (Docker's profiles before 20.10 lack faccessat2)."""
    def edit(config: dict) -> None:
        config["process"]["noNewPrivileges"] = False
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["faccessat", "faccessat2", "access"], "action": "SCMP_ACT_ERRNO"}]}

    ran = run_container(make_bundle(["echo", "ran"], edit=edit), state_root)
    assert (ran.status, ran.output.split()) == (0, ["ran"]), ran


def test_a_profile_that_denies_sendto_still_lets_the_process_report(make_bundle, state_root) -> None:
    """Without no_new_privs the filter goes in before the set-up ends; the process then reports
    with write(2), as runc does, so a profile made for runc (without sendto) still starts."""
    def edit(config: dict) -> None:
        config["process"]["noNewPrivileges"] = False
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["sendto"], "action": "SCMP_ACT_ERRNO"}]}

    ran = run_container(make_bundle(["sh", "-c", "grep Seccomp: /proc/self/status"], edit=edit), state_root)
    assert (ran.status, ran.output.split()) == (0, ["Seccomp:", "2"]), ran


def test_a_profile_that_denies_fstatfs_still_lets_the_init_start(make_bundle, state_root) -> None:
    """The procfs the exec FIFO is reopened through is checked before the filter goes in (without
    no_new_privs, before the user switch): after it, the reopen is one openat, as runc's is."""
    def edit(config: dict) -> None:
        config["process"]["noNewPrivileges"] = False
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["fstatfs", "statfs"], "action": "SCMP_ACT_ERRNO"}]}

    ran = run_container(make_bundle(["echo", "ran"], edit=edit), state_root)
    assert (ran.status, ran.output.split()) == (0, ["ran"]), ran


def test_a_terminal_reaches_the_caller_under_a_profile_that_denies_sendmsg(make_bundle, state_root) -> None:
    """The pty master goes to the caller before the filter (which without no_new_privs goes in
    before the user switch), as runc's console does: a profile without sendmsg still gets a terminal,
    for the init and for an exec."""
    def edit(config: dict) -> None:
        config["process"].update(noNewPrivileges=False, terminal=True)
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["sendmsg"], "action": "SCMP_ACT_ERRNO"}]}

    bundle = make_bundle(["sh", "-c", "tty; grep Seccomp: /proc/self/status; sleep 100"], edit=edit)
    container, created = Container.create(bundle.id, bundle.path, root=state_root, terminal=True)
    try:
        assert created.console_fd is not None
        container.start()
        ran = container.exec({"args": ["sh", "-c", "tty; grep Seccomp: /proc/self/status"], "cwd": "/",
                              "noNewPrivileges": False}, terminal=True)
        assert read_console(ran.console_fd).split() == ["/dev/pts/1", "Seccomp:", "2"]
        assert wait_for_exit(ran.pid) == 0
    finally:
        container.kill(signal.SIGKILL)
        out = read_console(created.console_fd)
        wait_for_exit(created.pid)
        container.delete()
    assert out.split()[:3] == ["/dev/pts/0", "Seccomp:", "2"]


@pytest.mark.parametrize("rules", ["deny-all first", "no resources", "allow rules only", "linux.devices denied",
                                   "linux.devices alone"])
def test_the_device_rules_let_any_node_be_made_but_only_allowed_ones_opened(make_bundle, state_root, rules) -> None:
    """As runc's built-in rules: mknod of any device (with CAP_MKNOD), but only devices the rules
    allow open, whether or not the spec's rules start with a deny (runc always starts from one); a
    device in linux.devices gets a node, not a rule. /dev/kmsg (1:11) opens write-only for root
    with no other check than the device cgroup's."""
    def edit(config: dict) -> None:
        caps = DEFAULT_CAPS + ["CAP_MKNOD"]
        config["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
        if rules == "no resources":
            del config["linux"]["resources"]
        elif rules == "allow rules only":
            config["linux"]["resources"] = {"devices": [{"allow": True, "type": "c", "major": 1, "minor": 7,
                                                         "access": "rwm"}]}
        elif rules == "linux.devices alone":   # makes the node, no rule (as runc; containerd adds one)
            config["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]
        elif rules == "linux.devices denied":
            config["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]
            config["linux"]["resources"]["devices"].append({"allow": False, "type": "c", "major": 1,
                                                            "minor": 11, "access": "rwm"})

    script = ("mknod /dev/kmsg2 c 1 11; echo made=$?; (exec 3>/dev/kmsg2) && echo opened=0 || echo opened=1; "
              "mknod /dev/null2 c 1 3; echo allowed=$?; head -c 1 /dev/null2; echo read=$?")
    ran = run_container(make_bundle(["sh", "-c", script], edit=edit), state_root)
    assert "Operation not permitted" in ran.output
    assert ["made=0", "opened=1", "allowed=0", "read=0"] == [w for w in ran.output.split() if "=" in w], ran.output


# -- resources ------------------------------------------------------------------------------

def test_memory_hog_is_oom_killed_and_notified(make_bundle, state_root) -> None:
    bundle = make_bundle(["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
                         edit=set_resources(memory={"limit": 32 << 20, "swap": 32 << 20}))
    container, created = create_captured(bundle, state_root)
    watcher = cgroup_of(bundle).oom_watcher()
    try:
        container.start()
        output = created.read_all()
        _, status = os.waitpid(created.result.pid, 0)
        assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL, output
        assert select.select([watcher], [], [], 20)[0] == [watcher]
        wait_for(lambda: watcher.read() >= 1, "the OOM kill to be counted")
    finally:
        watcher.close()
        container.delete()


def test_pids_limit_stops_a_fork_bomb(make_bundle, state_root) -> None:
    bundle = make_bundle(["sh", "-c", "for i in $(seq 40); do sleep 100 & done 2>/dev/null; exec sleep 100"],
                         edit=set_resources(pids={"limit": 10}))
    container, created = create_captured(bundle, state_root)
    container.start()
    wait_for(lambda: cgroup_file(bundle, ("pids", "pids.events"), "pids.events") != "max 0", "a refused fork")
    assert len(container.pids()) <= 10
    assert int(cgroup_file(bundle, ("pids", "pids.current"), "pids.current")) <= 10
    container.kill(signal.SIGKILL, all=True)
    finish(container, created)


def test_an_exec_at_the_pids_limit_is_refused_and_below_it_runs_in_the_cgroup(make_bundle, state_root) -> None:
    """The limit counts forks, not processes moved in, and an exec's process may be moved in: at
    the limit the exec is refused (runc's fails there too), rather than take the container over it.
    Below it, the exec runs in the container's cgroup, and what it forks counts."""
    bundle = make_bundle(["sleep", "100"], edit=set_resources(pids={"limit": 2}))  # the init and its intermediate
    container, created = create_captured(bundle, state_root)
    try:
        container.start()
        ran = exec_captured(container, {"args": ["cat", "/proc/self/cgroup"], "cwd": "/"})
        mark = ":pids:" if isinstance(cgroup_of(bundle), CgroupV1) else "0::"
        pids_line = next(line for line in ran.output.splitlines() if mark in line)
        assert ran.status == 0 and pids_line.rsplit(":", 1)[1] == cgroup_of(bundle).path, ran.output
        ran = exec_captured(container, {"args": ["sh", "-c", "true | true"], "cwd": "/"})
        assert ran.status != 0 and "can't fork" in ran.output, ran.output   # its own forks are refused
        container.update({"pids": {"limit": 1}})   # the init alone
        with pytest.raises(RuntimeFailure, match="at its pids limit"):
            container.exec({"args": ["true"], "cwd": "/"})
        assert container.pids() == [created.result.pid]  # nothing was left in it
        assert int(cgroup_file(bundle, ("pids", "pids.current"), "pids.current")) == 1
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)


def test_an_exec_opens_nothing_of_the_containers_before_its_device_rules_apply(make_bundle, state_root) -> None:
    """The exec process is in the container's cgroup before it opens anything there: a device node the
    container planted where the exec looks (here its /dev/null, which an exec without stdio opens)
    is refused by the container's device rules, as runc's exec is. /dev/kmsg (1:11) is not allowed."""
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    try:
        container.start()
        null = f"/proc/{created.result.pid}/root/dev/null"
        os.unlink(null)
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 11))
        with pytest.raises(RuntimeFailure) as refused:
            container.exec({"args": ["true"], "cwd": "/"})
        assert "Operation not permitted" in str(refused.value) and "/dev/null" in str(refused.value)
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)


def test_cpu_quota_is_in_the_cgroup_and_updates(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"], edit=set_resources(cpu={"quota": 50000, "period": 100000}))
    container, created = create_captured(bundle, state_root)
    container.start()
    quota = ("cpu", "cpu.cfs_quota_us"), "cpu.max"
    assert cgroup_file(bundle, *quota) in ("50000", "50000 100000")
    container.update({"cpu": {"quota": 25000}, "memory": {"limit": 64 << 20}})
    assert cgroup_file(bundle, *quota) in ("25000", "25000 100000")
    assert cgroup_file(bundle, ("memory", "memory.limit_in_bytes"), "memory.max") == str(64 << 20)
    container.kill(signal.SIGKILL)
    finish(container, created)


def test_pause_freezes_every_process_and_resume_thaws(make_bundle, state_root) -> None:
    bundle = make_bundle(["sh", "-c", "sleep 100 & exec sleep 100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    wait_for(lambda: len(container.pids()) == 2, "both processes")
    container.pause()
    assert container.state().status == "paused"
    if isinstance(cgroup_of(bundle), CgroupV1):  # v1's freezer parks tasks uninterruptibly
        for pid in container.pids():
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().rsplit(")", 1)[1].split()[0] == "D"
    else:
        assert "frozen 1" in cgroup_file(bundle, ("", ""), "cgroup.events")
    container.resume()
    assert container.state().status == "running"
    container.kill(signal.SIGKILL, all=True)
    finish(container, created)


def test_stats_reflect_real_usage(make_bundle, state_root) -> None:
    bundle = make_bundle(["sh", "-c", "head -c 30000000 /dev/zero > /dev/shm/fill; exec sleep 100"],
                         edit=set_resources(memory={"limit": 256 << 20}, pids={"limit": 50}))
    container, created = create_captured(bundle, state_root)
    container.start()
    v1 = isinstance(cgroup_of(bundle), CgroupV1)

    def usage() -> int:
        memory = container.stats()["memory"]
        return memory["usage"]["usage"] if v1 else memory["usage"]

    wait_for(lambda: usage() > 30_000_000, "memory usage to include the 30 MB file")
    metrics = json_format.ParseDict(container.stats(),
                                    cgroups_v1_pb2.Metrics() if v1 else cgroups_v2_pb2.Metrics())
    assert metrics.pids.current >= 1 and metrics.pids.limit == 50
    if v1:
        assert metrics.memory.usage.limit == 256 << 20 and metrics.cpu.usage.total > 0
    else:
        # memory.stat is flushed lazily from per-cpu counters: allow a page batch or so of lag
        assert metrics.memory.usage_limit == 256 << 20 and metrics.memory.shmem >= 30_000_000 - (1 << 20)
        assert metrics.cpu.usage_usec > 0
    container.kill(signal.SIGKILL)
    finish(container, created)


# -- hooks ----------------------------------------------------------------------------------

def recording_hook(log: str) -> dict:
    """Appends the state it got on stdin as one line (its own file: some kinds run concurrently)."""
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat >> {log}; echo >> {log}"]}


KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def test_every_hook_kind_runs_once_with_the_state(make_bundle, state_root) -> None:
    def edit(config: dict) -> None:
        config["root"]["readonly"] = False  # the startContainer hook writes inside the container

    bundle = make_bundle(["true"], edit=edit)
    # startContainer runs inside the container (its path and log resolve there); the others on the host
    bundle.config["hooks"] = {kind: [recording_hook(f"/hook-{kind}" if kind == "startContainer"
                                                    else f"{bundle.rootfs}/hook-{kind}")] for kind in KINDS}
    bundle.write()
    container, created = create_captured(bundle, state_root)
    init_pid = created.result.pid
    container.start()
    ran = finish(container, created)
    assert ran.status == 0, ran.output
    states = {}
    for kind in KINDS:
        with open(f"{bundle.rootfs}/hook-{kind}") as f:
            lines = f.read().splitlines()
        assert len(lines) == 1, f"{kind} ran {len(lines)} times"
        states[kind] = json.loads(lines[0])
    for kind, state in states.items():
        assert state["id"] == bundle.id and state["bundle"] == bundle.path, kind
    for kind in ("prestart", "createRuntime", "createContainer"):
        assert (states[kind]["status"], states[kind]["pid"]) == ("creating", init_pid), kind
    assert states["startContainer"]["pid"] == states["poststart"]["pid"] == init_pid
    assert states["poststop"]["status"] == "stopped"


def test_a_start_container_hook_alone_runs_in_the_container(make_bundle, state_root) -> None:
    """Without an earlier hook kind having loaded it, the init still has what runs hooks after pivot_root."""
    def edit(config: dict) -> None:
        config["root"]["readonly"] = False
        config["hooks"] = {"startContainer": [recording_hook("/hook-startContainer")]}

    bundle = make_bundle(["cat", "/hook-startContainer"], edit=edit)
    ran = run_container(bundle, state_root)
    assert ran.status == 0, ran.output
    assert json.loads(ran.output)["id"] == bundle.id


def test_failing_prestart_hook_aborts_create_and_leaves_nothing(make_bundle, state_root, tmp_path) -> None:
    """...but the poststop hooks, which undo what earlier hooks did: runtime-spec goes on to them."""
    poststop_log = tmp_path / "poststop"

    def edit(config: dict) -> None:
        config["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no >&2; exit 7"]}],
                           "poststop": [recording_hook(str(poststop_log))]}

    bundle = make_bundle(["true"], edit=edit)
    with pytest.raises(RuntimeFailure, match="prestart") as e:
        create_captured(bundle, state_root)
    assert "exited with status 7: stderr: no" in str(e.value)
    [state] = [json.loads(line) for line in poststop_log.read_text().splitlines()]
    assert (state["id"], state["status"]) == (bundle.id, "stopped")
    with pytest.raises(ContainerNotFound):
        Container.load(bundle.id, root=state_root)
    cg = cgroup_of(bundle)
    assert cg.pids() == []
    # no_leaks checks mounts, processes, cgroups, netns and fds after the test
