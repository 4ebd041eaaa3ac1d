"""`start` as containerd runs it: one address on stdout, a detached daemon, reuse within a group."""

import fcntl
import json
import marshal
import os
import resource
import signal
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from railcar.shim import paths
from railcar.ttrpc_proto import TtrpcError
from railcar.ttrpc_proto.api import task_v2_pb2 as pb
from railcar.ttrpc_proto.client import connect_unix
from tests.polling import eventually, wait_gone
from tests.sealing import runs_sealed

from .conftest import children_named, run_shim


def test_socket_path_hashes_the_cleaned_join() -> None:
    a = paths.socket_path("/x/c.sock", "default", "g1")
    assert a == paths.socket_path("/x//c.sock/", "default", "g1")
    assert a != paths.socket_path("/x/c.sock", "default", "g2")
    assert a != paths.socket_path("/x/c.sock", "other", "g1")
    assert a.startswith("/run/containerd/s/") and len(os.path.basename(a)) == 64


async def _connect(address: str, container_id: str) -> int:
    async with connect_unix(address) as client:
        response = await client.call("containerd.task.v2.Task", "Connect", pb.ConnectRequest(id=container_id),
                                     pb.ConnectResponse, timeout=5)
        return response.shim_pid


async def _shutdown(address: str) -> None:
    async with connect_unix(address) as client:
        await client.call("containerd.task.v2.Task", "Shutdown", pb.ShutdownRequest(id="x"), empty_pb2.Empty,
                          timeout=5)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def _peer_pid(path: str) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(path)
        return struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]


def _fd_targets(pid: int) -> dict[int, str]:
    """What each fd of `pid` points at (fds closed while we look are skipped)."""
    targets = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            pass
    return targets


async def test_start_spawns_a_detached_daemon_and_reuses_it_for_the_group(bundle: Path, address: str,
                                                                         tmp_path: Path) -> None:
    os.mkfifo(bundle / "log", 0o700)
    log_reader = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK)  # as containerd holds it
    (bundle / "config.json").write_text(json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}))
    # containerd built with Go 1.21+ gives its children back the soft fd limit systemd gave it (1024).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    result = run_shim(["-namespace", "default", "-address", address, "-id", "c1", "start"], bundle,
                      stdin=b"\x0a\x00", prefix=["prlimit", f"--nofile=256:{hard}"])
    assert result.returncode == 0 and result.stderr == b""
    shim_address = result.stdout.decode()
    assert shim_address == "unix://" + paths.socket_path(address, "default", "pod1")
    assert (bundle / "address").read_text() == shim_address
    socket_file = shim_address.removeprefix("unix://")
    assert stat.S_IMODE(os.stat(socket_file).st_mode) == 0o600
    pid = 0
    try:
        pid = await _connect(shim_address, "c1")
        assert os.getpgid(pid) == pid and os.getsid(pid) == os.getsid(0)
        fds = _fd_targets(pid)
        assert fds[0] == fds[1] == "/dev/null" and fds[2].endswith("/log") and fds[3].startswith("socket:")
        assert not any(target.startswith("pipe:") for target in fds.values())
        # A cold daemon re-executed itself from a sealed interpreter; its forker inherits that.
        assert eventually(lambda: len(children_named(pid, "railcar-forker")) == 1)
        assert runs_sealed(pid) and runs_sealed(children_named(pid, "railcar-forker")[0])
        # It serves with its hard fd limit, as a Go shim raises its own; its forker inherits that.
        assert _fd_limits(pid) == _fd_limits(children_named(pid, "railcar-forker")[0]) == (hard, hard)
        # SIGUSR1 dumps its stack to the log, as runc's shim dumps its goroutines, and SIGUSR2 does
        # nothing, as in a Go program: neither ends it, nor its forker (and so its containers).
        forker = children_named(pid, "railcar-forker")[0]
        for target in (pid, forker):
            os.kill(target, signal.SIGUSR2)
            os.kill(target, signal.SIGUSR1)
        assert await _connect(shim_address, "c1") == pid and children_named(pid, "railcar-forker") == [forker]

        other = tmp_path / "other"
        other.mkdir()
        (other / "config.json").write_text((bundle / "config.json").read_text())
        again = run_shim(["-namespace", "default", "-address", address, "-id", "c2", "start"], other)
        assert (again.returncode, again.stdout.decode()) == (0, shim_address)
        assert (other / "address").read_text() == shim_address
        assert await _connect(shim_address, "c2") == pid  # the same daemon serves the group
    finally:
        if pid:
            await _shutdown(shim_address)
    assert wait_gone(pid)
    assert not os.path.exists(socket_file)
    logged = os.read(log_reader, 65536).decode()
    os.close(log_reader)
    assert 'level=info msg="railcar shim serving' in logged and "runtime=io.containerd.railcar.v2" in logged
    assert logged.count("(most recent call first)") >= 2   # the two stacks


def _fd_limits(pid: int) -> tuple[int, int]:
    """The soft and hard RLIMIT_NOFILE of `pid`."""
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def _blocked_on_a_lock(pid: int) -> bool:
    """Whether `pid` waits for a lock (/proc/locks lists waiters with "->")."""
    with open("/proc/locks") as f:
        return any(line.split()[1] == "->" and line.split()[5] == str(pid) for line in f if "->" in line)


def test_start_waits_for_a_start_of_the_same_group_between_bind_and_listen(bundle: Path, address: str) -> None:
    """A socket bound but not listening yet refuses connections, like a dead daemon's: a second
    `start` must wait for the first (the socket directory's lock) instead of replacing it."""
    (bundle / "config.json").write_text(json.dumps({"annotations": {"io.containerd.railcar.v2.group": "race"}}))
    path = paths.socket_path(address, "default", "race")
    os.makedirs(paths.SOCKET_DIR, mode=0o700, exist_ok=True)
    lock = os.open(paths.SOCKET_DIR, os.O_RDONLY | os.O_DIRECTORY)
    first = socket.socket(socket.AF_UNIX)
    second = None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first `start`, half-way
        first.bind(path)
        identity = paths.socket_id(path)
        env = {**os.environ, "RAILCAR_ZYGOTE": "0", "RAILCAR_POOL_SIZE": "1", "RAILCAR_SHIM_GRACE": "1"}
        second = subprocess.Popen([sys.executable, "-m", "railcar.shim", "-namespace", "default", "-address", address,
                                   "-id", "second", "start"], cwd=bundle, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env)
        assert eventually(lambda: _blocked_on_a_lock(second.pid) or second.poll() is not None)
        first.listen(1)
        fcntl.flock(lock, fcntl.LOCK_UN)
        out, _ = second.communicate(timeout=30)
        assert (second.returncode, out.decode()) == (0, "unix://" + path)
        assert paths.socket_id(path) == identity  # the first one's socket, not replaced
    finally:
        if second is not None and second.poll() is None:
            second.kill()
            second.wait()
        first.close()
        os.close(lock)
        if os.path.exists(path):
            os.unlink(path)


def test_start_imports_neither_trio_nor_protobuf(bundle: Path, address: str) -> None:
    result = run_shim(["-namespace", "default", "-address", address, "-id", "light", "start"], bundle,
                      env={"RAILCAR_SHIM_GRACE": "0.2"}, extra_python=["-X", "importtime"])
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.decode().splitlines() if "|" in line}
    assert "railcar.shim.bootstrap" in imported
    assert not {name for name in imported if name.startswith(("trio", "google"))}
    assert "railcar.runtime.sealing" not in imported  # never enters a container: no re-exec to pay
    # Nor the standard library's heavier modules (a config without group annotations is not parsed).
    assert not imported & {"json", "re", "enum", "socket", "hashlib", "signal"}
    socket_file = result.stdout.decode().removeprefix("unix://")
    # No Create ever comes: the daemon gives up after its grace period and removes its socket.
    assert eventually(lambda: not os.path.exists(socket_file))


def test_start_without_config_fails_with_a_message(tmp_path: Path, address: str) -> None:
    result = run_shim(["-namespace", "default", "-address", address, "-id", "x", "start"], tmp_path)
    assert result.returncode == 1 and b"config.json" in result.stderr and result.stdout == b""


def test_version_and_bad_flags() -> None:
    result = run_shim(["-v"], Path("/"))
    assert result.returncode == 0 and b"containerd-shim-railcar-v2" in result.stdout
    result = run_shim(["-frobnicate"], Path("/"))
    assert result.returncode == 2 and b"flag provided but not defined: -frobnicate" in result.stderr


def _zygote() -> int | None:
    """The pid of the zygote serving this checkout, None if none does."""
    try:
        return _peer_pid(paths.zygote_socket())
    except OSError:
        return None


async def test_a_start_that_finds_no_zygote_starts_one_and_waits_for_it(bundle: Path, address: str) -> None:
    before = _zygote()  # normally none; one an earlier test session left running must serve instead
    os.mkfifo(bundle / "log")
    log_reader = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)  # containerd's end
    result = run_shim(["-namespace", "default", "-address", address, "-id", "z0", "start"], bundle,
                      env={"RAILCAR_ZYGOTE": "1", "RAILCAR_ZYGOTE_IDLE": "30"})
    eventually(lambda: _zygote() is not None)  # ready at once, unless start gave up waiting for it
    zygote, pid, shim_address = _zygote(), 0, result.stdout.decode()
    try:
        assert result.returncode == 0 and result.stderr == b""
        assert zygote is not None and before in (None, zygote)
        with open(f"/proc/{zygote}/comm") as f:
            assert f.read().strip() == "railcar-zygote"
        with open(f"/proc/{zygote}/maps") as f:
            assert "libssl" not in f.read()  # what trio imports and railcar never uses is deferred
        pid = await _connect(shim_address, "z0")
        # Forked by the zygote, not spawned cold: it shares the zygote's pages for as long as it runs.
        assert _parent(pid) == zygote
    finally:
        if pid:
            await _shutdown(shim_address)
            assert wait_gone(pid)
        os.close(log_reader)
        if before is None and zygote is not None:
            os.kill(zygote, signal.SIGTERM)
            assert wait_gone(zygote)
    assert before is not None or not os.path.exists(paths.zygote_socket())


@asynccontextmanager
async def _here_and_there(bundle: Path, tmp_path: Path, address: str,
                          prefix: list[str]) -> AsyncIterator[tuple[int, int]]:
    """Two `start`s with the zygote on, the second (another containerd's) run through `prefix`; the
    pids of their daemons. Afterwards both are shut down, and the zygotes that forked them stopped
    unless one was serving already."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((bundle / "config.json").read_text())
    env = {"RAILCAR_ZYGOTE": "1", "RAILCAR_ZYGOTE_IDLE": "30"}
    before = _zygote()
    here = run_shim(["-namespace", "default", "-address", address, "-id", "h0", "start"], bundle, env=env)
    there = run_shim(["-namespace", "default", "-address", address + "2", "-id", "h1", "start"], other, env=env,
                     prefix=prefix)
    daemons = []
    try:
        assert here.returncode == 0 and there.returncode == 0, (here.stderr, there.stderr)
        for result, cid in ((here, "h0"), (there, "h1")):
            daemons.append((await _connect(result.stdout.decode(), cid), result.stdout.decode()))
        yield daemons[0][0], daemons[1][0]
    finally:
        # Only zygotes: a daemon `start` spawned itself (no zygote ready in time, on a slow machine)
        # has init, or a subreaper, as its parent.
        zygotes = {_parent(pid) for pid, _ in daemons if _comm(_parent(pid)) == "railcar-zygote"}
        for pid, shim_address in daemons:
            await _shutdown(shim_address)
            assert wait_gone(pid)
        for zygote in zygotes - {before}:
            os.kill(zygote, signal.SIGTERM)
            assert wait_gone(zygote)


async def test_a_start_with_other_resource_limits_gets_a_zygote_of_its_own(bundle: Path, tmp_path: Path,
                                                                         address: str) -> None:
    """A container without process.rlimits (CRI's) inherits containerd's limits through the shim. A
    containerd restarted with others must not get daemons forked by a zygote that has the old ones:
    on a busy node it never idles out."""
    ours = resource.getrlimit(resource.RLIMIT_CORE)
    assert ours != (0, 0), "this test needs a core limit other than 0"
    async with _here_and_there(bundle, tmp_path, address, ["prlimit", "--core=0:0"]) as (pid_here, pid_there):
        assert resource.prlimit(pid_here, resource.RLIMIT_CORE) == ours
        assert resource.prlimit(pid_there, resource.RLIMIT_CORE) == (0, 0)
        assert _parent(pid_there) != _parent(pid_here)


async def test_a_start_in_another_mount_namespace_gets_a_zygote_of_its_own(bundle: Path, tmp_path: Path,
                                                                            address: str) -> None:
    """A second containerd in a mount namespace of its own must not get daemons forked in the first
    one's: they would set its containers up from the other namespace's mounts."""
    unshare = ["unshare", "--mount", "--propagation", "private"]
    async with _here_and_there(bundle, tmp_path, address, unshare) as (pid_here, pid_there):
        ours = os.readlink("/proc/self/ns/mnt")
        assert os.readlink(f"/proc/{pid_here}/ns/mnt") == ours
        assert os.readlink(f"/proc/{pid_there}/ns/mnt") != ours  # forked by a zygote of its own
        assert _parent(pid_there) != _parent(pid_here)


_STAND_IN_ZYGOTE = """
import socket, sys, time
time.sleep(0.3)  # importing
server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
server.bind(sys.argv[1])
server.listen()
time.sleep(60)
"""


def test_concurrent_starts_spawn_one_zygote_and_all_wait_for_it(tmp_path: Path, monkeypatch) -> None:
    from railcar.shim import bootstrap

    socket_path, spawned = tmp_path / "zygote.sock", tmp_path / "spawned"
    monkeypatch.setattr(paths, "zygote_socket", lambda: str(socket_path))

    def spawn_stand_in() -> int:
        pid = subprocess.Popen([sys.executable, "-c", _STAND_IN_ZYGOTE, str(socket_path)]).pid
        with open(spawned, "a") as f:
            f.write(f"{pid}\n")
        return pid

    monkeypatch.setattr(bootstrap, "_spawn_zygote", spawn_stand_in)
    starts = []
    for _ in range(4):  # as four `start` processes at once
        pid = os.fork()
        if pid == 0:
            os._exit(0 if bootstrap._start_zygote() else 1)
        starts.append(pid)
    try:
        assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in starts] == [0, 0, 0, 0]
        assert len(spawned.read_text().split()) == 1
    finally:
        for pid in map(int, spawned.read_text().split()):
            os.kill(pid, signal.SIGKILL)


async def test_a_running_zygote_forks_the_daemon(bundle: Path, address: str) -> None:
    zygote = subprocess.Popen([sys.executable, "-m", "railcar.shim.zygote"], env={**os.environ},
                              stdin=subprocess.DEVNULL)
    daemons: list[int] = []  # killed at the end if a failed check left them serving
    try:
        assert eventually(lambda: _zygote() is not None)
        serving = _zygote()  # ours, or one an earlier test session left running
        os.mkfifo(bundle / "log")
        log_reader = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)  # containerd's end
        result = run_shim(["-namespace", "default", "-address", address, "-id", "z1", "-debug", "start"], bundle,
                          env={"RAILCAR_ZYGOTE": "1"})
        assert result.returncode == 0 and result.stderr == b""
        shim_address = result.stdout.decode()
        pid = await _connect(shim_address, "z1")
        daemons.append(pid)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[1]) == serving and int(fields[2]) == pid  # forked by the zygote, own group
        with open(f"/proc/{pid}/comm") as f:
            assert f.read().strip() == "railcar-shim"
        fds = _fd_targets(pid)
        assert fds[0] == fds[1] == "/dev/null" and fds[3].startswith("socket:")
        # It logs to the bundle's FIFO and works in the bundle. Its forker, made before the spare was
        # assigned, stays as it was forked: each request brings the daemon's log, and the worker
        # serving it takes the daemon's environment and working directory (test_forker.py).
        [forker] = children_named(pid, "railcar-forker")
        assert fds[2] == str(bundle / "log")
        assert os.readlink(f"/proc/{pid}/cwd") == str(bundle)
        assert _fd_targets(forker)[2] == "/dev/null"
        async with connect_unix(shim_address) as client:  # a request a worker serves (and refuses)
            with pytest.raises(TtrpcError, match="config.json root: is required"):
                await client.call("containerd.task.v2.Task", "Create",
                                  pb.CreateTaskRequest(id="z1", bundle=str(bundle)), pb.CreateTaskResponse, timeout=5)
        logged = os.read(log_reader, 65536).decode().splitlines()
        [worker_line] = [line for line in logged if 'msg="forker request 1: create"' in line]
        assert "level=debug" in worker_line and "namespace=default" in worker_line
        assert f"pid={pid} " not in worker_line  # the worker's own line, with the daemon's settings
        os.close(log_reader)
        # The zygote sealed itself once; its daemons and their forkers share that interpreter.
        assert runs_sealed(serving) and runs_sealed(pid) and runs_sealed(children_named(pid, "railcar-forker")[0])
        await _shutdown(shim_address)
        assert wait_gone(pid)
        for bad in (b"\xffnot marshal", marshal.dumps(["not", "a", "dict"]), marshal.dumps({"flags": ["-bogus"]})):
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
                conn.connect(paths.zygote_socket())
                socket.send_fds(conn, [bad], [0])
                assert set(marshal.loads(conn.recv(4096))) == {"error"}  # answered, nothing forked
        assert _peer_pid(paths.zygote_socket()) == serving  # and still serving
        # It keeps one spare daemon (with its forker) for the next start; the used one became ours.
        assert eventually(lambda: len(children_named(serving, "railcar-spare")) == 1)
        [spare] = children_named(serving, "railcar-spare")
        # (a forker names itself just after its fork: a moment later under load)
        assert spare != pid and eventually(lambda: len(children_named(spare, "railcar-forker")) == 1)
        assert _fd_targets(spare)[3] == "/dev/null"  # held for the listener
        # A spare that died while waiting (killed by hand) is replaced for the start that finds it dead.
        os.kill(spare, signal.SIGKILL)
        assert wait_gone(spare)
        result = run_shim(["-namespace", "default", "-address", address, "-id", "z2", "start"], bundle,
                          env={"RAILCAR_ZYGOTE": "1"})
        assert result.returncode == 0 and result.stderr == b""
        second = await _connect(result.stdout.decode(), "z2")
        daemons.append(second)
        assert second not in (pid, spare) and _parent(second) == serving  # from the zygote, not spawned cold
        await _shutdown(result.stdout.decode())
        assert wait_gone(second)
        assert eventually(lambda: len(children_named(serving, "railcar-spare")) == 1)  # and a new spare waits
        [spare] = children_named(serving, "railcar-spare")
    finally:
        for daemon in daemons:  # gone already after a passing run (and the number maybe reused)
            try:
                if _parent(daemon) == serving:
                    os.kill(daemon, signal.SIGKILL)
            except (OSError, IndexError):
                pass
        zygote.terminate()
        assert zygote.wait(timeout=10) == 0
    if serving == zygote.pid:
        assert not os.path.exists(paths.zygote_socket())
        assert wait_gone(spare)  # the spare goes with its zygote


def test_a_zygote_that_takes_the_listener_without_answering_fails_the_start(tmp_path: Path, monkeypatch) -> None:
    """No second daemon is spawned on a listener a spare may hold already; no zygote at all, a
    zygote that refuses (the real one, to another user), or one that closed with the request
    unread leave the start to spawn the daemon itself."""
    import threading

    from railcar.shim import bootstrap, zygote

    socket_path = tmp_path / "zygote.sock"
    monkeypatch.setattr(paths, "zygote_socket", lambda: str(socket_path))
    listener = socket.socket(socket.AF_UNIX)

    def fork() -> int | None:
        return bootstrap._fork_from_zygote(["-id", "c1"], str(tmp_path), listener, {}, None)

    assert fork() is None  # no zygote
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(str(socket_path))
    server.listen(1)

    def refuse_another_user() -> None:
        monkeypatch.setattr(zygote.os, "geteuid", lambda: os.getuid() + 1)
        assert zygote._serve_one(server.accept()[0], None) is None

    def close_unread() -> None:
        server.accept()[0].close()

    def take_and_go_quiet() -> None:
        conn, _ = server.accept()
        for fd in socket.recv_fds(conn, 1 << 20, 1)[1]:
            os.close(fd)
        conn.close()

    try:
        for zygote_side, taken in ((refuse_another_user, False), (close_unread, False), (take_and_go_quiet, True)):
            thread = threading.Thread(target=zygote_side)
            thread.start()
            try:
                if taken:
                    with pytest.raises(bootstrap.StartError, match="the zygote took the request but did not answer"):
                        fork()
                else:
                    assert fork() is None
            finally:
                thread.join()
    finally:
        server.close()
        listener.close()
