"""Hand-encoded protobuf for what the short-lived commands send or print.

`delete` prints a `containerd.task.v2.DeleteResponse`, `-info` a `containerd.types.RuntimeInfo`, and
`start` sends a pool's daemon one ttrpc request to see that it answers (`pool.probe`). Importing the
protobuf runtime costs more than everything else these commands do, so the few fields are encoded
here directly (proto3 wire format: varints and length-delimited fields only).
"""

_VARINT = 0
_LEN = 2


def _varint(value: int) -> bytes:
    """Encode a non-negative integer, or a negative int64 in two's complement (10 bytes), as a varint."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _int_field(field: int, value: int) -> bytes:
    """A varint field; proto3 omits zero values."""
    return _key(field, _VARINT) + _varint(value) if value else b""


def _bytes_field(field: int, value: bytes, *, keep_empty: bool = False) -> bytes:
    """A length-delimited field; empty values are omitted unless it is a present sub-message."""
    if not value and not keep_empty:
        return b""
    return _key(field, _LEN) + _varint(len(value)) + value


def _str_field(field: int, value: str) -> bytes:
    return _bytes_field(field, value.encode())


def timestamp(seconds: int, nanos: int) -> bytes:
    """A google.protobuf.Timestamp message."""
    return _int_field(1, seconds) + _int_field(2, nanos)


def delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """containerd.task.v2.DeleteResponse{pid=1, exit_status=2, exited_at=3}; exited_at is always present."""
    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    return (
        _int_field(1, pid)
        + _int_field(2, exit_status)
        + _bytes_field(3, timestamp(seconds, nanos), keep_empty=True)
    )


def any_message(type_url: str, value: bytes) -> bytes:
    """A google.protobuf.Any{type_url=1, value=2}."""
    return _str_field(1, type_url) + _bytes_field(2, value)


def runtime_info(name: str, version: str, revision: str, features_url: str, features_json: bytes) -> bytes:
    """containerd.types.RuntimeInfo{name=1, version=2 RuntimeVersion{version=1, revision=2}, features=4 Any}."""
    runtime_version = _str_field(1, version) + _str_field(2, revision)
    return (
        _str_field(1, name)
        + _bytes_field(2, runtime_version, keep_empty=True)
        + _bytes_field(4, any_message(features_url, features_json), keep_empty=True)
    )


def ttrpc_request(stream_id: int, service: str, method: str) -> bytes:
    """One ttrpc frame: the header (payload length and stream id, big-endian 32 bits each; type 1,
    a request; no flags), then a ttrpc.Request{service=1, method=2} with no payload."""
    request = _str_field(1, service) + _str_field(2, method)
    return len(request).to_bytes(4, "big") + stream_id.to_bytes(4, "big") + b"\x01\x00" + request
