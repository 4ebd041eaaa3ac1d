"""The runtime options containerd hands a task's Create: railcar has none of its own, and says so.

containerd's CRI sends a runtime's `options` table to a shim that is not runc's as
runtimeoptions.v1.Options: containerd 1.6 keeps only ConfigPath (and TypeUrl) of it, 1.7 and later
also the whole table, as TOML, in config_body. ctr's `--runtime-config-path` sends ConfigPath. An
operator who sets any of that expects an effect; railcar would have none, so it refuses the Create
and names what it was given, rather than run the container as if nothing had been asked.

What railcar does anyway passes:
- `SystemdCgroup`, which operators copy from runc's stanza. It asks runc's shim to treat a
  cgroupsPath of the form "slice:prefix:name" as systemd's, and railcar always does (CRI writes
  that form when the pod's parent is a slice), so either value describes what happens.
- The I/O owner (io_uid/io_gid) that containerd's client sends for a user namespace (`ctr run
  --uidmap`: runc's Options for runc, the older CreateOptions for any other runtime). It asks for
  stdio pipes the container's root can reopen; railcar gives them to the process user's host id,
  from the spec's id mappings, as runc's own fixStdioPermissions does after runc's shim.
"""

from __future__ import annotations

from google.protobuf import any_pb2

from railcar.ttrpc_proto.api import runc_options_pb2, runctypes_pb2, runtimeoptions_pb2

_HARMLESS_KEYS = {"SystemdCgroup"}
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


def _check_table(body: str) -> None:
    import tomllib   # only containerd 1.7+ with an options table pays for it

    try:
        table = tomllib.loads(body)
    except tomllib.TOMLDecodeError as e:
        raise OptionsError(f"runtime options: the options table containerd sent is not TOML: {e}") from None
    unknown = sorted(set(table) - _HARMLESS_KEYS)
    if unknown:
        raise OptionsError(f"runtime options: {', '.join(unknown)}: railcar has no such options; remove "
                           "them from the runtime's options table")
