"""Property tests: whatever bytes a peer sends, the protocol and the server neither crash nor leak."""

import trio
import trio.testing
from google.protobuf import wrappers_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railcar.ttrpc_proto.api import ttrpc_request_pb2
from railcar.ttrpc_proto.events import NEED_DATA, ConnectionClosed, PeerError, Request, Response
from railcar.ttrpc_proto.frame import FrameHeader
from railcar.ttrpc_proto.protocol import Connection, Role
from railcar.ttrpc_proto.server import CallContext, Server

SVC = "fuzz.Svc"

requests = st.builds(
    lambda method, payload, timeout: ttrpc_request_pb2.Request(
        service=SVC, method=method, payload=payload, timeout_nano=timeout).SerializeToString(),
    st.sampled_from(["Echo", "Fail", "Missing"]),
    st.one_of(st.binary(max_size=20), st.builds(lambda s: wrappers_pb2.StringValue(value=s).SerializeToString(),
                                                st.text(max_size=10))),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
frames = st.builds(
    lambda sid, type, flags, payload: FrameHeader(len(payload), sid, type, flags).encode() + payload,
    st.integers(0, 2**32 - 1) | st.integers(0, 9),
    st.integers(0, 255) | st.just(1),
    st.integers(0, 255),
    st.binary(max_size=40) | requests,
)
oversize = st.builds(lambda sid: FrameHeader((4 << 20) + 1, sid, 1, 0).encode() + b"\0" * 64, st.integers(0, 9))
streams = st.lists(st.binary(max_size=30) | frames | oversize, max_size=12).map(b"".join)


def parse(role: Role, data: bytes, chunk: int) -> list:
    conn = Connection(role)
    out = []
    for i in range(0, len(data), chunk):
        conn.receive_data(data[i:i + chunk])
        while (event := conn.next_event()) is not NEED_DATA:
            out.append(event)
    conn.receive_data(b"")
    out.append(conn.next_event())
    return out


def owed_answers(data: bytes) -> list[int]:
    """The stream ids a server must answer for ``data`` arriving at once: every request, and every
    unreadable request (answered on the spot, which frees its id for reuse)."""
    conn = Connection(Role.SERVER)
    owed: list[int] = []
    if not data:
        return owed
    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, Request):
            owed.append(event.stream_id)
        elif isinstance(event, PeerError) and event.answer:
            owed.append(event.stream_id)
            conn.send_response(event.stream_id, code=event.code, message=event.message)
    return owed


@given(streams, st.integers(1, 50))
def test_sans_io_turns_any_bytes_into_events(data: bytes, chunk: int) -> None:
    for role in Role:
        events = parse(role, data, chunk)
        assert isinstance(events[-1], ConnectionClosed)
        assert not any(isinstance(e, ConnectionClosed) for e in events[:-1])
        assert events[:-1] == parse(role, data, len(data) or 1)[:-1]  # chunking never changes the outcome


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_server_answers_what_it_owes_and_leaks_no_task(data: bytes) -> None:
    active = []

    async def echo(req: wrappers_pb2.StringValue, ctx: CallContext) -> wrappers_pb2.StringValue:
        active.append(1)
        try:
            await trio.sleep(0.5)
            return req
        finally:
            active.pop()

    async def fail(req: wrappers_pb2.StringValue, ctx: CallContext) -> wrappers_pb2.StringValue:
        raise RuntimeError("boom")

    server = Server()
    server.register(SVC, {"Echo": (wrappers_pb2.StringValue, echo), "Fail": (wrappers_pb2.StringValue, fail)})
    owed = owed_answers(data)
    answered: list[int] = []

    async def main() -> None:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        reader = Connection(Role.CLIENT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_connection, server_stream)
            await client_stream.send_all(data)
            await trio.sleep(10)  # every handler (0.5 s, or its timeout_nano) has finished
            await client_stream.send_eof()
            while chunk := await client_stream.receive_some(65536):
                reader.receive_data(chunk)
                reader.open_streams.update(owed)  # accept answers on every stream the server owes one
                while (event := reader.next_event()) is not NEED_DATA:
                    assert isinstance(event, Response), event
                    answered.append(event.stream_id)
                    reader.open_streams.update(owed)  # a stream id may be answered, then reused

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert active == []
    assert sorted(answered) == sorted(owed)


@settings(max_examples=100, deadline=None)
@given(streams, st.integers(0, 6))
def test_client_settles_every_call_whatever_the_server_sends(data: bytes, calls: int) -> None:
    from railcar.ttrpc_proto import TtrpcError
    from railcar.ttrpc_proto.client import open_client

    outcomes: list[object] = []

    async def one(client) -> None:
        try:
            outcomes.append(await client.call(SVC, "Echo", wrappers_pb2.StringValue(), wrappers_pb2.StringValue))
        except TtrpcError as exc:
            outcomes.append(exc)

    async def main() -> None:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with open_client(client_stream) as client:
            async with trio.open_nursery() as nursery:
                for _ in range(calls):
                    nursery.start_soon(one, client)
                await trio.testing.wait_all_tasks_blocked()
                await server_stream.send_all(data)
                await server_stream.aclose()

    trio.run(main)
    assert len(outcomes) == calls
