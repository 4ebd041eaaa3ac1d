"""Capabilities, no_new_privs and seccomp applied in a real forked process, checked after execve."""

from __future__ import annotations

import errno
import os
import pickle

import pytest

from railcar.runtime.errors import SpecError
from railcar.runtime.security import CAP_NUMBERS, SecurityPlan, prepare

BUSYBOX = "/bin/busybox"
PYTHON = "/usr/bin/python3"  # not the venv: uid 1000 cannot enter /work


def run_with(plan: SecurityPlan, argv: list[str], uid: int | None = None) -> tuple[int, str]:
    """Fork, apply the plan in the order the container init does, execve argv; (status, output)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.dup2(w, 1)
            os.dup2(w, 2)
            plan.before_user_switch(_no_listener)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            plan.after_user_switch()
            plan.before_report(_no_listener)
            plan.last()
            os.execv(argv[0], argv)
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            os.write(w, f"child failed: {e!r}".encode())
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def _no_listener(fd: int) -> None:
    raise AssertionError("no filter here has SCMP_ACT_NOTIFY rules")


def proc_status(plan: SecurityPlan, uid: int | None = None) -> dict[str, str]:
    code, out = run_with(plan, [BUSYBOX, "cat", "/proc/self/status"], uid)
    assert code == 0, out
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def mask(*names: str) -> str:
    return f"{sum(1 << CAP_NUMBERS[n] for n in names):016x}"


def test_root_gets_exactly_the_requested_sets_and_nnp() -> None:
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"]
    plan = prepare({"capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                    "noNewPrivileges": True}, {})
    st = proc_status(plan)
    assert (st["CapBnd"], st["CapPrm"], st["CapEff"]) == (mask(*caps),) * 3
    assert st["CapInh"] == st["CapAmb"] == mask()
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "0"


def test_non_root_keeps_ambient_capabilities_across_exec() -> None:
    one = ["CAP_NET_BIND_SERVICE"]
    plan = prepare({"capabilities": {"bounding": one + ["CAP_KILL"], "effective": one, "permitted": one,
                                     "inheritable": one, "ambient": one}}, {})
    st = proc_status(plan, uid=1000)
    assert st["Uid"].split()[0] == "1000"
    assert st["CapBnd"] == mask("CAP_NET_BIND_SERVICE", "CAP_KILL")
    assert st["CapPrm"] == st["CapEff"] == st["CapInh"] == st["CapAmb"] == mask(*one)
    assert st["NoNewPrivs"] == "0"


def test_ambient_capabilities_that_are_not_inheritable_are_dropped_as_runc_does() -> None:
    """`runc spec` lists ambient capabilities without an inheritable set; runc runs it."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    st = proc_status(prepare({"capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                                               "ambient": caps}}, {}))
    assert st["CapPrm"] == st["CapEff"] == mask(*caps)
    assert st["CapInh"] == st["CapAmb"] == mask()


def test_missing_capabilities_means_none() -> None:
    st = proc_status(prepare({}, {}))
    assert st["CapBnd"] == st["CapPrm"] == st["CapEff"] == mask()


def seccomp_profile(**extra: object) -> dict:
    return {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_syscall_in_any_kernel"], "action": "SCMP_ACT_ERRNO",
             "errnoRet": errno.EXDEV},
            # personality(0xffffffff) only queries: denied by an argument rule, other values pass
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOTTY,
             "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]},
        ],
        **extra,
    }}


PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
try:
    os.mkdir("/nonexistent-dir/x")
except OSError as e:
    print("mkdir", e.errno)
print("personality-query", libc.personality(ctypes.c_ulong(0xFFFFFFFF)), ctypes.get_errno())
print("personality-set", libc.personality(ctypes.c_ulong(0)))
print("seccomp", [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0])
"""


@pytest.mark.parametrize("nnp", [True, False])
def test_seccomp_denies_with_the_spec_errno(nnp: bool) -> None:
    plan = prepare({"noNewPrivileges": nnp, "capabilities": {"bounding": ["CAP_SETUID", "CAP_SETGID"]}},
                   seccomp_profile(flags=["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]))
    # Without no_new_privs the filter goes in before the user switch, while CAP_SYS_ADMIN is held.
    code, out = run_with(plan, [PYTHON, "-S", "-c", PROBE], uid=1000)
    assert code == 0, out
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["mkdir"] == str(errno.EXDEV)
    assert lines["personality-query"] == f"-1 {errno.ENOTTY}"
    assert lines["personality-set"] == "0"
    assert lines["seccomp"] == "2"


def test_seccomp_default_errno_applies() -> None:
    plan = prepare({"noNewPrivileges": True}, {"seccomp": {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES,
        "syscalls": [{"names": ["execve", "brk", "mmap", "munmap", "mprotect", "arch_prctl", "access", "openat",
                                "read", "write", "close", "fstat", "newfstatat", "exit_group", "getuid",
                                "set_tid_address", "set_robust_list", "rseq", "prlimit64", "getrandom",
                                "uname", "readlinkat", "pread64"],
                      "action": "SCMP_ACT_ALLOW"}]}})
    code, out = run_with(plan, [BUSYBOX, "mkdir", "/tmp/railcar-seccomp-denied"])
    assert code != 0
    assert os.strerror(errno.EACCES) in out
    assert not os.path.exists("/tmp/railcar-seccomp-denied")


@pytest.mark.parametrize(("process", "linux", "path"), [
    ({"capabilities": {"bounding": ["CAP_NOPE"]}}, {}, "process.capabilities.bounding[0]"),
    ({"capabilities": {"effective": ["CAP_KILL"]}}, {}, "process.capabilities.effective"),
    ({"noNewPrivileges": "yes"}, {}, "process.noNewPrivileges"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_MAYBE"}}, "linux.seccomp.defaultAction"),
    # SCMP_ACT_NOTIFY needs an agent's socket, and never where the listener could not be handed over.
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action":
                                                                       "SCMP_ACT_NOTIFY"}]}},
     "linux.seccomp.listenerPath"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "run/l.sock", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}}, "linux.seccomp.listenerPath"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/l.sock"}},
     "linux.seccomp.defaultAction"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/l.sock", "syscalls": [
        {"names": ["mkdir", "sendmsg"], "action": "SCMP_ACT_NOTIFY"}]}}, "linux.seccomp.syscalls[0].names"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}},
     "linux.seccomp.flags[0]"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "LIKE"}]}]}},
     "linux.seccomp.syscalls[0].args[0].op"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}},
     "linux.seccomp.architectures[0]"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_MAGIC"]}},
     "linux.seccomp.flags[0]"),
    # Wrong JSON types are named, never a TypeError from a lookup or a loop.
    ({"capabilities": {"bounding": [["CAP_KILL"]]}}, {}, "process.capabilities.bounding[0]"),
    ({"capabilities": {"permitted": {"CAP_KILL": True}}}, {}, "process.capabilities.permitted"),
    ({}, {"seccomp": {"defaultAction": ["SCMP_ACT_ALLOW"]}}, "linux.seccomp.defaultAction"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "flags": 1}}, "linux.seccomp.flags"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "flags": [{}]}}, "linux.seccomp.flags[0]"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": 1}}, "linux.seccomp.architectures"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": 1}}, "linux.seccomp.syscalls"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": {}}]}},
     "linux.seccomp.syscalls[0].action"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": []}]}]}},
     "linux.seccomp.syscalls[0].args[0].op"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": True, "op": "SCMP_CMP_EQ"}]}]}},
     "linux.seccomp.syscalls[0].args[0].index"),
])
def test_bad_specs_name_the_json_path(process: dict, linux: dict, path: str) -> None:
    with pytest.raises(SpecError) as e:
        prepare(process, linux)
    assert e.value.path == path


@pytest.mark.skipif(os.path.isdir("/sys/kernel/security/apparmor"), reason="host has AppArmor")
def test_apparmor_on_a_host_without_it_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="no AppArmor") as e:
        prepare({"apparmorProfile": "docker-default"}, {})
    assert e.value.path == "process.apparmorProfile"


@pytest.mark.skipif(os.path.isdir("/sys/fs/selinux"), reason="host has SELinux")
def test_selinux_on_a_host_without_it_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="no SELinux"):
        prepare({"selinuxLabel": "system_u:system_r:container_t:s0"}, {})
    with pytest.raises(SpecError, match="no SELinux") as e:  # the label for the container's mounts too
        prepare({}, {"mountLabel": "system_u:object_r:container_file_t:s0"})
    assert e.value.path == "linux.mountLabel"


def test_a_pickled_plan_still_works() -> None:
    """The plan may be prepared in one process and applied in a forker's child."""
    plan = pickle.loads(pickle.dumps(prepare({"noNewPrivileges": True}, seccomp_profile())))
    code, out = run_with(plan, [BUSYBOX, "mkdir", "/nonexistent-dir/x"])
    assert code != 0 and os.strerror(errno.EXDEV) in out
