"""CVE-2019-5736 through the real shim: every process a container is forked from runs a sealed interpreter."""

import os

import pytest

from tests.sealing import runs_sealed

from .conftest import RUNTIME, remove_task, shim_pids

pytestmark = pytest.mark.integration


def _forker_of(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(child) for child in f.read().split()]
    forkers = []
    for child in children:
        with open(f"/proc/{child}/comm") as f:
            if f.read().strip() == "railcar-forker":
                forkers.append(child)
    assert len(forkers) == 1, f"shim {pid} has children {children}, not one forker"
    return forkers[0]


def test_shim_daemons_and_forkers_run_a_sealed_interpreter(cd, image, cid) -> None:
    # Two containers: whichever of them a cold daemon serves and whichever a zygote forked, both are sealed.
    ids = (cid, cid + "-b")
    try:
        for name in ids:
            assert cd.ctr("run", "-d", "--runtime", RUNTIME, image, name, "sleep", "1000").returncode == 0
        for name in ids:
            shim = int((cd.bundle(name) / "shim.pid").read_text())
            assert shim in shim_pids()
            for pid in (shim, _forker_of(shim)):
                assert runs_sealed(pid), f"{pid} runs {os.readlink(f'/proc/{pid}/exe')}"
    finally:
        for name in ids:
            remove_task(cd, name)
