"""Pools: `start` puts containers that name no group into a shared daemon, and the daemon leaves
its pool only when no container is on its way to it."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from railcar.shim import paths, pool

from .conftest import pid_gone, run_shim, wait_gone
from .test_bootstrap import _connect, _shutdown

POOLED = {"RAILCAR_POOL_SIZE": "2", "RAILCAR_SHIM_GRACE": "3"}


def test_members_record_who_joins_and_the_lock_excludes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pool, "MEMBERS_ROOT", str(tmp_path / "pools"))
    socket_file = tmp_path / "shim.sock"
    socket_file.touch()
    members = pool.Members(str(socket_file))
    assert not members.exists() and members.names() == []
    held = members.lock()
    assert members.exists() and members.lock(wait=False) is None  # another open file: excluded
    members.add("a")
    members.add("b")
    old = time.time() - 60
    os.utime(os.path.join(members.dir, "a"), (old, old))
    assert sorted(members.names()) == ["a", "b"] and members.joining(grace=30) == ["b"]
    os.close(held)
    members.dissolve_if_unserved(lambda path: True)  # members left: kept
    members.remove("a")
    members.remove("b")
    members.remove("b")  # twice is fine
    members.dissolve_if_unserved(lambda path: True)  # a daemon still serves it: kept
    assert members.exists() and socket_file.exists()
    members.dissolve_if_unserved(lambda path: False)
    assert not members.exists() and not socket_file.exists()


def test_pool_size_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(pool.POOL_ENV, raising=False)
    assert pool.size() == pool.DEFAULT_SIZE > 1
    for value, size in (("1", 1), ("32", 32), ("lots", pool.DEFAULT_SIZE)):
        monkeypatch.setenv(pool.POOL_ENV, value)
        assert pool.size() == size
    assert pool.poolable("it-1.a_b") and not pool.poolable("a/b") and not pool.poolable(".x") \
        and not pool.poolable("")


def _bundle(tmp_path: Path, name: str, annotations: dict[str, str] | None = None) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": annotations or {}}))
    return path


def _start(bundle: Path, address: str, container_id: str) -> str:
    result = run_shim(["-namespace", "default", "-address", address, "-id", container_id, "start"], bundle,
                      env=POOLED)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    return result.stdout.decode()


def _delete(bundle: Path, address: str, container_id: str) -> None:
    result = run_shim(["-namespace", "default", "-address", address, "-id", container_id, "-bundle", str(bundle),
                       "delete"], bundle, env=POOLED)
    assert result.returncode == 0, result.stderr


async def test_start_fills_a_pool_then_the_next_and_a_daemon_leaves_when_no_one_joins(tmp_path: Path,
                                                                                       address: str) -> None:
    bundles = {cid: _bundle(tmp_path, cid) for cid in ("c1", "c2", "c3")}
    own = _bundle(tmp_path, "own", {"io.containerd.railcar.v2.group": "mine"})
    first = _start(bundles["c1"], address, "c1")
    assert first == "unix://" + paths.socket_path(address, "default", pool.group(0))
    assert _start(bundles["c2"], address, "c2") == first
    second = _start(bundles["c3"], address, "c3")  # pool 0 is full (RAILCAR_POOL_SIZE=2)
    assert second == "unix://" + paths.socket_path(address, "default", pool.group(1))
    mine = _start(own, address, "own")
    assert mine == "unix://" + paths.socket_path(address, "default", "mine")
    zero, one = (pool.Members(a.removeprefix("unix://")) for a in (first, second))
    pids = []
    try:
        pids = [await _connect(first, "c1"), await _connect(first, "c2"), await _connect(second, "c3"),
                await _connect(mine, "own")]
        assert pids[0] == pids[1] != pids[2] and pids[3] not in pids[:3]
        assert sorted(zero.names()) == ["c1", "c2"] and one.names() == ["c3"]
        # No Create came, but c1 and c2 joined within the grace period: the daemon stays for them.
        await _shutdown(first)
        time.sleep(1)
        assert not pid_gone(pids[0]) and os.path.exists(zero.socket_path)
        _delete(bundles["c1"], address, "c1")
        _delete(bundles["c2"], address, "c2")
        assert wait_gone(pids[0])  # it tries again to leave, and nobody is joining any more
        assert not zero.exists() and not os.path.exists(zero.socket_path)
        # c3 never got a Create: after the grace period its daemon leaves the pool by itself.
        assert wait_gone(pids[2])
        assert not one.exists() and not os.path.exists(one.socket_path)
        assert wait_gone(pids[3])  # so does the daemon of the group of its own (it had no pool)
    finally:
        for pid in pids:
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)
        for members in (zero, one):
            members.dissolve_if_unserved(lambda path: False)


async def test_a_daemon_does_not_leave_while_a_start_holds_the_lock_and_joins(tmp_path: Path, address: str) -> None:
    bundle = _bundle(tmp_path, "c1")
    shim_address = _start(bundle, address, "c1")
    members = pool.Members(shim_address.removeprefix("unix://"))
    pid = await _connect(shim_address, "c1")
    try:
        _delete(bundle, address, "c1")  # as if c1 was deleted
        lock = members.lock()  # a `start` is deciding
        try:
            await _shutdown(shim_address)
            time.sleep(0.5)
            assert not pid_gone(pid)  # it cannot leave while the lock is held ...
            members.add("c2")  # ... and the `start` joined it meanwhile
        finally:
            os.close(lock)
        time.sleep(1)
        assert not pid_gone(pid) and members.names() == ["c2"]
        members.remove("c2")  # c2 is gone (its Create failed; containerd ran `delete`)
        assert wait_gone(pid)
        assert not members.exists() and not os.path.exists(members.socket_path)
    finally:
        if not pid_gone(pid):
            os.kill(pid, signal.SIGKILL)
        members.dissolve_if_unserved(lambda path: False)


async def test_a_pool_whose_daemon_died_gets_a_new_one_without_its_members(tmp_path: Path, address: str) -> None:
    old, new = _bundle(tmp_path, "old"), _bundle(tmp_path, "new")
    shim_address = _start(old, address, "old")
    members = pool.Members(shim_address.removeprefix("unix://"))
    pids = [await _connect(shim_address, "old")]
    try:
        os.kill(pids[0], signal.SIGKILL)
        assert wait_gone(pids[0])
        assert _start(new, address, "new") == shim_address
        pids.append(await _connect(shim_address, "new"))
        assert pids[1] != pids[0] and members.names() == ["new"]
        # `delete` after the old daemon: it leaves the live pool alone
        _delete(old, address, "old")
        assert members.names() == ["new"] and os.path.exists(members.socket_path)
        os.kill(pids[1], signal.SIGKILL)
        assert wait_gone(pids[1])
        _delete(new, address, "new")  # the last one cleans up after the dead daemon
        assert not members.exists() and not os.path.exists(members.socket_path)
    finally:
        for pid in pids:
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)
        members.dissolve_if_unserved(lambda path: False)


@pytest.mark.parametrize("size", ["1", "0"])
async def test_a_pool_size_of_one_gives_each_container_its_own_daemon(tmp_path: Path, address: str,
                                                                     size: str) -> None:
    bundle = _bundle(tmp_path, "c1")
    result = run_shim(["-namespace", "default", "-address", address, "-id", "c1", "start"], bundle,
                      env={"RAILCAR_POOL_SIZE": size})
    shim_address = result.stdout.decode()
    assert shim_address == "unix://" + paths.socket_path(address, "default", "c1")
    pid = await _connect(shim_address, "c1")
    await _shutdown(shim_address)  # no member holds it back
    assert wait_gone(pid)
