"""The runtime options containerd hands a task's Create: railcar has none of its own, and says so.

containerd's CRI sends a runtime's `options` table to a shim that is not runc's as
runtimeoptions.v1.Options: containerd 1.6 keeps only ConfigPath (and TypeUrl) of it, 1.7 and later
also the whole table, as TOML, in config_body. ctr's `--runtime-config-path` sends ConfigPath. An
operator who sets any of that expects an effect; railcar would have none, so it refuses the Create
and names what it was given, rather than run the container as if nothing had been asked.

What asks for nothing, or for what railcar does anyway, passes:
- a key or field at its zero value: `containerd config default`'s runc stanza, copied whole,
  has BinaryName = "", Root = "", IoUid = 0...;
- `SystemdCgroup`, which operators copy from runc's stanza. railcar reads a cgroupsPath of the form
  "slice:prefix:name" (CRI writes it when the pod's parent is a slice) as the cgroup systemd would
  make for it, whatever this says; unlike runc it makes no systemd unit (no D-Bus), which no
  setting of railcar's would change;
- the I/O owner (io_uid/io_gid, IoUid/IoGid in a table) that containerd's client sends for a user namespace (`ctr run
  --uidmap`: runc's Options for runc, the older CreateOptions for any other runtime). It asks for
  stdio pipes the container's root can reopen; railcar gives them to the process user's host id,
  from the spec's id mappings, as runc's own fixStdioPermissions does after runc's shim.
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from railcar.ttrpc_proto.api import runc_options_pb2, runctypes_pb2, runtimeoptions_pb2

_HARMLESS_KEYS = {"SystemdCgroup", "IoUid", "IoGid"}
# Each client-side options message railcar decodes, and the fields of it that ask for what railcar does anyway.
_TASK_OPTIONS = {
    "containerd.runc.v1.Options": (runc_options_pb2.Options, {"io_uid", "io_gid", "systemd_cgroup"}),
    "containerd.linux.runc.CreateOptions": (runctypes_pb2.CreateOptions, {"io_uid", "io_gid"}),
}


class OptionsError(ValueError):
    """Options railcar would ignore; the message names them."""


def check(options: any_pb2.Any) -> None:
    """Raise OptionsError unless `options` (CreateTaskRequest.options) asks only for what railcar does."""
    if not options.type_url and not options.value:
        return
    kind = options.type_url.rsplit("/", 1)[-1]   # containerd 1.6 sends no type.googleapis.com/ prefix
    try:
        _check(kind, options)
    except DecodeError as e:
        raise OptionsError(f"runtime options of type {options.type_url!r}: cannot decode them: {e}") from None


def _check(kind: str, options: any_pb2.Any) -> None:
    if kind == "runtimeoptions.v1.Options":
        sent = runtimeoptions_pb2.Options.FromString(options.value)
        if sent.config_path:
            raise OptionsError(f"runtime options: ConfigPath {sent.config_path!r}: railcar reads no "
                               "configuration file; remove ConfigPath from the runtime's options")
        if sent.config_body:
            _check_table(sent.config_body)
        return
    if kind in _TASK_OPTIONS:
        message, done_anyway = _TASK_OPTIONS[kind]
        asked = [field.name for field, _ in message.FromString(options.value).ListFields()
                 if field.name not in done_anyway]
        if asked:
            raise OptionsError(f"runtime options: {kind} {', '.join(asked)}: railcar has no such options")
        return
    raise OptionsError(f"runtime options of type {options.type_url!r}: railcar takes no runtime options")


def _check_table(body: bytes) -> None:
    import tomllib   # only containerd 1.7+ with an options table pays for it

    try:
        table = tomllib.loads(body.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise OptionsError(f"runtime options: the options table containerd sent is not TOML: {e}") from None
    unknown = sorted(key for key, value in table.items() if key not in _HARMLESS_KEYS and value)
    if unknown:
        raise OptionsError(f"runtime options: {', '.join(unknown)}: railcar has no such options; remove "
                           "them from the runtime's options table")
