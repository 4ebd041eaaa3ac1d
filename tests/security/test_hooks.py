"""OCI hooks: argv, env, state on stdin, timeouts, and what a failure stops."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from railcar.runtime.errors import RuntimeFailure
from railcar.runtime.hooks import HookError, run_hooks
from tests.polling import wait_gone

SH = "/bin/sh"
STATE = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 4242, "bundle": "/tmp/b"}


def recorder(out: Path, tag: str) -> dict:
    """A hook that appends its tag, argv, one env var and its stdin to `out`."""
    script = f'printf "%s|%s|%s|" "$0" "$*" "$GREETING" >> {out}; cat >> {out}; echo >> {out}'
    return {"path": SH, "args": [tag, "-c", script], "env": ["GREETING=hi", "PATH=/bin"]}


def test_hooks_get_args_env_and_state(tmp_path: Path) -> None:
    out = tmp_path / "log"
    run_hooks("createRuntime", [recorder(out, "first"), recorder(out, "second")], STATE)
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    for line, tag in zip(lines, ("first", "second")):
        argv0, args, greeting, stdin = line.split("|", 3)
        assert (argv0, args, greeting) == (tag, "", "hi")
        assert json.loads(stdin) == STATE


@pytest.mark.parametrize(("kind", "in_bundle"), [("prestart", True), ("createRuntime", True), ("poststop", True),
                                                ("createContainer", False), ("startContainer", False)])
def test_hooks_run_in_the_bundle_unless_they_run_in_the_container(tmp_path: Path, kind: str,
                                                                    in_bundle: bool) -> None:
    """As runc's, run where containerd's shim runs it; in-container kinds where the init is."""
    out = tmp_path / "cwd"
    run_hooks(kind, [{"path": SH, "args": ["sh", "-c", f"pwd > {out}"]}], {**STATE, "bundle": str(tmp_path)})
    assert out.read_text().strip() == (str(tmp_path) if in_bundle else os.getcwd())


def test_env_is_exactly_the_hooks_own(tmp_path: Path) -> None:
    out = tmp_path / "env"
    os.environ["RAILCAR_SHOULD_NOT_LEAK"] = "1"
    try:
        run_hooks("poststop", [{"path": "/bin/busybox", "args": ["env", "sh", "-c", f"env > {out}"],
                                "env": ["ONLY=me"]}], STATE)
    finally:
        del os.environ["RAILCAR_SHOULD_NOT_LEAK"]
    assert "RAILCAR_SHOULD_NOT_LEAK" not in out.read_text()
    assert "ONLY=me" in out.read_text()


def test_failing_prestart_stops_and_names_the_hook(tmp_path: Path) -> None:
    out = tmp_path / "log"
    with pytest.raises(HookError) as e:
        run_hooks("prestart", [{"path": SH, "args": ["sh", "-c", "echo said; echo boom >&2; exit 3"]},
                               recorder(out, "never")], STATE)
    assert isinstance(e.value, RuntimeFailure)
    assert (e.value.kind, e.value.index, e.value.path) == ("prestart", 0, SH)
    assert "exited with status 3: stdout: said; stderr: boom" in str(e.value)
    assert "hooks.prestart[0]" in str(e.value)
    assert not out.exists()


def test_failing_poststop_still_runs_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "log"
    with pytest.raises(HookError) as e:
        run_hooks("poststop", [{"path": SH, "args": ["sh", "-c", "exit 1"]}, recorder(out, "after")], STATE)
    assert e.value.index == 0
    assert out.read_text().startswith("after|")


def test_timeout_kills_the_hook(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(HookError, match="timed out after 1s"):
        run_hooks("createContainer", [{"path": SH, "args": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"],
                                       "timeout": 1}], STATE)
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped


def test_timeout_also_ends_what_the_hook_left_running(tmp_path: Path) -> None:
    """A background child holding the hook's output pipe must not stretch the timeout forever;
    it goes with the hook (same process group) and is waited for."""
    pidfile = tmp_path / "pid"
    with pytest.raises(HookError, match="timed out after 1s"):
        run_hooks("prestart", [{"path": SH, "args": ["sh", "-c", f"sleep 1000 & echo $! > {pidfile}; exec sleep 60"],
                                "timeout": 1}], STATE)
    pid = int(pidfile.read_text())

    # SIGKILL is delivered asynchronously: the child may take a moment to die
    assert wait_gone(pid), "the hook's background child still runs"


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(HookError, match="cannot execute"):
        run_hooks("startContainer", [{"path": str(tmp_path / "nope")}], STATE)


@pytest.mark.parametrize(("hook", "problem"), [
    ({"path": "relative/hook"}, "absolute"),
    ({"path": SH, "args": "sh -c true"}, "args"),
    ({"path": SH, "env": ["NOEQUALS"]}, "env"),
    ({"path": SH, "timeout": 0}, "timeout"),
    ("not-an-object", "object"),
])
def test_invalid_hooks_are_rejected(hook: object, problem: str) -> None:
    with pytest.raises(HookError, match=problem):
        run_hooks("prestart", [hook], STATE)  # type: ignore[list-item]


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown hook kind"):
        run_hooks("prestop", [], STATE)
