"""Running OCI hooks: the *how* (process, stdin, env, timeout, errors); the runtime picks the *when*.

Each hook is executed with `args` as its argv (argv[0] included; just `[path]` when absent),
exactly `env` as its environment (empty when absent), the container state JSON on stdin, and
its stdout and stderr captured apart (as runc does), so a failure can say what the hook printed on
each. A hook that runs longer than `timeout` seconds is killed and counts as failed.

runtime-spec: a failing prestart/createRuntime/createContainer/startContainer hook stops the
remaining hooks (and the operation); a failing poststart/poststop hook must not stop the others,
so for those kinds every hook runs and the failures are reported together afterwards; the
caller logs that as a warning.

Caveat: the hook is this process's child and is waited for by pid. A caller with a global
`waitpid(-1)` reaper must not run that reaper concurrently with `run_hooks` in the same process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

from .errors import RuntimeFailure

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
_CONTINUE_ON_FAILURE = ("poststart", "poststop")
# Kinds that run in the runtime's namespaces: in the bundle, as runc's run where containerd's shim runs
# it. The others run where the container's init is: its rootfs before pivot_root, its cwd after.
_IN_BUNDLE = ("prestart", "createRuntime", "poststart", "poststop")
_OUTPUT_LIMIT = 4096


class HookError(RuntimeFailure):
    """A hook was invalid, failed or timed out; names the kind, the index and the path."""

    def __init__(self, kind: str, index: int, path: object, cause: str) -> None:
        super().__init__(f"{kind} hook", f"hooks.{kind}[{index}] ({path}): {cause}")
        self.kind = kind
        self.index = index
        self.path = path
        self.cause = cause


def _validate(kind: str, index: int, hook: object) -> tuple[str, list[str], list[str], float | None]:
    def bad(problem: str) -> HookError:
        return HookError(kind, index, hook.get("path") if isinstance(hook, dict) else None, problem)

    if not isinstance(hook, dict):
        raise bad("must be an object")
    path = hook.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise bad(f"path must be an absolute path, got {path!r}")
    args = hook.get("args")
    if args is None:
        args = [path]
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise bad("args must be a non-empty list of strings")
    env = hook.get("env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
        raise bad("env must be a list of KEY=VALUE strings")
    timeout = hook.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
        raise bad(f"timeout must be a positive number of seconds, got {timeout!r}")
    return path, args, env, timeout


def _run_one(kind: str, index: int, hook: dict, stdin: bytes, cwd: str | None) -> None:
    path, args, env, timeout = _validate(kind, index, hook)
    environ = dict(e.split("=", 1) for e in env)
    try:
        # A session (and process group) of its own, so a timeout can kill what it started too.
        proc = subprocess.Popen(args, executable=path, env=environ, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True, cwd=cwd,
                                start_new_session=True)
    except OSError as e:
        raise HookError(kind, index, path, f"cannot execute: {e.strerror}") from e
    try:
        outputs = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        # Not just the hook: a background child it left would hold the output pipe open, and
        # reading to EOF would then outlast the timeout forever. The group outlives the hook
        # until it is reaped, so its pid cannot have been reused yet.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise HookError(kind, index, path, f"timed out after {timeout}s and was killed") from None
    if proc.returncode != 0:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with status {proc.returncode}"
        printed = "; ".join(f"{name}: {text}" for name, text in zip(("stdout", "stderr"), map(_tail, outputs))
                            if text)
        raise HookError(kind, index, path, how + (f": {printed}" if printed else ""))


def _tail(output: bytes) -> str:
    """The end of what a hook printed on one stream, where a failing hook says why."""
    return output[-_OUTPUT_LIMIT:].decode(errors="replace").strip()


def run_hooks(kind: str, hooks: list[dict], state: dict) -> None:
    """Run `hooks` of `kind` in order with `state` (the runtime-spec state object) on stdin."""
    if kind not in KINDS:
        raise ValueError(f"unknown hook kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not hooks:
        return
    if not isinstance(hooks, list):
        raise HookError(kind, 0, None, f"hooks.{kind} must be a list")
    stdin = json.dumps(state).encode()
    bundle = state.get("bundle")
    cwd = None
    if kind in _IN_BUNDLE:
        cwd = bundle if isinstance(bundle, str) and os.path.isdir(bundle) else "/"
    failures: list[HookError] = []
    for index, hook in enumerate(hooks):
        try:
            _run_one(kind, index, hook, stdin, cwd)
        except HookError as e:
            if kind not in _CONTINUE_ON_FAILURE:
                raise
            failures.append(e)
    if failures:
        first = failures[0]
        if len(failures) > 1:
            others = "; ".join(str(f) for f in failures[1:])
            raise HookError(kind, first.index, first.path, f"{first.cause} (also failed: {others})")
        raise first
