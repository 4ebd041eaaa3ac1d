"""Status codes and the error that carries one across a ttrpc call.

Kept free of trio and protobuf imports: the shim's short-lived ``start`` path imports the package
``railcar.ttrpc_proto`` and must not pay for either.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """google.rpc status codes, as carried in ``google.rpc.Status.code`` of a ttrpc Response."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def from_wire(cls, value: int) -> Code:
        """Map a code read off the wire; a peer may send a number we do not know, which is UNKNOWN."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class TtrpcError(Exception):
    """A call that ended with a non-OK status.

    A server handler raises it to answer with ``code`` and ``message``; the client raises it when a
    response carries a non-OK status, and with ``UNAVAILABLE``/``"ttrpc: closed"`` when the
    connection is lost while the call is pending (the text Go clients use, which containerd matches).
    """

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(code, message)
        self.code = Code(code)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"TtrpcError({self.code.name}, {self.message!r})"


CLOSED_MESSAGE = "ttrpc: closed"
