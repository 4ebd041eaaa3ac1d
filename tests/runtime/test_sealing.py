"""The two sealed views of the interpreter (CVE-2019-5736), each checked by what the kernel refuses."""

import errno
import fcntl
import os
import subprocess
import sys

import pytest

from railcar.runtime import sealing

INTERPRETER = os.path.realpath(sys.executable)


def _mount_of(fd: int) -> str:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return next(line.split()[1] for line in f if line.startswith("mnt_id:"))


def _seal_dirs() -> list[str]:
    return [name for name in os.listdir("/run") if name.startswith(".railcar-seal-")]


def test_overlay_view_cannot_be_written_or_reached_by_a_path() -> None:
    exe = sealing.overlay_view(INTERPRETER)
    try:
        with pytest.raises(OSError) as refused:
            os.open(f"/proc/self/fd/{exe}", os.O_WRONLY)
        assert refused.value.errno == errno.EROFS
        with open("/proc/self/mountinfo") as f:
            assert _mount_of(exe) not in {line.split(" ", 1)[0] for line in f}
        # The very binary, byte for byte, through the overlay.
        with open(f"/proc/self/fd/{exe}", "rb") as seen, open(INTERPRETER, "rb") as host:
            assert seen.read() == host.read()
        assert sealing.unwritable(exe)
    finally:
        os.close(exe)
    assert _seal_dirs() == []   # the empty lower layer was removed at once


def test_sealed_copy_refuses_writes() -> None:
    mem = sealing.sealed_copy(INTERPRETER)
    try:
        assert sealing.unwritable(mem)
        with pytest.raises(OSError) as refused:
            os.pwrite(mem, b"\0", 0)
        assert refused.value.errno == errno.EPERM
        with pytest.raises(OSError):
            fcntl.fcntl(mem, fcntl.F_ADD_SEALS, 0)   # F_SEAL_SEAL: the seals cannot be lifted either
        assert os.fstat(mem).st_size == os.stat(INTERPRETER).st_size
    finally:
        os.close(mem)


def test_the_host_binary_and_an_unsealed_memfd_are_not_taken_for_sealed() -> None:
    host = os.open(INTERPRETER, os.O_PATH | os.O_CLOEXEC)
    mem = os.memfd_create("not-sealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        assert not sealing.unwritable(host) and not sealing.unwritable(mem)
    finally:
        os.close(host)
        os.close(mem)


REEXEC = "from railcar.runtime import sealing; sealing.reexec_sealed(); import os; print(os.readlink('/proc/self/exe'))"


def test_reexec_runs_the_overlay_view() -> None:
    done = subprocess.run([sys.executable, "-c", REEXEC], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/" + os.path.basename(INTERPRETER)


def test_reexec_falls_back_to_the_sealed_copy_without_overlayfs() -> None:
    # In a user namespace of its own, root lacks CAP_SYS_ADMIN over the host's mount namespace: fsopen
    # is refused, and the memfd copy is what runs.
    done = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", REEXEC],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("/memfd:railcar-sealed")
    assert _seal_dirs() == []
