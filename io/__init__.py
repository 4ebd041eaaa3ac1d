"""Stdio forwarding: pipes, FIFOs, binary:// and file:// targets, ptys. Knows nothing of containers.

The public surface is ProcessIO (one process's stdio), StdioError (a target that cannot be used),
Spawner (how a binary:// logger is started; the shim supplies its own) and DefaultSpawner.
"""

from .errors import StdioError
from .process_io import ProcessIO
from .spawner import DefaultSpawner, Spawner

__all__ = ["DefaultSpawner", "ProcessIO", "Spawner", "StdioError"]
