"""The trio ttrpc client: many concurrent unary calls multiplexed over one connection.

``async with connect_unix(path) as client: await client.call(...)``. Deadlines (``timeout=`` or an
enclosing trio cancel scope) travel to the server as ``timeout_nano``; when the connection drops,
every pending and later call fails with ``TtrpcError(UNAVAILABLE, "ttrpc: closed")``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from os import PathLike
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError, Message

from .events import Event, PeerError, Response
from .exchange import exchange
from .outbox import Outbox
from .protocol import Connection, MessageTooLarge, Role
from .status import CLOSED_MESSAGE, Code, TtrpcError

M = TypeVar("M", bound=Message)



class _Pending:
    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.outcome: Response | TtrpcError | None = None

    def resolve(self, outcome: Response | TtrpcError) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.done.set()


class Client:
    """A ttrpc client over one stream. Build it with ``open_client`` or ``connect_unix``, which run
    its reader and writer tasks."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._conn = Connection(Role.CLIENT)
        self._outbox = Outbox()
        self._pending: dict[int, _Pending] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> M:
        """Call ``service``/``method``; raise ``TtrpcError`` for a non-OK status, a lost connection
        (UNAVAILABLE) or an expired ``timeout`` (DEADLINE_EXCEEDED)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise TtrpcError(Code.UNAVAILABLE, CLOSED_MESSAGE)
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        own_deadline = math.inf if timeout is None else trio.current_time() + timeout
        deadline = min(own_deadline, trio.current_effective_deadline())
        timeout_nano = 0 if deadline == math.inf else max(1, int((deadline - trio.current_time()) * 1e9))
        try:
            sid, frame = self._conn.send_request(
                service,
                method,
                request.SerializeToString(),
                timeout_nano=timeout_nano,
                metadata=[(k.lower(), v) for k, v in (metadata or {}).items()],
            )
        except MessageTooLarge as exc:
            raise TtrpcError(Code.RESOURCE_EXHAUSTED, str(exc)) from None
        pending = self._pending[sid] = _Pending()
        self._outbox.put(frame)
        try:
            with trio.move_on_at(own_deadline):
                await pending.done.wait()
        finally:
            del self._pending[sid]
            if pending.outcome is None:
                self._conn.abandon(sid)
        outcome = pending.outcome
        if outcome is None:
            raise TtrpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded")
        if isinstance(outcome, TtrpcError):
            raise outcome
        if outcome.code != Code.OK:
            raise TtrpcError(outcome.code, outcome.message)
        try:
            return response_type.FromString(outcome.payload)
        except DecodeError as exc:
            raise TtrpcError(Code.INTERNAL, f"unmarshal {response_type.DESCRIPTOR.full_name}: {exc}") from None

    async def _run(self) -> None:
        """Read responses and write requests until the connection ends, then fail what is pending."""
        try:
            await exchange(self._conn, self._outbox, self._stream, self._on_event)
        finally:
            self._close_pending()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Response):
            self._resolve(event.stream_id, event)
        elif isinstance(event, PeerError):
            self._resolve(event.stream_id, TtrpcError(event.code, event.message))
        # a Data frame has no meaning for unary calls

    def _resolve(self, stream_id: int, outcome: Response | TtrpcError) -> None:
        pending = self._pending.get(stream_id)
        if pending is not None:
            pending.resolve(outcome)

    def _close_pending(self) -> None:
        self._closed = True
        for pending in self._pending.values():
            pending.resolve(TtrpcError(Code.UNAVAILABLE, CLOSED_MESSAGE))


@asynccontextmanager
async def open_client(stream: trio.abc.Stream) -> AsyncIterator[Client]:
    """Run a ``Client`` over ``stream`` for the body of the ``async with``; closes the stream after."""
    client = Client(stream)
    # The body's exception is taken out of the nursery and re-raised outside it, so that callers see
    # their own TtrpcError rather than an ExceptionGroup wrapping it.
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._run)
            try:
                yield client
            except BaseException as exc:
                body_error = exc
            nursery.cancel_scope.cancel()
    finally:
        client._close_pending()
        with trio.CancelScope(shield=True):
            await stream.aclose()
    if body_error is not None:
        raise body_error


@asynccontextmanager
async def connect_unix(path: str | PathLike[str]) -> AsyncIterator[Client]:
    """Connect to the ttrpc server at unix socket ``path`` (a ``unix://`` prefix is accepted)."""
    text = str(path)
    stream = await trio.open_unix_socket(text.removeprefix("unix://"))
    async with open_client(stream) as client:
        yield client
