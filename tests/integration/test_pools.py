"""Pools through a real containerd: containers started at once fill pools of the configured size,
each is served by one daemon, and nothing is left once they are gone."""

import os
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import devenv

from .conftest import (RUNTIME, RUNTIME_STATE, Leftovers, cgroups_parents, eventually, mounts_under, remove_task,
                       shim_pids, start_containerd, stop_zygotes, task_status)

pytestmark = [pytest.mark.integration, pytest.mark.cgroup_v2]  # run again in the pure v2 guest

POOL_SIZE = 2
CONTAINERS = 5


@pytest.fixture
def small_pools(monkeypatch):
    """A containerd of its own whose shims take RAILCAR_POOL_SIZE=2 (containerd passes its
    environment on to `start`), with the busybox image; stopped and removed afterwards."""
    monkeypatch.setenv("RAILCAR_POOL_SIZE", str(POOL_SIZE))
    cd = start_containerd(Path(tempfile.mkdtemp(prefix="railcar-pools-")))
    cd.namespace = f"railcar-pools-{os.getpid()}"
    try:
        image = devenv.busybox_image(cd)
        before = Leftovers(cd, cd.namespace)
        yield cd, image
        before.assert_none_new()
    finally:
        cd.stop()
        stop_zygotes(cd)
        runtime_dir = Path(RUNTIME_STATE) / cd.namespace
        if runtime_dir.is_dir():
            runtime_dir.rmdir()
        assert not cgroups_parents(cd.namespace) and not mounts_under(cd.workdir)
        shutil.rmtree(cd.workdir)


def test_containers_started_at_once_fill_pools_of_the_configured_size(small_pools, cid) -> None:
    cd, image = small_pools
    ids = [f"{cid}-{i}" for i in range(CONTAINERS)]
    try:
        with ThreadPoolExecutor(CONTAINERS) as starts:
            results = list(starts.map(
                lambda c: cd.ctr("run", "-d", "--runtime", RUNTIME, image, c, "sleep", "1000"), ids))
        assert [r.returncode for r in results] == [0] * CONTAINERS, [r.stderr for r in results]
        daemons = {c: int((cd.bundle(c) / "shim.pid").read_text()) for c in ids}
        assert set(daemons.values()) <= shim_pids()
        # at most POOL_SIZE containers per daemon, and so at least three daemons for five
        assert max(Counter(daemons.values()).values()) <= POOL_SIZE
        assert len(set(daemons.values())) == -(-CONTAINERS // POOL_SIZE)
        for c in ids:
            result = cd.ctr("task", "exec", "--exec-id", "e", c, "echo", c)
            assert (result.returncode, result.stdout) == (0, f"{c}\n".encode())
        with ThreadPoolExecutor(CONTAINERS) as kills:
            list(kills.map(lambda c: cd.ctr("task", "kill", "-s", "SIGKILL", c), ids))
        assert all(eventually(lambda: task_status(cd, c) == "STOPPED") for c in ids)
        with ThreadPoolExecutor(CONTAINERS) as deletes:
            removed = list(deletes.map(lambda c: cd.ctr("task", "rm", c), ids))
        assert [r.returncode for r in removed] == [0] * CONTAINERS, [r.stderr for r in removed]
        assert eventually(lambda: not set(daemons.values()) & shim_pids())
    finally:
        for c in ids:
            remove_task(cd, c)
