"""The cgroup v1 driver: one directory per mounted hierarchy, all at the same path."""

from __future__ import annotations

import errno
import os

from ..mountinfo import PROC_SELF, read
from . import files, resources as res, stats_v1
from .errors import CgroupError, ResourceError
from .interface import Cgroup, OomWatcher, remove_tree, wait_until
from .oom import EventfdOomWatcher, oom_kills

# Hierarchies a container joins. name=systemd carries no limits but keeps `systemd-cgls` and
# friends showing the container where its other cgroups are.
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
               "net_cls", "net_prio", "perf_event", "rdma", "misc", "name=systemd")


# The key of a hybrid host's cgroup v2 tree among the hierarchies (runc names it "" too): systemd's
# cgroup2 mount beside the v1 controllers, at HYBRID_MOUNT (runc looks there only; another cgroup2
# mount, cilium's say, is not it). It carries no limits (its controllers, if any, are not enabled
# for children) but systemd tracks processes through it, and cgroup v2 BPF programs attach there;
# as runc does, a container joins it at its cgroupsPath as well, as far as the kernel lets it: as
# runc ignores a failure to join it, a failure there (to make the group, or to join it) is no error.
HYBRID = ""
HYBRID_MOUNT = "/sys/fs/cgroup/unified"


def v1_mounts(mountinfo: str = PROC_SELF) -> dict[str, str]:
    """controller -> mount point of its v1 hierarchy (co-mounted controllers share one); on a
    hybrid host, also HYBRID -> HYBRID_MOUNT."""
    out: dict[str, str] = {}
    for m in read(mountinfo):
        if m.fstype == "cgroup":
            for opt in m.super_options.split(","):
                if opt in CONTROLLERS and opt not in out:
                    out[opt] = m.point
        elif m.fstype == "cgroup2" and m.point == HYBRID_MOUNT:
            out[HYBRID] = m.point
    return out


class CgroupV1(Cgroup):
    version = 1

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.mounts = v1_mounts()
        if not set(self.mounts) - {HYBRID}:
            raise CgroupError("no cgroup v1 hierarchy is mounted")

    # -- locations --------------------------------------------------------------------------

    def dir(self, controller: str) -> str | None:
        """This cgroup's directory in `controller`'s hierarchy, or None if it is not mounted."""
        mount = self.mounts.get(controller)
        return None if mount is None else mount + self.path

    def _pids_hierarchy(self, init_pid: int) -> tuple[str, str] | None:
        mount = self.mounts.get("pids")
        return None if mount is None else (mount, mount + self.path)

    def _require(self, controller: str, why: str) -> str:
        d = self.dir(controller)
        if d is None:
            raise CgroupError(f"{why} needs the cgroup v1 {controller} controller, which is not mounted")
        return d

    def _dirs(self) -> list[str]:
        """This cgroup's directory in every hierarchy (a hybrid host's v2 tree too)."""
        return [mount + self.path for mount in sorted(set(self.mounts.values()))]

    def _joined_dirs(self) -> list[str]:
        """Those a process joins: the v2 tree's only where this cgroup has one there (see `_v2_dir`)."""
        hybrid = self.mounts.get(HYBRID)
        return [d for d in self._dirs() if hybrid is None or d != hybrid + self.path or os.path.isdir(d)]

    def _primary(self) -> str:
        for c in ("pids", "freezer", "memory", "devices"):
            if c in self.mounts:
                return self.mounts[c] + self.path
        return self._dirs()[0]

    # -- lifecycle --------------------------------------------------------------------------

    def create(self, resources: dict | None) -> None:
        for d in self._dirs():
            try:
                os.makedirs(d, exist_ok=True)
            except OSError:
                if not self._optional(d):
                    raise
        cpuset = self.mounts.get("cpuset")
        if cpuset:
            self._inherit_cpuset(cpuset)
        self._apply(resources or {})  # no check pass or undo: a create that fails removes the cgroup

    def _inherit_cpuset(self, mount: str) -> None:
        """A new v1 cpuset starts with no cpus/mems and refuses tasks: copy them down each level."""
        parent = mount
        for part in self.path.strip("/").split("/"):
            child = f"{parent}/{part}"
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not files.read(f"{child}/{name}").strip():
                    files.write(f"{child}/{name}", files.read(f"{parent}/{name}").strip())
            parent = child

    def add_process(self, pid: int) -> None:
        for d in self._joined_dirs():
            self._write(f"{d}/cgroup.procs", pid)

    def _optional(self, path: str) -> bool:
        """Whether `path` is in a hybrid host's v2 tree, where a failure is no error (see HYBRID)."""
        hybrid = self.mounts.get(HYBRID)
        return hybrid is not None and (path + "/").startswith(hybrid + self.path + "/")

    def _write(self, path: str, value: str | int) -> None:
        try:
            files.write(path, value)
        except CgroupError:
            if not self._optional(path):
                raise

    def join(self, init_pid: int = 0, pid: int = 0) -> None:
        """Through `tasks`. A thread moving itself ("0") skips the global cgroup_threadgroup_rwsem,
        which any write to cgroup.procs, and any move of another process (`pid`), takes for writing.
        Its first writer after a quiet spell waits out an RCU grace period (7-15 ms on the test VM:
        the largest single cost of a create or exec); a move of oneself takes 0.1-0.3 ms. A calling
        process with more threads joins through cgroup.procs, so that none is left outside. v1 has
        no no-internal-process rule: `init_pid` is not needed."""
        if not pid and len(os.listdir("/proc/self/task")) > 1:
            self.add_process(os.getpid())
            return
        for path in self._join_files(pid):
            self._write(path, pid)

    def open_tasks(self) -> list[tuple[str, int]]:
        """Each hierarchy's `tasks`, opened for a single-threaded process to write "0" to later: the
        move `join` makes for the caller, without the global lock (see there), for a process that
        cannot open them itself (an exec's, in the container's mount namespace)."""
        opened: list[tuple[str, int]] = []
        try:
            for path in self._join_files():   # (the caller's children are where it is in the v2 tree)
                try:
                    opened.append((path, files.open_to_write(path, 0)))
                except CgroupError:
                    if not self._optional(path):
                        raise
        except BaseException:
            for _, fd in opened:
                os.close(fd)
            raise
        return opened

    def join_opened(self, opened: list[tuple[str, int]]) -> None:
        """Move the calling thread in through the files `open_tasks` opened (writing "0"), and close
        them."""
        try:
            for path, fd in opened:
                try:
                    os.write(fd, b"0")
                except OSError as e:
                    if not self._optional(path):
                        raise CgroupError(f"writing '0' to {path}: {e.strerror}", e.errno) from None
        finally:
            for _, fd in opened:
                os.close(fd)

    def _join_files(self, pid: int = 0) -> list[str]:
        """The files process `pid` (0: the caller) joins through: each v1 hierarchy's `tasks`, and a
        hybrid host's v2 tree's cgroup.procs unless it is in there already (forked into it, see
        `open_fork_target`). That tree has no `tasks` and moves only whole processes, each through
        the global lock (a wait of an RCU grace period, as for every move runc makes)."""
        v2_dir = self._v2_dir()
        paths = [f"{d}/tasks" for d in self._joined_dirs() if d != v2_dir]
        if v2_dir is not None and files.v2_cgroup_of(pid) != self.path:
            paths.append(f"{v2_dir}/cgroup.procs")
        return paths

    def _v2_dir(self) -> str | None:
        """This cgroup in a hybrid host's v2 tree, if it is there (a container created by a railcar
        from before it joined that tree has none: its execs stay out too)."""
        mount = self.mounts.get(HYBRID)
        return None if mount is None or not os.path.isdir(mount + self.path) else mount + self.path

    def open_fork_target(self, forked: str) -> int | None:
        """This cgroup in a hybrid host's v2 tree, for either intermediate: forked into it, it is
        there from its first instruction, and so is every process it forks (an exec's process
        among them); it joins the v1 hierarchies, where the limits are, itself (`join`,
        `open_tasks`). The v2 tree carries no limits: an exec's intermediate in it charges nothing
        to the container."""
        v2_dir = self._v2_dir()
        if forked == "exec" or v2_dir is None:
            return None
        return os.open(v2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def pids(self) -> list[int]:
        root = self._primary()
        if not os.path.isdir(root):
            return []
        return sorted({pid for d in files.walk_dirs(root) for pid in files.read_pids(f"{d}/cgroup.procs")})

    def destroy(self) -> None:
        for d in self._dirs():
            remove_tree(d)

    # -- freezer ----------------------------------------------------------------------------

    def freeze(self) -> None:
        state = self._require("freezer", "pause") + "/freezer.state"
        files.write(state, "FROZEN")
        wait_until(lambda: files.read(state).strip() == "FROZEN", f"{state} to read FROZEN",
                   retry=lambda: files.write(state, "FROZEN"))

    def thaw(self) -> None:
        state = self._require("freezer", "resume") + "/freezer.state"
        files.write(state, "THAWED")
        wait_until(lambda: files.read(state).strip() == "THAWED", f"{state} to read THAWED")

    def _can_freeze(self) -> bool:
        return "freezer" in self.mounts

    def frozen(self) -> bool:
        d = self.dir("freezer")
        state = None if d is None else files.read_optional(f"{d}/freezer.state")
        return state is not None and state.strip() != "THAWED"

    # -- resources --------------------------------------------------------------------------

    def _apply(self, resources: dict) -> None:
        res.check(resources)
        if res.section(resources, "unified"):
            raise ResourceError("unified", "needs a cgroup v2 host; this host's cgroups are v1")
        with res.applying("memory"):
            self._memory(res.memory(resources))
        with res.applying("cpu"):
            self._cpu(res.cpu(resources))
        with res.applying("pids"):
            self._pids(res.section(resources, "pids"))
        with res.applying("blockIO"):
            self._block_io(res.section(resources, "blockIO"))
        with res.applying("hugepageLimits"):
            self._hugetlb(res.hugepage_limits(resources))
        with res.applying("network"):
            self._network(res.section(resources, "network"))
        rules = res.device_rules(resources)
        if rules:
            d = self._require("devices", "linux.resources.devices")
            for rule in rules:  # (validated: a refusal is the host's, and create always sends rules)
                self._set(f"{d}/devices.{'allow' if rule.allow else 'deny'}", rule.v1_line())

    def _memory(self, m: res.Memory) -> None:
        if m == res.Memory():
            return
        limit, swap = m.limit, m.swap
        d = self._require("memory", "linux.resources.memory")
        if limit is not None and swap is not None and swap != -1 and limit != -1 and swap < limit:
            raise ResourceError("memory.swap", f"{swap} is below memory.limit {limit} (swap counts memory+swap)")
        memsw = f"{d}/memory.memsw.limit_in_bytes"
        if swap is not None and not os.path.exists(memsw):
            raise ResourceError("memory.swap", "this kernel has no swap accounting (memory.memsw.*)")
        if limit == -1 and swap is None and os.path.exists(memsw):
            swap = -1  # as runc: memory+swap may not stay below an unlimited memory
        # memory.limit must stay <= memsw.limit at every step, so the write order depends on direction.
        if swap is not None and (swap == -1 or (limit is not None and limit > files.read_int(memsw, -1))):
            self._set(memsw, swap)
            swap = None
        if limit is not None:
            try:
                self._set(f"{d}/memory.limit_in_bytes", limit)
            except CgroupError as e:
                if e.errno != errno.EBUSY:
                    raise
                usage, peak = (files.read_int(f"{d}/memory.{name}", -1)
                               for name in ("usage_in_bytes", "max_usage_in_bytes"))
                raise CgroupError(f"memory.limit_in_bytes: {limit} is below what the cgroup uses and cannot "
                                  f"reclaim (usage {usage}, peak {peak})", e.errno) from None
        if swap is not None:
            self._set(memsw, swap)
        if m.reservation is not None:
            self._set(f"{d}/memory.soft_limit_in_bytes", m.reservation)
        # Kernel memory limits are deprecated in the runtime-spec; kernels >= 5.16 accept and ignore
        # them, older ones may lack the file or refuse. Like runc, apply them where the kernel can.
        if m.kernel is not None and os.path.exists(f"{d}/memory.kmem.limit_in_bytes"):
            self._write_if_supported(f"{d}/memory.kmem.limit_in_bytes", m.kernel)
        if m.kernel_tcp is not None:
            self._set(f"{d}/memory.kmem.tcp.limit_in_bytes", m.kernel_tcp)
        if m.swappiness is not None:
            self._set(f"{d}/memory.swappiness", m.swappiness)
        if m.disable_oom_killer is not None:
            self._set(f"{d}/memory.oom_control", int(m.disable_oom_killer))

    def _write_if_supported(self, path: str, value: int) -> None:
        try:
            self._set(path, value)
        except CgroupError as e:
            if e.errno != errno.EOPNOTSUPP:  # kmem accounting switched off (cgroup.memory=nokmem)
                raise

    def _cpu(self, cpu: res.Cpu) -> None:
        # Each period before the amount it bounds: the kernel checks an amount against the current period.
        bandwidth = [("cpu.cfs_period_us", cpu.period), ("cpu.cfs_quota_us", cpu.quota),
                     ("cpu.rt_period_us", cpu.realtime_period), ("cpu.rt_runtime_us", cpu.realtime_runtime)]
        if cpu.shares or any(value for _, value in bandwidth) or cpu.burst is not None or cpu.idle is not None:
            d = self._require("cpu", "linux.resources.cpu")
            res.write_cpu(lambda name, value: self._set(f"{d}/{name}", value),
                          lambda name: self._keep(f"{d}/{name}"), cpu, "cpu.shares", cpu.shares, bandwidth,
                          "cpu.cfs_burst_us")
        if cpu.cpus or cpu.mems:
            d = self._require("cpuset", "linux.resources.cpu.cpus/mems")
            for name, value in (("cpuset.cpus", cpu.cpus), ("cpuset.mems", cpu.mems)):
                if value:
                    self._set(f"{d}/{name}", value)

    def _pids(self, pids: dict) -> None:
        limit = res.integer(pids, "limit", "pids")
        if limit:  # 0 means "leave as is", negative means unlimited (runc's convention)
            d = self._require("pids", "linux.resources.pids")
            self._set(f"{d}/pids.max", limit if limit > 0 else "max")

    def _block_io(self, bio: dict) -> None:
        if not bio:
            return
        weight = res.integer(bio, "weight", "blockIO", lo=0, hi=1000)
        leaf = res.integer(bio, "leafWeight", "blockIO", lo=0, hi=1000)
        devices = res.weight_devices(bio)
        wanted = any(v for v in (weight, leaf)) or devices or any(bio.get(k) for k in res.THROTTLE_KEYS)
        if not wanted:
            return
        d = self._require("blkio", "linux.resources.blockIO")
        # CFQ's blkio.weight is gone from current kernels; BFQ provides blkio.bfq.weight instead.
        prefix = "blkio" if os.path.exists(f"{d}/blkio.weight") else "blkio.bfq"
        if weight:
            self._need(f"{d}/{prefix}.weight", "blockIO.weight", "no I/O scheduler with weights (CFQ/BFQ)")
            self._set(f"{d}/{prefix}.weight", weight)
        if leaf:
            self._need(f"{d}/blkio.leaf_weight", "blockIO.leafWeight", "needs the CFQ scheduler")
            self._set(f"{d}/blkio.leaf_weight", leaf)
        for dev in devices:
            if dev.weight:
                self._need(f"{d}/{prefix}.weight_device", f"{dev.where}.weight", "no I/O scheduler with weights")
                self._set(f"{d}/{prefix}.weight_device", f"{dev.major}:{dev.minor} {dev.weight}")
            if dev.leaf_weight:
                self._need(f"{d}/blkio.leaf_weight_device", f"{dev.where}.leafWeight", "needs the CFQ scheduler")
                self._set(f"{d}/blkio.leaf_weight_device", f"{dev.major}:{dev.minor} {dev.leaf_weight}")
        names = dict(zip(res.THROTTLE_KEYS, ("read_bps_device", "write_bps_device", "read_iops_device",
                                             "write_iops_device")))
        for key, name in names.items():
            for t in res.throttles(bio, key):
                self._set(f"{d}/blkio.throttle.{name}", f"{t.major}:{t.minor} {t.rate}")

    @staticmethod
    def _need(path: str, field: str, why: str) -> None:
        if not os.path.exists(path):
            raise ResourceError(field, f"unsupported on this host: {why}")

    def _hugetlb(self, limits: list[tuple[str, int]]) -> None:
        if not limits:
            return
        d = self._require("hugetlb", "linux.resources.hugepageLimits")
        for size, limit in limits:
            path = f"{d}/hugetlb.{size}.limit_in_bytes"
            self._need(path, "hugepageLimits", f"the kernel has no {size} huge pages")
            self._set(path, limit)

    def _network(self, net: dict) -> None:
        class_id = res.integer(net, "classID", "network", lo=0)
        priorities = res.items(net, "priorities", "network")
        if class_id is not None:
            self._set(self._require("net_cls", "linux.resources.network.classID") + "/net_cls.classid", class_id)
        for where, p in priorities:
            name = res.string(p, "name", where)
            prio = res.integer(p, "priority", where, lo=0)
            if not name or prio is None:
                raise ResourceError(where, "needs name and priority")
            self._set(self._require("net_prio", "linux.resources.network.priorities") + "/net_prio.ifpriomap",
                        f"{name} {prio}")

    # -- stats and events -------------------------------------------------------------------

    def stats(self) -> dict:
        return stats_v1.collect(self.dir)

    def oom_watcher(self) -> OomWatcher:
        return EventfdOomWatcher(self._require("memory", "OOM notification"))

    def oom_kills(self) -> int:
        memory = self.dir("memory")
        return oom_kills(f"{memory}/memory.oom_control") if memory else 0
