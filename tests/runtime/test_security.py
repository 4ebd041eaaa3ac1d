"""The setup cannot be turned against the host: regression tests for CVE-2019-5736 (overwrite
the runtime through /proc/self/exe) and CVE-2024-21626 (leaked host fd or cwd)."""

import errno
import hashlib
import json
import os
import subprocess
import sys

import pytest

from railcar.runtime import RuntimeFailure

from .conftest import create_captured, finish, run_container

PYTHON_HOME = sys.base_prefix     # the interpreter install the runtime itself runs from

# Runs as the container's program, *in the runtime's own interpreter* (reached through
# /bin/evil -> /proc/self/exe), and tries to overwrite that interpreter. It never writes
# to a file that is not a memfd, so a broken defence cannot damage the host (and opening the
# host's binary for writing while the runtime runs it would be refused as busy, ETXTBSY).
ATTACK = """
import os
exe = os.readlink('/proc/self/exe')
print('exe', exe)
try:
    fd = os.open('/proc/self/exe', os.O_WRONLY)
except OSError as e:
    print('open-refused', e.errno)
    raise SystemExit
if not exe.startswith('/memfd:'):
    print('HOST-EXE-WRITABLE')
    raise SystemExit
try:
    os.write(fd, b'\\0')
    print('OVERWRITTEN')
except OSError as e:
    print('write-refused', e.errno)
"""


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_cve_2019_5736_runtime_binary_cannot_be_overwritten(make_bundle, state_root) -> None:
    def edit(c: dict) -> None:
        ro = ["rbind", "ro", "nosuid", "nodev"]
        c["mounts"] += [{"destination": d, "type": "bind", "source": d, "options": ro}
                        for d in ("/usr/lib", "/usr/lib64", PYTHON_HOME)]
        c["process"]["env"].append(f"PYTHONHOME={PYTHON_HOME}")

    bundle = make_bundle(["/bin/evil", "-c", ATTACK], edit=edit)
    os.symlink("/proc/self/exe", os.path.join(bundle.rootfs, "bin", "evil"))
    os.symlink("usr/lib", os.path.join(bundle.rootfs, "lib"))
    os.symlink("usr/lib64", os.path.join(bundle.rootfs, "lib64"))
    interpreter = os.path.realpath(f"/proc/{os.getpid()}/exe")
    before = _sha256(interpreter)
    driver = os.path.join(os.path.dirname(__file__), "sealed_driver.py")
    done = subprocess.run([sys.executable, driver, bundle.path, bundle.id, state_root],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout.splitlines()[-1])
    lines = ran["output"].splitlines()
    # The attack really ran inside the runtime's interpreter, seen through the read-only overlay
    # (its directory's mount is attached nowhere, so the path is from the overlay's root).
    assert lines[0] == f"exe /{os.path.basename(interpreter)}"
    assert lines[1] == f"open-refused {errno.EROFS}"
    assert "OVERWRITTEN" not in ran["output"] and "HOST-EXE-WRITABLE" not in ran["output"]
    assert _sha256(interpreter) == before


@pytest.mark.parametrize("fd", range(3, 9))
def test_cve_2024_21626_cwd_through_leaked_fd_is_refused(make_bundle, state_root, fd) -> None:
    def edit(c: dict) -> None:
        c["process"]["cwd"] = f"/proc/self/fd/{fd}"

    bundle = make_bundle(["pwd"], edit=edit)
    with pytest.raises(RuntimeFailure) as info:
        run_container(bundle, state_root)
    assert info.value.stage == "process"
    assert not os.path.exists(os.path.join(state_root, bundle.id))


def test_cve_2024_21626_exec_cwd_through_leaked_fd_is_refused(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    try:
        for fd in range(3, 9):
            with pytest.raises(RuntimeFailure):
                container.exec({"args": ["pwd"], "cwd": f"/proc/self/fd/{fd}"})
    finally:
        container.delete(force=True)
        created.read_all()
        finish_reap(created.result.pid)


def finish_reap(pid: int) -> None:
    while os.waitpid(-1, 0)[0] != pid:
        pass
