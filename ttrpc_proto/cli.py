"""``railcar-ttrpc``: call any ttrpc method of the containerd API from a shell, for debugging.

    railcar-ttrpc call ADDRESS SERVICE METHOD [JSON]

ADDRESS is a unix socket path, optionally ``unix://``-prefixed (the content of a bundle's
``address`` file works as is). The request is given in protobuf's JSON mapping; the response is
printed as JSON. Any fields are expanded: protobuf types as ``{"@type": ..., fields}``, containerd's
JSON types (OCI Process, LinuxResources) as ``{"@type": ..., "value": <the JSON>}``.
Exit status: 0 success, 1 the call returned an error status, 2 the call could not be made.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import sys
from collections.abc import Sequence

import trio
from google.protobuf import any_pb2, descriptor, json_format, message_factory
from google.protobuf.message import Message

from . import api, typeurl
from .client import connect_unix
from .status import TtrpcError


class UsageError(Exception):
    """The command line names something that does not exist or is malformed."""


def resolve(service: str, method: str) -> tuple[type[Message], type[Message]]:
    """The request and response classes of ``service``/``method``, or a UsageError listing the choices."""
    services = {
        s.full_name: s
        for name in api.MODULES
        for s in importlib.import_module(f"{api.__name__}.{name}").DESCRIPTOR.services_by_name.values()
    }
    service_desc = services.get(service)
    if service_desc is None:
        raise UsageError(f"unknown service {service!r}; known services: {', '.join(sorted(services))}")
    method_desc = service_desc.methods_by_name.get(method)
    if method_desc is None:
        known = ", ".join(sorted(service_desc.methods_by_name))
        raise UsageError(f"unknown method {method!r} of {service}; its methods: {known}")
    return (message_factory.GetMessageClass(method_desc.input_type),
            message_factory.GetMessageClass(method_desc.output_type))


def parse_request(request_type: type[Message], text: str) -> Message:
    try:
        return json_format.Parse(text, request_type())
    except json_format.ParseError as exc:
        raise UsageError(f"invalid JSON for {request_type.DESCRIPTOR.full_name}: {exc}") from None


def to_jsonable(msg: Message) -> object:
    """Like protobuf's JSON mapping (proto field names), but Any values never fail to print."""
    if isinstance(msg, any_pb2.Any):
        return _any_to_jsonable(msg)
    if msg.DESCRIPTOR.file.package == "google.protobuf":
        return json_format.MessageToDict(msg)  # Timestamp, Duration, ...: their canonical JSON forms
    out: dict[str, object] = {}
    for field, value in msg.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _field_value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_field_value(field, v) for v in value]
        else:
            out[field.name] = _field_value(field, value)
    return out


def _field_value(field: descriptor.FieldDescriptor, value: object) -> object:
    if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
        return to_jsonable(value)  # type: ignore[arg-type]
    if field.type == descriptor.FieldDescriptor.TYPE_ENUM:
        number = field.enum_type.values_by_number.get(value)  # type: ignore[arg-type]
        return number.name if number is not None else value
    if field.type == descriptor.FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()  # type: ignore[arg-type]
    return value


def _any_to_jsonable(value: any_pb2.Any) -> object:
    try:
        inner = to_jsonable(typeurl.unpack(value))
    except typeurl.TypeUrlError:
        pass
    else:  # well-known types (Timestamp ...) map to a JSON scalar, messages to an object
        return {"@type": value.type_url, **(inner if isinstance(inner, dict) else {"value": inner})}
    try:
        return {"@type": value.type_url, "value": typeurl.unpack_json(value)}
    except typeurl.TypeUrlError:
        return {"@type": value.type_url, "value_base64": base64.b64encode(value.value).decode()}


async def call(address: str, service: str, method: str, request: Message, response_type: type[Message],
               timeout: float | None, metadata: dict[str, str]) -> Message:
    async with connect_unix(address) as client:
        return await client.call(service, method, request, response_type, timeout=timeout, metadata=metadata)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="railcar-ttrpc", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("call", help="make one unary call and print the response as JSON")
    p.add_argument("address", help="unix socket path, optionally unix://-prefixed")
    p.add_argument("service", help="full service name, e.g. containerd.task.v2.Task")
    p.add_argument("method", help="method name, e.g. State")
    p.add_argument("json", nargs="?", default="{}", help="the request in protobuf JSON (default {})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds, sent as timeout_nano (default 10)")
    p.add_argument("--metadata", "-m", action="append", default=[], metavar="KEY=VALUE",
                   help="request metadata, e.g. containerd-namespace-ttrpc=default (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        metadata = {}
        for item in args.metadata:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--metadata wants KEY=VALUE, got {item!r}")
            metadata[key] = value
        request_type, response_type = resolve(args.service, args.method)
        request = parse_request(request_type, args.json)
        response = trio.run(call, args.address, args.service, args.method, request, response_type,
                            args.timeout, metadata)
    except UsageError as exc:
        print(f"railcar-ttrpc: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"railcar-ttrpc: cannot connect to {args.address}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except TtrpcError as exc:
        print(f"railcar-ttrpc: {args.service}/{args.method} failed: {exc.code.name} ({int(exc.code)}): "
              f"{exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(to_jsonable(response), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
