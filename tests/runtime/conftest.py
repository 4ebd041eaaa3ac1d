"""Fixtures for runtime tests: busybox bundles, a subreaper test process, and a leak check.

Every test runs real containers (real namespaces, mounts, cgroups) from a rootfs built from the
host's busybox-static, and must leave no mount, process, cgroup, network namespace or fd behind.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from railcar.runtime import Container, CreateResult
from railcar.runtime import syscalls as sc
from railcar.runtime.syscalls import readable

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging"))
import devenv  # noqa: E402

BUSYBOX = "/bin/busybox"
CGROUP_PARENT = f"/railcar-test-{os.getpid()}"
CGROUP_ROOT = "/sys/fs/cgroup"
DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN",
                "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_SYS_CHROOT"]


def default_config(container_id: str) -> dict:
    """What `runc spec` writes, with a cgroupsPath under the test's own parent."""
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "railcar",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "cgroupsPath": f"{CGROUP_PARENT}/{container_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }


@pytest.fixture(scope="session")
def busybox_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox rootfs template; bundles hard-link its binary."""
    base = str(tmp_path_factory.mktemp("busybox"))
    os.makedirs(f"{base}/bin")
    shutil.copy2(BUSYBOX, f"{base}/bin/busybox")
    return base


def build_rootfs(base: str, rootfs: str, *, copy_binary: bool = False) -> None:
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
        os.makedirs(f"{rootfs}/{d}", exist_ok=True)
    os.chmod(f"{rootfs}/tmp", 0o1777)
    (shutil.copy2 if copy_binary else os.link)(f"{base}/bin/busybox", f"{rootfs}/bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", f"{rootfs}/bin/{applet}")
    with open(f"{rootfs}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")


@dataclass
class Bundle:
    path: str
    id: str
    config: dict

    @property
    def rootfs(self) -> str:
        return os.path.join(self.path, "rootfs")

    def write(self) -> None:
        with open(os.path.join(self.path, "config.json"), "w") as f:
            json.dump(self.config, f)


@pytest.fixture
def make_bundle(tmp_path, busybox_base) -> Callable[..., Bundle]:
    """make_bundle(args, id=..., edit=fn(config)) -> a written bundle with a busybox rootfs."""
    counter = iter(range(1000))

    def make(args: list[str], *, edit: Callable[[dict], None] | None = None,
             copy_binary: bool = False) -> Bundle:
        cid = f"t{os.getpid()}-{next(counter)}"
        path = str(tmp_path / cid)
        os.makedirs(path)
        build_rootfs(busybox_base, os.path.join(path, "rootfs"), copy_binary=copy_binary)
        config = copy.deepcopy(default_config(cid))
        config["process"]["args"] = args
        if edit is not None:
            edit(config)
        bundle = Bundle(path, cid, config)
        bundle.write()
        return bundle

    return make


@pytest.fixture
def state_root(tmp_path) -> str:
    return str(tmp_path / "state")


@dataclass
class Ran:
    status: int
    output: str


def run_container(bundle: Bundle, root: str) -> Ran:
    """create + start + wait + delete, with stdout/stderr captured."""
    container, created = create_captured(bundle, root)
    container.start()
    return finish(container, created)


def create_captured(bundle: Bundle, root: str) -> tuple[Container, "Captured"]:
    r, w = os.pipe()
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        container, result = Container.create(bundle.id, bundle.path, root=root,
                                             stdio=(null, w, w))
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
        os.close(null)
    return container, Captured(result, r)


@dataclass
class Captured:
    result: CreateResult
    read_fd: int

    def read_all(self) -> str:
        chunks = []
        while chunk := os.read(self.read_fd, 65536):
            chunks.append(chunk)
        os.close(self.read_fd)
        return b"".join(chunks).decode()

    def read_until(self, end: str, timeout: float = 30.0) -> str:
        """What the process wrote up to `end` (at most `timeout` seconds): read before a test kills
        a process it wants output from, which the kill would otherwise race."""
        data, deadline = b"", time.monotonic() + timeout
        while not data.endswith(end.encode()):
            left = deadline - time.monotonic()
            if left <= 0 or not readable(self.read_fd, left) or not (chunk := os.read(self.read_fd, 65536)):
                raise AssertionError(f"no {end!r} from the container within {timeout} s, only {data!r}")
            data += chunk
        return data.decode()


def exec_captured(container: Container, process: dict) -> Ran:
    """exec ``process`` with stdout/stderr on one pipe; wait for it and return its status and output."""
    r, w = os.pipe()
    try:
        result = container.exec(process, stdio=(w, w, w))
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    output = Captured(result, r).read_all()
    return Ran(wait_for(result.pid), output)


def read_console(fd: int) -> str:
    """Read a pty master until the slave side is gone (EIO, or EOF), then close it."""
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError:   # EIO once every slave fd is closed
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def wait_for(pid: int) -> int:
    """Reap children (as the shim's reaper does) until ``pid`` exits; returns its exit code.

    Reaping everything matters: a dying pid-namespace init waits until the namespace's other
    zombies (re-parented to us) are reaped.
    """
    while True:
        done, status = os.waitpid(-1, 0)
        if done == pid:
            return os.waitstatus_to_exitcode(status)


def finish(container: Container, created: Captured) -> Ran:
    output = created.read_all()
    status = wait_for(created.result.pid)
    container.delete()
    return Ran(status, output)


# --- leak check -------------------------------------------------------------------------------

def _mounts(mine: str) -> list[str]:
    """Mounts under our temp dirs (other engineers' tests mount elsewhere concurrently)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(p for p in (line.split()[4] for line in f) if p.startswith(mine))


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2:].split()[1] == me:
                out.add(int(entry))
    return out


def _cgroups() -> set[str]:
    out = set()
    for hierarchy in devenv.cgroup_hierarchies():
        parent = os.path.join(hierarchy, CGROUP_PARENT.lstrip("/"))
        if os.path.isdir(parent):
            out.update(os.path.join(parent, d) for d in os.listdir(parent)
                       if os.path.isdir(os.path.join(parent, d)))
    return out


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def reap_children() -> None:
    """Collect exited children (container inits re-parented to us) so they do not linger."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.fixture(scope="session")
def container_cgroup_parent() -> None:
    """Remove the tests' cgroup parent (CGROUP_PARENT) once every test that may use it is done.
    Named apart from tests/cgroups' per-test `cgroup_parent`, which would otherwise stand in for
    it there and leave this parent behind."""
    yield
    for hierarchy in devenv.cgroup_hierarchies():
        parent = os.path.join(hierarchy, CGROUP_PARENT.lstrip("/"))
        if os.path.isdir(parent):
            os.rmdir(parent)


@pytest.fixture(autouse=True)
def subreaper(container_cgroup_parent: None) -> None:
    """The test process plays the shim for one test: container inits are re-parented to it.

    Only for the test's duration: left on, pytest would adopt every orphan of later tests too
    (containerd's shims among them) and keep their zombies from whoever waits for them.
    """
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    yield
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 0)


@pytest.fixture(autouse=True)
def no_leaks(subreaper: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Mounts (network namespaces bound to files included), processes, cgroups and fds.

    Only what the test added counts: children of other suites' session fixtures (a containerd)
    may come and go meanwhile.
    """
    mine = str(tmp_path_factory.getbasetemp())
    before = (set(_mounts(mine)), _children(), _cgroups(), _fds())
    yield
    reap_children()
    after = (set(_mounts(mine)), _children(), _cgroups(), _fds())
    for what, b, a in zip(("mounts", "child processes", "cgroups", "fds"), before, after):
        assert a <= b, f"test leaked {what}: {sorted(a - b)}"
