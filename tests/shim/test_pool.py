"""Pools: `start` puts containers that name no group into a shared daemon, the daemon leaves its
pool only when no container is on its way to it, and `delete` cleans up after a daemon that died."""

import json
import os
import resource
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from railcar.shim import paths, pool

from tests.polling import eventually, pid_gone, wait_gone

from .conftest import run_shim
from .test_bootstrap import _connect, _shutdown

LONG_GRACE = {"RAILCAR_POOL_SIZE": "2", "RAILCAR_SHIM_GRACE": "60"}  # joiners count for the whole test


def test_members_record_who_joins_and_the_lock_excludes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pool, "MEMBERS_ROOT", str(tmp_path / "pools"))
    socket_file = tmp_path / "shim.sock"
    daemon = socket.socket(socket.AF_UNIX)
    daemon.bind(str(socket_file))
    daemon.listen(1)
    members = pool.Members(str(socket_file), ours=paths.socket_id(str(socket_file)))
    assert not members.exists() and members.names() == []
    held = members.lock()
    assert members.exists() and members.lock(wait=False) is None  # another open file: excluded
    assert members.lock_existing(timeout=0.1) is None
    for name in ("a", "b", "c"):
        members.add(name)
    with open(os.path.join(members.dir, "a"), "w") as f:
        f.write(repr(time.clock_gettime(time.CLOCK_BOOTTIME) - 60))  # joined a minute ago
    assert sorted(members.names()) == ["a", "b", "c"]
    assert sorted(members.joining(grace=30)) == ["b", "c"]
    assert members.joining(grace=30, served=lambda name: name == "b") == ["c"]
    members.prune(30, served=lambda name: False)  # the lock is busy: nothing happens
    os.close(held)
    members.prune(30, served=lambda name: name == "b")  # "a" is stale and not served: it goes
    assert sorted(members.names()) == ["b", "c"]
    members.remove("c")
    members.remove("c")  # twice is fine
    assert pool.probe(str(socket_file)) == "live"
    members.depart("b")  # its daemon still serves it: kept
    assert members.exists() and socket_file.exists() and members.names() == []
    members.add("ghost")  # a member whose `start` was killed: it does not keep a dead pool
    daemon.close()
    assert pool.probe(str(socket_file)) == "dead"
    members.depart("b")
    assert not members.exists() and not socket_file.exists()


def _age(path: str) -> None:
    """Make the socket at `path` look bound longer ago than pool.ANSWER_AFTER."""
    then = time.time() - pool.ANSWER_AFTER - 5
    os.utime(path, (then, then))


def test_a_daemon_that_takes_new_containers_must_answer_not_only_accept(tmp_path: Path) -> None:
    """The kernel completes a connect into the backlog of a listener whose process never accepts
    (stopped, wedged): only an answer tells a daemon that will serve a new container. A daemon
    whose socket is young may still be coming up (a cold one imports for a second or more): it
    need not answer yet."""
    def listening(name: str, aged: bool = True) -> tuple[str, socket.socket]:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / name))
        listener.listen(8)
        if aged:
            _age(str(tmp_path / name))
        return str(tmp_path / name), listener

    path, young = listening("young.sock", aged=False)
    with young:
        assert pool.probe(path, answer=True) == "live"
    path, silent = listening("silent.sock")
    with silent:
        assert pool.probe(path) == "live"
        assert pool.probe(path, answer=True) == "busy"  # (within ANSWER_TIMEOUT)
    requests = []

    def serve(listener: socket.socket, reply: bytes) -> None:
        conn, _ = listener.accept()
        with conn:
            requests.append(conn.recv(1 << 10))
            conn.sendall(reply)

    for reply, state in ((b"\0" * 10, "live"), (b"", "busy")):  # an answer; closed without one
        path, listener = listening(f"{state}.sock")
        with listener:
            server = threading.Thread(target=serve, args=(listener, reply))
            server.start()
            assert pool.probe(path, answer=True) == state
            server.join()
    assert requests == [pool._ANSWER_PROBE] * 2


def test_a_daemon_never_dissolves_a_pool_a_newer_daemon_took_over(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pool, "MEMBERS_ROOT", str(tmp_path / "pools"))
    socket_file = tmp_path / "shim.sock"
    socket_file.touch()
    old = pool.Members(str(socket_file), ours=paths.socket_id(str(socket_file)))
    (tmp_path / "newer").touch()
    os.replace(tmp_path / "newer", socket_file)  # a newer daemon's socket on the same path
    os.close(old.lock())
    old.add("new-member")
    old.dissolve()
    assert not old.prune(0, served=lambda name: False)  # not ours: nothing pruned either
    assert old.names() == ["new-member"] and socket_file.exists()
    socket_file.unlink()  # no socket at all: nobody took it over
    old.dissolve()
    assert not old.exists()


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


def _start(bundle: Path, address: str, container_id: str, env: dict[str, str] = LONG_GRACE) -> str:
    result = run_shim(["-namespace", "default", "-address", address, "-id", container_id, "start"], bundle,
                      env=env)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    return result.stdout.decode()


def _delete(bundle: Path, address: str, container_id: str) -> None:
    result = run_shim(["-namespace", "default", "-address", address, "-id", container_id, "-bundle", str(bundle),
                       "delete"], bundle)
    assert result.returncode == 0 and result.stderr == b"", result.stderr


def _dissolve(socket_path: str) -> None:
    """Remove a pool's members, socket and directory, whatever its daemon left."""
    members = pool.Members(socket_path)
    if members.exists():
        for name in members.names():
            members.remove(name)
        members.dissolve()


@pytest.fixture
def pools(address: str) -> Iterator[list[int]]:
    """Daemon pids a test adds; afterwards each is killed if alive and every pool of `address` (and
    any socket left by a group of it) is removed, whatever the test left."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not pid_gone(pid):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
    for index in range(4):
        _dissolve(paths.socket_path(address, "default", pool.group(index)))
    for group in ("mine", "c1", "pod3"):
        try:
            os.unlink(paths.socket_path(address, "default", group))
        except FileNotFoundError:
            pass


async def test_start_fills_a_pool_then_the_next_and_a_group_of_its_own_opts_out(
        tmp_path: Path, address: str, pools: list[int]) -> None:
    bundles = {cid: _bundle(tmp_path, cid) for cid in ("c1", "c2", "c3")}
    first = _start(bundles["c1"], address, "c1")
    assert first == "unix://" + paths.socket_path(address, "default", pool.group(0))
    assert (bundles["c1"] / pool.MARKER_FILE).exists()
    assert _start(bundles["c2"], address, "c2") == first
    second = _start(bundles["c3"], address, "c3")  # pool 0 is full (RAILCAR_POOL_SIZE=2)
    assert second == "unix://" + paths.socket_path(address, "default", pool.group(1))
    own = _bundle(tmp_path, "own", {"io.containerd.railcar.v2.group": "mine"})
    mine = _start(own, address, "own")
    assert mine == "unix://" + paths.socket_path(address, "default", "mine")
    assert not (own / pool.MARKER_FILE).exists()
    zero, one = (pool.Members(a.removeprefix("unix://")) for a in (first, second))
    pools += [await _connect(first, "c1"), await _connect(second, "c3"), await _connect(mine, "own")]
    assert await _connect(first, "c2") == pools[0] and len(set(pools)) == 3
    assert sorted(zero.names()) == ["c1", "c2"] and one.names() == ["c3"]
    # No Create came, but c1 and c2 joined within the grace period: the daemon stays for them.
    await _shutdown(first)
    time.sleep(1)
    assert not pid_gone(pools[0]) and os.path.exists(zero.socket_path)
    _delete(bundles["c1"], address, "c1")  # their Creates failed: containerd ran `delete`
    assert not pid_gone(pools[0])
    _delete(bundles["c2"], address, "c2")
    assert wait_gone(pools[0], timeout=3)  # it tries again to leave, and nobody is joining any more
    assert not zero.exists() and not os.path.exists(zero.socket_path)
    await _shutdown(mine)  # no pool: no member holds it back
    assert wait_gone(pools[2], timeout=3)


async def test_a_start_with_other_resource_limits_fills_pools_of_its_own(tmp_path: Path, address: str,
                                                                        pools: list[int]) -> None:
    """A container without process.rlimits (CRI's) inherits containerd's limits through its shim: a
    containerd restarted with others must not get the old ones from a pool's daemon (runc's shim is
    spawned fresh, with containerd's current limits)."""
    here = _bundle(tmp_path, "c1")
    first = _start(here, address, "c1")
    there = _bundle(tmp_path, "c2")
    result = run_shim(["-namespace", "default", "-address", address, "-id", "c2", "start"], there, env=LONG_GRACE,
                      prefix=["prlimit", "--core=0:0"])
    assert result.returncode == 0, result.stderr
    other = result.stdout.decode()
    try:
        assert other != first   # pool 0 has room, but not for these limits
        pools += [await _connect(first, "c1"), await _connect(other, "c2")]
        ours = resource.getrlimit(resource.RLIMIT_CORE)
        assert ours != (0, 0), "this test needs a core limit other than 0"
        assert [resource.prlimit(pid, resource.RLIMIT_CORE) for pid in pools] == [ours, (0, 0)]
        for shim_address in (first, other):
            await _shutdown(shim_address)
        _delete(here, address, "c1")   # their Creates never came: containerd ran `delete`
        _delete(there, address, "c2")
        assert all(wait_gone(pid, timeout=3) for pid in pools)
    finally:
        _dissolve(other.removeprefix("unix://"))


def test_the_code_identity_follows_railcar_the_interpreter_and_the_installed_packages(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    site = tmp_path / "site-packages"
    for package in ("shim", "runtime", "io", "ttrpc_proto"):
        (site / "railcar" / package).mkdir(parents=True)
        (site / "railcar" / package / "m.py").write_text("")
    python = tmp_path / "python3"
    python.write_text("")
    monkeypatch.setattr(paths, "__file__", str(site / "railcar" / "shim" / "paths.py"))
    monkeypatch.setattr(sys, "executable", str(python))

    def identity() -> str:
        monkeypatch.setattr(paths, "_identity", None)
        return paths.code_identity()

    seen = [identity()]
    for changed in (site / "railcar" / "runtime" / "m.py", python, site):   # a file, the interpreter, pip
        os.utime(changed, ns=(1, changed.stat().st_mtime_ns + 1_000_000_000))
        seen.append(identity())
    assert len(set(seen)) == 4 and identity() == seen[-1]


async def test_after_an_upgrade_new_containers_fill_new_pools_those_of_running_pods_too(
        tmp_path: Path, address: str, pools: list[int]) -> None:
    """An upgrade changes the code new daemons run; a new container must not join a pool of the old
    code's daemons (runc: each new shim is the new binary), nor a running pod's (runc's old pod shim
    runs the new runc binary for it)."""
    installed = Path(paths.__file__).resolve().parents[1]
    copy = tmp_path / "upgraded"
    for package in ("shim", "runtime", "io", "ttrpc_proto"):
        shutil.copytree(installed / package, copy / "railcar" / package, ignore=shutil.ignore_patterns("__pycache__"))
    upgraded = {**LONG_GRACE, "PYTHONPATH": str(copy)}
    sandbox = _start(_bundle(tmp_path, "pod1", _in_pod("pod1")), address, "pod1")  # pool 0, one place left
    pools.append(await _connect(sandbox, "pod1"))
    new = _start(_bundle(tmp_path, "c1", {}), address, "c1", env=upgraded)
    try:
        pools.append(await _connect(new, "c1"))
        assert new != sandbox and pools[1] != pools[0]
        with open(f"/proc/{pools[1]}/environ", "rb") as f:
            assert f"PYTHONPATH={copy}".encode() in f.read().split(b"\0")  # it runs the copy
        assert _start(_bundle(tmp_path, "app", _in_pod("pod1")), address, "app", env=upgraded) == new
        assert _start(_bundle(tmp_path, "old", _in_pod("pod1")), address, "old") == sandbox   # same code: joins
        for cid, env in (("c1", upgraded), ("app", upgraded), ("old", LONG_GRACE), ("pod1", LONG_GRACE)):
            result = run_shim(["-namespace", "default", "-address", address, "-id", cid, "-bundle",
                               str(tmp_path / cid), "delete"], tmp_path / cid, env=env)
            assert result.returncode == 0, result.stderr
        for shim in (new, sandbox):
            await _shutdown(shim)   # as containerd does after the last Delete
        assert all(wait_gone(pid, timeout=5) for pid in pools)   # each left its pool, its last member gone
        assert not os.path.exists(new.removeprefix("unix://")) and not os.path.exists(sandbox.removeprefix("unix://"))
    finally:
        _dissolve(new.removeprefix("unix://"))   # the fixture knows this code's pools only


def _in_pod(name: str) -> dict[str, str]:
    return {"io.kubernetes.cri.sandbox-id": name}


async def test_a_pods_containers_join_its_sandboxs_pool_even_when_it_is_full(
        tmp_path: Path, address: str, pools: list[int]) -> None:
    """CRI names a pod's sandbox container after the pod: the pod's other containers find its
    daemon through the sandbox's bundle, as runc's shim serves a pod from one process."""
    filler = _start(_bundle(tmp_path, "c0"), address, "c0")
    sandbox = _start(_bundle(tmp_path, "pod1", _in_pod("pod1")), address, "pod1")
    assert sandbox == filler == "unix://" + paths.socket_path(address, "default", pool.group(0))
    # pool 0 is full (size 2); a container of a pod whose sandbox is not a container goes to pool 1
    stranger = _start(_bundle(tmp_path, "x", _in_pod("pod2")), address, "x")
    assert stranger == "unix://" + paths.socket_path(address, "default", pool.group(1))
    assert _start(_bundle(tmp_path, "app", _in_pod("pod1")), address, "app") == sandbox
    zero = pool.Members(sandbox.removeprefix("unix://"))
    assert sorted(zero.names()) == ["app", "c0", "pod1"]
    pools += [await _connect(sandbox, "pod1"), await _connect(stranger, "x")]
    assert await _connect(sandbox, "app") == pools[0] != pools[1]


async def test_a_pod_is_found_past_a_gap_in_the_pools_and_in_a_daemon_of_its_own(
        tmp_path: Path, address: str, pools: list[int]) -> None:
    bundles = {cid: _bundle(tmp_path, cid) for cid in ("c0", "c1")}
    first = _start(bundles["c0"], address, "c0")
    _start(bundles["c1"], address, "c1")
    sandbox = _start(_bundle(tmp_path, "pod1", _in_pod("pod1")), address, "pod1")  # pool 1: 0 is full
    assert sandbox == "unix://" + paths.socket_path(address, "default", pool.group(1))
    pools += [await _connect(first, "c0"), await _connect(sandbox, "pod1")]
    os.kill(pools[0], signal.SIGKILL)  # pool 0 goes away: a gap before the pod's pool
    assert wait_gone(pools[0])
    for cid, bundle in bundles.items():
        _delete(bundle, address, cid)
    assert not pool.Members(first.removeprefix("unix://")).exists()
    assert _start(_bundle(tmp_path, "app", _in_pod("pod1")), address, "app") == sandbox
    # a pod started while pools were off (or by an older railcar) has a daemon of its own: used
    own = _start(_bundle(tmp_path, "pod3", _in_pod("pod3")), address, "pod3", env={**LONG_GRACE, pool.POOL_ENV: "1"})
    assert own == "unix://" + paths.socket_path(address, "default", "pod3")
    pools.append(await _connect(own, "pod3"))
    app3 = _bundle(tmp_path, "app3", _in_pod("pod3"))
    assert _start(app3, address, "app3") == own and not (app3 / pool.MARKER_FILE).exists()
    assert await _connect(own, "app3") == pools[2]
    # a sandbox in a group of its own is no pod daemon: the pod's other containers are pooled
    mine = _start(_bundle(tmp_path, "pod4", {**_in_pod("pod4"), "io.containerd.railcar.v2.group": "mine"}),
                  address, "pod4")
    assert mine == "unix://" + paths.socket_path(address, "default", "mine")
    pools.append(await _connect(mine, "pod4"))
    pooled = _start(_bundle(tmp_path, "app4", _in_pod("pod4")), address, "app4")
    assert pooled == "unix://" + paths.socket_path(address, "default", pool.group(0))  # pool 1 is full
    pools.append(await _connect(pooled, "app4"))


async def test_a_daemon_leaves_its_pool_once_a_join_is_older_than_the_grace_period(
        tmp_path: Path, address: str, pools: list[int]) -> None:
    shim_address = _start(_bundle(tmp_path, "c1"), address, "c1", env={**LONG_GRACE, "RAILCAR_SHIM_GRACE": "2"})
    assert shim_address == "unix://" + paths.socket_path(address, "default", pool.group(0))
    members = pool.Members(shim_address.removeprefix("unix://"))
    assert members.names() == ["c1"]
    pools.append(await _connect(shim_address, "c1"))
    assert wait_gone(pools[0])  # no Create within the grace period, and c1's join is that old
    assert not members.exists() and not os.path.exists(members.socket_path)


async def test_a_daemon_does_not_leave_while_a_start_holds_the_lock_and_joins(
        tmp_path: Path, address: str, pools: list[int]) -> None:
    bundle = _bundle(tmp_path, "c1")
    shim_address = _start(bundle, address, "c1")
    members = pool.Members(shim_address.removeprefix("unix://"))
    pools.append(await _connect(shim_address, "c1"))
    _delete(bundle, address, "c1")  # as if c1 was deleted
    lock = members.lock()  # a `start` is deciding
    try:
        await _shutdown(shim_address)
        time.sleep(0.5)
        assert not pid_gone(pools[0])  # it cannot leave while the lock is held ...
        members.add("c2")  # ... and the `start` joined it meanwhile
    finally:
        os.close(lock)
    time.sleep(1)
    assert not pid_gone(pools[0]) and members.names() == ["c2"]
    members.remove("c2")  # c2 is gone (its Create failed; containerd ran `delete`)
    assert wait_gone(pools[0], timeout=3)
    assert not members.exists() and not os.path.exists(members.socket_path)


async def test_sigterm_takes_a_daemon_out_of_its_pool_before_it_stops_serving(
        tmp_path: Path, address: str, pools: list[int]) -> None:
    shim_address = _start(_bundle(tmp_path, "c1"), address, "c1")
    members = pool.Members(shim_address.removeprefix("unix://"))
    pools.append(await _connect(shim_address, "c1"))
    os.kill(pools[0], signal.SIGTERM)  # although c1 is joining
    assert eventually(lambda: not members.exists() and not os.path.exists(members.socket_path), timeout=3)
    assert wait_gone(pools[0])


async def test_a_pool_whose_daemon_died_gets_a_new_one_and_deletes_clean_up(
        tmp_path: Path, address: str, pools: list[int]) -> None:
    bundles = {cid: _bundle(tmp_path, cid) for cid in ("a", "b", "new")}
    shim_address = _start(bundles["a"], address, "a")
    assert _start(bundles["b"], address, "b") == shim_address
    members = pool.Members(shim_address.removeprefix("unix://"))
    pools.append(await _connect(shim_address, "a"))
    os.kill(pools[0], signal.SIGKILL)
    assert wait_gone(pools[0])
    assert _start(bundles["new"], address, "new") == shim_address
    pools.append(await _connect(shim_address, "new"))
    assert pools[1] != pools[0] and members.names() == ["new"]  # the dead daemon's members went
    _delete(bundles["a"], address, "a")  # `delete` after the dead daemon leaves the live pool alone
    assert members.names() == ["new"] and os.path.exists(members.socket_path)
    os.kill(pools[1], signal.SIGKILL)
    assert wait_gone(pools[1])
    # containerd runs `delete` for every member at once after a daemon died; while someone holds the
    # pool's lock they wait for it, and then one of them removes the pool
    lock = members.lock()
    try:
        results = [_delete_async(bundles[cid], address, cid) for cid in ("b", "new")]
        time.sleep(0.5)
        assert [result.poll() for result in results] == [None, None]
    finally:
        os.close(lock)
    for result in results:
        assert result.wait(timeout=30) == 0 and result.stderr.read() == b""
    assert not members.exists() and not os.path.exists(members.socket_path)


def _delete_async(bundle: Path, address: str, container_id: str):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "railcar.shim", "-namespace", "default", "-address", address,
                             "-id", container_id, "-bundle", str(bundle), "delete"], cwd=bundle,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_a_stopped_pool_daemon_takes_no_new_container(tmp_path: Path, address: str, pools: list[int]) -> None:
    """A pool's daemon that does not answer (stopped here; wedged alike) would hold up every
    container handed to it: a new one goes to the next pool, and the stopped one's own container
    is still its own once it runs again."""
    first = _start(_bundle(tmp_path, "c1"), address, "c1")
    pools.append(await _connect(first, "c1"))
    _age(first.removeprefix("unix://"))  # (a young daemon's silence is taken for its coming up)
    os.kill(pools[0], signal.SIGSTOP)
    try:
        second = _start(_bundle(tmp_path, "c2"), address, "c2")
    finally:
        os.kill(pools[0], signal.SIGCONT)
    assert second == "unix://" + paths.socket_path(address, "default", pool.group(1))
    pools.append(await _connect(second, "c2"))
    assert pools[1] != pools[0] and await _connect(first, "c1") == pools[0]
    assert pool.Members(first.removeprefix("unix://")).names() == ["c1"]
    for bundle, cid in ((tmp_path / "c1", "c1"), (tmp_path / "c2", "c2")):
        _delete(bundle, address, cid)


@pytest.mark.parametrize("group", [pool.group(0), "./railcar-pool-0", "../default/railcar-pool-0", ".."])
def test_a_group_annotation_cannot_take_a_pools_name(tmp_path: Path, address: str, group: str) -> None:
    bundle = _bundle(tmp_path, "c1", {"io.containerd.railcar.v2.group": group})
    result = run_shim(["-namespace", "default", "-address", address, "-id", "c1", "start"], bundle)
    assert result.returncode == 1 and f"io.containerd.railcar.v2.group={group}: ".encode() in result.stderr
    assert not os.path.exists(paths.socket_path(address, "default", pool.group(0)))


@pytest.mark.parametrize("size", ["1", "0"])
async def test_a_pool_size_of_one_gives_each_container_its_own_daemon(tmp_path: Path, address: str, size: str,
                                                                     pools: list[int]) -> None:
    bundle = _bundle(tmp_path, "c1")
    shim_address = _start(bundle, address, "c1", env={"RAILCAR_POOL_SIZE": size})
    assert shim_address == "unix://" + paths.socket_path(address, "default", "c1")
    pools.append(await _connect(shim_address, "c1"))
    await _shutdown(shim_address)  # no member holds it back
    assert wait_gone(pools[0], timeout=3)


def test_a_daemon_whose_socket_was_replaced_touches_nothing(tmp_path: Path, monkeypatch) -> None:
    """`start` gave up on a zygote that answered late and another daemon took the path: the late
    daemon finds that its listener is not the file `start` bound for it, and leaves the pool be."""
    import logging

    from railcar.shim.daemon import Assignment
    from railcar.shim.flags import Flags

    monkeypatch.setattr(pool, "MEMBERS_ROOT", str(tmp_path / "pools"))
    path = str(tmp_path / "shim.sock")
    late = socket.socket(socket.AF_UNIX)
    late.bind(path)
    monkeypatch.setenv(paths.SOCKET_ID_ENV, paths.socket_id(path))
    newer = socket.socket(socket.AF_UNIX)
    newer.bind(str(tmp_path / "newer.sock"))
    os.replace(tmp_path / "newer.sock", path)
    members = pool.Members(path)
    os.close(members.lock())
    members.add("served-by-the-newer-one")
    try:
        assignment = Assignment(Flags(), str(tmp_path), late, logging.getLogger("test"))
        assert not assignment.reachable and assignment.members is None
        assert paths.SOCKET_ID_ENV not in os.environ  # the forker and containers do not inherit it
        assert assignment.leave(force=True)
        assert members.names() == ["served-by-the-newer-one"] and os.path.exists(path)
    finally:
        late.close()
        newer.close()
