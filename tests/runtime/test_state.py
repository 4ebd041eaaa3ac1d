"""State on disk: enough to manage a container from another process, and pid-reuse safe."""

import json
import os
import signal

import pytest

from railcar.runtime import Container, InvalidState, RuntimeFailure
from railcar.runtime.state import STATE_FILE, is_alive, start_time

from .conftest import create_captured, finish


def test_start_time_and_liveness() -> None:
    me = start_time(os.getpid())
    assert me is not None and is_alive(os.getpid(), me)
    assert not is_alive(os.getpid(), me + 1)
    assert start_time(0x3FFFFFFF) is None


def test_a_reused_pid_is_never_signalled(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    path = os.path.join(state_root, bundle.id, STATE_FILE)
    with open(path) as f:
        saved = json.load(f)
    # Pretend the recorded pid now belongs to a different process (other start time).
    with open(path, "w") as f:
        json.dump({**saved, "init_start_time": saved["init_start_time"] + 1}, f)
    impostor = Container.load(bundle.id, root=state_root)
    assert impostor.state().status == "stopped"
    with pytest.raises(InvalidState):
        impostor.kill(signal.SIGKILL)
    assert is_alive(created.result.pid, saved["init_start_time"])
    with open(path, "w") as f:
        json.dump(saved, f)
    loaded = Container.load(bundle.id, root=state_root)
    assert (loaded.id, loaded.bundle, loaded.init_pid) == (bundle.id, bundle.path,
                                                           created.result.pid)
    loaded.kill(signal.SIGKILL)
    finish(loaded, created)


def test_delete_cleans_up_after_a_crashed_creator(make_bundle, state_root) -> None:
    bundle = make_bundle(["true"])
    os.makedirs(os.path.join(state_root, bundle.id))   # creator died right after mkdir
    Container.load(bundle.id, root=state_root).delete()
    assert not os.path.exists(os.path.join(state_root, bundle.id))


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"id": "x", "bundle": "/b", "future_field": 1}',
                                     b'{"id": "x"}'])
def test_a_corrupt_state_file_is_a_clear_error(tmp_path, content: bytes) -> None:
    """A state.json this version cannot read (damaged, or from another version) names the file."""
    os.makedirs(tmp_path / "x")
    (tmp_path / "x" / STATE_FILE).write_bytes(content)
    with pytest.raises(RuntimeFailure, match="state.json is corrupt"):
        Container.load("x", root=str(tmp_path))
