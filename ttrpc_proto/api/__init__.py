"""Generated protobuf modules for the containerd API; regenerate with python -m railcar.ttrpc_proto.regen.

The modules are imported by name (``from railcar.ttrpc_proto.api import task_v2_pb2``); this package
itself imports none of them so that importing one does not load the rest.
"""

#: Every generated module, so that code resolving type URLs can load them all on demand.
MODULES = (
    "cgroups_v1_pb2",
    "cgroups_v2_pb2",
    "events_task_pb2",
    "events_ttrpc_pb2",
    "introspection_pb2",
    "mount_pb2",
    "rpc_status_pb2",
    "runc_options_pb2",
    "runctypes_pb2",
    "runtimeoptions_pb2",
    "task_v2_pb2",
    "task_v3_pb2",
    "ttrpc_request_pb2",
    "types_task_pb2",
)
