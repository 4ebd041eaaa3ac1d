"""`delete` as containerd runs it after a shim is gone: only a DeleteResponse, success when all is gone."""

import errno
import os
import shutil
import socket
from pathlib import Path

import pytest

from railcar.shim import cleanup, paths, wire
from railcar.ttrpc_proto.api import task_v2_pb2 as pb

from .conftest import run_shim


def _delete(bundle: Path, address: str, container_id: str = "gone", namespace: str = "default",
            stderr: bytes = b"") -> pb.DeleteResponse:
    result = run_shim(["-namespace", namespace, "-address", address, "-publish-binary", "/usr/bin/containerd",
                       "-id", container_id, "-bundle", str(bundle), "delete"], bundle)
    assert result.returncode == 0 and stderr in result.stderr and (stderr or not result.stderr), result.stderr
    return pb.DeleteResponse.FromString(result.stdout)


def test_nothing_left_reports_137_and_the_recorded_pid(bundle: Path, address: str) -> None:
    cleanup.record_pids(str(bundle), 4242)
    response = _delete(bundle, address)
    assert (response.pid, response.exit_status) == (4242, 137)
    assert response.exited_at.seconds > 1_600_000_000


def test_a_record_that_cannot_be_written_names_its_file(bundle: Path) -> None:
    """A full disk fails the flush at close, which Python reports without a file name: Create's error
    (h2 filled containerd's state tmpfs) said only "[Errno 28] No space left on device"."""
    (bundle / cleanup.PID_FILE).symlink_to("/dev/full")  # every write to it fails with ENOSPC
    with pytest.raises(OSError) as info:
        cleanup.record_pids(str(bundle), 4242)
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(bundle / cleanup.PID_FILE))


def test_the_recorded_exit_is_reported(bundle: Path, address: str) -> None:
    cleanup.record_exit(str(bundle), 3, 1_700_000_000_500_000_000)
    response = _delete(bundle, address)
    assert (response.pid, response.exit_status) == (0, 3)
    assert (response.exited_at.seconds, response.exited_at.nanos) == (1_700_000_000, 500_000_000)


def test_a_state_it_cannot_read_is_reported_not_taken_for_gone(bundle: Path, address: str) -> None:
    """A state.json that does not parse (a crash mid-write, a downgrade) is not "already gone":
    `delete` still answers containerd, but says on stderr (containerd's log) what it left."""
    directory = Path(paths.runtime_root(f"railcar-test-{os.getpid()}")) / "unreadable"
    directory.mkdir(parents=True)
    try:
        (directory / "state.json").write_text('{"id": "unreadable", "bundle": "/b", "from_a_newer_railcar": 1}')
        response = _delete(bundle, address, "unreadable", directory.parent.name, stderr=b"state.json is corrupt")
        assert response.exit_status == 137
    finally:
        shutil.rmtree(directory.parent)


def _socket_file(tmp_path: Path) -> Path:
    path = tmp_path / "shim.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path


def test_the_socket_goes_unless_another_bundle_of_the_group_uses_it(tmp_path: Path, address: str) -> None:
    namespace_dir = tmp_path / "default"
    first, second = namespace_dir / "a", namespace_dir / "b"
    for b in (first, second):
        b.mkdir(parents=True)
    shim_socket = _socket_file(tmp_path)
    for b in (first, second):
        (b / "address").write_text(f"unix://{shim_socket}")
    _delete(first, address, "a")
    assert shim_socket.exists()  # b still uses the grouped shim
    os.unlink(second / "address")
    _delete(first, address, "a")
    assert not shim_socket.exists()


def test_after_a_clean_daemon_delete_it_prints_the_daemons_answer_without_loading_the_runtime(
        bundle: Path, address: str) -> None:
    cleanup.record_deleted(str(bundle), wire.delete_response(4321, 3, 1_700_000_000_500_000_000))
    result = run_shim(["-namespace", "default", "-address", address, "-id", "done", "-bundle", str(bundle),
                       "delete"], bundle, extra_python=["-X", "importtime"])
    assert result.returncode == 0
    stderr = result.stderr.decode()
    assert "railcar.shim.cleanup" in stderr and "railcar.runtime" not in stderr
    answer = pb.DeleteResponse.FromString(result.stdout)
    assert (answer.pid, answer.exit_status, answer.exited_at.seconds, answer.exited_at.nanos) == \
        (4321, 3, 1_700_000_000, 500_000_000)


def test_a_new_task_forgets_what_an_old_one_recorded_in_the_same_bundle(bundle: Path, address: str) -> None:
    cleanup.record_exit(str(bundle), 3, 1_700_000_000_500_000_000)
    cleanup.record_deleted(str(bundle), wire.delete_response(4321, 3, 1_700_000_000_500_000_000))
    cleanup.clear_records(str(bundle))
    cleanup.clear_records(str(bundle))  # nothing left to forget: no error
    response = _delete(bundle, address)
    assert (response.pid, response.exit_status) == (0, 137)  # not the old task's answer
