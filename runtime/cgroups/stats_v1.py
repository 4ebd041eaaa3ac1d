"""cgroup v1 files -> the proto3 JSON form of io.containerd.cgroups.v1.Metrics.

Keys are the message's JSON (lowerCamelCase) names, so the shim can hand the dict to
google.protobuf.json_format.ParseDict without knowing about cgroup files.
"""

from __future__ import annotations

import glob
import os
from typing import Callable

from . import files, stats_v2

# memory.stat key -> MemoryStat JSON name (the message renames pgpgin, memsw, ...).
_MEMORY_STAT = {
    "cache": "cache", "rss": "rss", "rss_huge": "rssHuge", "mapped_file": "mappedFile", "dirty": "dirty",
    "writeback": "writeback", "pgpgin": "pgPgIn", "pgpgout": "pgPgOut", "pgfault": "pgFault",
    "pgmajfault": "pgMajFault", "inactive_anon": "inactiveAnon", "active_anon": "activeAnon",
    "inactive_file": "inactiveFile", "active_file": "activeFile", "unevictable": "unevictable",
    "hierarchical_memory_limit": "hierarchicalMemoryLimit", "hierarchical_memsw_limit": "hierarchicalSwapLimit",
}
_MEMORY_STAT.update({
    f"total_{k}": "total" + v[0].upper() + v[1:]
    for k, v in list(_MEMORY_STAT.items()) if not k.startswith("hierarchical")
})

# blkio file suffix -> BlkIOStat JSON name
_BLKIO = {
    "io_service_bytes_recursive": "ioServiceBytesRecursive", "io_serviced_recursive": "ioServicedRecursive",
    "io_queued_recursive": "ioQueuedRecursive", "io_service_time_recursive": "ioServiceTimeRecursive",
    "io_wait_time_recursive": "ioWaitTimeRecursive", "io_merged_recursive": "ioMergedRecursive",
    "io_time_recursive": "ioTimeRecursive", "sectors_recursive": "sectorsRecursive",
}

_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def collect(dir_of: Callable[[str], str | None]) -> dict:
    """`dir_of(controller)` gives the cgroup's directory in that hierarchy (None: not mounted).

    A part is there, if empty, whenever its controller is: containerd's cgroups library always fills
    them, and its readers (nerdctl stats, for one) follow `Blkio.IoServiceBytesRecursive` and the
    like without a nil check. cpu is always there, as in that library.
    """
    if not any(_existing(dir_of, c) for c in ("cpu", "cpuacct", "memory", "pids", "blkio")):
        return {}  # the cgroup is gone
    out: dict = {"cpu": _cpu(dir_of)}
    for key, part in (("pids", _pids), ("memory", _memory), ("blkio", _blkio),
                      ("hugetlb", _hugetlb), ("memoryOomControl", _oom_control), ("rdma", _rdma)):
        value = part(dir_of)
        if value is not None:
            out[key] = value
    return out


def _existing(dir_of: Callable[[str], str | None], controller: str) -> str | None:
    d = dir_of(controller)
    return d if d is not None and os.path.isdir(d) else None


def _pids(dir_of: Callable[[str], str | None]) -> dict | None:
    d = _existing(dir_of, "pids")
    if d is None:
        return None
    return {"current": files.read_int(f"{d}/pids.current"), "limit": files.read_int(f"{d}/pids.max")}


def _cpu(dir_of: Callable[[str], str | None]) -> dict:
    out: dict = {"usage": {}, "throttling": {}}
    acct = _existing(dir_of, "cpuacct")
    if acct is not None:
        usage = {"total": files.read_int(f"{acct}/cpuacct.usage")}
        if os.path.exists(f"{acct}/cpuacct.usage_user"):
            usage["user"] = files.read_int(f"{acct}/cpuacct.usage_user")
            usage["kernel"] = files.read_int(f"{acct}/cpuacct.usage_sys")
        else:
            ticks = files.read_keyed(f"{acct}/cpuacct.stat")
            usage["user"] = ticks.get("user", 0) * _NS_PER_TICK
            usage["kernel"] = ticks.get("system", 0) * _NS_PER_TICK
        usage["perCpu"] = [int(x) for x in (files.read_optional(f"{acct}/cpuacct.usage_percpu") or "").split()]
        out["usage"] = usage
    cpu = _existing(dir_of, "cpu")
    if cpu is not None:
        st = files.read_keyed(f"{cpu}/cpu.stat")
        out["throttling"] = {"periods": st.get("nr_periods", 0), "throttledPeriods": st.get("nr_throttled", 0),
                             "throttledTime": st.get("throttled_time", 0)}
    return out


def _rdma(dir_of: Callable[[str], str | None]) -> dict | None:
    d = _existing(dir_of, "rdma")
    return None if d is None else stats_v2.rdma(d)


def _memory_entry(d: str, prefix: str) -> dict:
    return {
        "limit": files.read_int(f"{d}/{prefix}.limit_in_bytes"),
        "usage": files.read_int(f"{d}/{prefix}.usage_in_bytes"),
        "max": files.read_int(f"{d}/{prefix}.max_usage_in_bytes"),
        "failcnt": files.read_int(f"{d}/{prefix}.failcnt"),
    }


def _memory(dir_of: Callable[[str], str | None]) -> dict | None:
    d = _existing(dir_of, "memory")
    if d is None:
        return None
    raw = files.read_keyed(f"{d}/memory.stat")
    out: dict = {name: raw[key] for key, name in _MEMORY_STAT.items() if key in raw}
    out["usage"] = _memory_entry(d, "memory")
    for key, prefix in (("swap", "memory.memsw"), ("kernel", "memory.kmem"), ("kernelTcp", "memory.kmem.tcp")):
        # Zeros where the kernel lacks the files (no swap accounting), as containerd's library has it.
        out[key] = _memory_entry(d, prefix) if os.path.exists(f"{d}/{prefix}.usage_in_bytes") else {}
    return out


def _blkio_entries(path: str) -> list[dict]:
    """Lines `8:0 Read 4096` (and a trailing `Total N`, which is not per device)."""
    entries = []
    for line in (files.read_optional(path) or "").splitlines():
        fields = line.split()
        if len(fields) == 3 and ":" in fields[0]:
            major, minor = fields[0].split(":")
            entries.append({"op": fields[1], "major": int(major), "minor": int(minor), "value": int(fields[2])})
        elif len(fields) == 2 and ":" in fields[0]:  # e.g. sectors: `8:0 1234`
            major, minor = fields[0].split(":")
            entries.append({"op": "", "major": int(major), "minor": int(minor), "value": int(fields[1])})
    return entries


def device_names(partitions: str) -> dict[tuple[int, int], str]:
    """/proc/partitions' text -> {(major, minor): "/dev/<name>"}, the first name of a number winning.

    containerd's cgroups library names each blkio entry's device from there, and `ctr task metrics`
    and nerdctl show that name; a device without a partition line (a loop or an nbd not listed)
    stays unnamed, as there.
    """
    names: dict[tuple[int, int], str] = {}
    for line in partitions.splitlines()[2:]:
        fields = line.split()
        if len(fields) == 4 and fields[0].isdigit() and fields[1].isdigit():
            names.setdefault((int(fields[0]), int(fields[1])), f"/dev/{fields[3]}")
    return names


def _blkio(dir_of: Callable[[str], str | None]) -> dict | None:
    d = _existing(dir_of, "blkio")
    if d is None:
        return None
    out: dict = {}
    for suffix, name in _BLKIO.items():
        # The CFQ files (blkio.<x>) are absent on modern kernels; the throttle layer always counts.
        entries = _blkio_entries(f"{d}/blkio.{suffix}") or _blkio_entries(f"{d}/blkio.throttle.{suffix}")
        if entries:
            out[name] = entries
    if out:
        names = device_names(files.read_optional("/proc/partitions") or "")
        for entry in (entry for entries in out.values() for entry in entries):
            entry["device"] = names.get((entry["major"], entry["minor"]), "")
    return out


def _hugetlb(dir_of: Callable[[str], str | None]) -> list[dict] | None:
    d = _existing(dir_of, "hugetlb")
    if d is None:
        return None
    out = []
    for usage in sorted(glob.glob(f"{d}/hugetlb.*.usage_in_bytes")):
        size = os.path.basename(usage).split(".")[1]
        out.append({
            "pagesize": size,
            "usage": files.read_int(usage),
            "max": files.read_int(f"{d}/hugetlb.{size}.max_usage_in_bytes"),
            "failcnt": files.read_int(f"{d}/hugetlb.{size}.failcnt"),
        })
    return out


def _oom_control(dir_of: Callable[[str], str | None]) -> dict | None:
    d = _existing(dir_of, "memory")
    if d is None:
        return None
    raw = files.read_keyed(f"{d}/memory.oom_control")
    return {"oomKillDisable": raw.get("oom_kill_disable", 0), "underOom": raw.get("under_oom", 0),
            "oomKill": raw.get("oom_kill", 0)}
