"""The hand-encoded DeleteResponse, RuntimeInfo and ttrpc request decode with the real generated protobuf
types and our ttrpc protocol."""

import json

import pytest

from railcar.shim import info, wire
from railcar.ttrpc_proto.api import introspection_pb2, task_v2_pb2
from railcar.ttrpc_proto.protocol import Connection, Role


def test_delete_response_matches_bytes_observed_from_runc() -> None:
    # Captured from containerd-shim-runc-v2 delete (reference §1.7): pid 22978, status 137.
    observed = bytes.fromhex("08c2b301108901" "1a0b08b0c98bd806" "10a1f5a867")
    decoded = task_v2_pb2.DeleteResponse.FromString(observed)
    ns = decoded.exited_at.seconds * 1_000_000_000 + decoded.exited_at.nanos
    assert wire.delete_response(22978, 137, ns) == observed


def test_delete_response_keeps_an_empty_timestamp_and_omits_zero_fields() -> None:
    encoded = wire.delete_response(0, 0, 0)
    decoded = task_v2_pb2.DeleteResponse.FromString(encoded)
    assert decoded.HasField("exited_at") and decoded.pid == 0 and decoded.exit_status == 0


def test_large_values_round_trip() -> None:
    decoded = task_v2_pb2.DeleteResponse.FromString(wire.delete_response(2**32 - 1, 255, 1_700_000_000_123_456_789))
    assert (decoded.pid, decoded.exit_status) == (2**32 - 1, 255)
    assert (decoded.exited_at.seconds, decoded.exited_at.nanos) == (1_700_000_000, 123_456_789)


def test_runtime_info_decodes_with_features_json() -> None:
    decoded = introspection_pb2.RuntimeInfo.FromString(info.runtime_info())
    assert decoded.name == "io.containerd.railcar.v2"
    assert decoded.version.version == info.version()
    assert decoded.features.type_url == info.FEATURES_TYPE_URL
    features = json.loads(decoded.features.value)
    assert features["ociVersionMax"].startswith("1.") and "pid" in features["linux"]["namespaces"]


def test_features_are_what_the_runtime_accepts() -> None:
    from railcar.runtime.seccomp import compile_seccomp
    from railcar.runtime.errors import SpecError

    features = info.features()
    assert {"rslave", "rshared", "nosymfollow", "ro", "rbind"} <= set(features["mountOptions"])
    assert "time" in features["linux"]["namespaces"]
    assert "CAP_CHECKPOINT_RESTORE" in features["linux"]["capabilities"]
    seccomp = features["linux"]["seccomp"]
    for action in seccomp["actions"]:  # each compiles into a filter
        compile_seccomp({"defaultAction": "SCMP_ACT_ALLOW", "architectures": seccomp["archs"],
                         "listenerPath": "/run/agent.sock" if action == "SCMP_ACT_NOTIFY" else "",
                         "syscalls": [{"names": ["getpid"], "action": action}]})
    with pytest.raises(SpecError):
        compile_seccomp({"defaultAction": "SCMP_ACT_NOTIFY", "syscalls": []})
    assert seccomp["supportedFlags"] == seccomp["knownFlags"]
    compile_seccomp({"defaultAction": "SCMP_ACT_ALLOW", "flags": seccomp["supportedFlags"],
                     "listenerPath": "/run/agent.sock",
                     "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]})


def test_a_ttrpc_request_frame_is_what_a_server_reads() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(wire.ttrpc_request(1, "railcar.v1.Probe", "Answer"))
    request = server.next_event()
    assert (request.stream_id, request.service, request.method, request.payload) == (1, "railcar.v1.Probe", "Answer", b"")
