"""Where the shim keeps things on the host, shared by `start`, `delete` and the daemon.

The socket directory is containerd's compiled-in default state dir; containerd's own `--state` does
not move it (reference §1.4.2), so every shim of every containerd on the host shares it and the
socket name has to be unique per containerd address, namespace and group.
"""

import os
import posixpath
import sys

try:  # hashlib would load OpenSSL first: ~5 ms of every `start` and `delete`
    from _sha256 import sha256
except ImportError:  # Python >= 3.12 names the module _sha2
    from _sha2 import sha256

SOCKET_DIR = "/run/containerd/s"
RUNTIME_ROOT = "/run/railcar"
ADDRESS_FILE = "address"
EXIT_FILE = "railcar-exit"


def socket_path(address: str, namespace: str, group: str) -> str:
    """The socket a shim for this group listens on: sha256 of the Go `filepath.Join` of the three parts."""
    joined = posixpath.normpath(posixpath.join(address, namespace, group))
    if joined.startswith("//"):
        joined = joined[1:]
    return posixpath.join(SOCKET_DIR, sha256(joined.encode()).hexdigest())


SOCKET_ID_ENV = "RAILCAR_SOCKET_ID"  # `start` to a new daemon: which file its listener is bound to


def socket_id(path: str) -> str | None:
    """The identity (device:inode) of the file at `path`, None if there is none: a daemon removes
    its socket, or dissolves its pool, only while that file is still the one `start` bound for it.
    An inode number is reused as soon as its file is gone, so this only tells files apart while the
    socket compared with is still bound (the daemon holds its listener open until it has looked)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def runtime_root(namespace: str) -> str:
    """The runtime's state root for one containerd namespace, so equal ids in two namespaces never clash."""
    return posixpath.join(RUNTIME_ROOT, namespace or "default")


_PACKAGES = ("shim", "runtime", "io", "ttrpc_proto")


def _code_stamp(top: str) -> int:
    """The newest modification time of railcar's source files (a few dozen stat calls)."""
    newest = 0
    stack = [posixpath.join(top, name) for name in _PACKAGES]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".py"):
                newest = max(newest, entry.stat().st_mtime_ns)
            elif entry.is_dir() and not entry.name.startswith((".", "__")):
                stack.append(entry.path)
    return newest


_identity: str | None = None
_spawn_identity: str | None = None


def code_identity() -> str:
    """This interpreter and this exact copy of railcar's code, as 16 hex digits. An upgrade (or an
    edit) changes it, and with it the zygote and the pools new containers go to: they run the new
    code, as each new runc shim is the new binary, while old daemons serve their containers to the
    end. Besides railcar's files: the interpreter's binary (a Python security update replaces it)
    and the directory railcar is installed in (pip adds and removes entries there when it upgrades
    trio, protobuf or any other dependency). Worked out once per process."""
    global _identity
    if _identity is None:
        top = posixpath.dirname(posixpath.dirname(posixpath.abspath(__file__)))
        binary = os.stat(os.path.realpath(sys.executable))
        installed = os.stat(posixpath.dirname(top)).st_mtime_ns
        key = f"{sys.executable}\0{binary.st_ino}:{binary.st_mtime_ns}\0{top}\0{installed}\0{_code_stamp(top)}"
        _identity = sha256(key.encode()).hexdigest()[:16]
    return _identity


def spawn_identity() -> str:
    """`code_identity`, and what a daemon takes from the `start` that made it, as 16 hex digits: its
    mount namespace, cgroups and resource limits. Daemons are shared where it is the same: a
    zygote's, and a pool's. So a second containerd in a mount namespace of its own (or in another
    cgroup: another service) gets a zygote of its own, as each containerd's runc shims are its own;
    and a containerd restarted with other limits (LimitNOFILE, LimitMEMLOCK), which a container
    without process.rlimits (CRI's) inherits through its shim, gets a new zygote and new pools, not
    the old limits from daemons a busy node never lets idle out. (A pod's daemon keeps serving its
    pod, as runc's old pod shim runs runc with its own limits.) Worked out once per process: the
    zygote does so before it raises its fd limit."""
    global _spawn_identity
    if _spawn_identity is None:
        with open("/proc/self/cgroup") as f:
            cgroups = f.read()
        with open("/proc/self/limits") as f:   # all of them, without loading `resource` on start's path
            limits = f.read()
        key = f"{code_identity()}\0{os.readlink('/proc/self/ns/mnt')}\0{cgroups}\0{limits}"
        _spawn_identity = sha256(key.encode()).hexdigest()[:16]
    return _spawn_identity


def zygote_socket() -> str:
    """The zygote's socket, tied to `spawn_identity`: after an upgrade, or for another containerd's
    mounts, cgroups or limits, a new zygote is started and the old one idles out."""
    return posixpath.join(RUNTIME_ROOT, f"zygote-{spawn_identity()}.sock")
