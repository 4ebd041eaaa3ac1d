"""Frames waiting to be written, and the one task that writes them.

Callers enqueue whole frames without awaiting, so a call cancelled mid-send can never leave half a
frame on the wire (which would desynchronise the peer); a single writer task owns ``send_all``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio


class Outbox:
    def __init__(self, on_flushed: Callable[[], None] | None = None) -> None:
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)
        self._on_flushed = on_flushed
        #: Frames queued and not yet completely written.
        self.queued = 0

    def put(self, frame: bytes) -> None:
        """Queue ``frame``; silently dropped once the writer has stopped (the connection is gone)."""
        try:
            self._send.send_nowait(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        self.queued += 1

    async def write_all(self, stream: trio.abc.SendStream) -> None:
        """Write queued frames until the stream breaks or the task is cancelled."""
        async with self._receive:
            async for frame in self._receive:
                try:
                    await stream.send_all(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                self.queued -= 1
                if self.queued == 0 and self._on_flushed is not None:
                    self._on_flushed()
