"""The trio ttrpc server: services registered by name, one task per request, errors as status codes.

Each request runs in its own task, so a long call (the task service's Wait) never holds up others on
the same connection. A handler answers by returning a message or raising ``TtrpcError``; anything
else it raises becomes UNKNOWN with the exception's text, as Go ttrpc does for plain errors. Bad
input from a peer is answered or dropped for that connection alone; the server keeps serving.

Status codes for dispatch failures follow Go ttrpc (Unimplemented ``service X`` / ``method X``,
InvalidArgument for an unreadable Request, ResourceExhausted for oversize), with one deliberate
difference: a payload that does not decode as the method's request type is InvalidArgument (the
caller's fault) where Go answers Internal.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping

import trio
from google.protobuf.message import DecodeError, Message

from .events import Event, PeerError, Request
from .exchange import exchange
from .outbox import Outbox
from .protocol import Connection, MessageTooLarge, Role
from .status import Code, TtrpcError

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: accept() failures that mean "out of resources for now": wait and retry instead of dying.
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclasses.dataclass(frozen=True)
class CallContext:
    """What a handler knows about its call besides the request message."""

    service: str
    method: str
    #: Request metadata; keys as sent (Go clients lower-case them), one list entry per value.
    metadata: dict[str, list[str]]
    #: trio time at which the client's ``timeout_nano`` expires (``math.inf`` when none was sent);
    #: the handler already runs inside a cancel scope with this deadline.
    deadline: float = math.inf


Handler = Callable[[Message, CallContext], Awaitable[Message]]


class Server:
    """A ttrpc server. ``require_same_user`` drops connections whose peer (SO_PEERCRED) does not have
    this process's effective uid and gid — the check containerd and its shims apply."""

    def __init__(self, *, require_same_user: bool = True) -> None:
        self.require_same_user = require_same_user
        self._services: dict[str, dict[str, tuple[type[Message], Handler]]] = {}
        self._connections: set[tuple[Connection, Outbox]] = set()
        self._progress = trio.lowlevel.ParkingLot()  # unparked when a connection flushes or ends

    def register(self, service: str, methods: Mapping[str, tuple[type[Message], Handler]]) -> None:
        """Serve ``service`` (full name, e.g. ``containerd.task.v2.Task``); ``methods`` maps each method
        name to its request type and handler."""
        if not service:
            raise ValueError("service name must not be empty")
        if service in self._services:
            raise ValueError(f"service {service} is already registered")
        for name, entry in methods.items():
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], type)
                    and issubclass(entry[0], Message) and callable(entry[1])):
                raise TypeError(f"method {service}/{name}: expected (request message type, handler), got {entry!r}")
        self._services[service] = dict(methods)

    async def serve(
        self, listener: trio.socket.SocketType, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept and serve connections on ``listener`` (bound and listening) until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    sock, _ = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                        raise
                    log.warning("ttrpc accept failed, retrying: %s", exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._serve_socket, sock)

    async def _serve_socket(self, sock: trio.socket.SocketType) -> None:
        stream = trio.SocketStream(sock)
        if self.require_same_user and not _same_user(sock):
            await stream.aclose()
            return
        await self.serve_connection(stream)

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until the peer closes it, then cancel its pending calls and close it."""
        conn = Connection(Role.SERVER)
        outbox = Outbox(on_flushed=self._progress.unpark_all)
        entry = (conn, outbox)
        self._connections.add(entry)
        try:
            async with trio.open_nursery() as handlers:   # one task per request; cancelled when the connection ends
                await exchange(conn, outbox, stream, lambda event: self._on_event(conn, outbox, handlers, event))
                handlers.cancel_scope.cancel()
        finally:
            self._connections.discard(entry)
            self._progress.unpark_all()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def drain(self) -> None:
        """Wait until no call is in progress and every answer has been written, on every connection.

        For a clean exit (like Go ttrpc's ``Shutdown``): after the Shutdown call, ``drain()`` returns
        once its reply has left, and the caller can then cancel ``serve()``. Bound it with a timeout:
        a client may keep a call (say, Wait) pending forever."""
        while any(conn.open_streams or outbox.queued for conn, outbox in self._connections):
            await self._progress.park()

    def _on_event(self, conn: Connection, outbox: Outbox, handlers: trio.Nursery, event: Event) -> None:
        if isinstance(event, Request):
            handlers.start_soon(self._answer, conn, outbox, event)
        elif isinstance(event, PeerError):
            log.debug("ttrpc peer error on stream %d: %s", event.stream_id, event.message)
            if event.answer:
                outbox.put(conn.send_response(event.stream_id, code=event.code, message=event.message))
        # Data frames have no meaning for unary services

    async def _answer(self, conn: Connection, outbox: Outbox, request: Request) -> None:
        code, message, payload = await self._call(request)
        try:
            frame = conn.send_response(request.stream_id, payload, code=code, message=message)
        except MessageTooLarge as exc:
            frame = conn.send_response(request.stream_id, code=Code.RESOURCE_EXHAUSTED, message=str(exc))
        outbox.put(frame)

    async def _call(self, request: Request) -> tuple[Code, str, bytes]:
        methods = self._services.get(request.service)
        if methods is None:
            return Code.UNIMPLEMENTED, f"service {request.service}", b""
        entry = methods.get(request.method)
        if entry is None:
            return Code.UNIMPLEMENTED, f"method {request.method}", b""
        request_type, handler = entry
        try:
            message = request_type.FromString(request.payload)
        except DecodeError as exc:
            return Code.INVALID_ARGUMENT, f"unmarshal {request_type.DESCRIPTOR.full_name}: {exc}", b""
        metadata: dict[str, list[str]] = {}
        for key, value in request.metadata:
            metadata.setdefault(key, []).append(value)
        deadline = math.inf
        if request.timeout_nano > 0:
            deadline = trio.current_time() + request.timeout_nano / 1e9
        context = CallContext(request.service, request.method, metadata, deadline)
        with trio.move_on_at(deadline):
            try:
                result = await handler(message, context)
            except Exception as exc:
                status = _status_of(exc)
                if status is not None:
                    return status.code, status.message, b""
                log.exception("ttrpc handler %s/%s failed", request.service, request.method)
                return Code.UNKNOWN, str(exc) or type(exc).__name__, b""
            if not isinstance(result, Message):
                log.error("ttrpc handler %s/%s returned %r, not a message", request.service, request.method, result)
                return Code.INTERNAL, f"handler for {request.method} returned no message", b""
            return Code.OK, "", result.SerializeToString()
        return Code.DEADLINE_EXCEEDED, "context deadline exceeded", b""


def _status_of(exc: BaseException) -> TtrpcError | None:
    """The TtrpcError a handler meant to raise, also when a nursery inside it wrapped that error
    alone in an ExceptionGroup (trio's strict exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, TtrpcError) else None


def _same_user(sock: trio.socket.SocketType) -> bool:
    try:
        _pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError as exc:
        log.warning("ttrpc: cannot read peer credentials, dropping connection: %s", exc)
        return False
    if uid == os.geteuid() and gid == os.getegid():
        return True
    log.warning("ttrpc: dropping connection from uid %d gid %d (need %d/%d)", uid, gid, os.geteuid(), os.getegid())
    return False
