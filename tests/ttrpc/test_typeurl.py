"""Any packing with the bare type URLs containerd 1.6 understands."""

import pytest
from google.protobuf import any_pb2, empty_pb2

from railcar.ttrpc_proto import typeurl
from railcar.ttrpc_proto.api import cgroups_v1_pb2, events_task_pb2, runc_options_pb2


def test_pack_uses_the_bare_full_name() -> None:
    packed = typeurl.pack(events_task_pb2.TaskExit(container_id="c", exit_status=137))
    assert packed.type_url == "containerd.events.TaskExit"
    assert typeurl.pack(cgroups_v1_pb2.Metrics()).type_url == "io.containerd.cgroups.v1.Metrics"


@pytest.mark.parametrize("prefix", ["", "type.googleapis.com/"])
def test_unpack_resolves_every_api_type_with_either_spelling(prefix: str) -> None:
    msg = runc_options_pb2.ProcessDetails(exec_id="ex1")
    value = any_pb2.Any(type_url=prefix + "containerd.runc.v1.ProcessDetails", value=msg.SerializeToString())
    assert typeurl.unpack(value) == msg
    assert typeurl.unpack(typeurl.pack(empty_pb2.Empty())) == empty_pb2.Empty()


def test_unpack_with_an_explicit_registry() -> None:
    packed = typeurl.pack(events_task_pb2.TaskOOM(container_id="c"))
    assert typeurl.unpack(packed, {"containerd.events.TaskOOM": events_task_pb2.TaskOOM}).container_id == "c"
    with pytest.raises(typeurl.TypeUrlError, match="unknown type URL 'containerd.events.TaskOOM'"):
        typeurl.unpack(packed, {})


def test_unpack_errors_name_the_type() -> None:
    with pytest.raises(typeurl.TypeUrlError, match="unknown type URL 'no.such.Type'"):
        typeurl.unpack(any_pb2.Any(type_url="no.such.Type"))
    with pytest.raises(typeurl.TypeUrlError, match="containerd.events.TaskExit.*does not decode"):
        typeurl.unpack(any_pb2.Any(type_url="containerd.events.TaskExit", value=b"\xff\xff"))


def test_json_types_round_trip() -> None:
    process = {"args": ["sh", "-c", "echo hi"], "cwd": "/", "terminal": False}
    packed = typeurl.pack_json(typeurl.PROCESS, process)
    assert packed.type_url == "types.containerd.io/opencontainers/runtime-spec/1/Process"
    assert packed.value == b'{"args":["sh","-c","echo hi"],"cwd":"/","terminal":false}'
    assert typeurl.unpack_json(packed) == process
    with pytest.raises(typeurl.TypeUrlError, match="LinuxResources.*not JSON"):
        typeurl.unpack_json(any_pb2.Any(type_url=typeurl.SPEC_PREFIX + "LinuxResources", value=b"{"))
    with pytest.raises(typeurl.TypeUrlError, match="empty"):
        typeurl.pack_json("", {})
