"""``google.protobuf.Any`` the way containerd spells it.

containerd 1.6 resolves type URLs with gogo's registry, which knows bare full names only
(``containerd.events.TaskExit``) and fails on protobuf's default ``type.googleapis.com/`` prefix, so
everything railcar emits uses the bare name. OCI structures travel as JSON under containerd's own
URLs (``types.containerd.io/opencontainers/runtime-spec/1/Process`` ...). On input both spellings of
a protobuf type are accepted.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping

from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from . import api

SPEC_PREFIX = "types.containerd.io/opencontainers/runtime-spec/1/"
PROCESS = SPEC_PREFIX + "Process"

_GOOGLE_PREFIX = "type.googleapis.com/"


class TypeUrlError(ValueError):
    """An Any whose type is unknown or whose value does not decode as that type."""


def pack(msg: Message) -> any_pb2.Any:
    """Wrap ``msg`` with its bare full name as type URL."""
    return any_pb2.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def unpack(value: any_pb2.Any, registry: Mapping[str, type[Message]] | None = None) -> Message:
    """Decode ``value`` into the message its type URL names.

    ``registry`` maps type URLs to message classes; without it, every railcar API type and protobuf
    well-known type is known."""
    name = value.type_url.removeprefix(_GOOGLE_PREFIX)
    if registry is None:
        cls = _known(name)
    else:
        cls = registry.get(value.type_url) or registry.get(name)
    if cls is None:
        raise TypeUrlError(f"unknown type URL {value.type_url!r}")
    try:
        return cls.FromString(value.value)
    except DecodeError as exc:
        raise TypeUrlError(f"value of {value.type_url!r} does not decode: {exc}") from None


def pack_json(type_url: str, obj: object) -> any_pb2.Any:
    """Wrap a JSON-serialisable ``obj`` (an OCI Process, LinuxResources, ...) under ``type_url``."""
    if not type_url:
        raise TypeUrlError("type URL must not be empty")
    return any_pb2.Any(type_url=type_url, value=json.dumps(obj, separators=(",", ":")).encode())


def unpack_json(value: any_pb2.Any) -> object:
    """Decode the JSON carried by ``value`` (whatever its URL says, as runc's shim does)."""
    try:
        return json.loads(value.value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TypeUrlError(f"value of {value.type_url!r} is not JSON: {exc}") from None


def _known(name: str) -> type[Message] | None:
    for module in api.MODULES:
        importlib.import_module(f"{api.__name__}.{module}")
    importlib.import_module("google.protobuf.empty_pb2")
    importlib.import_module("google.protobuf.timestamp_pb2")
    try:
        return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))
    except KeyError:
        return None
