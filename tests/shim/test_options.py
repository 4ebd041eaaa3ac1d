"""Runtime options: railcar takes none, and refuses by name what it would otherwise ignore."""

import pytest
from google.protobuf import any_pb2

from railcar.shim.options import OptionsError, check
from railcar.ttrpc_proto.api import runc_options_pb2, runctypes_pb2, runtimeoptions_pb2


def _any(type_url: str, message) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=message.SerializeToString())


def test_no_options_and_empty_ones_ask_for_nothing() -> None:
    check(any_pb2.Any())
    check(_any("runtimeoptions.v1.Options", runtimeoptions_pb2.Options()))  # CRI with no table, 1.6
    check(_any("containerd.runc.v1.Options", runc_options_pb2.Options(systemd_cgroup=True)))


def test_the_io_owner_of_a_user_namespace_passes_railcar_does_it_from_the_mappings() -> None:
    """`ctr run --uidmap` sends the I/O owner: CreateOptions to a runtime that is not runc's."""
    check(_any("containerd.linux.runc.CreateOptions", runctypes_pb2.CreateOptions(io_uid=100000, io_gid=100000)))
    check(_any("containerd.runc.v1.Options", runc_options_pb2.Options(io_uid=100000, io_gid=100000)))
    with pytest.raises(OptionsError, match="CreateOptions no_pivot_root: railcar has no such options"):
        check(_any("containerd.linux.runc.CreateOptions", runctypes_pb2.CreateOptions(no_pivot_root=True, io_uid=1)))


def test_a_config_file_is_refused_by_name() -> None:
    with pytest.raises(OptionsError, match="ConfigPath '/etc/railcar.toml': railcar reads no configuration file"):
        check(_any("runtimeoptions.v1.Options", runtimeoptions_pb2.Options(config_path="/etc/railcar.toml")))


def test_a_table_from_containerd_1_7_may_hold_only_systemd_cgroup() -> None:
    def table(body: str) -> any_pb2.Any:
        return _any("type.googleapis.com/runtimeoptions.v1.Options", runtimeoptions_pb2.Options(config_body=body))

    check(table(b"SystemdCgroup = true\nIoUid = 100000\n"))
    # `containerd config default`'s runc stanza, copied whole: every other key at its zero value
    check(table(b'BinaryName = ""\nCriuImagePath = ""\nIoGid = 0\nNoNewKeyring = false\nRoot = ""\n'
                b'ShimCgroup = ""\nSystemdCgroup = false\n'))
    with pytest.raises(OptionsError, match="BinaryName, Root: railcar has no such options"):
        check(table(b'SystemdCgroup = true\nRoot = "/x"\nBinaryName = "/usr/bin/runc"\nShimCgroup = ""\n'))
    for body in (b"SystemdCgroup = \n", b"\xff = 1"):
        with pytest.raises(OptionsError, match="not TOML"):
            check(table(body))


def test_options_that_do_not_decode_are_refused_as_such() -> None:
    with pytest.raises(OptionsError, match="cannot decode them"):
        check(any_pb2.Any(type_url="runtimeoptions.v1.Options", value=b"\x12\x05ab"))   # a string cut short


def test_runc_options_and_unknown_types_are_refused_by_name() -> None:
    with pytest.raises(OptionsError, match="containerd.runc.v1.Options binary_name: railcar has no such options"):
        check(_any("containerd.runc.v1.Options", runc_options_pb2.Options(binary_name="runc")))
    with pytest.raises(OptionsError, match="'example.v1.Options': railcar takes no runtime options"):
        check(any_pb2.Any(type_url="example.v1.Options", value=b"\x0a\x01x"))
