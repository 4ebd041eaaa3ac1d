"""The installed `containerd-shim-railcar-v2` (packaging/setup.sh writes it): an sh launcher that
prints a `delete` answer the daemon recorded without starting Python, and runs railcar otherwise."""

import subprocess
import sys
from pathlib import Path

from railcar.shim import cleanup, wire
from railcar.ttrpc_proto.api import task_v2_pb2 as pb

LAUNCHER = Path(sys.executable).parent / "containerd-shim-railcar-v2"


def _run(args: list[str], cwd: Path, launcher: Path = LAUNCHER) -> subprocess.CompletedProcess:
    return subprocess.run([str(launcher), *args], cwd=cwd, capture_output=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "RAILCAR_ZYGOTE": "0"})


def _without_python(tmp_path: Path) -> Path:
    """A copy of the launcher whose way into Python fails: what still works needs no Python."""
    lines = LAUNCHER.read_text().splitlines(keepends=True)
    assert lines[-1].startswith("exec ")
    copy = tmp_path / "launcher-without-python"
    copy.write_text("".join(lines[:-1]) + "exec false\n")
    copy.chmod(0o755)
    return copy


def test_it_is_the_launcher() -> None:
    assert LAUNCHER.read_text().startswith("#!/bin/sh\n")


def test_a_recorded_delete_answer_is_printed_as_is(bundle: Path, address: str, tmp_path: Path) -> None:
    answer = wire.delete_response(77, 9, 1_700_000_000_000_000_001)
    cleanup.record_deleted(str(bundle), answer)
    common = ["-namespace", "default", "-address", address, "-publish-binary", "/usr/bin/containerd", "-id", "c1"]
    fast = _without_python(tmp_path)
    for args, cwd in (([*common, "-bundle", str(bundle), "delete"], tmp_path),   # as containerd 1.6 runs it
                      ([*common, f"-bundle={bundle}", "delete"], tmp_path),
                      ([*common, "delete"], bundle)):                            # cwd is the bundle
        for launcher in (LAUNCHER, fast):
            result = _run(args, cwd, launcher)
            assert (result.returncode, result.stdout, result.stderr) == (0, answer, b""), (args, launcher)
    assert _run([*common, "-bundle", str(tmp_path), "delete"], tmp_path, fast).returncode == 1  # nothing recorded


def test_anything_else_runs_railcar(bundle: Path, address: str) -> None:
    result = _run(["-namespace", "default", "-address", address, "-id", "c2", "-bundle", str(bundle), "delete"],
                  bundle)
    assert result.returncode == 0 and result.stderr == b""
    assert pb.DeleteResponse.FromString(result.stdout).exit_status == 137  # nothing recorded, nothing left
    result = _run(["-v"], bundle)
    assert result.returncode == 0 and b"containerd-shim-railcar-v2" in result.stdout
    result = _run(["-frobnicate", "delete"], bundle)
    assert result.returncode == 2 and b"flag provided but not defined: -frobnicate" in result.stderr
