"""What a ttrpc ``Connection`` yields: typed, immutable records of what the peer sent.

``PeerError`` is how malformed input surfaces — as a value, never as an exception — because a peer
that misbehaves on one stream must not take the connection (or the server) down with it.
"""

from __future__ import annotations

import dataclasses

from .status import Code

Metadata = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A client's call (received by a server)."""

    stream_id: int
    service: str
    method: str
    payload: bytes
    #: Relative deadline in nanoseconds; 0 means none.
    timeout_nano: int = 0
    metadata: Metadata = ()
    flags: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """A server's answer (received by a client). ``code`` is OK unless the call failed."""

    stream_id: int
    payload: bytes
    code: Code = Code.OK
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Data:
    """A streaming data frame (ttrpc 1.2+); unary services ignore it."""

    stream_id: int
    payload: bytes
    flags: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class PeerError:
    """The peer sent something malformed. ``answer`` says a server should reply on ``stream_id`` with
    ``code``/``message`` (the request is lost but the caller deserves a status); a client fails the call
    pending on ``stream_id``, if any."""

    stream_id: int
    code: Code
    message: str
    answer: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side. ``clean`` is False when it stopped in the middle of a frame."""

    clean: bool = True


Event = Request | Response | Data | PeerError | ConnectionClosed


class NeedData:
    """Sentinel type: feed more bytes before asking for the next event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()
