"""What `-v` and `-info` report about this shim."""

import json

from . import wire

RUNTIME_NAME = "io.containerd.railcar.v2"
FEATURES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
_NAMESPACES = ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]
_MOUNT_OPTIONS = [
    "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand", "noatime",
    "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "rbind",
    "relatime", "remount", "ro", "rw", "strictatime", "suid", "sync",
]


def version() -> str:
    """The installed package version (metadata lookup is slow-ish, so only -v and -info pay for it)."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("railcar")
    except PackageNotFoundError:
        return "unknown"


def version_text() -> str:
    """The human-readable `-v` answer, shaped like containerd's own shims."""
    return f"containerd-shim-railcar-v2:\n  Version:  {version()}\n  Runtime:  {RUNTIME_NAME}\n\n"


def features() -> dict:
    """The OCI runtime-spec `features` document (what the runtime can do), for containerd's introspection."""
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": _MOUNT_OPTIONS,
        "linux": {
            "namespaces": _NAMESPACES,
            "cgroup": {"v1": True, "v2": True},
        },
        "annotations": {"io.github.railcar.shim": RUNTIME_NAME},
    }


def runtime_info() -> bytes:
    """The protobuf containerd.types.RuntimeInfo that `-info` prints."""
    return wire.runtime_info(
        RUNTIME_NAME, version(), "", FEATURES_TYPE_URL, json.dumps(features(), sort_keys=True).encode()
    )
