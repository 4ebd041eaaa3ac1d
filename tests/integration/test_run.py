"""`ctr run --runtime io.containerd.railcar.v2` end to end through a real containerd 1.6."""

import os

import pytest

from .conftest import RUNTIME, devenv, run

pytestmark = [pytest.mark.integration, pytest.mark.cgroup_v2]  # run again in the pure v2 guest


def test_echo_hello(cd, image, cid) -> None:
    result = run(cd, image, cid, "echo", "hello")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hello\n", b"")


def test_exit_codes(cd, image, cid) -> None:
    assert run(cd, image, cid, "sh", "-c", "exit 7").returncode == 7
    # pid 1 of the container's pid namespace ignores its own SIGKILL, so a child reports 137 instead
    assert run(cd, image, cid + "b", "sh", "-c", "sleep 5 & kill -9 $!; wait $!").returncode == 137


def test_stderr_apart_from_stdout(cd, image, cid) -> None:
    result = run(cd, image, cid, "sh", "-c", "echo out; echo err >&2")
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


def test_stdin(cd, image, cid) -> None:
    result = run(cd, image, cid, "head", "-c", "3", input=b"abc")
    assert result.stdout == b"abc"


def test_host_rootfs_without_snapshotter_mounts(cd, cid, tmp_path) -> None:
    """`ctr run --rootfs DIR`: Create carries no mounts; config.json's root.path is used as given."""
    rootfs = devenv.busybox_rootfs(tmp_path / "rootfs")
    result = cd.ctr("run", "--rm", "--runtime", RUNTIME, "--rootfs", str(rootfs), cid, "sh", "-c", "echo $((6*7))")
    assert (result.returncode, result.stdout) == (0, b"42\n")


def test_null_io(cd, image, cid) -> None:
    """`--null-io`: Create carries no stdio paths; the process gets /dev/null and still exits normally."""
    result = run(cd, image, cid, "sh", "-c", "echo lost; read x; exit 4", ctr_flags=("--null-io",))
    assert (result.returncode, result.stdout) == (4, b"")


def test_a_config_file_in_the_runtime_options_is_refused_by_name(cd, image, cid) -> None:
    """railcar has no options: what containerd passes (here ctr's ConfigPath, as CRI passes a
    runtime's `options` table) is refused, not ignored, and nothing is left."""
    result = cd.ctr("run", "--rm", "--runtime", RUNTIME, "--runtime-config-path", "/etc/railcar.toml", image, cid,
                    "true")
    assert result.returncode != 0
    assert b"ConfigPath '/etc/railcar.toml': railcar reads no configuration file" in result.stderr, result.stderr
    cd.ctr("container", "rm", cid)
    assert not os.path.exists(cd.bundle(cid))


def test_a_user_namespace_from_ctr_run_uidmap(cd, image, cid) -> None:
    """`--uidmap` sends the I/O owner as task options (CreateOptions, to a runtime not runc's): it
    passes, and the container's root can reopen its stdout, which railcar gave to its host uid."""
    mode = os.stat(cd.workdir).st_mode & 0o7777
    os.chmod(cd.workdir, mode | 0o011)   # a mapped root must reach its rootfs (runc's needs the same)
    try:
        result = run(cd, image, cid, "sh", "-c", "cat /proc/self/uid_map; echo reopened > /dev/stdout",
                     ctr_flags=("--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"))
    finally:
        os.chmod(cd.workdir, mode)
    assert (result.returncode, result.stdout.split(), result.stderr) == \
        (0, [b"0", b"100000", b"65536", b"reopened"], b""), result.stderr
