"""The cgroup v2 driver: one directory in the unified hierarchy at /sys/fs/cgroup."""

from __future__ import annotations

import errno
import os
import signal

from . import files, resources as res, stats_v2
from .devices_bpf import apply_device_rules
from .errors import CgroupError, ResourceError
from .host import CGROUP_ROOT
from .interface import Cgroup, OomWatcher, remove_tree, wait_until
from .oom import InotifyOomWatcher, oom_kills

# Controllers delegated down to a container when the host offers them.
CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids", "hugetlb", "misc", "rdma")


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000], the mapping runc and crun share."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000]."""
    return 1 + ((weight - 10) * 9999) // 990


def _kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel."""
    major, minor = (os.uname().release.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# Before 6.4 (42a11bf5c543, "cgroup/cpuset: Make cpuset_fork() handle CLONE_INTO_CGROUP properly"),
# a child forked into a cgroup kept its parent's cpuset masks instead of the cgroup's.
_KERNEL = _kernel_version()


class CgroupV2(Cgroup):
    version = 2

    def __init__(self, path: str, root: str = CGROUP_ROOT) -> None:
        super().__init__(path)
        self.root = root
        self.dir = root + path

    def _file(self, name: str) -> str:
        return f"{self.dir}/{name}"

    def _pids_hierarchy(self, init_pid: int) -> tuple[str, str] | None:
        """The init's own cgroup where an exec's process would join it (see `join`): the
        container's, with controllers enabled for its children, takes no process."""
        beside = self._init_inside(init_pid)
        if beside is not None and (files.read_optional(self._file("cgroup.subtree_control")) or "").strip():
            return self.root, self.root + beside
        return self.root, self.dir

    def _init_inside(self, init_pid: int) -> str | None:
        """The cgroup of the container's init if it moved into one inside the container's (None
        otherwise): where an exec joins it, and no further (not into an ancestor's limits)."""
        beside = files.v2_cgroup_of(init_pid) if init_pid else None
        return beside if beside is not None and beside.startswith(self.path + "/") else None

    # -- lifecycle --------------------------------------------------------------------------

    def create(self, resources: dict | None) -> None:
        """mkdir each level and enable the controllers below every ancestor (not in the leaf:
        v2's no-internal-process rule would then forbid the container's own processes)."""
        available = set(files.read(f"{self.root}/cgroup.controllers").split())
        parent = self.root
        for part in self.path.strip("/").split("/"):
            enabled = set(files.read(f"{parent}/cgroup.subtree_control").split())
            for c in CONTROLLERS:
                if c in available and c not in enabled:
                    files.write(f"{parent}/cgroup.subtree_control", f"+{c}")
            parent = f"{parent}/{part}"
            os.makedirs(parent, exist_ok=True)
        self._apply(resources or {})  # no check pass or undo: a create that fails removes the cgroup

    def add_process(self, pid: int) -> None:
        files.write(self._file("cgroup.procs"), pid)

    def join(self, init_pid: int = 0, pid: int = 0) -> None:
        """An init that moved itself into a child cgroup and enabled controllers for its children
        (docker-in-docker, kind nodes, systemd in a container do) leaves the container's cgroup
        refusing processes: v2's no-internal-process rule (EBUSY). An exec then joins the cgroup
        the init is in, as runc's does. runc does so on any error and wherever the init is (also
        when an init without a cgroup namespace moved itself out); railcar only on EBUSY and only
        into a cgroup inside the container's, so that no exec lands in an ancestor's limits."""
        if not pid and files.v2_cgroup_of() == self.path:
            return   # forked into it (`open_fork_target`)
        pid = pid or os.getpid()
        try:
            self.add_process(pid)
        except CgroupError as e:
            if e.errno != errno.EBUSY or not init_pid:
                raise
            beside = self._init_inside(init_pid)
            if beside is None:
                raise
            files.write(f"{self.root}{beside}/cgroup.procs", pid)

    def open_fork_target(self, forked: str) -> int | None:
        """The cgroup itself for the init's intermediate, which would join it first thing (see
        `join`), and for an exec's process; none for an exec's intermediate, which stays out of the
        container's limits (`process._exec_intermediate`). None too where the kernel would give a
        child forked into a cpuset its parent's CPUs and memory nodes (before Linux 6.4)."""
        if forked == "exec helper" or (_KERNEL < (6, 4) and "cpuset" in files.read(self._file("cgroup.controllers"))):
            return None
        return os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def pids(self) -> list[int]:
        if not os.path.isdir(self.dir):
            return []
        return sorted({pid for d in files.walk_dirs(self.dir) for pid in files.read_pids(f"{d}/cgroup.procs")})

    def destroy(self) -> None:
        remove_tree(self.dir)

    def kill_all(self, sig: int) -> None:
        """cgroup.kill (Linux 5.14+) kills the whole subtree atomically; other signals need a sweep."""
        if not os.path.isdir(self.dir):
            return
        if sig == signal.SIGKILL and os.path.exists(self._file("cgroup.kill")):
            files.write(self._file("cgroup.kill"), 1)
        else:
            super().kill_all(sig)

    # -- freezer ----------------------------------------------------------------------------

    def freeze(self) -> None:
        files.write(self._file("cgroup.freeze"), 1)
        wait_until(self.frozen, f"{self._file('cgroup.events')} to report frozen 1")

    def thaw(self) -> None:
        files.write(self._file("cgroup.freeze"), 0)
        wait_until(lambda: not self.frozen(), f"{self._file('cgroup.events')} to report frozen 0")

    def frozen(self) -> bool:
        return files.read_keyed(self._file("cgroup.events")).get("frozen", 0) == 1

    # -- resources --------------------------------------------------------------------------

    def _apply(self, resources: dict) -> None:
        res.check(resources)
        with res.applying("memory"):
            self._memory(res.memory(resources))
        with res.applying("cpu"):
            self._cpu(res.cpu(resources))
        pids = res.integer(res.section(resources, "pids"), "limit", "pids")
        if pids:  # 0 leaves it, negative means unlimited
            self._write("pids.max", pids if pids > 0 else "max", "pids.limit")
        with res.applying("blockIO"):
            self._io(res.section(resources, "blockIO"))
        for size, limit in res.hugepage_limits(resources):
            self._write(f"hugetlb.{size}.max", limit, "hugepageLimits")
        if res.section(resources, "network"):
            raise ResourceError("network", "net_cls/net_prio do not exist in cgroup v2")
        rules = res.device_rules(resources)
        if not self._checking:
            apply_device_rules(self.dir, rules)  # (its failures are the host's: create always sends rules)
        for key, value in res.section(resources, "unified").items():
            if "/" in key or key.startswith(".") or not isinstance(value, str):
                raise ResourceError(f"unified.{key}", "must name a control file and map it to a string")
            self._write(key, value, f"unified.{key}")

    def _write(self, name: str, value: str | int, field: str) -> None:
        """Write a control file, turning "no such file" into a clear error: the controller missing
        from the cgroup, or (with it there) this kernel without that file (io.weight needs BFQ or
        io.cost, cpu.idle Linux 5.15)."""
        path = self._file(name)
        if not os.path.exists(path):
            controller = name.split(".")[0]
            enabled = (files.read_optional(self._file("cgroup.controllers")) or "").split()
            if controller in enabled:
                raise ResourceError(field, f"{name} does not exist in {self.dir}: this kernel has the "
                                           f"{controller} controller without that file")
            raise ResourceError(field, f"{name} does not exist: the {controller} controller is not available "
                                       f"in {self.dir} (host controllers: "
                                       f"{files.read(f'{self.root}/cgroup.controllers').strip()})")
        with res.applying(field):
            self._set(path, value)

    def _memory(self, m: res.Memory) -> None:
        # m.kernel is accepted and ignored: the runtime-spec deprecates it and v2 has no such limit.
        if m.kernel_tcp is not None:
            raise ResourceError("memory.kernelTCP", "cgroup v2 has no separate kernel TCP limit")
        if m.swappiness is not None:
            raise ResourceError("memory.swappiness", "cgroup v2 has no per-cgroup swappiness")
        if m.disable_oom_killer:
            raise ResourceError("memory.disableOOMKiller", "cgroup v2 cannot disable the OOM killer")
        limit, swap = m.limit, m.swap
        if limit:
            self._write("memory.max", limit if limit > 0 else "max", "memory.limit")
        if swap:
            # OCI swap is memory+swap; v2's memory.swap.max counts swap alone.
            if swap == -1:
                value: int | str = "max"
            elif not limit or limit < 0:
                raise ResourceError("memory.swap", "a swap limit needs a positive memory.limit on cgroup v2")
            elif swap < limit:
                raise ResourceError("memory.swap", f"{swap} is below memory.limit {limit} (swap counts memory+swap)")
            else:
                value = swap - limit
            self._write("memory.swap.max", value, "memory.swap")
        elif limit == -1 and os.path.exists(self._file("memory.swap.max")):
            # An unlimited memory with swap unset lifts the swap limit too, as runc does (on v1, swap
            # counts memory+swap, so the two limits went together).
            self._write("memory.swap.max", "max", "memory.swap")
        if m.reservation:
            self._write("memory.low", m.reservation if m.reservation > 0 else "max", "memory.reservation")

    def _cpu(self, cpu: res.Cpu) -> None:
        for key, value in (("realtimeRuntime", cpu.realtime_runtime), ("realtimePeriod", cpu.realtime_period)):
            if value:
                raise ResourceError(f"cpu.{key}", "cgroup v2 has no real-time CPU bandwidth control")
        bandwidth = []
        if cpu.quota or cpu.period:
            current_quota, current_period = (files.read_optional(self._file("cpu.max")) or "max 100000").split()
            q = ("max" if cpu.quota < 0 else str(cpu.quota)) if cpu.quota else current_quota
            p = str(cpu.period) if cpu.period else current_period
            bandwidth.append(("cpu.max", f"{q} {p}"))
        fields = {"cpu.weight": "cpu.shares", "cpu.max": "cpu.quota" if cpu.quota else "cpu.period",
                  "cpu.max.burst": "cpu.burst",
                  "cpu.idle": "cpu.idle"}
        res.write_cpu(lambda name, value: self._write(name, value, fields[name]),
                      lambda name: self._keep(self._file(name)), cpu, "cpu.weight",
                      shares_to_weight(max(cpu.shares, 2)) if cpu.shares else None, bandwidth, "cpu.max.burst")
        if cpu.cpus:
            self._write("cpuset.cpus", cpu.cpus, "cpu.cpus")
        if cpu.mems:
            self._write("cpuset.mems", cpu.mems, "cpu.mems")

    def _io(self, bio: dict) -> None:
        if not bio:
            return
        weight = res.integer(bio, "weight", "blockIO", lo=0, hi=1000)
        if res.integer(bio, "leafWeight", "blockIO"):
            raise ResourceError("blockIO.leafWeight", "cgroup v2 has no leaf weights")
        # BFQ takes blkio's own scale; otherwise convert to io.weight's.
        bfq = os.path.exists(self._file("io.bfq.weight"))
        if weight:
            if bfq:
                self._write("io.bfq.weight", weight, "blockIO.weight")
            else:
                self._write("io.weight", f"default {blkio_to_io_weight(max(weight, 10))}", "blockIO.weight")
        for dev in res.weight_devices(bio):
            if dev.leaf_weight:
                raise ResourceError(f"{dev.where}.leafWeight", "cgroup v2 has no leaf weights")
            if dev.weight:
                if bfq:
                    self._write("io.bfq.weight", f"{dev.major}:{dev.minor} {dev.weight}", f"{dev.where}.weight")
                else:
                    self._write("io.weight", f"{dev.major}:{dev.minor} {blkio_to_io_weight(max(dev.weight, 10))}",
                                f"{dev.where}.weight")
        for key, name in zip(res.THROTTLE_KEYS, ("rbps", "wbps", "riops", "wiops")):
            for t in res.throttles(bio, key):
                self._write("io.max", f"{t.major}:{t.minor} {name}={t.rate or 'max'}", f"blockIO.{key}")

    # -- stats and events -------------------------------------------------------------------

    def stats(self) -> dict:
        return stats_v2.collect(self.dir)

    def oom_watcher(self) -> OomWatcher:
        if not os.path.exists(self._file("memory.events")):
            raise CgroupError(f"{self.dir} has no memory.events: the memory controller is not enabled")
        return InotifyOomWatcher(self.dir)

    def oom_kills(self) -> int:
        return oom_kills(self._file("memory.events"))
