"""Go-style command-line flags, as containerd passes them to a shim.

containerd builds the argv with Go's `flag` package conventions: a single dash, the value as the next
argument (or after `=`), boolean flags without a value, and the action word (`start`, `delete`) as the
first positional argument. argparse would accept things Go rejects and vice versa, so this is a tiny
parser of exactly that grammar. It imports nothing, because `start` must stay fast.
"""

from types import SimpleNamespace

_STRING_FLAGS = {
    "namespace": "namespace",
    "address": "address",
    "publish-binary": "publish_binary",
    "id": "id",
    "bundle": "bundle",
    "socket": "socket",
}
_BOOL_FLAGS = {"debug": "debug", "v": "version", "info": "info"}
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}

USAGE = """Usage of containerd-shim-railcar-v2:
  -address string      grpc address back to main containerd
  -bundle string       path to the bundle if not workdir
  -debug               enable debug output in logs
  -id string           id of the task
  -info                print the runtime info (RuntimeInfo protobuf) and exit
  -namespace string    namespace that owns the shim
  -publish-binary string
                       path to publish binary (used for publishing events)
  -socket string       socket path to serve
  -v                   show the shim version and exit
actions: start | delete | (none: run the shim daemon)
"""


class FlagError(ValueError):
    """The command line does not follow the shim's flag grammar; the message says which argument."""


class Flags(SimpleNamespace):
    """Everything containerd can tell a shim on its command line.

    A SimpleNamespace (equality and repr for free) rather than a dataclass: importing dataclasses
    costs `start` 8 ms, a tenth of its whole run.
    """

    namespace: str
    address: str
    publish_binary: str
    id: str
    bundle: str
    socket: str
    debug: bool
    version: bool
    info: bool
    action: str

    def __init__(self, *, namespace: str = "", address: str = "", publish_binary: str = "", id: str = "",
                 bundle: str = "", socket: str = "", debug: bool = False, version: bool = False,
                 info: bool = False, action: str = "") -> None:
        super().__init__(namespace=namespace, address=address, publish_binary=publish_binary, id=id,
                         bundle=bundle, socket=socket, debug=debug, version=version, info=info, action=action)

    def to_argv(self) -> list[str]:
        """The flags (without the action) in the form `parse` reads back, for re-executing ourselves."""
        argv: list[str] = []
        for flag, attr in _STRING_FLAGS.items():
            value = getattr(self, attr)
            if value:
                argv += [f"-{flag}", value]
        for flag, attr in _BOOL_FLAGS.items():
            if getattr(self, attr):
                argv.append(f"-{flag}")
        return argv


def parse(argv: list[str]) -> Flags:
    """Parse `argv` (without the program name). Raises FlagError naming the offending argument."""
    flags = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or not arg.startswith("-"):
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name.startswith("-") or name.startswith("="):
            raise FlagError(f"bad flag syntax: {arg}")
        name, has_value, value = name.partition("=")
        if name in _BOOL_FLAGS:
            if has_value and value not in _TRUE | _FALSE:
                raise FlagError(f"invalid boolean value {value!r} for -{name}")
            setattr(flags, _BOOL_FLAGS[name], not has_value or value in _TRUE)
        elif name in _STRING_FLAGS:
            if not has_value:
                i += 1
                if i >= len(argv):
                    raise FlagError(f"flag needs an argument: -{name}")
                value = argv[i]
            setattr(flags, _STRING_FLAGS[name], value)
        else:
            raise FlagError(f"flag provided but not defined: -{name}")
        i += 1
    rest = argv[i:]
    if len(rest) > 1:
        raise FlagError(f"unexpected arguments after the action: {' '.join(rest[1:])}")
    if rest:
        if rest[0] not in ("start", "delete"):
            raise FlagError(f"unknown action {rest[0]!r} (want start or delete)")
        flags.action = rest[0]
    return flags
