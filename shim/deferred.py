"""Modules railcar's dependencies import and railcar never uses, loaded only if something does.

trio imports `ssl` (for its TLS streams) and `hmac` (for DTLS cookies) when it is imported itself;
railcar speaks ttrpc over unix sockets and uses neither. Loading them initialises OpenSSL: 1.2 MiB
of heap and 3.5 MiB of libssl/libcrypto pages in the zygote (RSS, measured), which the zygote and
every daemon carry. The others cost 1.1 MiB together. A stand-in takes each one's place in
sys.modules and imports the real module the first time anything reads one of its attributes, so
code that does use them still works; only `import X` no longer tells whether X could be loaded.
"""

import importlib
import importlib.util
import sys
import types

UNUSED = (
    "ssl", "hmac",  # trio: TLS and DTLS
    "bz2", "lzma",  # shutil (through ctypes.util, through trio): archive formats
    "tempfile",  # ctypes.util: find_library's fallbacks
    "calendar", "pickle",  # protobuf: datetime conversions, an error raised when pickling
    "ipaddress",  # urllib.parse (through pathlib, through trio): bracketed hosts
)


class _StandIn(types.ModuleType):
    """Imports the real module of its name on first use and answers from it."""

    def __getattr__(self, attr: str) -> object:
        if attr == "__path__":  # asked by `from X import Y`: not a package (Y comes through here)
            raise AttributeError(attr)
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attr)


def defer_unused() -> None:
    """Put stand-ins for the UNUSED modules not imported yet; before trio is imported. Each carries
    its real module's spec, so that `importlib.util.find_spec` still answers for it. None of them
    is a package: a package's submodules could not be imported through a stand-in."""
    for name in UNUSED:
        if name not in sys.modules:
            stand_in = _StandIn(name)
            stand_in.__spec__ = importlib.util.find_spec(name)
            sys.modules[name] = stand_in
