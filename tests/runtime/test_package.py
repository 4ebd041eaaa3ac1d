"""`import railcar.runtime` stays light: `container` loads on first use of one of its names."""

import subprocess
import sys

import pytest


def test_import_does_not_load_container_until_asked() -> None:
    code = ("import sys, railcar.runtime as r\n"
            "assert 'railcar.runtime.container' not in sys.modules, 'loaded eagerly'\n"
            "from railcar.runtime import Container, CreateResult, RuntimeFailure, SpecError\n"
            "from railcar.runtime.container import Container as C\n"
            "assert Container is C and issubclass(SpecError, RuntimeFailure)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_is_an_attribute_error() -> None:
    import railcar.runtime as r
    with pytest.raises(AttributeError, match="Nope"):
        r.Nope  # noqa: B018
    for name in r.__all__:
        assert getattr(r, name) is not None
