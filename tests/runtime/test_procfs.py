"""The container's procfs stays its own: an image's symlinks and a spec's volumes cannot put files
where the runtime writes (sysctls, the oom score, LSM labels), as runc's checkProcMount has it."""

import errno
import os
from collections.abc import Callable

import pytest

from railcar.runtime import Container, RuntimeFailure
from railcar.runtime import procfs
from railcar.runtime import syscalls as sc
from tests.runtime.conftest import (  # noqa: F401 - fixtures are used by name
    busybox_base, container_cgroup_parent, make_bundle, no_leaks, run_container, state_root, subreaper)


def _bind(source: str, destination: str) -> dict:
    return {"destination": destination, "type": "bind", "source": source, "options": ["rbind", "rw"]}


def _refused(bundle, state_root, match: str) -> None:
    with pytest.raises(RuntimeFailure, match=match):
        Container.create(bundle.id, bundle.path, root=state_root)
    assert not os.listdir(state_root)   # nothing half-made is left


@pytest.mark.parametrize("link, resolved, sysctl", [("proc/sys/kernel", "proc/sys/kernel", True),
                                                    ("proc/self/oom_score_adj", "proc/1/oom_score_adj", False)])
def test_a_volume_on_a_symlink_into_proc_is_refused_and_nothing_is_written(make_bundle, state_root, tmp_path,
                                                                            link, resolved, sysctl) -> None:
    """The image's /vol leads into /proc; the volume would hold the file the runtime writes next
    (a sysctl of the pod author's choosing: a link there reached vm.drop_caches on the host)."""
    volume = tmp_path / "volume"
    if sysctl:
        volume.mkdir()
        (volume / "shm_rmid_forced").write_text("volume's own\n")
        written = volume / "shm_rmid_forced"
    else:
        volume.write_text("volume's own\n")
        written = volume

    def edit(config: dict) -> None:
        config["mounts"].append(_bind(str(volume), "/vol"))
        if sysctl:
            config["linux"]["sysctl"] = {"kernel.shm_rmid_forced": "1"}
        else:
            config["process"]["oomScoreAdj"] = 500

    bundle = make_bundle(["true"], edit=edit)
    os.symlink(f"/{link}", os.path.join(bundle.rootfs, "vol"))
    _refused(bundle, state_root, rf"mounts\[7\] \(bind on /vol\): /{resolved} cannot be mounted on: it is inside /proc")
    assert written.read_text() == "volume's own\n"


def test_proc_goes_on_a_real_directory_and_only_proc_covers_it(make_bundle, state_root, tmp_path) -> None:
    bundle = make_bundle(["true"])
    os.rmdir(os.path.join(bundle.rootfs, "proc"))
    os.symlink("/tmp", os.path.join(bundle.rootfs, "proc"))   # the image moves /proc
    _refused(bundle, state_root, r"mounts\[0\] \(proc on /proc\): proc must be mounted on a directory, not "
                                 r"through a symlink \(it leads to /tmp\)")
    (tmp_path / "fake").mkdir()
    bundle = make_bundle(["true"], edit=lambda c: c["mounts"].insert(1, _bind(str(tmp_path / "fake"), "/proc")))
    _refused(bundle, state_root, r"mounts\[1\] \(bind on /proc\): only proc, or a bind of a procfs")
    bundle = make_bundle(["true"], edit=lambda c: c["mounts"].insert(
        1, {"destination": "/proc", "type": "tmpfs", "source": "/proc", "options": ["size=1k"]}))
    _refused(bundle, state_root, r"mounts\[1\] \(tmpfs on /proc\): only proc, or a bind of a procfs")
    # A second proc elsewhere is fine (as with runc): the runtime only ever uses /proc.
    bundle = make_bundle(["sh", "-c", "test -e /proc2/self/status && echo procfs"],
                         edit=lambda c: c["mounts"].append({"destination": "/proc2", "type": "proc", "source": "proc"}))
    os.mkdir(os.path.join(bundle.rootfs, "proc2"))
    ran = run_container(bundle, state_root)
    assert (ran.status, ran.output) == (0, "procfs\n"), ran


@pytest.mark.parametrize("destination, link", [("/vol", "/"), ("/proc/..", None)])
def test_nothing_covers_the_root_which_would_bring_a_proc_of_its_own(make_bundle, state_root, tmp_path,
                                                                   destination, link) -> None:
    """A volume over the root would be the container's root, its /proc a directory of the author's
    (a file at proc/self/fd/N there took the exec FIFO's write: the program ran before start)."""
    (tmp_path / "volume").mkdir()
    bundle = make_bundle(["true"], edit=lambda c: c["mounts"].append(_bind(str(tmp_path / "volume"), destination)))
    if link:
        os.symlink(link, os.path.join(bundle.rootfs, destination.lstrip("/")))
    _refused(bundle, state_root, rf"mounts\[7\] \(bind on {destination}\): nothing may be mounted on the "
                                 "container's root")


def test_lxcfs_style_binds_on_proc_files_still_work(make_bundle, state_root, tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 42 kB\n")
    bundle = make_bundle(["head", "-1", "/proc/meminfo"],
                         edit=lambda c: c["mounts"].insert(1, _bind(str(meminfo), "/proc/meminfo")))
    ran = run_container(bundle, state_root)
    assert (ran.status, ran.output) == (0, "MemTotal: 42 kB\n"), ran


def test_a_mask_is_made_only_with_the_null_device(make_bundle, state_root) -> None:
    """Without a /dev mount the image's /dev/null is used; one that is a regular file (or a link to
    a writable /proc file) would become every masked file's contents."""
    def edit(config: dict) -> None:
        config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]

    bundle = make_bundle(["true"], edit=edit)
    os.makedirs(os.path.join(bundle.rootfs, "dev"), exist_ok=True)
    with open(os.path.join(bundle.rootfs, "dev", "null"), "w") as f:
        f.write("image's content\n")
    _refused(bundle, state_root, "cannot mask /proc/keys: the container's /dev/null is not the null device")
    os.unlink(os.path.join(bundle.rootfs, "dev", "null"))
    _refused(bundle, state_root, "linux.maskedPaths: cannot mask /proc/keys: the container's /dev/null: No such file")


def _in_a_mount_namespace_of_its_own(check: Callable[[], bool]) -> bool:
    """Run `check` in a forked child with a private mount namespace (what it mounts goes with it)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            code = 0 if check() else 2
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1] == 0


def test_the_runtime_writes_proc_only_through_the_procfs_at_proc() -> None:
    """A tmpfs over /proc/sys/kernel (as a volume would be) makes the write fail instead of landing in it."""
    def check() -> bool:
        sc.mount("tmpfs", "/proc/sys/kernel", "tmpfs", 0)
        with open("/proc/sys/kernel/shm_rmid_forced", "w") as f:
            f.write("a tmpfs file\n")
        try:
            procfs.write("sys/kernel/shm_rmid_forced", "1")
        except OSError as e:
            with open("/proc/sys/kernel/shm_rmid_forced") as f:
                return e.errno == errno.EXDEV and "leaves the container's procfs" in e.strerror \
                    and f.read() == "a tmpfs file\n"
        return False

    assert _in_a_mount_namespace_of_its_own(check)


def test_the_exec_fifo_is_reopened_only_through_a_procfs_at_proc() -> None:
    """With something else at /proc (a tmpfs), reopening an fd through it is refused instead of
    opening a file of that filesystem."""
    r, w = os.pipe()
    os.write(w, b"x")

    def check() -> bool:
        assert os.read(procfs.reopen(procfs.root(), r, os.O_RDONLY | os.O_NONBLOCK), 1) == b"x"   # the pipe
        sc.mount("tmpfs", "/proc", "tmpfs", 0)
        os.makedirs(f"/proc/self/fd/{r}".rsplit("/", 1)[0])
        open(f"/proc/self/fd/{r}", "w").close()
        try:
            procfs.root()
        except OSError as e:
            return e.errno == errno.EXDEV
        return False

    try:
        assert _in_a_mount_namespace_of_its_own(check)
    finally:
        os.close(r)
        os.close(w)


def test_a_read_only_volume_stays_read_only_when_its_path_changes_right_after_the_mount(
        make_bundle, state_root, tmp_path, monkeypatch) -> None:
    """A sidecar sharing /shared can swap a directory there for a link at any moment. Here it does so
    right after the bind is made (deterministically: in the helper, after the mount call): the
    volume's `ro` must still go to the volume, not to where the path leads by then."""
    from railcar.runtime import rootfs

    shared, readonly = tmp_path / "shared", tmp_path / "ro"
    (shared / "a" / "b").mkdir(parents=True)
    (shared / "evil").mkdir()
    os.symlink("/dev/shm", shared / "evil" / "b")   # a mount: a remount sent there would succeed
    readonly.mkdir()

    def swap() -> None:
        os.rename(shared / "a", shared / "a.moved")
        os.symlink("/shared/evil", shared / "a")

    def swapping_after(call):
        def wrapper(*args, **kwargs):
            result = call(*args, **kwargs)
            if str(readonly) in map(str, args):
                swap()
            return result
        return wrapper

    monkeypatch.setattr(sc, "bind_onto", swapping_after(sc.bind_onto))
    monkeypatch.setattr(rootfs, "mount_first", swapping_after(rootfs.mount_first))   # (what binds used before)
    bundle = make_bundle(["sh", "-c", "touch /shared/a.moved/b/x; echo $?"], edit=lambda c: c["mounts"].extend(
        [_bind(str(shared), "/shared"), {**_bind(str(readonly), "/cfg"), "options": ["rbind", "ro"]}]))
    os.symlink("/shared/a/b", os.path.join(bundle.rootfs, "cfg"))
    ran = run_container(bundle, state_root)
    assert (ran.status, ran.output.split()[-1]) == (0, "1") and not (readonly / "x").exists(), ran
