"""Process security from the spec: capabilities, no_new_privs, AppArmor/SELinux, seccomp.

`prepare` runs in the runtime before the fork: it validates everything (errors name the JSON
path) and compiles seccomp to BPF, so the container init only makes a handful of syscalls that
cannot fail for a reason the spec could have told us earlier. The init then calls, in order:

1. `before_user_switch()` - LSM labels for the exec, drop the bounding set, keep capabilities
   across setuid; and, when no_new_privs is off, load seccomp now: without no_new_privs loading a
   filter needs CAP_SYS_ADMIN, which is about to go (runc makes the same choice);
2. the caller's setgroups/setgid/setuid;
3. `after_user_switch()` - the exact effective/permitted/inheritable sets, the ambient set,
   no_new_privs;
4. `before_report()` - a filter with SCMP_ACT_NOTIFY rules, before the process tells its caller
   it is ready: the caller passes its listener on to the agent, and an init's caller is gone after;
5. `last()` - seccomp, immediately before execve, so the filter constrains the container's
   program and not the runtime's own set-up syscalls.

Where a filter goes in with a listener, `hand_over(fd)` gives the caller that fd at once (as
runc does): the set-up calls after it may be ones the agent is to answer.

A missing `process.capabilities` means no capabilities at all (nothing is inherited from the
runtime by accident).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import struct
from typing import Callable

from . import procfs, syscalls as sc
from .errors import RuntimeFailure, SpecError
from .seccomp import SeccompProgram, compile_seccomp

# linux/capability.h, in number order.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS = {name: i for i, name in enumerate(CAPABILITIES)}
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")

PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

APPARMOR_FS = "/sys/kernel/security/apparmor"
SELINUX_FS = "/sys/fs/selinux"

@functools.cache
def last_cap() -> int:
    """The highest capability this kernel knows; the spec may name newer ones it cannot hold.

    Fixed for the kernel's lifetime, so read once per process: prepare asks for every
    capability set, and the forker's children inherit the value.
    """
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def _bits(caps: frozenset[int]) -> int:
    return sum(1 << c for c in caps)


@dataclasses.dataclass
class SecurityPlan:
    """Everything the container init applies, precomputed; methods only make syscalls."""

    bounding: frozenset[int]
    effective: frozenset[int]
    permitted: frozenset[int]
    inheritable: frozenset[int]
    ambient: frozenset[int]
    no_new_privileges: bool
    apparmor_profile: str | None
    selinux_label: str | None
    seccomp: SeccompProgram | None
    _seccomp_loaded: bool = False
    # What the calls take, made here, before the fork: the forked process's Python work after it
    # joined the container's cgroup is charged to it, a page fault for each page of objects it touches.
    _drops: tuple[int, ...] = dataclasses.field(init=False, repr=False, compare=False)
    # capset's struct __user_cap_header_struct and __user_cap_data_struct[2], as bytes: a plan is
    # picklable. The kernel writes to the header only to say which version it wants instead of v3
    # (which it knows from 2.6.26 on), and fails the call then.
    _capset: tuple[bytes, bytes] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._drops = tuple(cap for cap in range(last_cap() + 1) if cap not in self.bounding)
        sets = [_bits(s) for s in (self.effective, self.permitted, self.inheritable)]
        self._capset = (struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0),
                        struct.pack("6I", *(bits >> shift & 0xFFFFFFFF for shift in (0, 32) for bits in sets)))

    def before_user_switch(self, hand_over: Callable[[int], None]) -> None:
        """In the init, before setgid/setuid."""
        self._apply_lsm()
        for cap in self._drops:
            try:
                sc.prctl(PR_CAPBSET_DROP, cap)
            except OSError as e:
                name = CAPABILITIES[cap] if cap < len(CAPABILITIES) else cap
                why = os.strerror(e.errno)
                raise RuntimeFailure("security", f"dropping {name} from the bounding set: {why}") from None
        sc.prctl(PR_SET_KEEPCAPS, 1, what="PR_SET_KEEPCAPS")
        if self.seccomp is not None and not self.no_new_privileges:
            self._load_seccomp(hand_over)

    def after_user_switch(self) -> None:
        """In the init, after setuid: the final capability sets and no_new_privs."""
        sc.prctl(PR_SET_KEEPCAPS, 0, what="PR_SET_KEEPCAPS")
        sc.capset(*self._capset, what="capset (effective/permitted/inheritable)")
        sc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="clearing the ambient set")
        for cap in sorted(self.ambient):
            sc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, what=f"raising ambient {CAPABILITIES[cap]}")
        if self.no_new_privileges:
            sc.prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")

    def before_report(self, hand_over: Callable[[int], None]) -> None:
        """Set up, before telling the caller: a filter with a listener goes in now."""
        if self.seccomp is not None and self.seccomp.notifies and not self._seccomp_loaded:
            self._load_seccomp(hand_over)

    def last(self) -> None:
        """Immediately before execve: the seccomp filter (unless it had to go in earlier)."""
        if self.seccomp is not None and not self._seccomp_loaded:
            self._load_seccomp(None)

    def _load_seccomp(self, hand_over: Callable[[int], None] | None) -> None:
        assert self.seccomp is not None
        listener = self.seccomp.load()
        self._seccomp_loaded = True
        if listener is not None:
            try:
                assert hand_over is not None, "a filter with a listener goes in before_report at the latest"
                hand_over(listener)
            finally:
                os.close(listener)

    def _apply_lsm(self) -> None:
        """Labels take effect at the next execve (the /proc/self/attr/exec interface)."""
        if self.apparmor_profile:
            attr = "thread-self/attr/apparmor/exec"
            if not os.path.exists("/proc/" + attr):
                attr = "thread-self/attr/exec"
            _write_attr(attr, f"exec {self.apparmor_profile}", "AppArmor profile")
        if self.selinux_label:
            _write_attr("thread-self/attr/exec", self.selinux_label, "SELinux label")


def _write_attr(path: str, value: str, what: str) -> None:
    """Through the container's procfs, checked (a label written elsewhere would leave it unconfined)."""
    try:
        procfs.write(path, value)
    except OSError as e:
        raise RuntimeFailure("security", f"setting {what} {value!r} via /proc/{path}: {e.strerror}") from e


def _cap_set(caps: dict, name: str) -> frozenset[int]:
    where = f"process.capabilities.{name}"
    names = caps.get(name)
    if names is None:
        names = []
    if not isinstance(names, list):
        raise SpecError(where, "must be a list of capability names")
    known = last_cap()
    out = set()
    for i, cap in enumerate(names):
        if not isinstance(cap, str) or cap not in CAP_NUMBERS:
            raise SpecError(f"{where}[{i}]", f"unknown capability {cap!r}")
        if CAP_NUMBERS[cap] <= known:  # newer than this kernel: it cannot be granted, like runc we skip it
            out.add(CAP_NUMBERS[cap])
    return frozenset(out)


def prepare(process: dict, linux: dict) -> SecurityPlan:
    """Validate the spec's security settings and precompute what the init will apply."""
    caps = process.get("capabilities") or {}
    if not isinstance(caps, dict):
        raise SpecError("process.capabilities", "must be an object")
    sets = {name: _cap_set(caps, name) for name in CAP_SETS}
    if not sets["effective"] <= sets["permitted"]:
        extra = sorted(CAPABILITIES[c] for c in sets["effective"] - sets["permitted"])
        raise SpecError("process.capabilities.effective", f"{', '.join(extra)} not in the permitted set")
    # The kernel keeps an ambient capability only while it is permitted and inheritable. runc
    # ignores the failed raise, and `runc spec` itself lists ambient capabilities without an
    # inheritable set, so such a spec must run: those capabilities are simply not ambient.
    sets["ambient"] &= sets["permitted"] & sets["inheritable"]
    nnp = process.get("noNewPrivileges", False)
    if not isinstance(nnp, bool):
        raise SpecError("process.noNewPrivileges", "must be true or false")
    apparmor = _label(process, "process", "apparmorProfile", APPARMOR_FS, "AppArmor")
    selinux = _label(process, "process", "selinuxLabel", SELINUX_FS, "SELinux")
    _label(linux, "linux", "mountLabel", SELINUX_FS, "SELinux")  # applied by the rootfs mounts
    seccomp = linux.get("seccomp")
    return SecurityPlan(
        no_new_privileges=nnp,
        apparmor_profile=apparmor,
        selinux_label=selinux,
        seccomp=compile_seccomp(seccomp) if seccomp is not None else None,
        **sets,
    )


def _label(doc: dict, where: str, key: str, fs: str, lsm: str) -> str | None:
    """`doc[key]`, an LSM label or profile; refused where the host has no such LSM."""
    value = doc.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise SpecError(f"{where}.{key}", "must be a string")
    if not os.path.isdir(fs) or (lsm == "AppArmor" and not _apparmor_enabled()):
        raise SpecError(f"{where}.{key}", f"asks for {lsm} {value!r} but this host has no {lsm} ({fs} is absent)")
    return value


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False
