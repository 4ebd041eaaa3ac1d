"""Where the shim keeps things on the host, shared by `start`, `delete` and the daemon.

The socket directory is containerd's compiled-in default state dir; containerd's own `--state` does
not move it (reference §1.4.2), so every shim of every containerd on the host shares it and the
socket name has to be unique per containerd address, namespace and group.
"""

import hashlib
import posixpath
import sys

SOCKET_DIR = "/run/containerd/s"
RUNTIME_ROOT = "/run/railcar"
ADDRESS_FILE = "address"
EXIT_FILE = "railcar-exit"


def socket_path(address: str, namespace: str, group: str) -> str:
    """The socket a shim for this group listens on: sha256 of the Go `filepath.Join` of the three parts."""
    joined = posixpath.normpath(posixpath.join(address, namespace, group))
    if joined.startswith("//"):
        joined = joined[1:]
    return posixpath.join(SOCKET_DIR, hashlib.sha256(joined.encode()).hexdigest())


def runtime_root(namespace: str) -> str:
    """The runtime's state root for one containerd namespace, so equal ids in two namespaces never clash."""
    return posixpath.join(RUNTIME_ROOT, namespace or "default")


def zygote_socket() -> str:
    """The zygote's socket, tied to this interpreter and this copy of railcar: a zygote forks only
    daemons of the exact code that asked for it."""
    key = f"{sys.executable}\0{posixpath.dirname(posixpath.abspath(__file__))}"
    return posixpath.join(RUNTIME_ROOT, f"zygote-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock")
