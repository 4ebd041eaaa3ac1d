"""ttrpc for Python: a sans-IO protocol core, trio adapters and the containerd API types.

Importing this package stays light (no trio, no protobuf): the submodules ``protocol``, ``client``,
``server``, ``typeurl`` and ``api`` pull those in only when imported.
"""

from .status import Code, TtrpcError

__all__ = ["Code", "TtrpcError"]
