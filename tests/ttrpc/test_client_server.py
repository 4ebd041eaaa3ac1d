"""The trio client and server paired in memory and over unix sockets."""

import math
import os
import socket
import tempfile
import textwrap

import pytest
import trio
import trio.testing
from google.protobuf import wrappers_pb2

from railcar.ttrpc_proto import Code, TtrpcError
from railcar.ttrpc_proto.client import connect_unix, open_client
from railcar.ttrpc_proto.events import NEED_DATA, Response
from railcar.ttrpc_proto.frame import MAX_PAYLOAD, MessageType, encode_frame
from railcar.ttrpc_proto.protocol import Connection, Role
from railcar.ttrpc_proto.server import CallContext, Server

from .conftest import paired

SVC = "test.Echo"
S = wrappers_pb2.StringValue


def echo_server(**handlers) -> Server:
    async def echo(req: S, ctx: CallContext) -> S:
        return S(value=f"{ctx.service}/{ctx.method}:{req.value}")

    server = Server()
    server.register(SVC, {"Echo": (S, echo), **{name: (S, h) for name, h in handlers.items()}})
    return server


async def test_unary_call_round_trip() -> None:
    async with paired(echo_server()) as client:
        assert (await client.call(SVC, "Echo", S(value="hi"), S)).value == f"{SVC}/Echo:hi"


async def test_metadata_and_deadline_reach_the_handler() -> None:
    seen: list[CallContext] = []

    async def record(req: S, ctx: CallContext) -> S:
        seen.append(ctx)
        return S()

    async with paired(echo_server(Record=record)) as client:
        await client.call(SVC, "Record", S(), S, metadata={"Containerd-Namespace-Ttrpc": "ns1"})
        before = trio.current_time()
        await client.call(SVC, "Record", S(), S, timeout=30)
    assert seen[0].metadata == {"containerd-namespace-ttrpc": ["ns1"]} and seen[0].deadline == math.inf
    assert before + 29 < seen[1].deadline <= before + 30.01


async def test_a_long_call_does_not_block_others_and_answers_come_out_of_order() -> None:
    release = trio.Event()
    order: list[str] = []

    async def wait(req: S, ctx: CallContext) -> S:
        await release.wait()
        return S(value="waited")

    async with paired(echo_server(Wait=wait)) as client:
        async def long_call() -> None:
            order.append((await client.call(SVC, "Wait", S(), S)).value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_call)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(20):
                order.append((await client.call(SVC, "Echo", S(value=str(i)), S)).value)
            release.set()
    assert order[-1] == "waited" and len(order) == 21


async def test_many_concurrent_calls_on_one_connection() -> None:
    results: dict[int, str] = {}
    async with paired(echo_server()) as client:
        async def one(i: int) -> None:
            results[i] = (await client.call(SVC, "Echo", S(value=str(i)), S)).value

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    assert results == {i: f"{SVC}/Echo:{i}" for i in range(200)}


@pytest.mark.parametrize(("service", "method", "message"), [
    ("no.Such", "Echo", "service no.Such"),
    (SVC, "Nope", "method Nope"),
])
async def test_unknown_service_or_method_is_unimplemented(service: str, method: str, message: str) -> None:
    async with paired(echo_server()) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call(service, method, S(), S)
    assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, message)


async def test_handler_errors_become_status_codes() -> None:
    async def not_found(req: S, ctx: CallContext) -> S:
        raise TtrpcError(Code.NOT_FOUND, "process already finished: not found")

    async def broken(req: S, ctx: CallContext) -> S:
        raise ValueError("disk on fire")

    async def grouped(req: S, ctx: CallContext) -> S:
        async with trio.open_nursery() as nursery:  # strict exception groups wrap the error...
            nursery.start_soon(not_found, req, ctx)
        return S()

    async def wrong(req: S, ctx: CallContext) -> S:
        return "not a message"  # type: ignore[return-value]

    async with paired(echo_server(NotFound=not_found, Broken=broken, Wrong=wrong, Grouped=grouped)) as client:
        for method, code, message in [("NotFound", Code.NOT_FOUND, "process already finished: not found"),
                                      ("Grouped", Code.NOT_FOUND, "process already finished: not found"),
                                      ("Broken", Code.UNKNOWN, "disk on fire"),
                                      ("Wrong", Code.INTERNAL, "handler for Wrong returned no message")]:
            with pytest.raises(TtrpcError) as info:
                await client.call(SVC, method, S(), S)
            assert (info.value.code, info.value.message) == (code, message)
        assert (await client.call(SVC, "Echo", S(value="still"), S)).value.endswith("still")


async def raw_exchange(server: Server, frames: bytes, answers: int) -> list[Response]:
    """Send hand-made frames to ``server`` and collect ``answers`` responses."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    reader = Connection(Role.CLIENT)
    for _ in range(1, 64, 2):
        reader.send_request("", "", b"")  # so that responses on ids 1..63 count as expected
    got: list[Response] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, server_stream)
        await client_stream.send_all(frames)
        while len(got) < answers:
            reader.receive_data(await client_stream.receive_some(65536))
            while (event := reader.next_event()) is not NEED_DATA:
                got.append(event)
        await client_stream.aclose()
    return got


async def test_undecodable_request_payload_is_invalid_argument() -> None:
    sender = Connection(Role.CLIENT)
    _, frame = sender.send_request(SVC, "Echo", b"\xff\xff\xff")
    (response,) = await raw_exchange(echo_server(), frame, 1)
    assert response.code == Code.INVALID_ARGUMENT and "google.protobuf.StringValue" in response.message


async def test_server_applies_timeout_nano(autojump_clock: trio.abc.Clock) -> None:
    cancelled = []

    async def hang(req: S, ctx: CallContext) -> S:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(trio.current_time())

    sender = Connection(Role.CLIENT)
    _, frame = sender.send_request(SVC, "Hang", b"", timeout_nano=2_000_000_000)
    start = trio.current_time()
    (response,) = await raw_exchange(echo_server(Hang=hang), frame, 1)
    assert (response.code, response.message) == (Code.DEADLINE_EXCEEDED, "context deadline exceeded")
    assert cancelled == [pytest.approx(start + 2)]


async def test_client_timeout_is_deadline_exceeded_and_sent_as_timeout_nano(autojump_clock: trio.abc.Clock) -> None:
    async def hang(req: S, ctx: CallContext) -> S:
        await trio.sleep_forever()

    async with paired(echo_server(Hang=hang)) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call(SVC, "Hang", S(), S, timeout=5)
        assert info.value.code == Code.DEADLINE_EXCEEDED
        with trio.move_on_after(3):  # an enclosing deadline also travels, but surfaces as trio's Cancelled
            await client.call(SVC, "Hang", S(), S)
        assert (await client.call(SVC, "Echo", S(value="x"), S)).value.endswith("x")


async def test_cancelled_call_leaves_the_connection_usable() -> None:
    async def hang(req: S, ctx: CallContext) -> S:
        await trio.sleep(0.05)
        return S(value="late")

    async with paired(echo_server(Hang=hang)) as client:
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.call(SVC, "Hang", S(), S)
        await trio.sleep(0.1)  # the late answer arrives for nobody and is dropped
        assert (await client.call(SVC, "Echo", S(value="ok"), S)).value.endswith("ok")
        assert client._conn.open_streams == set()


async def test_pending_and_later_calls_fail_when_the_connection_drops() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    errors = []
    async with open_client(client_stream) as client:
        async def call() -> None:
            try:
                await client.call(SVC, "Echo", S(), S)
            except TtrpcError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            await server_stream.aclose()
        assert client.closed
        await call()
    assert [(e.code, e.message) for e in errors] == [(Code.UNAVAILABLE, "ttrpc: closed")] * 4


async def test_oversize_request_and_response_are_resource_exhausted() -> None:
    async def huge(req: S, ctx: CallContext) -> S:
        return S(value="x" * MAX_PAYLOAD)

    async with paired(echo_server(Huge=huge)) as client:
        for value, method in [("x" * MAX_PAYLOAD, "Echo"), ("", "Huge")]:
            with pytest.raises(TtrpcError) as info:
                await client.call(SVC, method, S(value=value), S)
            assert info.value.code == Code.RESOURCE_EXHAUSTED and "exceed maximum message size" in info.value.message
        assert (await client.call(SVC, "Echo", S(value="small"), S)).value.endswith("small")


async def test_closing_a_connection_cancels_its_handlers() -> None:
    started, finished = trio.Event(), []

    async def hang(req: S, ctx: CallContext) -> S:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            finished.append(True)

    server = echo_server(Hang=hang)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    sender = Connection(Role.CLIENT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, server_stream)
        await client_stream.send_all(sender.send_request(SVC, "Hang", b"")[1])
        await started.wait()
        await client_stream.aclose()
    assert finished == [True]


def test_register_rejects_bad_entries() -> None:
    server = Server()
    with pytest.raises(TypeError, match="test.S/M"):
        server.register("test.S", {"M": (dict, None)})  # type: ignore[dict-item]
    server.register("test.S", {})
    with pytest.raises(ValueError, match="already registered"):
        server.register("test.S", {})


@pytest.fixture
async def unix_listener(tmp_path):
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(tmp_path / "ttrpc.sock")
    yield sock, path
    sock.close()


async def bound(sock: trio.socket.SocketType, path: str) -> None:
    await sock.bind(path)
    sock.listen(16)


async def test_serve_on_a_unix_socket_survives_a_malformed_peer(unix_listener) -> None:
    sock, path = unix_listener
    await bound(sock, path)
    async with trio.open_nursery() as nursery:
        await nursery.start(echo_server().serve, sock)
        bad = await trio.open_unix_socket(path)
        await bad.send_all(b"\x00\x00\x00\x05\x00\x00\x00\x01\x01\x00\xff")  # truncated frame, then EOF
        await bad.send_eof()
        assert await bad.receive_some(100) == b""  # the server closed this connection only
        await bad.aclose()
        async with connect_unix("unix://" + path) as client:
            assert (await client.call(SVC, "Echo", S(value="a"), S)).value.endswith("a")
        nursery.cancel_scope.cancel()


async def test_peer_with_another_uid_is_dropped() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another user")
    probe = textwrap.dedent("""
        import socket, sys
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
        try:
            s.sendall(bytes.fromhex(sys.argv[2]))
            print("answered" if s.recv(100) else "closed")
        except (BrokenPipeError, ConnectionResetError):
            print("closed")
    """)
    frame = Connection(Role.CLIENT).send_request(SVC, "Echo", b"")[1]
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's root-only tmp_path: nobody must reach it
        os.chmod(tmp, 0o755)
        path = os.path.join(tmp, "ttrpc.sock")
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            await bound(sock, path)
            os.chmod(path, 0o777)
            async with trio.open_nursery() as nursery:
                await nursery.start(echo_server().serve, sock)
                nobody = await trio.run_process(["/usr/bin/python3", "-I", "-c", probe, path, frame.hex()],
                                                capture_stdout=True, user=65534, group=65534, extra_groups=[])
                me = await trio.run_process(["/usr/bin/python3", "-I", "-c", probe, path, frame.hex()],
                                            capture_stdout=True)
                nursery.cancel_scope.cancel()
    assert nobody.stdout.strip() == b"closed"
    assert me.stdout.strip() == b"answered"


async def test_require_same_user_false_accepts_any_peer(unix_listener) -> None:
    sock, path = unix_listener
    await bound(sock, path)
    server = echo_server()
    server.require_same_user = False
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, sock)
        async with connect_unix(path) as client:
            assert (await client.call(SVC, "Echo", S(value="b"), S)).value.endswith("b")
        nursery.cancel_scope.cancel()


async def test_drain_returns_once_the_last_answer_is_written() -> None:
    release = trio.Event()
    drained: list[str] = []

    async def slow(req: S, ctx: CallContext) -> S:
        await release.wait()
        return S(value="done")

    server = echo_server(Slow=slow)
    async with paired(server) as client:
        await server.drain()  # idle: returns at once
        async with trio.open_nursery() as nursery:
            async def call() -> None:
                drained.append((await client.call(SVC, "Slow", S(), S)).value)

            async def drain() -> None:
                await server.drain()
                drained.append("drained")

            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            assert drained == []  # a call is still in progress
            release.set()
    assert sorted(drained) == ["done", "drained"]


async def test_server_answers_a_request_that_follows_a_data_frame_in_one_read(
        autojump_clock: trio.abc.Clock) -> None:
    """A Data frame means nothing to a unary server, but must not hide the request after it
    until more bytes arrive (with the autojump clock a hang fails at once, not after a wait)."""
    sender = Connection(Role.CLIENT)
    _, request = sender.send_request(SVC, "Echo", S(value="after data").SerializeToString())
    data = encode_frame(7, MessageType.DATA, b"stray")
    with trio.fail_after(60):
        (response,) = await raw_exchange(echo_server(), data + request, 1)
    assert S.FromString(response.payload).value.endswith("after data")


async def test_client_sees_a_response_that_follows_a_data_frame_in_one_read(
        autojump_clock: trio.abc.Clock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Connection(Role.SERVER)

    async def answer_once() -> None:
        while (event := server.next_event()) is NEED_DATA:
            server.receive_data(await server_stream.receive_some(65536))
        reply = server.send_response(event.stream_id, S(value="late").SerializeToString())
        await server_stream.send_all(encode_frame(event.stream_id, MessageType.DATA, b"stray") + reply)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, open_client(client_stream) as client:
            nursery.start_soon(answer_once)
            assert (await client.call(SVC, "Echo", S(), S)).value == "late"
