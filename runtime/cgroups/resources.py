"""Typed, validated access to OCI `linux.resources` JSON, shared by both drivers.

Each accessor names the JSON path in its error, so a bad Update or config.json says what is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
from collections.abc import Callable, Iterator
from typing import Any

from .errors import CgroupError, ResourceError


@contextlib.contextmanager
def applying(key: str) -> Iterator[None]:
    """Name the `linux.resources` section whose value the kernel refused (EINVAL for a cpuset
    the host lacks, a period out of range...): a bare control file path does not say which
    setting of config.json or of an Update to fix."""
    try:
        yield
    except ResourceError:
        raise
    except CgroupError as e:
        if e.message.startswith("linux.resources."):  # named already, more precisely
            raise
        raise CgroupError(f"linux.resources.{key}: {e.message}", e.errno) from None


# linux.resources fields neither driver implements: refused with their path, never ignored.
UNSUPPORTED = (("rdma",),)


def check(resources: object) -> None:
    """What every Update and create checks first: an object, asking for nothing unsupported."""
    if not isinstance(resources, dict):
        raise ResourceError("", "must be an object")
    for path in UNSUPPORTED:
        parent = resources if len(path) == 1 else resources.get(path[0])
        if isinstance(parent, dict) and parent.get(path[-1]) is not None:
            raise ResourceError(".".join(path), "is not supported by railcar")


def section(resources: dict, key: str) -> dict:
    """A sub-object such as `memory`; {} when absent or null."""
    value = resources.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ResourceError(key, f"must be an object, got {type(value).__name__}")
    return value


def _field(d: dict, key: str, where: str, kind: type, expected: str) -> Any:
    """An optional field of one JSON type; None when absent or null (true is not an integer)."""
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ResourceError(f"{where}.{key}", f"must be {expected}, got {value!r}")
    return value


def integer(d: dict, key: str, where: str, lo: int | None = None, hi: int | None = None) -> int | None:
    """An optional integer field within [lo, hi]; None when absent or null."""
    value = _field(d, key, where, int, "an integer")
    if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise ResourceError(f"{where}.{key}", f"{value} is outside [{lo}, {hi}]")
    return value


def string(d: dict, key: str, where: str) -> str | None:
    return _field(d, key, where, str, "a string")


def boolean(d: dict, key: str, where: str) -> bool | None:
    return _field(d, key, where, bool, "true or false")


def items(d: dict, key: str, where: str) -> list[tuple[str, dict]]:
    """A list of objects, each with its JSON path for errors (`where` "" = top level)."""
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise ResourceError(f"{where}.{key}" if where else key, "must be a list of objects")
    prefix = f"{where}.{key}" if where else key
    return [(f"{prefix}[{i}]", x) for i, x in enumerate(value)]


@dataclasses.dataclass(frozen=True)
class Memory:
    """`linux.resources.memory`, validated; None = absent. Each driver decides what it can honour."""

    limit: int | None = None
    swap: int | None = None  # memory+swap, as the runtime-spec (and v1's memsw) counts it
    reservation: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool | None = None


def memory(resources: dict) -> Memory:
    mem = section(resources, "memory")
    return Memory(
        limit=integer(mem, "limit", "memory", lo=-1),
        swap=integer(mem, "swap", "memory", lo=-1),
        reservation=integer(mem, "reservation", "memory", lo=-1),
        kernel=integer(mem, "kernel", "memory", lo=-1),
        kernel_tcp=integer(mem, "kernelTCP", "memory", lo=-1),
        swappiness=integer(mem, "swappiness", "memory", lo=0, hi=100),
        disable_oom_killer=boolean(mem, "disableOOMKiller", "memory"),
    )


@dataclasses.dataclass(frozen=True)
class Cpu:
    """`linux.resources.cpu`, validated; None = absent, and 0 leaves a number as it is (runc's convention).
    Each driver decides what it can honour (v2 has no real-time bandwidth)."""

    shares: int | None = None
    quota: int | None = None  # -1: unlimited
    period: int | None = None
    realtime_runtime: int | None = None  # -1: unlimited
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    burst: int | None = None  # microseconds a group may bank beyond its quota (0 is a value: none)
    idle: int | None = None  # 1: the group's tasks run as SCHED_IDLE; 0 is a value: normal


def write_cpu(write: Callable[[str, Any], None], keep: Callable[[str], None], cpu: Cpu, weight_file: str,
              weight: Any, bandwidth: list[tuple[str, Any]], burst_file: str) -> None:
    """The cpu files of either version, in an order the kernel takes from any current state: an
    idle group refuses a weight (so idle=0 goes first, and with idle=1 the weight, meaningless
    then, is left out and idle goes last), and a quota and its burst are each checked against the
    other's current value (so a burst that does not fit yet is written again after the quota).
    Idle and burst take 0 as a value; for the other numbers 0 leaves the setting. Writing idle resets
    the weight, so the weight is kept (`keep`) for an update that fails and puts idle back."""
    if cpu.idle is not None:
        keep(weight_file)
    if cpu.idle == 0:
        write("cpu.idle", 0)
    if weight and cpu.idle != 1:
        write(weight_file, weight)
    burst_late = False
    if cpu.burst is not None:
        try:
            write(burst_file, cpu.burst)
        except CgroupError as e:
            if e.errno != errno.EINVAL:
                raise
            burst_late = True
    for name, value in bandwidth:
        if value:
            write(name, value)
    if burst_late:
        write(burst_file, cpu.burst)
    if cpu.idle == 1:
        write("cpu.idle", 1)


MAX_CPU_SHARES = 262144
"""The kernel's cap: v1 cpu.shares silently clamps above it (runc then fails the read-back check)."""


def cpu(resources: dict) -> Cpu:
    c = section(resources, "cpu")
    return Cpu(
        shares=integer(c, "shares", "cpu", lo=0, hi=MAX_CPU_SHARES),
        quota=integer(c, "quota", "cpu", lo=-1),
        period=integer(c, "period", "cpu", lo=0),
        realtime_runtime=integer(c, "realtimeRuntime", "cpu", lo=-1),
        realtime_period=integer(c, "realtimePeriod", "cpu", lo=0),
        cpus=string(c, "cpus", "cpu"),
        mems=string(c, "mems", "cpu"),
        burst=integer(c, "burst", "cpu", lo=0),
        idle=integer(c, "idle", "cpu", lo=0, hi=1),
    )


@dataclasses.dataclass(frozen=True)
class WeightDevice:
    """One `blockIO.weightDevice` entry; `where` is its JSON path for the driver's errors."""

    where: str
    major: int
    minor: int
    weight: int | None
    leaf_weight: int | None


def weight_devices(block_io: dict) -> list[WeightDevice]:
    out = []
    for where, dev in items(block_io, "weightDevice", "blockIO"):
        major = integer(dev, "major", where, lo=0)
        minor = integer(dev, "minor", where, lo=0)
        if major is None or minor is None:
            raise ResourceError(where, "needs major and minor")
        out.append(WeightDevice(where, major, minor, integer(dev, "weight", where, lo=0, hi=1000),
                                integer(dev, "leafWeight", where, lo=0, hi=1000)))
    return out


@dataclasses.dataclass(frozen=True)
class DeviceRule:
    """One `linux.resources.devices` entry; None major/minor means any (`*`)."""

    allow: bool
    type: str  # a (all), c or b
    major: int | None
    minor: int | None
    access: str  # subset of "rwm"

    def v1_line(self) -> str:
        """The devices.allow / devices.deny syntax: `c 1:3 rwm`, `a *:* rwm`."""
        if self.type == "a":
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


def device_rules(resources: dict) -> list[DeviceRule]:
    rules = []
    for where, d in items(resources, "devices", ""):
        allow = d.get("allow")
        if not isinstance(allow, bool):
            raise ResourceError(f"{where}.allow", f"is required and must be true or false, got {allow!r}")
        dtype = string(d, "type", where) or "a"
        if dtype not in ("a", "c", "b", "u"):
            raise ResourceError(f"{where}.type", f"must be one of a, b, c, got {dtype!r}")
        access = string(d, "access", where) or "rwm"
        if not access or set(access) - set("rwm"):
            raise ResourceError(f"{where}.access", f"must be letters from 'rwm', got {access!r}")
        major = integer(d, "major", where, lo=-1)
        minor = integer(d, "minor", where, lo=-1)
        rules.append(DeviceRule(
            allow=allow,
            type="c" if dtype == "u" else dtype,
            major=None if major in (None, -1) else major,
            minor=None if minor in (None, -1) else minor,
            access="".join(sorted(set(access), key="rwm".index)),
        ))
    return rules


@dataclasses.dataclass(frozen=True)
class Throttle:
    major: int
    minor: int
    rate: int


def throttles(block_io: dict, key: str) -> list[Throttle]:
    out = []
    for where, d in items(block_io, key, "blockIO"):
        major = integer(d, "major", where, lo=0)
        minor = integer(d, "minor", where, lo=0)
        rate = integer(d, "rate", where, lo=0)
        if major is None or minor is None or rate is None:
            raise ResourceError(where, "needs major, minor and rate")
        out.append(Throttle(major, minor, rate))
    return out


THROTTLE_KEYS = ("throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice", "throttleWriteIOPSDevice")


def hugepage_limits(resources: dict) -> list[tuple[str, int]]:
    """[(pageSize like '2MB', limit bytes)] for the page sizes this kernel has.

    The page size is a file-name part, so it is checked. A size the kernel does not offer (the
    kubelet sends a limit for every size it knows) cannot be used, so its limit holds trivially
    and is left out rather than failing the container.
    """
    out = []
    for where, d in items(resources, "hugepageLimits", ""):
        size = string(d, "pageSize", where)
        limit = integer(d, "limit", where, lo=0)
        if not size or not size[:-2].isdigit() or size[-2:] not in ("KB", "MB", "GB"):
            raise ResourceError(f"{where}.pageSize", f"must look like 2MB or 1GB, got {size!r}")
        if limit is None:
            raise ResourceError(f"{where}.limit", "is required")
        if os.path.isdir(f"{HUGEPAGES_SYSFS}/hugepages-{int(size[:-2]) * _KB[size[-2:]]}kB"):
            out.append((size, limit))
    return out


HUGEPAGES_SYSFS = "/sys/kernel/mm/hugepages"
_KB = {"KB": 1, "MB": 1024, "GB": 1024 * 1024}
