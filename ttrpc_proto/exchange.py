"""One connection's bytes in both directions, shared by the client and the server.

The writer task drains the ``Outbox``; the reader feeds the sans-IO ``Connection`` and hands every
event to the caller's ``handle`` until the peer closes. Whichever direction ends first ends both.
Every buffered event is handed over before reading again: a frame the role ignores (a stray Data
frame) must never hide the Request or Response behind it until the peer happens to send more.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from .events import NEED_DATA, ConnectionClosed, Event
from .outbox import Outbox
from .protocol import Connection

READ_SIZE = 65536


async def exchange(conn: Connection, outbox: Outbox, stream: trio.abc.Stream,
                   handle: Callable[[Event], None]) -> None:
    """Run the connection until the peer closes it or the stream breaks."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_write_then_stop, outbox, stream, nursery.cancel_scope)
        await _read(conn, stream, handle)
        nursery.cancel_scope.cancel()


async def _write_then_stop(outbox: Outbox, stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
    await outbox.write_all(stream)
    scope.cancel()


async def _read(conn: Connection, stream: trio.abc.Stream, handle: Callable[[Event], None]) -> None:
    while True:
        try:
            data = await stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        conn.receive_data(data)
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, ConnectionClosed):
                return
            handle(event)
