"""cgroupsPath resolution rules."""

import pytest

from railcar.runtime.cgroups.paths import CgroupPathError, expand_slice, resolve
from railcar.runtime.errors import SpecError


@pytest.mark.parametrize(("spec", "expected"), [
    ("/default/web", "/default/web"),
    ("/a//b/", "/a/b"),
    ("pods/web", "/railcar/pods/web"),
    (None, "/railcar/ctr1"),
    ("", "/railcar/ctr1"),
    ("system.slice:cri-containerd:abc", "/system.slice/cri-containerd-abc.scope"),
    (":docker:abc", "/system.slice/docker-abc.scope"),
    ("kubepods-besteffort-pod12.slice:cri-containerd:abc",
     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"),
])
def test_resolve(spec: str | None, expected: str) -> None:
    assert resolve(spec, "ctr1") == expected


@pytest.mark.parametrize("spec", ["/a/../../etc", "../x", "/", "bad-.slice:p:n", "x.slice:p:"])
def test_resolve_rejects(spec: str) -> None:
    with pytest.raises(CgroupPathError) as e:
        resolve(spec, "ctr1")
    assert isinstance(e.value, SpecError)
    assert e.value.path == "linux.cgroupsPath"


def test_missing_path_needs_a_plain_id() -> None:
    with pytest.raises(CgroupPathError, match="container id"):
        resolve(None, "a/b")


def test_expand_slice() -> None:
    assert expand_slice("-.slice") == ""
    assert expand_slice("a-b.slice") == "/a.slice/a-b.slice"
