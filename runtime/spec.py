"""Load and validate an OCI bundle's config.json (runtime-spec 1.x) into typed objects.

Validation happens entirely before anything is created, so a bad spec leaves nothing behind. Every
error is a ``SpecError`` naming the JSON path (``process.args``, ``mounts[2].destination``) and the
problem. Unknown fields are tolerated, as the spec requires; the raw dicts are kept for the parts
other modules interpret (``linux.resources`` for cgroups, capabilities and seccomp for security).
"""

import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import SpecError

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = ("", "private", "rprivate", "slave", "rslave", "shared", "rshared",
                "unbindable", "runbindable")
DEVICE_TYPES = ("c", "u", "b", "p")
RLIM_UNLIMITED = 2**64 - 1  # RLIM_INFINITY, as configs write it
_NGROUPS_MAX = 65536


@dataclass(frozen=True)
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Rlimit:
    type: str
    soft: int
    hard: int


@dataclass(frozen=True)
class Scheduler:
    """process.scheduler, as sched_setattr(2) takes it (the policy and flags as numbers)."""
    policy: int
    nice: int = 0
    priority: int = 0
    flags: int = 0
    runtime: int = 0   # SCHED_DEADLINE's three, in nanoseconds
    deadline: int = 0
    period: int = 0


@dataclass(frozen=True)
class CpuAffinity:
    """process.execCPUAffinity: the CPUs an exec's helpers run on before it is in the container's
    cgroup (`initial`), and the ones it runs on after (`final`); None leaves that step alone."""
    initial: frozenset[int] | None = None
    final: frozenset[int] | None = None


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    cwd: str
    env: tuple[str, ...] = ()
    terminal: bool = False
    user: User = User()
    rlimits: tuple[Rlimit, ...] = ()
    oom_score_adj: int | None = None
    no_new_privileges: bool = False
    console_size: tuple[int, int] | None = None   # (height, width) of the pty, terminal only
    scheduler: Scheduler | None = None
    io_priority: int | None = None   # the ioprio_set(2) value: class << 13 | level
    exec_cpu_affinity: CpuAffinity | None = None   # an exec's only: the init ignores it, as runc does
    raw: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Mount:
    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()
    # An idmapped bind (mount_setattr MOUNT_ATTR_IDMAP): the file system's ids as these mappings turn
    # them, in a user namespace the caller makes, or as the user namespace at `idmap_userns_path`
    # (the one the container joins) does; `idmap_recursive` for `ridmap`.
    uid_mappings: tuple["IdMapping", ...] = ()
    gid_mappings: tuple["IdMapping", ...] = ()
    idmap_userns_path: str = ""
    idmap_recursive: bool = False

    @property
    def idmapped(self) -> bool:
        return bool(self.uid_mappings or self.idmap_userns_path)

    @property
    def is_bind(self) -> bool:
        """A bind of `source` (type "bind", or a bind/rbind option with any type)."""
        return self.type == "bind" or bool({"bind", "rbind"} & set(self.options))


@dataclass(frozen=True)
class Namespace:
    type: str
    path: str = ""


@dataclass(frozen=True)
class IdMapping:
    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class Device:
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Linux:
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    cgroups_path: str | None = None
    resources: dict | None = None
    rootfs_propagation: str = ""
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: tuple[tuple[str, str], ...] = ()
    time_offsets: tuple[tuple[str, int, int], ...] = ()
    mount_label: str = ""  # SELinux context for the filesystems the container mounts
    personality: int | None = None  # the personality(2) domain its processes run with
    raw: dict = field(default_factory=dict, compare=False)

    def namespace(self, ns_type: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == ns_type), None)


@dataclass(frozen=True)
class Spec:
    oci_version: str
    bundle: str             # absolute
    root_path: str          # absolute: resolved against the bundle
    root_readonly: bool
    process: Process | None
    hostname: str | None
    domainname: str | None
    mounts: tuple[Mount, ...]
    linux: Linux
    hooks: dict
    annotations: dict
    raw: dict = field(compare=False)


def shares_pid_namespace(linux: Any) -> bool:
    """Whether an OCI `linux` section gives the container no pid namespace of its own (none, or one
    joined by path): its processes can then outlive its init, and go with it only if killed."""
    namespaces = (linux.get("namespaces") if isinstance(linux, dict) else None) or []
    return not any(isinstance(ns, dict) and ns.get("type") == "pid" and not ns.get("path") for ns in namespaces)


def load_spec(bundle: str) -> Spec:
    """Read ``<bundle>/config.json`` and validate it."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise SpecError("config.json", f"not found in bundle {bundle}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError("config.json", f"not valid JSON: {e}") from None
    return parse_spec(doc, bundle)


def parse_spec(doc: Any, bundle: str) -> Spec:
    """Validate a decoded config.json; relative ``root.path`` is taken against ``bundle``."""
    top = _obj(doc, "$")
    version = _str(top, "ociVersion", "ociVersion", required=True)
    if not version.startswith("1."):
        raise SpecError("ociVersion", f"unsupported version {version!r} (need 1.x)")
    root = _obj(top.get("root"), "root", required=True)
    root_path = _str(root, "path", "root.path", required=True)
    if not root_path:
        raise SpecError("root.path", "must not be empty")
    process = _process(top.get("process"), "process") if "process" in top else None
    mounts = [_mount(m, f"mounts[{i}]") for i, m in enumerate(_list(top.get("mounts"), "mounts"))]
    hooks = _obj(top.get("hooks"), "hooks")
    for kind, entries in hooks.items():
        for i, hook in enumerate(_list(entries, f"hooks.{kind}")):
            _str(_obj(hook, f"hooks.{kind}[{i}]"), "path", f"hooks.{kind}[{i}].path",
                 required=True)
    annotations = _obj(top.get("annotations"), "annotations")
    for key, value in annotations.items():
        if not isinstance(value, str):
            raise SpecError(f"annotations.{key}", "must be a string")
    linux = _linux(top.get("linux"), "linux")
    for i, m in enumerate(mounts):
        words = {"idmap", "ridmap"} & set(m.options)
        if not m.idmapped and words:   # the container's user namespace's mappings, as runc takes them
            user_ns = linux.namespace("user")
            if linux.uid_mappings:
                mounts[i] = replace(m, uid_mappings=linux.uid_mappings, gid_mappings=linux.gid_mappings)
            elif user_ns is not None and user_ns.path:
                mounts[i] = replace(m, idmap_userns_path=user_ns.path)
            else:
                raise SpecError(f"mounts[{i}].options", f"{sorted(words)[0]} without uidMappings and gidMappings "
                                                        "needs the container to have a user namespace")
    hostname = _opt_str(top, "hostname", "hostname")
    domainname = _opt_str(top, "domainname", "domainname")
    uts = linux.namespace("uts")
    for key, value in (("hostname", hostname), ("domainname", domainname)):
        try:
            size = len(value.encode()) if value is not None else 0
        except UnicodeEncodeError:
            raise SpecError(key, "is not valid Unicode") from None
        if size > 64:
            raise SpecError(key, f"is {size} bytes long; the kernel takes at most 64")
        if value is not None and uts is None:
            raise SpecError(key, "setting it needs a uts namespace")
        if value is not None and uts.path and _same_file(uts.path, "/proc/self/ns/uts"):
            raise SpecError(key, f"the container joins the host's uts namespace ({uts.path}), where "
                                 "setting it would rename the host")
    return Spec(
        oci_version=version,
        bundle=os.path.abspath(bundle),
        root_path=os.path.normpath(os.path.join(os.path.abspath(bundle), root_path)),
        root_readonly=_bool(root, "readonly", "root.readonly"),
        process=process,
        hostname=hostname,
        domainname=domainname,
        mounts=tuple(mounts),
        linux=linux,
        hooks=hooks,
        annotations=annotations,
        raw=top,
    )


def parse_process(doc: Any, path: str = "process") -> Process:
    """Validate an OCI Process object on its own (what ``exec`` receives)."""
    return _process(doc, path)


# runtime-spec fields railcar does not implement: refused with a clear error rather than ignored,
# so a container never runs without a setting it asked for.
UNSUPPORTED_LINUX = ("intelRdt", "memoryPolicy", "netDevices")

# sched_setattr(2)'s policies and flags, by their runtime-spec names.
SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3, "SCHED_ISO": 4,
                  "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02, "SCHED_FLAG_DL_OVERRUN": 0x04,
               "SCHED_FLAG_KEEP_POLICY": 0x08, "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
_NICE_POLICIES = (SCHED_POLICIES["SCHED_OTHER"], SCHED_POLICIES["SCHED_BATCH"])
_REAL_TIME_POLICIES = (SCHED_POLICIES["SCHED_FIFO"], SCHED_POLICIES["SCHED_RR"])
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
PERSONALITIES = {"LINUX": 0x0000, "LINUX32": 0x0008}
MAX_CPU = 8191   # the highest CPU number a cpu list may name (the kernel's NR_CPUS at most)
_CPU_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?", re.ASCII)   # as runc reads one: no sign, space or "_"
_INT32 = 1 << 31


def _refuse(doc: dict, keys: tuple[str, ...], path: str) -> None:
    for key in keys:
        if doc.get(key) is not None:
            raise SpecError(f"{path}.{key}", "is not supported by railcar")


_PATH_MAX = 4096  # linux/limits.h


def _process(doc: Any, path: str) -> Process:
    p = _obj(doc, path, required=True)
    args = _str_list(p.get("args"), f"{path}.args")
    if not args:
        raise SpecError(f"{path}.args", "must be a non-empty list")
    cwd = _str(p, "cwd", f"{path}.cwd", required=True)
    if not os.path.isabs(cwd):
        raise SpecError(f"{path}.cwd", f"must be an absolute path, got {cwd!r}")
    if len(os.fsencode(cwd)) >= _PATH_MAX:   # (the rootfs resolves it without its "/", one byte shorter)
        raise SpecError(f"{path}.cwd", f"is {len(os.fsencode(cwd))} bytes long: file name too long "
                                       f"(PATH_MAX is {_PATH_MAX} with its NUL, as runc's chdir finds)")
    env = _str_list(p.get("env"), f"{path}.env")
    for i, entry in enumerate(env):
        if "=" not in entry or entry.startswith("="):
            raise SpecError(f"{path}.env[{i}]", f"must look like KEY=VALUE, got {entry!r}")
        try:
            entry.encode()
        except UnicodeEncodeError:
            raise SpecError(f"{path}.env[{i}]", f"is not valid Unicode: {entry!r}") from None
    u = _obj(p.get("user"), f"{path}.user")
    user = User(
        uid=_id(_uint(u, "uid", f"{path}.user.uid"), f"{path}.user.uid"),
        gid=_id(_uint(u, "gid", f"{path}.user.gid"), f"{path}.user.gid"),
        umask=_uint(u, "umask", f"{path}.user.umask") if u.get("umask") is not None else None,
        additional_gids=tuple(_id(_int_item(g, f"{path}.user.additionalGids[{i}]"),
                                  f"{path}.user.additionalGids[{i}]")
                              for i, g in enumerate(_list(u.get("additionalGids"),
                                                          f"{path}.user.additionalGids"))),
    )
    if len(user.additional_gids) > _NGROUPS_MAX:
        raise SpecError(f"{path}.user.additionalGids", f"has {len(user.additional_gids)} groups; the kernel "
                                                       f"takes at most {_NGROUPS_MAX}")
    rlimits = []
    for i, r in enumerate(_list(p.get("rlimits"), f"{path}.rlimits")):
        rp = f"{path}.rlimits[{i}]"
        r = _obj(r, rp)
        kind = _str(r, "type", f"{rp}.type", required=True)
        if not kind.startswith("RLIMIT_"):
            raise SpecError(f"{rp}.type", f"unknown rlimit {kind!r}")
        soft = _rlimit_value(_uint(r, "soft", f"{rp}.soft", required=True), f"{rp}.soft")
        hard = _rlimit_value(_uint(r, "hard", f"{rp}.hard", required=True), f"{rp}.hard")
        if soft > hard:
            raise SpecError(f"{rp}.soft", f"{soft} is above the hard limit {hard}")
        rlimits.append(Rlimit(kind, soft, hard))
    oom = p.get("oomScoreAdj")
    if oom is not None and (not _is_int(oom) or not -1000 <= oom <= 1000):
        raise SpecError(f"{path}.oomScoreAdj", "must be an integer between -1000 and 1000")
    size = _obj(p.get("consoleSize"), f"{path}.consoleSize")
    console_size = None
    if size:
        console_size = tuple(_uint(size, key, f"{path}.consoleSize.{key}", required=True)
                             for key in ("height", "width"))
        if max(console_size) > 0xFFFF:
            raise SpecError(f"{path}.consoleSize", f"height and width must be at most 65535, got {size}")
    return Process(args=tuple(args), cwd=cwd, env=tuple(env),
                   terminal=_bool(p, "terminal", f"{path}.terminal"), user=user,
                   rlimits=tuple(rlimits), oom_score_adj=oom,
                   no_new_privileges=_bool(p, "noNewPrivileges", f"{path}.noNewPrivileges"),
                   console_size=console_size, scheduler=_scheduler(p.get("scheduler"), f"{path}.scheduler"),
                   io_priority=_io_priority(p.get("ioPriority"), f"{path}.ioPriority"),
                   exec_cpu_affinity=_cpu_affinity(p.get("execCPUAffinity"), f"{path}.execCPUAffinity"), raw=p)


def _scheduler(doc: Any, path: str) -> Scheduler | None:
    """The same rules as runc's: a policy is required, nice is -20..19 (for the policies that use it),
    a priority is for the real-time policies and runtime/deadline/period for SCHED_DEADLINE only."""
    if doc is None:
        return None
    d = _obj(doc, path)
    policy = _named(d, "policy", f"{path}.policy", SCHED_POLICIES, "policy")
    nice = _int(d, "nice", f"{path}.nice")
    if policy in _NICE_POLICIES and not -20 <= nice <= 19:   # (the kernel clamps the others')
        raise SpecError(f"{path}.nice", f"must be between -20 and 19, got {nice}")
    if not -_INT32 <= nice < _INT32:
        raise SpecError(f"{path}.nice", f"{nice} is not a 32-bit integer")
    priority = _uint(d, "priority", f"{path}.priority")
    if priority and policy not in _REAL_TIME_POLICIES:
        raise SpecError(f"{path}.priority", "is only for SCHED_FIFO and SCHED_RR")
    if priority >= _INT32:
        raise SpecError(f"{path}.priority", f"{priority} is not a 32-bit integer")
    flags = 0
    for i, flag in enumerate(_str_list(d.get("flags"), f"{path}.flags")):
        if flag not in SCHED_FLAGS:
            raise SpecError(f"{path}.flags[{i}]", f"unknown flag {flag!r}")
        flags |= SCHED_FLAGS[flag]
    times = {key: _uint(d, key, f"{path}.{key}") for key in ("runtime", "deadline", "period")}
    for key, value in times.items():
        if value >= 1 << 64:
            raise SpecError(f"{path}.{key}", f"{value} is not a 64-bit unsigned integer")
    if policy != SCHED_POLICIES["SCHED_DEADLINE"] and any(times.values()):
        raise SpecError(path, "runtime, deadline and period are only for SCHED_DEADLINE")
    return Scheduler(policy, nice, priority, flags, **times)


def _io_priority(doc: Any, path: str) -> int | None:
    if doc is None:
        return None
    d = _obj(doc, path)
    io_class = _named(d, "class", f"{path}.class", IOPRIO_CLASSES, "class")
    level = _uint(d, "priority", f"{path}.priority")
    if level > 7:
        raise SpecError(f"{path}.priority", f"must be between 0 and 7, got {level}")
    return io_class << 13 | level


def _named(d: dict, key: str, path: str, table: dict[str, int], what: str) -> int:
    """The number `table` gives the name required at `key`; an unknown name is refused, listing the known ones."""
    name = _str(d, key, path, required=True)
    if name not in table:
        raise SpecError(path, f"unknown {what} {name!r} (one of {', '.join(table)})")
    return table[name]


def _cpu_affinity(doc: Any, path: str) -> CpuAffinity | None:
    if doc is None:
        return None
    d = _obj(doc, path)
    return CpuAffinity(*(_cpu_list(_str(d, key, f"{path}.{key}"), f"{path}.{key}") for key in ("initial", "final")))


def _cpu_list(text: str, path: str) -> frozenset[int] | None:
    """A list such as "0-3,7" (spaces and empty items allowed, as runc reads it); None if empty."""
    cpus: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        match = _CPU_ITEM.fullmatch(item)
        if match is None:
            raise SpecError(path, f"{item!r} is not a CPU number or range")
        low = int(match[1])
        high = int(match[2]) if match[2] else low
        if low > high:
            raise SpecError(path, f"{item!r} is not a CPU range")
        if high > MAX_CPU:
            raise SpecError(path, f"CPU {high} is above {MAX_CPU}")
        cpus.update(range(low, high + 1))
    if text and not cpus:
        raise SpecError(path, f"{text!r} names no CPU")
    return frozenset(cpus) or None


def _mount(doc: Any, path: str) -> Mount:
    m = _obj(doc, path)
    dest = _str(m, "destination", f"{path}.destination", required=True)
    if not os.path.isabs(dest):
        raise SpecError(f"{path}.destination", f"must be an absolute path, got {dest!r}")
    options = tuple(_str_list(m.get("options"), f"{path}.options"))
    kind = _str(m, "type", f"{path}.type")
    uid_maps = _id_mappings(m.get("uidMappings"), f"{path}.uidMappings")
    gid_maps = _id_mappings(m.get("gidMappings"), f"{path}.gidMappings")
    if (m.get("uidMappings") is not None or m.get("gidMappings") is not None) and not (uid_maps and gid_maps):
        raise SpecError(f"{path}.{'gidMappings' if uid_maps else 'uidMappings'}",
                        "idmapped mounts need both uidMappings and gidMappings, neither empty")
    mount = Mount(destination=dest, type=kind, source=_str(m, "source", f"{path}.source"), options=options,
                  uid_mappings=uid_maps, gid_mappings=gid_maps, idmap_recursive="ridmap" in options)
    if (uid_maps or {"idmap", "ridmap"} & set(options)) and not mount.is_bind:
        raise SpecError(f"{path}.type", "only bind mounts can be idmapped")
    return mount


def _linux(doc: Any, path: str) -> Linux:
    lx = _obj(doc, path)
    _refuse(lx, UNSUPPORTED_LINUX, path)
    namespaces, seen = [], set()
    for i, ns in enumerate(_list(lx.get("namespaces"), f"{path}.namespaces")):
        np = f"{path}.namespaces[{i}]"
        ns = _obj(ns, np)
        kind = _str(ns, "type", f"{np}.type", required=True)
        if kind not in NAMESPACE_TYPES:
            raise SpecError(f"{np}.type", f"unknown namespace type {kind!r}")
        if kind in seen:
            raise SpecError(f"{np}.type", f"namespace {kind!r} listed twice")
        seen.add(kind)
        ns_path = _str(ns, "path", f"{np}.path")
        if ns_path and not os.path.isabs(ns_path):
            raise SpecError(f"{np}.path", f"must be an absolute path, got {ns_path!r}")
        namespaces.append(Namespace(kind, ns_path))
    if "mount" not in seen:
        raise SpecError(f"{path}.namespaces", "a mount namespace is required")
    uid_maps = _id_mappings(lx.get("uidMappings"), f"{path}.uidMappings")
    gid_maps = _id_mappings(lx.get("gidMappings"), f"{path}.gidMappings")
    user_ns = next((n for n in namespaces if n.type == "user"), None)
    if (uid_maps or gid_maps) and (user_ns is None or user_ns.path):
        raise SpecError(f"{path}.uidMappings", "mappings need a new user namespace")
    if user_ns is not None and not user_ns.path and not (uid_maps and gid_maps):
        raise SpecError(f"{path}.uidMappings", "a new user namespace needs uid and gid mappings")
    devices = []
    for i, d in enumerate(_list(lx.get("devices"), f"{path}.devices")):
        dp = f"{path}.devices[{i}]"
        d = _obj(d, dp)
        dpath = _str(d, "path", f"{dp}.path", required=True)
        if not os.path.isabs(dpath):
            raise SpecError(f"{dp}.path", f"must be an absolute path, got {dpath!r}")
        kind = _str(d, "type", f"{dp}.type", required=True)
        if kind not in DEVICE_TYPES:
            raise SpecError(f"{dp}.type", f"must be one of {', '.join(DEVICE_TYPES)}")
        devices.append(Device(dpath, kind, _uint(d, "major", f"{dp}.major", required=kind != "p"),
                              _uint(d, "minor", f"{dp}.minor", required=kind != "p"),
                              _uint(d, "fileMode", f"{dp}.fileMode") if d.get("fileMode") is not None else 0o666,
                              _uint(d, "uid", f"{dp}.uid"), _uint(d, "gid", f"{dp}.gid")))
    propagation = _str(lx, "rootfsPropagation", f"{path}.rootfsPropagation")
    if propagation not in PROPAGATIONS:
        raise SpecError(f"{path}.rootfsPropagation", f"unknown propagation {propagation!r}")
    sysctl = _obj(lx.get("sysctl"), f"{path}.sysctl")
    for key, value in sysctl.items():
        if not isinstance(value, str):
            raise SpecError(f"{path}.sysctl.{key}", "must be a string")
        if "/" in key or ".." in key.split("."):
            raise SpecError(f"{path}.sysctl.{key}", "is not a valid sysctl name")
        _check_sysctl_namespace(key, namespaces, f"{path}.sysctl.{key}")
    offsets = []
    if lx.get("timeOffsets") and not any(ns.type == "time" and not ns.path for ns in namespaces):
        raise SpecError(f"{path}.timeOffsets", "needs a new time namespace in linux.namespaces")
    for clock, off in _obj(lx.get("timeOffsets"), f"{path}.timeOffsets").items():
        op = f"{path}.timeOffsets.{clock}"
        if clock not in ("monotonic", "boottime"):
            raise SpecError(op, "only monotonic and boottime can be offset")
        off = _obj(off, op)
        offsets.append((clock, _int(off, "secs", f"{op}.secs"), _uint(off, "nanosecs",
                                                                      f"{op}.nanosecs")))
    cgroups_path = _opt_str(lx, "cgroupsPath", f"{path}.cgroupsPath")
    resources = lx.get("resources")
    if resources is not None:
        _obj(resources, f"{path}.resources")
    return Linux(
        namespaces=tuple(namespaces), uid_mappings=uid_maps, gid_mappings=gid_maps,
        devices=tuple(devices), cgroups_path=cgroups_path, resources=resources,
        rootfs_propagation=propagation,
        masked_paths=tuple(_abs_list(lx.get("maskedPaths"), f"{path}.maskedPaths")),
        readonly_paths=tuple(_abs_list(lx.get("readonlyPaths"), f"{path}.readonlyPaths")),
        sysctl=tuple(sysctl.items()), time_offsets=tuple(offsets),
        mount_label=_str(lx, "mountLabel", f"{path}.mountLabel"),
        personality=_personality(lx.get("personality"), f"{path}.personality"), raw=lx)


def personality_of(linux: dict) -> int | None:
    """The personality domain of a stored config's `linux` (validated when the container was made)."""
    return _personality(linux.get("personality"), "linux.personality")


def _personality(doc: Any, path: str) -> int | None:
    """The execution domain; its flags are refused (runc warns and ignores them: railcar never
    runs a container without a setting it asked for)."""
    if doc is None:
        return None
    d = _obj(doc, path)
    domain = _named(d, "domain", f"{path}.domain", PERSONALITIES, "domain")
    if _str_list(d.get("flags"), f"{path}.flags"):
        raise SpecError(f"{path}.flags", "personality flags are not supported by railcar")
    return domain


# The sysctls that belong to an IPC namespace (besides fs.mqueue.*), as the kernel (and runc) has them.
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
_PROC_NS = {"network": "net", "ipc": "ipc", "uts": "uts"}


def _check_sysctl_namespace(key: str, namespaces: list[Namespace], where: str) -> None:
    """A sysctl is written inside the container, so it must belong to a namespace the container has
    of its own: in the host's namespace (or a non-namespaced one) it would change the host."""
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        kind = "ipc"
    elif key.startswith("net."):
        kind = "network"
    elif key == "kernel.domainname":  # (kernel.hostname is what the hostname field is for)
        kind = "uts"
    else:
        raise SpecError(where, "is not a namespaced sysctl: setting it from a container would change the host")
    ns = next((n for n in namespaces if n.type == kind), None)
    if ns is None:
        raise SpecError(where, f"needs a namespace of the container's own ({kind}): in the host's it would "
                               "change the host")
    if ns.path and _same_file(ns.path, f"/proc/self/ns/{_PROC_NS[kind]}"):
        raise SpecError(where, f"the container joins the host's {kind} namespace ({ns.path}), "
                               "where setting it would change the host")


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False  # a path that does not exist fails later, when the namespace is joined
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _id_mappings(doc: Any, path: str) -> tuple[IdMapping, ...]:
    out = []
    for i, m in enumerate(_list(doc, path)):
        mp = f"{path}[{i}]"
        m = _obj(m, mp)
        size = _uint(m, "size", f"{mp}.size", required=True)
        if size == 0:
            raise SpecError(f"{mp}.size", "must be positive")
        out.append(IdMapping(_uint(m, "containerID", f"{mp}.containerID", required=True),
                             _uint(m, "hostID", f"{mp}.hostID", required=True), size))
    return tuple(out)


# --- small typed accessors; each raises SpecError naming the path ---------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _obj(v: Any, path: str, *, required: bool = False) -> dict:
    if v is None:
        if required:
            raise SpecError(path, "is required")
        return {}
    if not isinstance(v, dict):
        raise SpecError(path, f"must be an object, got {type(v).__name__}")
    return v


def _list(v: Any, path: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise SpecError(path, f"must be a list, got {type(v).__name__}")
    return v


def _str_list(v: Any, path: str) -> list[str]:
    items = _list(v, path)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise SpecError(f"{path}[{i}]", f"must be a string, got {type(item).__name__}")
        if "\0" in item:  # execve would refuse it only at start, after create succeeded
            raise SpecError(f"{path}[{i}]", "contains a NUL byte")
    return items


def _abs_list(v: Any, path: str) -> list[str]:
    items = _str_list(v, path)
    for i, item in enumerate(items):
        if not os.path.isabs(item):
            raise SpecError(f"{path}[{i}]", f"must be an absolute path, got {item!r}")
    return items


def _str(d: dict, key: str, path: str, *, required: bool = False) -> str:
    v = d.get(key)
    if v is None:
        if required:
            raise SpecError(path, "is required")
        return ""
    if not isinstance(v, str):
        raise SpecError(path, f"must be a string, got {type(v).__name__}")
    if "\0" in v:  # a path, name or label: the syscall taking it would refuse it, or cut it short
        raise SpecError(path, "contains a NUL byte")
    return v


def _opt_str(d: dict, key: str, path: str) -> str | None:
    return _str(d, key, path) if d.get(key) is not None else None


def _bool(d: dict, key: str, path: str) -> bool:
    """An optional boolean; null counts as absent (false), as in Go's encoding/json."""
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise SpecError(path, f"must be a boolean, got {type(v).__name__}")
    return v


def _rlimit_value(v: int, path: str) -> int:
    """A limit; anything from 2**63 up is unlimited (configs write RLIM_INFINITY as 2**64 - 1, which
    Python's resource module cannot take), kept as that single value."""
    if v > RLIM_UNLIMITED:
        raise SpecError(path, f"{v} does not fit in 64 bits")
    return RLIM_UNLIMITED if v >= 2**63 else v


def _id(v: int, path: str) -> int:
    """A uid or gid. (uid_t)-1 is not one: setresuid/setresgid read it as "leave unchanged", so a
    process asked to run as 4294967295 would keep running as root."""
    if v >= 0xFFFFFFFF:
        raise SpecError(path, f"{v} is not a valid id (the largest is 4294967294)")
    return v


def _int_item(v: Any, path: str) -> int:
    if not _is_int(v) or v < 0:
        raise SpecError(path, "must be a non-negative integer")
    return v


def _int(d: dict, key: str, path: str) -> int:
    v = d.get(key)
    if v is None:
        return 0
    if not _is_int(v):
        raise SpecError(path, "must be an integer")
    return v


def _uint(d: dict, key: str, path: str, *, required: bool = False) -> int:
    """A non-negative integer; null counts as absent (0, or an error when required)."""
    v = d.get(key)
    if v is None:
        if required:
            raise SpecError(path, "is required")
        return 0
    return _int_item(v, path)
