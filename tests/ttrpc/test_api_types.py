"""The generated API modules: fresh, importable under railcar.*, and on the field numbers containerd uses."""

import importlib
import sys

import pytest

from railcar.ttrpc_proto import api, regen


def test_generated_modules_match_the_proto_sources() -> None:
    pytest.importorskip("grpc_tools")
    generated = regen.generate()
    committed = {p.name: p.read_bytes() for p in regen.API_DIR.glob("*_pb2.py")}
    stale = sorted(n for n in generated.keys() | committed.keys() if generated.get(n) != committed.get(n))
    assert not stale, f"run python -m railcar.ttrpc_proto.regen: stale {stale}"


def test_module_list_names_every_generated_module() -> None:
    assert sorted(api.MODULES) == sorted(p.stem for p in regen.API_DIR.glob("*_pb2.py"))


def test_generated_imports_never_claim_a_top_level_containerd_package() -> None:
    for name in api.MODULES:
        importlib.import_module(f"railcar.ttrpc_proto.api.{name}")
    assert "containerd" not in sys.modules
    assert not any(m.startswith("containerd.") for m in sys.modules)


def test_v3_task_api_is_v2_under_another_package() -> None:
    from railcar.ttrpc_proto.api import task_v2_pb2, task_v3_pb2

    v2 = task_v2_pb2.DESCRIPTOR.services_by_name["Task"]
    v3 = task_v3_pb2.DESCRIPTOR.services_by_name["Task"]
    assert v2.full_name == "containerd.task.v2.Task" and v3.full_name == "containerd.task.v3.Task"
    assert [m.name for m in v2.methods] == [m.name for m in v3.methods]
    assert len(v2.methods) == 17
    for name, msg in task_v2_pb2.DESCRIPTOR.message_types_by_name.items():
        fields = [(f.name, f.number, f.type) for f in msg.fields]
        assert fields == [(f.name, f.number, f.type) for f in task_v3_pb2.DESCRIPTOR.message_types_by_name[name].fields]


@pytest.mark.parametrize(
    ("module", "message", "expected"),
    [
        ("task_v2_pb2", "StateResponse", {"id": 1, "bundle": 2, "pid": 3, "status": 4, "exited_at": 10, "exec_id": 11}),
        ("task_v2_pb2", "CreateTaskRequest", {"rootfs": 3, "terminal": 4, "checkpoint": 8, "options": 10}),
        ("task_v2_pb2", "ConnectResponse", {"shim_pid": 1, "task_pid": 2, "version": 3}),
        ("task_v2_pb2", "UpdateTaskRequest", {"resources": 2, "annotations": 3}),
        ("events_task_pb2", "TaskExit", {"container_id": 1, "id": 2, "pid": 3, "exit_status": 4, "exited_at": 5}),
        ("events_task_pb2", "TaskDelete", {"container_id": 1, "pid": 2, "exit_status": 3, "exited_at": 4, "id": 5}),
        ("events_ttrpc_pb2", "Envelope", {"timestamp": 1, "namespace": 2, "topic": 3, "event": 4}),
        ("runc_options_pb2", "Options", {"shim_cgroup": 3, "io_uid": 4, "systemd_cgroup": 9, "task_api_version": 13}),
        ("ttrpc_request_pb2", "Request", {"service": 1, "method": 2, "payload": 3, "timeout_nano": 4, "metadata": 5}),
        ("cgroups_v1_pb2", "MemoryStat", {"total_unevictable": 32, "usage": 33, "kernel_tcp": 36}),
        ("cgroups_v2_pb2", "Metrics", {"pids": 1, "cpu": 2, "memory": 4, "memory_events": 8}),
        ("types_task_pb2", "ProcessInfo", {"pid": 1, "info": 2}),
    ],
)
def test_field_numbers_follow_containerd(module: str, message: str, expected: dict[str, int]) -> None:
    desc = importlib.import_module(f"railcar.ttrpc_proto.api.{module}").DESCRIPTOR.message_types_by_name[message]
    assert {name: desc.fields_by_name[name].number for name in expected} == expected


def test_status_enum_values() -> None:
    from railcar.ttrpc_proto.api import types_task_pb2

    assert [(v.name, v.number) for v in types_task_pb2.Status.DESCRIPTOR.values] == [
        ("UNKNOWN", 0), ("CREATED", 1), ("RUNNING", 2), ("STOPPED", 3), ("PAUSED", 4), ("PAUSING", 5)]


def test_package_import_stays_light() -> None:
    import subprocess

    code = ("import sys, railcar.ttrpc_proto as t; t.Code.NOT_FOUND; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'google')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
