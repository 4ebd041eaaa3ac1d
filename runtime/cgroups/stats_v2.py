"""cgroup v2 files -> the proto3 JSON form of io.containerd.cgroups.v2.Metrics (JSON field names)."""

from __future__ import annotations

import glob
import os

from . import files

# memory.stat keys that MemoryStat carries under the same (snake_case) name.
_MEMORY_STAT = (
    "anon file kernel_stack slab sock shmem file_mapped file_dirty file_writeback anon_thp inactive_anon "
    "active_anon inactive_file active_file unevictable slab_reclaimable slab_unreclaimable pgfault pgmajfault "
    "workingset_refault workingset_activate workingset_nodereclaim pgrefill pgscan pgsteal pgactivate "
    "pgdeactivate pglazyfree pglazyfreed thp_fault_alloc thp_collapse_alloc"
).split()
_UNLIMITED = (1 << 64) - 1  # what a "max" limit reads as
_RDMA_UNLIMITED = (1 << 32) - 1  # an rdma "max": its counts are uint32 in the message


def camel(name: str) -> str:
    """proto3 JSON name of a snake_case field."""
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def collect(d: str) -> dict:
    """Stats of the cgroup directory `d`. pids, cpu, memory and io are there, if zero, whichever
    controllers are enabled, as containerd's cgroups library sends them: its readers (nerdctl stats,
    for one) follow `Io.Usage` and the like without a nil check. rdma is there, empty without the
    controller, as that library always sets it."""
    if not os.path.isdir(d):
        return {}
    cpu = files.read_keyed(f"{d}/cpu.stat")  # usage lines exist even without the cpu controller
    out: dict = {
        "pids": {"current": files.read_int(f"{d}/pids.current"), "limit": _limit(f"{d}/pids.max")},
        "cpu": {camel(k): cpu.get(k, 0) for k in
                ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec")},
        "memory": _memory(d),
        "io": {"usage": _io(d)},
        "rdma": rdma(d),
    }
    events = files.read_keyed(f"{d}/memory.events")
    if events:
        out["memoryEvents"] = {camel(k): events.get(k, 0) for k in ("low", "high", "max", "oom", "oom_kill")}
    hugetlb = [
        {"pagesize": size, "current": files.read_int(f"{d}/hugetlb.{size}.current"),
         "max": _limit(f"{d}/hugetlb.{size}.max")}
        for size in sorted(os.path.basename(p).split(".")[1] for p in glob.glob(f"{d}/hugetlb.*.current"))
    ]
    if hugetlb:
        out["hugetlb"] = hugetlb
    return out


def _limit(path: str) -> int:
    """A limit file: "max" is the largest uint64, as containerd's cgroups library reports it (0 would
    read as a limit of nothing); a file that is not there is 0."""
    text = (files.read_optional(path) or "").strip()
    return _UNLIMITED if text == "max" else int(text or 0)


def rdma(d: str) -> dict:
    """RdmaStat of the directory `d` (either cgroup version: the files are the same) from lines
    `mlx4_0 hca_handle=2 hca_object=2000` of rdma.current and rdma.max; "max" is the largest uint32."""
    def entries(name: str) -> list[dict]:
        out = []
        for line in (files.read_optional(f"{d}/{name}") or "").splitlines():
            device, *pairs = line.split()
            kv = dict(p.split("=", 1) for p in pairs if "=" in p)
            out.append({"device": device, **{
                field: _RDMA_UNLIMITED if kv.get(key) == "max" else int(kv.get(key, 0))
                for key, field in (("hca_handle", "hcaHandles"), ("hca_object", "hcaObjects"))}})
        return out
    return {"current": entries("rdma.current"), "limit": entries("rdma.max")}


def _memory(d: str) -> dict:
    raw = files.read_keyed(f"{d}/memory.stat")
    out = {camel(k): raw[k] for k in _MEMORY_STAT if k in raw}
    out["usage"] = files.read_int(f"{d}/memory.current")
    out["usageLimit"] = _limit(f"{d}/memory.max")
    out["swapUsage"] = files.read_int(f"{d}/memory.swap.current")
    out["swapLimit"] = _limit(f"{d}/memory.swap.max")
    out["maxUsage"] = files.read_int(f"{d}/memory.peak")
    out["swapMaxUsage"] = files.read_int(f"{d}/memory.swap.peak")
    return out


def _io(d: str) -> list[dict]:
    """io.stat lines: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`."""
    out = []
    for line in (files.read_optional(f"{d}/io.stat") or "").splitlines():
        dev, *pairs = line.split()
        major, _, minor = dev.partition(":")
        kv = dict(p.split("=", 1) for p in pairs if "=" in p)
        out.append({"major": int(major), "minor": int(minor),
                    **{k: int(kv.get(k, 0)) for k in ("rbytes", "wbytes", "rios", "wios")}})
    return out
