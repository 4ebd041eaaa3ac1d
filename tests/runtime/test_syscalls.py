"""The ctypes bindings that are not covered by a container's life elsewhere."""

import subprocess
import sys

# Run apart: an at-fork hook, once registered, stays for every later fork of the process.
_CHECK = """
import os
from railcar.runtime.syscalls import bare_fork

ran = []
os.register_at_fork(after_in_child=lambda: ran.append(1))
for fork in (bare_fork, os.fork):
    read_end, write_end = os.pipe()
    pid = fork()
    if pid == 0:
        os.write(write_end, f"{os.getpid()} {len(ran)}".encode())
        os._exit(7)
    os.close(write_end)
    child, hooks = map(int, os.read(read_end, 100).split())
    exit_code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(fork.__name__, child == pid != os.getpid(), hooks, exit_code)
"""


def test_bare_fork_makes_a_child_without_running_the_after_fork_hooks() -> None:
    result = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # an ordinary fork runs the hook: the check could fail
    assert result.stdout.splitlines() == ["bare_fork True 0 7", "fork True 1 7"]
