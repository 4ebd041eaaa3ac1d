"""The ttrpc frame: a 10-byte header (big-endian payload length and stream id, type, flags) and a payload.

Only byte layout lives here; which frames are legal when is the protocol's business (``protocol``).
"""

from __future__ import annotations

import dataclasses
import enum
import struct

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size
#: Largest payload either side accepts (ttrpc's ``maxMessageSize``, 4 MiB).
MAX_PAYLOAD = 4 << 20
MAX_STREAM_ID = 0xFFFFFFFF


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    #: Streaming data (ttrpc 1.2+); containerd 1.6 never sends it.
    DATA = 3


@dataclasses.dataclass(frozen=True, slots=True)
class FrameHeader:
    length: int
    stream_id: int
    type: int
    flags: int

    def __post_init__(self) -> None:
        for name, limit in (("length", 0xFFFFFFFF), ("stream_id", MAX_STREAM_ID), ("type", 0xFF), ("flags", 0xFF)):
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise ValueError(f"frame header {name} {value} is outside 0..{limit}")

    def encode(self) -> bytes:
        return HEADER.pack(self.length, self.stream_id, self.type, self.flags)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> FrameHeader:
        """Decode the first ``HEADER_SIZE`` bytes of ``data`` (which must hold at least that many)."""
        return cls(*HEADER.unpack_from(data))


def encode_frame(stream_id: int, type: MessageType, payload: bytes, flags: int = 0) -> bytes:
    """Header plus payload, refusing payloads the peer would reject (ttrpc's ``OversizedMessageErr``)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"message length {len(payload)} exceeds maximum message size of {MAX_PAYLOAD}")
    return FrameHeader(len(payload), stream_id, type, flags).encode() + payload
