"""cgroup v2 device control: OCI device rules compiled to a BPF_PROG_TYPE_CGROUP_DEVICE program.

v2 has no devices.allow/deny files; the kernel instead runs an eBPF program attached to the
cgroup for every device open/mknod and allows the access when it returns 1.

Rule semantics (the v1 files' behaviour for the rule lists runtimes produce): a rule for all
devices (`type` a, no major/minor) resets the default to its own allow/deny and forgets earlier
rules; after that, the *last* rule matching a request decides, else the default. An allow rule
matches when every requested access is in its `access`; a deny rule when any is. No rules at all
means no program (the parent's policy applies).

Updating replaces the program: the new one is attached first (BPF_F_ALLOW_MULTI), then every
other program on the cgroup is detached, so there is no window without a policy.
"""

from __future__ import annotations

import ctypes
import os
import struct

from .errors import CgroupError
from .resources import DeviceRule

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_BPF = 321  # x86_64

BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH, BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY = 5, 8, 9, 13, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_ATTR_SIZE = 128

# struct bpf_cgroup_dev_ctx { u32 access_type /* access << 16 | type */; u32 major; u32 minor; }
_DEV_TYPE = {"b": 1, "c": 2}
_ACCESS = {"m": 1, "r": 2, "w": 4}

# Opcodes used (linux/bpf_common.h + linux/bpf.h)
_LDX_W = 0x61      # dst = *(u32 *)(src + off)
_MOV64_X = 0xBF    # dst = src
_MOV64_K = 0xB7    # dst = imm
_AND64_K = 0x57    # dst &= imm
_RSH64_K = 0x77    # dst >>= imm
_JNE_K = 0x55      # if dst != imm: pc += off
_JEQ_K = 0x15      # if dst == imm: pc += off
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _mask(access: str) -> int:
    return sum(_ACCESS[a] for a in access)


def effective_rules(rules: list[DeviceRule]) -> tuple[bool, list[DeviceRule]]:
    """(default allow?, rules after the last reset, in order)."""
    default, active = True, []
    for rule in rules:
        if rule.type == "a" and rule.major is None and rule.minor is None and rule.access == "rwm":
            default, active = rule.allow, []
        else:
            active.append(rule)
    return default, active


def compile_program(rules: list[DeviceRule]) -> bytes:
    """The BPF instructions for `rules` (semantics in the module docstring)."""
    default, active = effective_rules(rules)
    code = [
        _insn(_LDX_W, dst=2, src=1, off=0),   # r2 = access_type
        _insn(_MOV64_X, dst=3, src=2),
        _insn(_AND64_K, dst=3, imm=0xFFFF),   # r3 = device type
        _insn(_RSH64_K, dst=2, imm=16),       # r2 = requested access
        _insn(_LDX_W, dst=4, src=1, off=4),   # r4 = major
        _insn(_LDX_W, dst=5, src=1, off=8),   # r5 = minor
    ]
    for rule in reversed(active):  # the last matching rule decides: test it first
        checks: list[tuple[int, int, int]] = []  # (opcode jumping to "no match", register, imm)
        if rule.type != "a":
            checks.append((_JNE_K, 3, _DEV_TYPE[rule.type]))
        if rule.major is not None:
            checks.append((_JNE_K, 4, rule.major))
        if rule.minor is not None:
            checks.append((_JNE_K, 5, rule.minor))
        block: list[tuple[int, int, int, int] | bytes] = []
        # access test on r0 (scratch): allow needs requested ⊆ access; deny needs requested ∩ access ≠ ∅
        mask = _mask(rule.access)
        block.append(_insn(_MOV64_X, dst=0, src=2))
        block.append(_insn(_AND64_K, dst=0, imm=(~mask & 7) if rule.allow else mask))
        block.append((_JNE_K if rule.allow else _JEQ_K, 0, 0, -1))
        for op, reg, imm in checks:
            block.append((op, reg, imm, -1))
        block.append(_insn(_MOV64_K, dst=0, imm=int(rule.allow)))
        block.append(_insn(_EXIT))
        # resolve "no match" jumps to the end of this block
        for i, item in enumerate(block):
            if isinstance(item, tuple):
                op, reg, imm, _ = item
                block[i] = _insn(op, dst=reg, off=len(block) - i - 1, imm=imm)
        code.extend(block)  # type: ignore[arg-type]
    code += [_insn(_MOV64_K, dst=0, imm=int(default)), _insn(_EXIT)]
    return b"".join(code)


def _bpf(cmd: int, attr: bytes, what: str) -> int:
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    rc = _libc.syscall(ctypes.c_long(_SYS_BPF), ctypes.c_int(cmd), buf, ctypes.c_uint(_ATTR_SIZE))
    if rc < 0:
        err = ctypes.get_errno()
        raise CgroupError(f"bpf({what}): {os.strerror(err)}")
    return rc


def _load(program: bytes) -> int:
    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack("<IIQQIIQ", BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8, ctypes.addressof(insns),
                       ctypes.addressof(license_), 1, len(log), ctypes.addressof(log))
    try:
        return _bpf(BPF_PROG_LOAD, attr, "PROG_LOAD device filter")
    except CgroupError as e:
        raise CgroupError(f"{e}; verifier log: {log.value.decode(errors='replace').strip()[-500:]}") from None


def attached_ids(cgroup_fd: int) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    attr = bytearray(struct.pack("<IIIIQI", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), 64))
    buf = ctypes.create_string_buffer(bytes(attr).ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    if _libc.syscall(ctypes.c_long(_SYS_BPF), ctypes.c_int(BPF_PROG_QUERY), buf, ctypes.c_uint(_ATTR_SIZE)) < 0:
        raise CgroupError(f"bpf(PROG_QUERY device programs): {os.strerror(ctypes.get_errno())}")
    count = struct.unpack_from("<I", buf.raw, 24)[0]
    return list(ids[:count])


def apply_device_rules(cgroup_dir: str, rules: list[DeviceRule]) -> None:
    """Replace the device program of `cgroup_dir` with one enforcing `rules`."""
    if not rules:
        return
    prog_fd = _load(compile_program(rules))
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        os.close(prog_fd)
        raise CgroupError(f"opening {cgroup_dir}: {e.strerror}") from e
    try:
        old = attached_ids(dir_fd)
        _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", dir_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI),
             f"PROG_ATTACH device filter to {cgroup_dir}")
        for prog_id in old:
            old_fd = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id), f"PROG_GET_FD_BY_ID {prog_id}")
            try:
                _bpf(BPF_PROG_DETACH, struct.pack("<III", dir_fd, old_fd, BPF_CGROUP_DEVICE),
                     f"PROG_DETACH old device filter {prog_id} from {cgroup_dir}")
            finally:
                os.close(old_fd)
    finally:
        os.close(dir_fd)
        os.close(prog_fd)
