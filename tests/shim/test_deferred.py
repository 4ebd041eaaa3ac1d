"""Stand-ins for modules railcar's dependencies import and railcar never uses."""

import subprocess
import sys

CHECK = r'''
import sys
from railcar.shim import deferred
deferred.UNUSED = ("calendar", "ipaddress")
deferred.defer_unused()
import calendar, importlib.util
from railcar.shim.deferred import _StandIn
assert isinstance(calendar, _StandIn) and importlib.util.find_spec("calendar").name == "calendar"
import ipaddress as later  # another `import` of a stand-in is no use: still not loaded
assert isinstance(sys.modules["ipaddress"], _StandIn)
assert calendar.timegm((1970, 1, 2, 0, 0, 0)) == 86400  # the first use loads the real module
assert not isinstance(sys.modules["calendar"], _StandIn) and sys.modules["calendar"].isleap(2024)
from ipaddress import ip_address  # `from X import Y` too
assert str(ip_address("10.0.0.1")) == "10.0.0.1" and later.ip_address("::1").version == 6
import trio, ssl  # trio imports without loading what railcar does not use
print("_ssl" in sys.modules)
'''


def test_a_stand_in_loads_the_real_module_on_first_use() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"  # ssl was not deferred here


def test_trio_loads_without_openssl_once_deferred() -> None:
    code = ("import sys; from railcar.shim.deferred import defer_unused; defer_unused(); import trio; "
            "maps = open('/proc/self/maps').read(); "
            "print('libssl' in maps, 'libcrypto' in maps, '_ssl' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.split()) == (0, ["False", "False", "False"]), result.stderr
