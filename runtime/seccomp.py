"""linux.seccomp -> a classic BPF program, compiled with libseccomp in the runtime, loaded in the init.

Compiling (name resolution, per-architecture code, argument comparisons) happens before the fork
through libseccomp; the init only calls seccomp(2) with the finished program, which keeps the
work done between the last set-up step and execve minimal.

Rules follow runc's reading of the spec: syscalls libseccomp does not know on this system are
skipped (profiles list syscalls of newer kernels); rules whose action equals the default are
redundant and skipped; several comparisons on the same argument mean "any of them" and become
one rule each.

SCMP_ACT_NOTIFY rules make the filter a user-notification one: loading it gives a listener fd,
which the process hands to its caller as soon as it has it, and the caller sends it on to the
agent at ``listenerPath`` with the container process state (runtime-spec's seccomp section). As
runc does, NOTIFY is refused as the default action and for the one call the process needs to hand
the fd over (here ``sendmsg``): either would leave the process waiting for an agent that never
got the fd.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno as errno_mod
import functools
import json
import os
import socket
import struct
from typing import Any

from .errors import RuntimeFailure, SpecError

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_ERRNO = 0x00050000
SCMP_ACT_TRACE = 0x7FF00000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_NOTIFY = 0x7FC00000
SCMP_ACT_ALLOW = 0x7FFF0000

# Spec action name -> (base value, takes errnoRet in its low 16 bits)
ACTIONS = {
    "SCMP_ACT_KILL": (SCMP_ACT_KILL_THREAD, False),
    "SCMP_ACT_KILL_THREAD": (SCMP_ACT_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (SCMP_ACT_KILL_PROCESS, False),
    "SCMP_ACT_TRAP": (SCMP_ACT_TRAP, False),
    "SCMP_ACT_ERRNO": (SCMP_ACT_ERRNO, True),
    "SCMP_ACT_TRACE": (SCMP_ACT_TRACE, True),
    "SCMP_ACT_LOG": (SCMP_ACT_LOG, False),
    "SCMP_ACT_NOTIFY": (SCMP_ACT_NOTIFY, False),
    "SCMP_ACT_ALLOW": (SCMP_ACT_ALLOW, False),
}

OPERATORS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
             "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}

FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
         "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32}
# The kernel takes this one only for a filter with a listener (SCMP_ACT_NOTIFY rules).
_NEEDS_LISTENER = ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",)
_FLAG_NEW_LISTENER = 8
# What the process needs to hand its listener fd over, so no NOTIFY rule may name it.
_HAND_OVER_CALLS = ("sendmsg",)
AGENT_TIMEOUT = 10  # seconds an agent may take to accept a listener

_SYS_SECCOMP = 317  # x86_64
_SECCOMP_SET_MODE_FILTER = 1
_NR_SCMP_ERROR = -1
_SCMP_FLTATR_CTL_NNP = 3


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_lib: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise RuntimeFailure("seccomp", f"linux.seccomp needs libseccomp.so.2, which cannot be loaded: {e}") from e
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ArgCmp)]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _lib = lib
    return _lib


@dataclasses.dataclass
class SeccompProgram:
    """A compiled filter: the raw `struct sock_filter` array and seccomp(2) flags; with
    SCMP_ACT_NOTIFY rules, where its listener goes and what the agent is told with it."""

    bpf: bytes
    flags: int
    listener_path: str = ""
    listener_metadata: str = ""

    def __post_init__(self) -> None:
        # Built now, in the runtime, so loading allocates nothing.
        self._buffer = ctypes.create_string_buffer(self.bpf, len(self.bpf))
        self._prog = _SockFprog(len(self.bpf) // 8, ctypes.cast(self._buffer, ctypes.c_void_p))
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def __reduce__(self) -> tuple:
        """Picklable (e.g. to hand a plan to a forker process): ctypes state is rebuilt on arrival."""
        return (SeccompProgram, (self.bpf, self.flags, self.listener_path, self.listener_metadata))

    @property
    def notifies(self) -> bool:
        return bool(self.flags & _FLAG_NEW_LISTENER)

    def load(self) -> int | None:
        """Install the filter on this process; its listener fd if it `notifies`."""
        rc = self._libc.syscall(ctypes.c_long(_SYS_SECCOMP), ctypes.c_ulong(_SECCOMP_SET_MODE_FILTER),
                                ctypes.c_ulong(self.flags), ctypes.byref(self._prog))
        if rc < 0:
            err = ctypes.get_errno()
            raise RuntimeFailure("seccomp", f"loading the seccomp filter: {os.strerror(err)}")
        return rc if self.notifies else None


def send_listener(program: SeccompProgram, state: dict, pid: int, listener: int) -> None:
    """Give the agent at `program.listener_path` the listener fd of process `pid`: one connection,
    one container process state (runtime-spec), the fd riding along; closed after."""
    doc = {"ociVersion": state["ociVersion"], "fds": ["seccompFd"], "pid": pid,
           "metadata": program.listener_metadata, "state": state}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as agent:
            # Blocking, so a busy agent's full backlog is waited for, but not for ever.
            agent.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", AGENT_TIMEOUT, 0))
            agent.connect(program.listener_path)
            data = json.dumps(doc).encode()
            sent = socket.send_fds(agent, [data], [listener])  # a stream: the rest may need more sends
            agent.sendall(data[sent:])
    except OSError as e:
        late = f" (the agent took nothing for {AGENT_TIMEOUT} s)" if e.errno == errno_mod.EAGAIN else ""
        raise RuntimeFailure("seccomp", f"linux.seccomp.listenerPath {program.listener_path!r}: "
                                        f"{e.strerror or e}{late}") from None


def _known(table: dict, name: object, where: str, what: str) -> Any:
    """``table[name]``, or a SpecError when ``name`` is not one of its (string) keys."""
    if not isinstance(name, str) or name not in table:
        raise SpecError(where, f"unknown {what} {name!r}")
    return table[name]


def _list(value: object, where: str) -> list:
    """An optional JSON list ([] when absent or null)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(where, f"must be a list, got {type(value).__name__}")
    return value


def _uint(value: object, where: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise SpecError(where, f"must be an unsigned {bits}-bit integer, got {value!r}")
    return value


def _action(name: object, errno_ret: object, where: str) -> int:
    value, takes_errno = _known(ACTIONS, name, where, "seccomp action")
    if not takes_errno:
        return value
    if errno_ret is None:
        errno_ret = errno_mod.EPERM
    if isinstance(errno_ret, bool) or not isinstance(errno_ret, int) or not 0 <= errno_ret <= 0xFFFF:
        raise SpecError(where.rsplit(".", 1)[0] + ".errnoRet", f"must be an integer in [0, 65535], got {errno_ret!r}")
    return value | errno_ret


def _arch_name(spec_name: str) -> bytes:
    """SCMP_ARCH_X86_64 -> b"x86_64" (libseccomp's own names)."""
    name = spec_name.removeprefix("SCMP_ARCH_").lower()
    return {"aarch64": "aarch64", "arm64": "aarch64"}.get(name, name).encode()


def compile_seccomp(seccomp: dict) -> SeccompProgram:
    """Validate `linux.seccomp` and compile it to BPF; errors name the JSON path.

    Compiling a runtime's default profile (~330 syscalls, three architectures) costs ~15 ms, and
    every container of a node tends to use the same few profiles: results are cached by content.
    """
    if not isinstance(seccomp, dict):
        raise SpecError("linux.seccomp", "must be an object")
    return _compile_canonical(json.dumps(seccomp, sort_keys=True))


@functools.lru_cache(maxsize=16)
def _compile_canonical(canonical: str) -> SeccompProgram:
    seccomp = json.loads(canonical)
    where = "linux.seccomp"
    default = _action(seccomp.get("defaultAction"), seccomp.get("defaultErrnoRet"), f"{where}.defaultAction")
    if default == SCMP_ACT_NOTIFY:
        raise SpecError(f"{where}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action: the process "
                                                  "could not hand its listener over to the agent")
    path, metadata = _listener(seccomp, where)
    flags = 0
    for i, flag in enumerate(_list(seccomp.get("flags"), f"{where}.flags")):
        flags |= _known(FLAGS, flag, f"{where}.flags[{i}]", "seccomp flag")
        if flag in _NEEDS_LISTENER and not path:
            raise SpecError(f"{where}.flags[{i}]", f"{flag} is only for a filter with SCMP_ACT_NOTIFY rules")
    if path:
        # The kernel refuses TSYNC with a listener; our processes have one thread, so it changes nothing.
        flags = flags & ~FLAGS["SECCOMP_FILTER_FLAG_TSYNC"] | _FLAG_NEW_LISTENER
    lib = _libseccomp()
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise RuntimeFailure("seccomp", f"seccomp_init refused default action {seccomp.get('defaultAction')!r}")
    try:
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 0)  # no_new_privs is the security plan's call
        for i, arch in enumerate(_list(seccomp.get("architectures"), f"{where}.architectures")):
            token = lib.seccomp_arch_resolve_name(_arch_name(arch)) if isinstance(arch, str) else 0
            if token == 0:
                raise SpecError(f"{where}.architectures[{i}]", f"unknown architecture {arch!r}")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -errno_mod.EEXIST:
                raise SpecError(f"{where}.architectures[{i}]", f"cannot add {arch!r}: {os.strerror(-rc)}")
        for i, rule in enumerate(_list(seccomp.get("syscalls"), f"{where}.syscalls")):
            _add_rule(lib, ctx, rule, default, f"{where}.syscalls[{i}]")
        return SeccompProgram(_export(lib, ctx), flags, path, metadata)
    finally:
        lib.seccomp_release(ctx)


def _listener(seccomp: dict, where: str) -> tuple[str, str]:
    """listenerPath and listenerMetadata when some rule notifies (runtime-spec: ignored otherwise)."""
    notify = [i for i, rule in enumerate(_list(seccomp.get("syscalls"), f"{where}.syscalls"))
              if isinstance(rule, dict) and rule.get("action") == "SCMP_ACT_NOTIFY"]
    path, metadata = seccomp.get("listenerPath"), seccomp.get("listenerMetadata", "")
    if not isinstance(metadata, str):
        raise SpecError(f"{where}.listenerMetadata", "must be a string")
    if not notify:
        return "", ""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise SpecError(f"{where}.listenerPath", "must be the absolute path of the agent's socket with "
                                                 f"SCMP_ACT_NOTIFY rules (syscalls[{notify[0]}]), got {path!r}")
    for i in notify:
        names = seccomp["syscalls"][i].get("names")
        for call in _HAND_OVER_CALLS:
            if isinstance(names, list) and call in names:
                raise SpecError(f"{where}.syscalls[{i}].names", f"SCMP_ACT_NOTIFY cannot be used for {call}: "
                                                                "the process hands its listener over with it")
    return path, metadata


def _add_rule(lib: ctypes.CDLL, ctx: int, rule: dict, default: int, where: str) -> None:
    if not isinstance(rule, dict):
        raise SpecError(where, "must be an object")
    action = _action(rule.get("action"), rule.get("errnoRet"), f"{where}.action")
    names = rule.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SpecError(f"{where}.names", "must be a non-empty list of syscall names")
    groups = _argument_groups(_list(rule.get("args"), f"{where}.args"), f"{where}.args")
    if action == default:
        return
    for name in names:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr == _NR_SCMP_ERROR:
            continue  # unknown to this libseccomp/arch: skipped, as runc and crun do
        for group in groups:
            array = (_ArgCmp * len(group))(*group)
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group), array)
            if rc < 0:
                raise SpecError(where, f"libseccomp refused the rule for {name!r}: {os.strerror(-rc)}")


def _argument_groups(args: list, where: str) -> list[list[_ArgCmp]]:
    """One comparison list per rule to add: several conditions on one argument index are ORed."""
    cmps = []
    for j, arg in enumerate(args):
        here = f"{where}[{j}]"
        if not isinstance(arg, dict):
            raise SpecError(here, "must be an object")
        index, value, value2, op = arg.get("index"), arg.get("value", 0), arg.get("valueTwo", 0), arg.get("op")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
            raise SpecError(f"{here}.index", f"must be an argument index 0-5, got {index!r}")
        cmps.append(_ArgCmp(index, _known(OPERATORS, op, f"{here}.op", "comparison"),
                            _uint(value, f"{here}.value", 64), _uint(value2, f"{here}.valueTwo", 64)))
    indexes = [c.arg for c in cmps]
    if len(set(indexes)) == len(indexes):
        return [cmps]
    return [[c] for c in cmps]


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("railcar-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise RuntimeFailure("seccomp", f"seccomp_export_bpf: {os.strerror(-rc)}")
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
