"""railcar's OCI runtime: namespaces, rootfs, process, lifecycle, cgroups and security.

The public surface is re-exported here. `container` (and through it spec, process, mounts,
cgroups: ~78 ms) is loaded on first use of one of its names, so importing a light submodule or
only the errors stays cheap; heavy modules (pyroute2) are never imported by this package itself.
"""

from typing import Any

from .errors import ContainerExists, ContainerNotFound, InvalidState, RuntimeFailure, SpecError

_FROM_CONTAINER = ("Container", "ContainerState", "CreateResult")

__all__ = ["Container", "ContainerExists", "ContainerNotFound", "ContainerState", "CreateResult",
           "InvalidState", "RuntimeFailure", "SpecError"]


def __getattr__(name: str) -> Any:
    """Load `container` the first time one of its names is asked for (PEP 562)."""
    if name in _FROM_CONTAINER:
        from . import container
        return getattr(container, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
