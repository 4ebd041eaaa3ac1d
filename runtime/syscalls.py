"""Thin ctypes bindings for the Linux calls Python 3.11's ``os`` lacks.

Everything raises ``OSError`` with errno and the names involved, like ``os`` does, so callers can
wrap failures with their stage. Only libc is loaded; importing this module is cheap.
"""

import ctypes
import errno
import os
import select
from _signal import SIGCHLD  # not signal.py, which builds its enums on import
from _thread import get_native_id

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc_gil = ctypes.PyDLL(None, use_errno=True)  # calls that must not release the GIL

# Namespace flags (linux/sched.h).
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# Mount flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# mount_setattr(2) attributes (linux/mount.h); the atime ones are one field, not bits.
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
MOUNT_ATTR_IDMAP = 0x100000
_AT_EMPTY_PATH = 0x1000
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000

# openat2 resolve flags (linux/openat2.h).
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

PROC_SUPER_MAGIC = 0x9FA0
OVERLAYFS_SUPER_MAGIC = 0x794C7630

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

_SYS_RT_SIGACTION = 13
_SYS_PIVOT_ROOT = 155
_SYS_KEYCTL = 250
_SYS_IOPRIO_SET = 251
_SYS_SCHED_SETATTR = 314
_SYS_OPENAT2 = 437
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSOPEN_CLOEXEC = 1
_FSMOUNT_CLOEXEC = 1
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x04
_MOVE_MOUNT_T_EMPTY_PATH = 0x40

# keyctl(2) operations (linux/keyctl.h).
_KEYCTL_JOIN_SESSION_KEYRING = 1
_KEYCTL_SETPERM = 5
_KEYCTL_DESCRIBE = 6


def _check(result: int, what: str, *names: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", *names[:1])
    return result


def command_line_area() -> tuple[int, int]:
    """Where this process's argument strings are, which /proc/<pid>/cmdline shows: their address and
    size (/proc/self/stat's arg_start and arg_end). A forked child has them at the same address."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()   # (the command name may hold anything)
    start, end = int(fields[45]), int(fields[46])   # fields 48 and 49; the first after the name is 3
    return start, end - start


def write_memory(address: int, data: bytes) -> None:
    """Copy `data` to `address` of this process (writable memory of its own)."""
    ctypes.memmove(address, data, len(data))


def readable(fd: int, timeout: float | None = None) -> bool:
    """Whether `fd` becomes readable within `timeout` seconds (None: wait as long as it takes).
    poll(2), not select(2): select cannot take an fd numbered 1024 or above, which a process whose
    soft fd limit was raised (shim.fdlimit) may hold; a closed fd raises EBADF, as select does."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(None if timeout is None else timeout * 1000)
    if events and events[0][1] & select.POLLNVAL:
        raise OSError(errno.EBADF, f"poll: fd {fd} is not open")
    return bool(events)


def bare_fork() -> int:
    """fork(2) without the interpreter's after-fork work (re-initialising threading's, logging's and
    trio's thread-cache state, reseeding `random`), for a parent that has one thread and holds no
    lock: the zygote, a daemon before trio starts, the forker. That work writes to about 150 pages
    a child would otherwise share with its parent: 0.6 MiB of private memory per long-lived child
    (measured: 380 against 990 KiB for a child that only sleeps). The GIL stays held across the
    call, as in os.fork. With another thread running, the child needs that work (a lock that thread
    holds, a thread pool it believes in), so this is os.fork then. The children must not rely on
    `random` differing from their parent's (railcar does not use it)."""
    if len(os.listdir("/proc/self/task")) > 1:
        return os.fork()
    return _check(_libc_gil.fork(), "fork")


class _CloneArgs(ctypes.Structure):
    """struct clone_args (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2)."""
    _fields_ = [(name, ctypes.c_uint64) for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal",
                                                      "stack", "stack_size", "tls", "set_tid", "set_tid_size",
                                                      "cgroup")]


_CLONE_CHILD_SETTID = 0x01000000
_CLONE_INTO_CGROUP = 0x200000000
_SYS_CLONE3 = 435
_GLIBC_TID_OFFSET = 0x2d0  # offsetof(struct pthread, tid) on x86_64 glibc 2.36; checked before use


def _own_tid_field() -> int | None:
    """The address of this thread's tid in glibc's thread block, if it is where we expect it (it
    holds our tid): the child of a raw clone must have its own there, as fork() gives it, for the
    glibc calls that use it (raise, pthread_kill). None if it is not, or if this is not glibc on
    x86_64 (whose thread block might end before that offset)."""
    try:
        if (not os.confstr("CS_GNU_LIBC_VERSION") or os.uname().machine != "x86_64"
                or ctypes.sizeof(ctypes.c_void_p) != 8):   # (a 32-bit Python on that kernel)
            return None
    except (ValueError, OSError):   # not glibc
        return None
    _libc_gil.pthread_self.restype = ctypes.c_void_p
    field = _libc_gil.pthread_self() + _GLIBC_TID_OFFSET
    return field if ctypes.c_int.from_address(field).value == get_native_id() else None


def fork_into_cgroup(cgroup_fd: int, single_threaded: bool = False) -> int:
    """fork(2) into the cgroup v2 directory `cgroup_fd` (clone3 with CLONE_INTO_CGROUP, Linux 5.7):
    the child is born in it, where a move after the fork would take the kernel's global cgroup
    lock for writing, and wait out an RCU grace period (~10 ms on the test VM). Like `bare_fork`,
    without the interpreter's after-fork work, for a single-threaded caller; and without glibc's
    fork handlers, which such a process does not need (no lock can be held by another thread).
    Raises OSError if the kernel or glibc does not allow it: the caller forks and moves instead.
    `single_threaded`: the caller knows it is (a forked helper), and need not look in /proc, which
    may be another pid namespace's once it joined a container's mount namespace."""
    tid_field = _own_tid_field()
    if tid_field is None or not single_threaded and len(os.listdir("/proc/self/task")) > 1:
        raise OSError(errno.ENOTSUP, "fork into a cgroup: not with this glibc, or with threads")
    args = _CloneArgs(flags=_CLONE_INTO_CGROUP | _CLONE_CHILD_SETTID, exit_signal=SIGCHLD,
                      child_tid=tid_field, cgroup=cgroup_fd)
    return _check(_libc_gil.syscall(ctypes.c_long(_SYS_CLONE3), ctypes.byref(args),
                                    ctypes.c_size_t(ctypes.sizeof(args))), "clone3")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source or fstype} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), os.fsencode(new_root),
                         os.fsencode(put_old)), "pivot_root")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): used with RESOLVE_IN_ROOT so symlinks in an image stay inside its rootfs."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(_libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), os.fsencode(path),
                                ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))),
                  f"open {path}", path)


def fstatfs_type(fd: int) -> int:
    """f_type of the filesystem `fd` (an O_PATH fd will do) is on: which filesystem it really is."""
    buf = ctypes.create_string_buffer(128)   # struct statfs is 120 bytes on 64-bit Linux; f_type comes first
    _check(_libc.fstatfs(ctypes.c_int(fd), buf), "fstatfs")
    return ctypes.c_long.from_buffer(buf).value


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def bind_onto(source: str, target_fd: int, recursive: bool) -> int:
    """Bind `source` onto what `target_fd` (O_PATH) is; return an O_PATH fd of the new mount.

    open_tree(2) clones `source` as a detached mount and move_mount(2) attaches that very mount
    where the fd is: no path is looked up twice, and the returned fd is the new mount itself, not
    whatever a path names by the time its flags are set."""
    tree = clone_tree(source, recursive)
    try:
        attach(tree, target_fd, source)
    except BaseException:
        os.close(tree)
        raise
    return tree


def clone_tree(source: str, recursive: bool) -> int:
    """open_tree(2) OPEN_TREE_CLONE: a detached copy of the mount at `source` (and those below it)."""
    return _check(_libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(_AT_FDCWD), os.fsencode(source),
                                ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC | (_AT_RECURSIVE if recursive else 0))),
                  f"bind {source}", source)


def attach(tree: int, target_fd: int, source: str) -> None:
    """move_mount(2) the detached mount `tree` (of `source`) onto what `target_fd` is."""
    _check(_libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(tree), b"", ctypes.c_int(target_fd), b"",
                         ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH)),
           f"bind {source}", source)


def idmap_tree(tree: int, userns_fd: int, recursive: bool, source: str) -> None:
    """mount_setattr(2) MOUNT_ATTR_IDMAP on the detached mount `tree`: its files' ids as the user
    namespace `userns_fd` maps them (and on the mounts below it if `recursive`)."""
    attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    _check(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(tree), b"",
                         ctypes.c_uint(_AT_EMPTY_PATH | (_AT_RECURSIVE if recursive else 0)), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr))),
           f"idmap {source}", source)


def mount_detached(fstype: str, options: dict[str, str], attrs: int) -> int:
    """A new `fstype` filesystem with string `options`, mounted with MOUNT_ATTR_* `attrs` but attached
    nowhere (fsopen(2), fsconfig(2), fsmount(2)); returns an fd of its root. No path in any mount
    namespace reaches it, so nothing can be mounted over it or remount it: only that fd, and the
    files opened through it, do."""
    context = _check(_libc.syscall(ctypes.c_long(_SYS_FSOPEN), os.fsencode(fstype), ctypes.c_uint(_FSOPEN_CLOEXEC)),
                     f"fsopen {fstype}")
    try:
        for key, value in options.items():
            _check(_libc.syscall(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(context),
                                 ctypes.c_uint(_FSCONFIG_SET_STRING), os.fsencode(key), os.fsencode(value),
                                 ctypes.c_int(0)),
                   f"{fstype} option {key}={value}")
        _check(_libc.syscall(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(context), ctypes.c_uint(_FSCONFIG_CMD_CREATE),
                             None, None, ctypes.c_int(0)), f"create {fstype}")
        return _check(_libc.syscall(ctypes.c_long(_SYS_FSMOUNT), ctypes.c_int(context), ctypes.c_uint(_FSMOUNT_CLOEXEC),
                                    ctypes.c_uint(attrs)), f"fsmount {fstype}")
    finally:
        os.close(context)


def mount_setattr_recursive(target: str, attr_set: int, attr_clr: int) -> None:
    """mount_setattr(2) on the mount at ``target`` and every mount below it."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), os.fsencode(target),
                         ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr {target}", target)


_AT_EACCESS = 0x200
_faccessat = _libc.faccessat  # bound once, not in every forked exec process (see _prctl)


def may_execute(path: str) -> bool | None:
    """Whether execve would be allowed to run ``path`` by its permission bits, for our effective
    ids and capabilities (faccessat with AT_EACCESS); None if the call itself was refused (EPERM
    or ENOSYS: a seccomp filter, which may be in by then)."""
    if _faccessat(ctypes.c_int(_AT_FDCWD), os.fsencode(path), ctypes.c_int(os.X_OK),
                  ctypes.c_int(_AT_EACCESS)) == 0:
        return True
    return None if ctypes.get_errno() in (errno.EPERM, errno.ENOSYS) else False


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc.setdomainname(raw, ctypes.c_size_t(len(raw))), "setdomainname")


_prctl = _libc.prctl    # bound once, before any fork: a first lookup in a forked process would make the
_capset = _libc.capset  # function object there, writing to pages it shares with its parent
_ZERO = ctypes.c_ulong(0)


def prctl(option: int, arg2: int = 0, arg3: int = 0, what: str = "") -> None:
    """prctl(2); an error names `what` (by default, the option's number)."""
    _check(_prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), _ZERO, _ZERO),
           what or f"prctl({option})")


def capset(header: bytes, data: bytes, what: str) -> None:
    """capset(2) of a packed __user_cap_header_struct and its __user_cap_data_struct array."""
    _check(_capset(header, data), what)


class _SchedAttr(ctypes.Structure):
    """struct sched_attr with the utilization clamps (SCHED_ATTR_SIZE_VER1, 56 bytes), as runc passes
    it: the kernel refuses SCHED_FLAG_UTIL_CLAMP_* with the shorter first version. The spec has no
    clamp values, so they are 0, as runc's."""
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64), ("util_min", ctypes.c_uint32),
                ("util_max", ctypes.c_uint32)]


def sched_setattr(policy: int, *, nice: int = 0, priority: int = 0, flags: int = 0, runtime: int = 0,
                  deadline: int = 0, period: int = 0) -> None:
    """sched_setattr(2) of the calling thread."""
    attr = _SchedAttr(ctypes.sizeof(_SchedAttr), policy, flags, nice, priority, runtime, deadline, period)
    _check(_libc.syscall(ctypes.c_long(_SYS_SCHED_SETATTR), ctypes.c_int(0), ctypes.byref(attr), ctypes.c_uint(0)),
           "sched_setattr")


_IOPRIO_WHO_PROCESS = 1


def ioprio_set(value: int) -> None:
    """ioprio_set(2) of the calling process: `value` is class << 13 | level."""
    _check(_libc.syscall(ctypes.c_long(_SYS_IOPRIO_SET), ctypes.c_int(_IOPRIO_WHO_PROCESS), ctypes.c_int(0),
                         ctypes.c_int(value)), "ioprio_set")


def personality(domain: int) -> None:
    _check(_libc.personality(ctypes.c_ulong(domain)), "personality")


def join_session_keyring(name: str) -> int:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING): join the session keyring called `name` if we may search
    one, else a new one by that name; its serial."""
    return _check(_libc.syscall(ctypes.c_long(_SYS_KEYCTL), ctypes.c_long(_KEYCTL_JOIN_SESSION_KEYRING),
                                name.encode()), "keyctl(join session keyring)")


def key_permissions(key: int) -> int:
    """The permission mask of key `key` (from KEYCTL_DESCRIBE: "type;uid;gid;perm;description")."""
    buf = ctypes.create_string_buffer(512)
    size = _check(_libc.syscall(ctypes.c_long(_SYS_KEYCTL), ctypes.c_long(_KEYCTL_DESCRIBE), ctypes.c_long(key),
                                buf, ctypes.c_long(len(buf))), "keyctl(describe)")
    return int(buf.raw[:min(size, len(buf))].split(b";")[3], 16)


def set_key_permissions(key: int, perm: int) -> None:
    _check(_libc.syscall(ctypes.c_long(_SYS_KEYCTL), ctypes.c_long(_KEYCTL_SETPERM), ctypes.c_long(key),
                         ctypes.c_ulong(perm)), "keyctl(setperm)")


# struct kernel_sigaction: handler SIG_DFL (0), flags, restorer, mask. Made once: made in the forked
# process, its array type and object wrote to pages it shares with its parent (faults in the container's cgroup).
_SIG_DFL_ACTION = (ctypes.c_ulong * 4)()


def signals_not_default() -> tuple[int, ...]:
    """The signals whose action here is not the default (ignored or caught), as the kernel has them
    (/proc/self/status), whoever set them: Python's `signal`, faulthandler, a C library, glibc."""
    mask = 0
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith((b"SigIgn:", b"SigCgt:")):
                mask |= int(line.split()[1], 16)
    return tuple(sig for sig in range(1, mask.bit_length() + 1) if mask >> (sig - 1) & 1)


def default_signal_action(sig: int) -> None:
    """rt_sigaction(sig, SIG_DFL) for any signal, including the two glibc keeps for itself (32 and
    33), which `signal.signal` cannot reach (glibc's posix_spawn leaves them ignored in the child),
    and without what `signal.signal` does in Python (enums; its table, which execve drops anyway)."""
    _check(_libc.syscall(ctypes.c_long(_SYS_RT_SIGACTION), ctypes.c_long(sig), _SIG_DFL_ACTION, None,
                         ctypes.c_long(8)), f"rt_sigaction({sig})")
