"""`containerd-shim-railcar-v2`: the one entry point for `start`, `delete`, `-v`, `-info` and the daemon.

Only the daemon path imports trio and protobuf; `start` and `delete` stay on light modules because
containerd waits for them on every container start and removal.
"""

import sys
from _collections_abc import Callable  # already loaded at startup; collections.abc costs ~2 ms a start

from . import flags as flag_parser
from .flags import FlagError, Flags


def _answer(action: str, produce: Callable[[], bytes], refusal: type[Exception]) -> int:
    """Write what `produce` returns to stdout for containerd (status 0), or its refusal to stderr
    (status 1): the contract `start` and `delete` share."""
    try:
        answer = produce()
    except refusal as e:
        sys.stderr.write(f"railcar {action}: {e}\n")
        return 1
    sys.stdout.buffer.write(answer)
    return 0


def _run(flags: Flags) -> int:
    if flags.version:
        from .info import version_text

        sys.stdout.write(version_text())
        return 0
    if flags.info:
        from .info import runtime_info

        sys.stdout.buffer.write(runtime_info())
        return 0
    if flags.action == "start":
        from .bootstrap import StartError, start

        return _answer("start", lambda: start(flags).encode(), StartError)
    if flags.action == "delete":
        from .cleanup import delete

        return _answer("delete", lambda: delete(flags), ValueError)
    # The daemon and its forker are what containers are forked from: run them from a sealed copy of
    # the interpreter (CVE-2019-5736) before anything else is loaded. `start`/`delete` never enter a
    # container, so they skip the extra exec; zygote-forked daemons inherit the zygote's seal.
    from railcar.runtime.sealing import reexec_sealed

    reexec_sealed()
    from .deferred import defer_unused

    defer_unused()
    from .daemon import run

    return run(flags)


def main(argv: list[str] | None = None) -> None:
    """Parse Go-style flags and dispatch; exit status 2 with usage on a bad command line."""
    try:
        flags = flag_parser.parse(sys.argv[1:] if argv is None else argv)
    except FlagError as e:
        sys.stderr.write(f"{e}\n{flag_parser.USAGE}")
        sys.exit(2)
    code = _run(flags)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
