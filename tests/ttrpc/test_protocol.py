"""The sans-IO core against the byte-exact vectors of reference §6 and its error rules."""

import pytest

from railcar.ttrpc_proto import Code
from railcar.ttrpc_proto.api import task_v2_pb2, ttrpc_request_pb2
from railcar.ttrpc_proto.events import NEED_DATA, ConnectionClosed, Data, PeerError, Request, Response
from railcar.ttrpc_proto.frame import MAX_PAYLOAD, FrameHeader, MessageType, encode_frame
from railcar.ttrpc_proto.protocol import Connection, LocalProtocolError, MessageTooLarge, Role

CONNECT_REQUEST = bytes.fromhex(
    "000000280000000301000a17636f6e7461696e6572642e7461736b2e76322e5461736b1207436f6e6e6563741a040a027432")
CONNECT_RESPONSE = bytes.fromhex("0000000a000000030200120808f6c3011091c401")
NOT_FOUND_RESPONSE = bytes.fromhex(
    "000000290000004102000a270805122370726f6365737320616c72656164792066696e69736865643a206e6f7420666f756e64")


def events(conn: Connection) -> list:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return out


def client_on_stream(sid: int) -> Connection:
    client = Connection(Role.CLIENT)
    while True:
        got, _ = client.send_request("s", "m", b"")
        if got == sid:
            return client
        client.abandon(got)


def test_header_layout_is_big_endian() -> None:
    assert FrameHeader(0x28, 3, MessageType.REQUEST, 0).encode() == bytes.fromhex("00000028000000030100")
    assert FrameHeader.decode(bytes.fromhex("0000000a0000004102ff")) == FrameHeader(10, 65, 2, 0xFF)
    with pytest.raises(ValueError, match="stream_id"):
        FrameHeader(0, 1 << 32, 1, 0)


def test_client_encodes_connect_request_byte_exact() -> None:
    client = Connection(Role.CLIENT)
    assert client.send_request("containerd.task.v2.Task", "Noop", b"")[0] == 1
    payload = task_v2_pb2.ConnectRequest(id="t2").SerializeToString()
    assert client.send_request("containerd.task.v2.Task", "Connect", payload) == (3, CONNECT_REQUEST)


def test_server_decodes_connect_request_fed_byte_by_byte() -> None:
    server = Connection(Role.SERVER)
    for i in range(len(CONNECT_REQUEST)):
        assert server.next_event() is NEED_DATA
        server.receive_data(CONNECT_REQUEST[i:i + 1])
    (request,) = events(server)
    assert request == Request(3, "containerd.task.v2.Task", "Connect", bytes.fromhex("0a027432"))
    assert task_v2_pb2.ConnectRequest.FromString(request.payload).id == "t2"


def test_server_encodes_success_response_byte_exact() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(CONNECT_REQUEST)
    events(server)
    payload = task_v2_pb2.ConnectResponse(shim_pid=25078, task_pid=25105).SerializeToString()
    assert server.send_response(3, payload) == CONNECT_RESPONSE
    assert server.open_streams == set()


def test_server_encodes_error_response_byte_exact() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(65, MessageType.REQUEST, b""))
    assert [type(e) for e in events(server)] == [Request]
    frame = server.send_response(65, code=Code.NOT_FOUND, message="process already finished: not found")
    assert frame == NOT_FOUND_RESPONSE


def test_client_decodes_both_responses() -> None:
    client = client_on_stream(3)
    client.receive_data(CONNECT_RESPONSE)
    (response,) = events(client)
    assert response.code == Code.OK
    assert task_v2_pb2.ConnectResponse.FromString(response.payload).task_pid == 25105
    client = client_on_stream(65)
    client.receive_data(NOT_FOUND_RESPONSE)
    assert events(client) == [Response(65, b"", Code.NOT_FOUND, "process already finished: not found")]


def test_client_stream_ids_are_odd_and_increasing() -> None:
    client = Connection(Role.CLIENT)
    assert [client.send_request("s", "m", b"")[0] for _ in range(4)] == [1, 3, 5, 7]
    assert client.open_streams == {1, 3, 5, 7}


def test_request_fields_round_trip_between_two_connections() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    sid, frame = client.send_request("svc", "M", b"\x01\x02", timeout_nano=5_000_000_000,
                                     metadata=[("containerd-namespace-ttrpc", "k8s.io"), ("a", "1"), ("a", "2")])
    server.receive_data(frame)
    assert events(server) == [Request(sid, "svc", "M", b"\x01\x02", 5_000_000_000,
                                      (("containerd-namespace-ttrpc", "k8s.io"), ("a", "1"), ("a", "2")))]
    client.receive_data(server.send_response(sid, b"ok"))
    assert events(client) == [Response(sid, b"ok")]
    assert client.open_streams == set() and server.open_streams == set()


def test_even_stream_id_is_answered_with_invalid_argument() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(2, MessageType.REQUEST, b""))
    (error,) = events(server)
    assert error == PeerError(2, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams", answer=True)
    client = Connection(Role.CLIENT)
    frame = server.send_response(2, code=error.code, message=error.message)
    assert FrameHeader.decode(frame).stream_id == 2
    assert ttrpc_request_pb2.Response.FromString(frame[10:]).status.code == Code.INVALID_ARGUMENT
    client.receive_data(frame)
    assert isinstance(events(client)[0], PeerError)  # a client never allocates even ids


def test_undecodable_request_is_answered_and_the_connection_goes_on() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(1, MessageType.REQUEST, b"\xff\xff\xff"))
    server.receive_data(encode_frame(3, MessageType.REQUEST, b""))
    first, second = events(server)
    assert first.code == Code.INVALID_ARGUMENT and first.answer and first.message.startswith("unmarshal request error")
    assert isinstance(second, Request) and second.stream_id == 3


def test_oversize_payload_is_discarded_and_reported() -> None:
    server = Connection(Role.SERVER)
    length = MAX_PAYLOAD + 1
    server.receive_data(FrameHeader(length, 7, MessageType.REQUEST, 0).encode() + b"x" * 1000)
    (error,) = events(server)
    assert error == PeerError(7, Code.RESOURCE_EXHAUSTED,
                              f"message length {length} exceed maximum message size of {MAX_PAYLOAD}", answer=True)
    server.receive_data(b"x" * (length - 1000) + encode_frame(9, MessageType.REQUEST, b""))
    (request,) = events(server)
    assert request.stream_id == 9
    assert server.open_streams == {7, 9}


def test_client_fails_the_call_whose_response_is_oversize() -> None:
    client = client_on_stream(1)
    client.receive_data(FrameHeader(MAX_PAYLOAD + 5, 1, MessageType.RESPONSE, 0).encode())
    (error,) = events(client)
    assert (error.stream_id, error.code, error.answer) == (1, Code.RESOURCE_EXHAUSTED, False)
    assert client.open_streams == set()


def test_unknown_frame_types_and_stray_responses() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(1, MessageType.RESPONSE, b"") + bytes.fromhex("00000000000000010900"))
    server.receive_data(encode_frame(1, MessageType.DATA, b"d", flags=1))
    assert events(server) == [Data(1, b"d", 1)]
    client = Connection(Role.CLIENT)
    sid, _ = client.send_request("s", "m", b"")
    client.abandon(sid)
    client.receive_data(encode_frame(sid, MessageType.RESPONSE, b""))  # late answer to an abandoned call
    client.receive_data(encode_frame(99, MessageType.RESPONSE, b""))  # never asked
    (error,) = events(client)
    assert error.stream_id == 99 and not error.answer


def test_duplicate_stream_id_is_refused_without_answer() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(5, MessageType.REQUEST, b"") * 2)
    first, second = events(server)
    assert isinstance(first, Request)
    assert second == PeerError(5, Code.INVALID_ARGUMENT, "stream 5 is already in use")


def test_eof_clean_and_in_the_middle_of_a_frame() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(b"")
    assert events(server) == [ConnectionClosed(clean=True)]
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"x")
    server = Connection(Role.SERVER)
    server.receive_data(CONNECT_REQUEST[:15])
    server.receive_data(b"")
    assert events(server) == [ConnectionClosed(clean=False)]


def test_caller_misuse_raises() -> None:
    server, client = Connection(Role.SERVER), Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match="only a client"):
        server.send_request("s", "m", b"")
    with pytest.raises(LocalProtocolError, match="only a server"):
        client.send_response(1)
    with pytest.raises(LocalProtocolError, match="no request on stream 1"):
        server.send_response(1)
    with pytest.raises(MessageTooLarge, match="exceed maximum"):
        client.send_request("s", "m", b"x" * MAX_PAYLOAD)
    assert client.open_streams == set()
    assert client.send_request("s", "m", b"")[0] == 1  # the refused call did not consume a stream id
    with pytest.raises(LocalProtocolError, match="timeout_nano"):
        client.send_request("s", "m", b"", timeout_nano=-1)
    client.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="closed"):
        client.send_request("s", "m", b"")


def test_oversize_response_leaves_the_stream_answerable() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(1, MessageType.REQUEST, b""))
    events(server)
    with pytest.raises(MessageTooLarge):
        server.send_response(1, b"x" * MAX_PAYLOAD)
    assert server.send_response(1, code=Code.RESOURCE_EXHAUSTED, message="too big")
