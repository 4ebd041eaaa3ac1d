"""Helpers shared by the ttrpc tests: a client paired in memory with a server."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from railcar.ttrpc_proto.client import Client, open_client
from railcar.ttrpc_proto.server import Server


@asynccontextmanager
async def paired(server: Server) -> AsyncIterator[Client]:
    """A client whose connection is served by ``server`` in memory, torn down afterwards."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, server_stream)
        async with open_client(client_stream) as client:
            yield client
        nursery.cancel_scope.cancel()
