"""The sans-IO ttrpc connection: feed it bytes, pull typed events, ask it for bytes to send.

Like h11, it owns no socket and imports no event loop, so the same object drives the trio client,
the trio server, in-memory tests and fuzzing. Two kinds of trouble are kept apart:

* the peer misbehaved (bad frame, undecodable message, oversize payload, wrong stream id) — this is
  returned as a ``PeerError`` event and the connection stays usable;
* the caller misused this object (response to a stream that asked nothing, oversize message,
  request on a server, data after EOF) — this raises ``LocalProtocolError`` at once.

What a role accepts is the table ``_RECEIVE``; the rest is bookkeeping of open stream ids.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from google.protobuf.message import DecodeError

from .api import rpc_status_pb2, ttrpc_request_pb2
from .events import NEED_DATA, ConnectionClosed, Data, Event, NeedData, PeerError, Request, Response
from .frame import HEADER_SIZE, MAX_PAYLOAD, MAX_STREAM_ID, FrameHeader, MessageType, encode_frame
from .status import Code


class LocalProtocolError(Exception):
    """This side used the connection wrongly; nothing was sent and the connection state is unchanged."""


class MessageTooLarge(LocalProtocolError):
    """The message to send exceeds the payload limit the peer enforces (ttrpc's ``OversizedMessageErr``)."""


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


def _oversize_message(length: int, limit: int) -> str:
    return f"message length {length} exceed maximum message size of {limit}"


class Connection:
    """One side of a ttrpc connection.

    ``receive_data(b"")`` signals EOF. ``next_event()`` returns one event or ``NEED_DATA``.
    A client allocates odd stream ids itself (``send_request``); a server answers the streams it
    received requests on (``send_response``), each exactly once, in any order.
    """

    def __init__(self, role: Role, *, max_payload: int = MAX_PAYLOAD) -> None:
        self.role = role
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._discard = 0  # bytes of an oversize payload still to skip
        self._eof = False
        self._closed_reported = False
        self._next_stream_id = 1
        #: Client: calls sent and not yet answered. Server: requests received and not yet answered.
        self.open_streams: set[int] = set()

    # ---- input -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise LocalProtocolError("receive_data after EOF")
        if not data:
            self._eof = True
            return
        if self._discard:
            skipped = min(self._discard, len(data))
            self._discard -= skipped
            data = data[skipped:]
        self._buffer += data

    def next_event(self) -> Event | NeedData:
        while True:
            if self._discard:
                return self._end_or_need_data()
            if len(self._buffer) < HEADER_SIZE:
                return self._end_or_need_data()
            header = FrameHeader.decode(self._buffer)
            if header.length > self.max_payload:
                del self._buffer[:HEADER_SIZE]
                skipped = min(header.length, len(self._buffer))
                del self._buffer[:skipped]
                self._discard = header.length - skipped
                return self._oversize(header)
            end = HEADER_SIZE + header.length
            if len(self._buffer) < end:
                return self._end_or_need_data()
            payload = bytes(self._buffer[HEADER_SIZE:end])
            del self._buffer[:end]
            handler = _RECEIVE.get((self.role, header.type))
            if handler is None:
                continue  # unknown or inapplicable frame types are skipped, as Go ttrpc does for compatibility
            event = handler(self, header, payload)
            if event is not None:
                return event

    def _end_or_need_data(self) -> Event | NeedData:
        if not self._eof:
            return NEED_DATA
        if self._closed_reported:
            raise LocalProtocolError("next_event after ConnectionClosed")
        self._closed_reported = True
        return ConnectionClosed(clean=not self._buffer and not self._discard)

    def _oversize(self, header: FrameHeader) -> PeerError:
        message = _oversize_message(header.length, self.max_payload)
        if self.role is Role.SERVER:
            is_request = header.type == MessageType.REQUEST
            return self._owe(PeerError(header.stream_id, Code.RESOURCE_EXHAUSTED, message, answer=is_request))
        self.open_streams.discard(header.stream_id)
        return PeerError(header.stream_id, Code.RESOURCE_EXHAUSTED, message)

    def _owe(self, error: PeerError) -> PeerError:
        """A server owes an answer to a request it could not read, unless that stream is already busy."""
        if error.answer:
            if error.stream_id in self.open_streams:
                return PeerError(error.stream_id, error.code, error.message)
            self.open_streams.add(error.stream_id)
        return error

    def _receive_request(self, header: FrameHeader, payload: bytes) -> Event:
        sid = header.stream_id
        request = ttrpc_request_pb2.Request()
        try:
            request.ParseFromString(payload)
        except DecodeError as exc:
            return self._owe(PeerError(sid, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}", answer=True))
        if sid in self.open_streams:
            return PeerError(sid, Code.INVALID_ARGUMENT, f"stream {sid} is already in use")
        if sid % 2 != 1:
            message = "StreamID must be odd for client initiated streams"
            return self._owe(PeerError(sid, Code.INVALID_ARGUMENT, message, answer=True))
        self.open_streams.add(sid)
        return Request(
            stream_id=sid,
            service=request.service,
            method=request.method,
            payload=request.payload,
            timeout_nano=request.timeout_nano,
            metadata=tuple((kv.key, kv.value) for kv in request.metadata),
            flags=header.flags,
        )

    def _receive_response(self, header: FrameHeader, payload: bytes) -> Event | None:
        sid = header.stream_id
        if sid not in self.open_streams:
            if sid % 2 == 1 and sid < self._next_stream_id:
                return None  # the answer to a call this side abandoned
            return PeerError(sid, Code.INTERNAL, f"response on stream {sid}, which no call is waiting on")
        self.open_streams.discard(sid)
        response = ttrpc_request_pb2.Response()
        try:
            response.ParseFromString(payload)
        except DecodeError as exc:
            return PeerError(sid, Code.INTERNAL, f"unmarshal response error: {exc}")
        code = Code.from_wire(response.status.code) if response.HasField("status") else Code.OK
        return Response(sid, response.payload, code, response.status.message)

    def _receive_data(self, header: FrameHeader, payload: bytes) -> Event:
        return Data(header.stream_id, payload, header.flags)

    # ---- output ----------------------------------------------------------------------------------

    def send_request(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout_nano: int = 0,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> tuple[int, bytes]:
        """Start a unary call; returns its stream id and the frame to write."""
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only a client sends requests")
        if self._eof:
            raise LocalProtocolError("the peer closed the connection")
        if timeout_nano < 0:
            raise LocalProtocolError(f"timeout_nano must not be negative, got {timeout_nano}")
        sid = self._next_stream_id
        if sid > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted on this connection")
        request = ttrpc_request_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
        for key, value in metadata:
            request.metadata.add(key=key, value=value)
        frame = self._frame(sid, MessageType.REQUEST, request.SerializeToString())
        self._next_stream_id += 2
        self.open_streams.add(sid)
        return sid, frame

    def abandon(self, stream_id: int) -> None:
        """Client: stop waiting for ``stream_id`` (cancelled call); a late answer is dropped silently."""
        self.open_streams.discard(stream_id)

    def send_response(self, stream_id: int, payload: bytes = b"", *, code: Code = Code.OK, message: str = "") -> bytes:
        """Answer the request received on ``stream_id`` (or the ``PeerError`` that asked for an answer)."""
        if self.role is not Role.SERVER:
            raise LocalProtocolError("only a server sends responses")
        if stream_id not in self.open_streams:
            raise LocalProtocolError(f"no request on stream {stream_id} is waiting for an answer")
        response = ttrpc_request_pb2.Response(payload=payload)
        if code != Code.OK:
            response.status.CopyFrom(rpc_status_pb2.Status(code=code, message=message))
        frame = self._frame(stream_id, MessageType.RESPONSE, response.SerializeToString())
        self.open_streams.discard(stream_id)
        return frame

    def _frame(self, stream_id: int, type: MessageType, payload: bytes) -> bytes:
        if len(payload) > self.max_payload:
            raise MessageTooLarge(_oversize_message(len(payload), self.max_payload))
        return encode_frame(stream_id, type, payload)


_Receiver = Callable[[Connection, FrameHeader, bytes], "Event | None"]

#: Which frame types each role acts on; anything else is skipped.
_RECEIVE: dict[tuple[Role, int], _Receiver] = {
    (Role.SERVER, MessageType.REQUEST): Connection._receive_request,
    (Role.SERVER, MessageType.DATA): Connection._receive_data,
    (Role.CLIENT, MessageType.RESPONSE): Connection._receive_response,
    (Role.CLIENT, MessageType.DATA): Connection._receive_data,
}
