"""Generated protobuf modules for the containerd API; regenerate with python -m railcar.ttrpc_proto.regen."""
