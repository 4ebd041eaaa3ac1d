"""What `-v` and `-info` report about this shim."""

import json

from . import wire

RUNTIME_NAME = "io.containerd.railcar.v2"
FEATURES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
# libseccomp's names for the architectures an x86_64 host runs (filters may name any of them).
_SECCOMP_ARCHS = ["SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]


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
    """The OCI runtime-spec `features` document (what the runtime can do), for containerd's
    introspection. It is read from the runtime's own tables, so it cannot claim what the runtime
    would refuse, or leave out what it does."""
    from railcar.runtime import hooks, mounts, seccomp, security, spec

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": list(hooks.KINDS),
        "mountOptions": sorted(mounts.MOUNT_OPTIONS),
        "linux": {
            "namespaces": sorted(spec.NAMESPACE_TYPES),
            "capabilities": list(security.CAPABILITIES),
            # systemd-style cgroupsPath is laid out as systemd would, without asking systemd.
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(seccomp.ACTIONS),
                "operators": sorted(seccomp.OPERATORS),
                "archs": _SECCOMP_ARCHS,
                "knownFlags": sorted(seccomp.FLAGS),
                "supportedFlags": sorted(seccomp.FLAGS),  # WAIT_KILLABLE_RECV with NOTIFY rules
            },
            # Applied where the host has them (the profile or label is refused where it does not).
            "mountExtensions": {"idmap": {"enabled": True}},
            "apparmor": {"enabled": True},
            "selinux": {"enabled": True},
            "intelRdt": {"enabled": False},
        },
        "annotations": {"io.github.railcar.shim": RUNTIME_NAME},
    }


def runtime_info() -> bytes:
    """The protobuf containerd.types.RuntimeInfo that `-info` prints."""
    return wire.runtime_info(
        RUNTIME_NAME, version(), "", FEATURES_TYPE_URL, json.dumps(features(), sort_keys=True).encode()
    )
