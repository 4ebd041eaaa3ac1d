"""The installed package layout: everything imports as railcar.* and nothing shadows the stdlib."""

import importlib
import io
import sys


def test_subpackages_import_under_railcar() -> None:
    for name in ("railcar.shim", "railcar.ttrpc_proto", "railcar.runtime", "railcar.io"):
        assert importlib.import_module(name).__name__ == name


def test_stdlib_io_is_not_shadowed() -> None:
    assert io.__file__ is None or io.__file__.startswith(sys.base_prefix)
    assert hasattr(io, "BytesIO")
