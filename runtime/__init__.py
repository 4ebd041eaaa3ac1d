"""railcar's OCI runtime: namespaces, rootfs, process, lifecycle, cgroups and security.

The public surface is re-exported here; heavy modules (pyroute2) are never imported by it.
"""

from .container import Container, ContainerState, CreateResult
from .errors import ContainerExists, ContainerNotFound, InvalidState, RuntimeFailure, SpecError

__all__ = ["Container", "ContainerExists", "ContainerNotFound", "ContainerState", "CreateResult",
           "InvalidState", "RuntimeFailure", "SpecError"]
