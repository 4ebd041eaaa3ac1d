"""A private containerd with railcar on its PATH, a busybox image, and a leak check after each test.

The containerd (root, state, sockets under a temp dir) lives for the whole session; each test gets
unique container ids and must leave nothing behind: no shim daemon, no socket of ours in
/run/containerd/s, no mount under containerd's state or root, no runtime state, no cgroup.
"""

import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest

from railcar.shim import pool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging"))
import devenv  # noqa: E402
from tests.polling import eventually  # noqa: E402,F401 - the integration tests import it from here

RUNTIME = "io.containerd.railcar.v2"
VENV_BIN = Path(sys.executable).parent
SOCKET_DIR = "/run/containerd/s"
RUNTIME_STATE = "/run/railcar"
ZYGOTE_IDLE_ENV = "RAILCAR_ZYGOTE_IDLE"
ZYGOTE_IDLE = "10"  # seconds: long enough to serve a run of tests, short enough to go soon after


def processes_named(comm: str) -> set[int]:
    """Live (non-zombie) processes whose comm is `comm`."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                head, _, tail = f.read().rpartition(")")
        except OSError:
            continue
        if head.split("(", 1)[1] == comm and tail.split()[0] != "Z":
            found.add(int(name))
    return found


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except OSError:
        return 0


def shim_pids() -> set[int]:
    """Running railcar shim daemons with their forkers and workers. The zygote and its spare daemon
    (railcar-spare, with a forker and its worker) live on between tests; the session stops them. A
    worker is named railcar-forker from its fork to its first line: what a spare's forker forks is
    the spare's, whatever its name says yet."""
    spares = processes_named("railcar-spare")
    helpers = processes_named("railcar-forker") | processes_named("railcar-worker")
    spare_forkers = {pid for pid in helpers if _parent(pid) in spares}
    return processes_named("railcar-shim") | {pid for pid in helpers - spare_forkers
                                              if _parent(pid) not in spare_forkers}


def described(pids: Collection[int]) -> str:
    """`pids` as a leak message wants them: each with its name, state, parent (and its name) and
    command line, so that a leak seen once in CI says what was left."""
    lines = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, _, tail = f.read().rpartition(")")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            lines.append(f"{pid}: gone")
            continue
        state, ppid = tail.split()[:2]
        try:
            with open(f"/proc/{ppid}/comm") as f:
                parent = f.read().strip()
        except OSError:
            parent = "?"
        lines.append(f"{pid} ({head.split('(', 1)[1]}) {state} parent {ppid} ({parent}): {argv}")
    return "\n".join(lines)


def mounts_under(*roots: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if any(p.startswith(str(r)) for r in roots)]


def cgroups_of(parent: str) -> list[str]:
    """Container cgroups under /`parent` still present in any hierarchy (ctr asks for cgroupsPath
    /<namespace>/<id>)."""
    left = []
    for hierarchy in devenv.cgroup_hierarchies():
        group = Path(hierarchy, parent)
        if group.is_dir():
            left += [str(child) for child in group.iterdir() if child.is_dir()]
    return left


def cgroups_parents(namespace: str) -> list[str]:
    """The namespace's cgroup parent (/<namespace>) in each hierarchy."""
    return [path for path in (os.path.join(h, namespace) for h in devenv.cgroup_hierarchies()) if os.path.isdir(path)]


def stop_zygotes(cd: devenv.Containerd) -> None:
    """Stop the zygotes our shims started, and their spare daemons (devenv), and check they went."""
    left = cd.stop_zygotes()
    assert not left, f"zygotes or spare daemons did not stop:\n{described(left)}"


def start_containerd(workdir: Path, cri: bool = False) -> devenv.Containerd:
    """A private containerd under `workdir` with railcar on its PATH and a short zygote idle time."""
    saved = os.environ.get(ZYGOTE_IDLE_ENV)
    os.environ[ZYGOTE_IDLE_ENV] = ZYGOTE_IDLE  # containerd, and so every shim and zygote, inherit it
    try:
        return devenv.start_containerd(workdir, extra_path=[str(VENV_BIN)], cri=cri)
    finally:
        if saved is None:
            del os.environ[ZYGOTE_IDLE_ENV]
        else:
            os.environ[ZYGOTE_IDLE_ENV] = saved


@pytest.fixture(scope="session")
def containerd() -> Iterator[devenv.Containerd]:
    """containerd for the session, in a namespace of its own (so its cgroup parent and runtime state
    directory are ours to remove), with a short zygote idle time; at the end, nothing of it is left."""
    cd = start_containerd(Path(tempfile.mkdtemp(prefix="railcar-it-")))
    cd.namespace = f"railcar-it-{os.getpid()}"
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        cd.stop()  # also removes the namespace's empty cgroup parents
        stop_zygotes(cd)
        runtime_dir = Path(RUNTIME_STATE) / cd.namespace
        if runtime_dir.is_dir():
            runtime_dir.rmdir()  # fails (and so reports) if a container's state is still in it
        assert not cgroups_parents(cd.namespace), "namespace cgroups left"
        assert not mounts_under(cd.workdir), "mounts left"
        shutil.rmtree(cd.workdir)

    _after_the_last_test.append(stop)
    try:
        yield cd
    finally:
        stop()


_after_the_last_test: list[Callable[[], None]] = []
_last_test: list[pytest.Item] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note which test here runs last, in the final order (after -k, --ff and the like)."""
    here = Path(__file__).parent
    _last_test[:] = [item for item in session.items if item.path.parent == here][-1:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Stop the containerd (and so its zygote) right after the last test here, not at the end of
    the session: a zygote still serving the shared socket stands in for the one a later suite
    starts (tests/shim/test_bootstrap), and then idles out under it."""
    try:
        return (yield)
    finally:
        if item in _last_test:
            while _after_the_last_test:
                _after_the_last_test.pop()()


@pytest.fixture(scope="session")
def image(containerd: devenv.Containerd) -> str:
    return devenv.busybox_image(containerd)


def _settled(check: Callable[[], Collection], timeout: float = 10.0) -> Collection:
    """Poll `check()` (returns what is left) until it is empty; what is still left after `timeout`,
    in each of its last two polls: what only came and went in between (a spare forked, or retiring
    at its zygote's idle exit, as the check runs) is not left, and what stays is."""
    deadline = time.monotonic() + timeout
    left = check()
    while left:
        if time.monotonic() > deadline:
            again = check()
            return [item for item in left if item in again]
        time.sleep(0.05)
        left = check()
    return left


class Leftovers:
    """What of railcar's exists for a containerd now, so that a test can check it added nothing:
    shim daemons, sockets in /run/containerd/s, pools' member directories, mounts under containerd's
    state or root, runtime state, and cgroups under /`cgroup_parent` (ctr's is the namespace)."""

    def __init__(self, cd: devenv.Containerd, cgroup_parent: str) -> None:
        self.cd = cd
        self.cgroup_parent = cgroup_parent
        self.runtime_dir = Path(RUNTIME_STATE) / cd.namespace
        self.sockets, self.shims, self.state, self.cgroups = (
            self._sockets(), shim_pids(), self._state(), set(cgroups_of(cgroup_parent)))

    def _sockets(self) -> set[str]:
        found = set(os.listdir(SOCKET_DIR)) if os.path.isdir(SOCKET_DIR) else set()
        if os.path.isdir(pool.MEMBERS_ROOT):
            found |= {f"pool {name}" for name in os.listdir(pool.MEMBERS_ROOT)}
        return found

    def _state(self) -> set[Path]:
        return set(self.runtime_dir.iterdir()) if self.runtime_dir.is_dir() else set()

    def assert_none_new(self) -> None:
        first = described(shim_pids() - self.shims)   # what lingers may not be what is left at the end
        left = _settled(lambda: shim_pids() - self.shims)
        assert not left, f"shim daemons left running:\n{described(left)}\nwhen the test ended:\n{first}"
        assert not _settled(lambda: self._sockets() - self.sockets), "shim sockets or pools left"
        assert not _settled(lambda: mounts_under(self.cd.state, self.cd.root)), "mounts left"
        assert not _settled(lambda: self._state() - self.state), "runtime state left"
        assert not _settled(lambda: set(cgroups_of(self.cgroup_parent)) - self.cgroups), "cgroups left"


@pytest.fixture
def cd(containerd: devenv.Containerd) -> Iterator[devenv.Containerd]:
    """The session containerd, with a check that the test left nothing of railcar's behind."""
    before = Leftovers(containerd, containerd.namespace)
    yield containerd
    before.assert_none_new()


@pytest.fixture
def cid() -> str:
    """A fresh container id."""
    return f"it-{uuid.uuid4().hex[:10]}"


def run(cd: devenv.Containerd, image: str, cid: str, *args: str, ctr_flags: tuple[str, ...] = (),
        input: bytes | None = None, timeout: float = 60):
    """`ctr run --rm --runtime railcar [flags] IMAGE ID ARGS...`"""
    return cd.ctr("run", "--rm", "--runtime", RUNTIME, *ctr_flags, image, cid, *args, input=input,
                  timeout=timeout)


def task_status(cd: devenv.Containerd, cid: str) -> str:
    """The STATUS column of `ctr task ls` for `cid`; "" when containerd lists no such task."""
    for line in cd.ctr("task", "ls").stdout.decode().splitlines():
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return ""


def remove_task(cd: devenv.Containerd, cid: str) -> None:
    """SIGKILL `cid`, wait until it stopped, then remove its task and container (each may be gone
    already). A task that stopped must be removable: a failed Delete would leave its shim behind and
    show up only later as a leak, without the reason."""
    cd.ctr("task", "kill", "-s", "SIGKILL", cid)
    assert eventually(lambda: task_status(cd, cid) in ("STOPPED", "")), f"{cid} did not stop"
    if task_status(cd, cid):
        removed = cd.ctr("task", "rm", cid)
        assert removed.returncode == 0, removed.stderr
    cd.ctr("container", "rm", cid)
