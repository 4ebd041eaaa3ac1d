"""The ctypes bindings that are not covered by a container's life elsewhere."""

import errno
import fcntl
import os
import subprocess
import sys

import pytest

from railcar.runtime.syscalls import readable
from tests.polling import eventually

# Run apart: an at-fork hook, once registered, stays for every later fork of the process.
_CHECK = """
import os, threading, time
from railcar.runtime.syscalls import bare_fork

ran = []
os.register_at_fork(after_in_child=lambda: ran.append(1))

def check(fork, label):
    read_end, write_end = os.pipe()
    pid = fork()
    if pid == 0:
        os.write(write_end, f"{os.getpid()} {len(ran)}".encode())
        os._exit(7)
    os.close(write_end)
    child, hooks = map(int, os.read(read_end, 100).split())
    exit_code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(label, child == pid != os.getpid(), hooks, exit_code)

check(bare_fork, "bare_fork")
check(os.fork, "os.fork")
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
check(bare_fork, "bare_fork, another thread running")
stop.set()
thread.join()
"""


def test_bare_fork_skips_the_after_fork_hooks_only_with_a_single_thread() -> None:
    result = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # an ordinary fork runs the hook (so the first line's 0 means something); with another thread
    # running, the child needs them, and bare_fork is os.fork
    assert result.stdout.splitlines() == ["bare_fork True 0 7", "os.fork True 1 7",
                                          "bare_fork, another thread running True 1 7"]


def test_readable_waits_with_poll_and_refuses_a_closed_fd() -> None:
    """poll, not select, which cannot take an fd numbered 1024 or above (a daemon's raised limit
    lets it have them); a closed fd is an error, as select makes it, not a readable one."""
    read_end, write_end = os.pipe()
    high = fcntl.fcntl(read_end, fcntl.F_DUPFD_CLOEXEC, 1500)
    try:
        assert not readable(high, 0)
        os.write(write_end, b"x")
        assert readable(high, 0) and readable(high)
    finally:
        for fd in (read_end, write_end, high):
            os.close(fd)
    with pytest.raises(OSError) as info:
        readable(high, 0)
    assert info.value.errno == errno.EBADF


_FORK_IN_A_DEAD_PID_NAMESPACE = """
import sys
from railcar.runtime import process, syscalls as sc
from railcar.runtime.errors import RuntimeFailure
sc.setns(int(sys.argv[1]), sc.CLONE_NEWPID)
try:
    process._fork_child(None, None, None)
except RuntimeFailure as e:
    print(e)
"""


def test_a_fork_into_a_pid_namespace_whose_init_is_gone_fails_naming_that() -> None:
    """An exec racing its container's end joins the pid namespace, then its init exits: the kernel
    refuses the fork with ENOMEM, which the runtime reports as the container's end, not as an
    internal error."""
    holder = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "100"])
    try:
        assert eventually(lambda: _children(holder.pid))
        [init] = _children(holder.pid)
        namespace = os.open(f"/proc/{init}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.kill()   # unshare, and with it (--kill-child) the namespace's init
        holder.wait()
    try:
        try:
            os.waitpid(init, 0)   # ours once unshare died (the runtime tests' process is a subreaper)
        except ChildProcessError:
            assert eventually(lambda: not os.path.exists(f"/proc/{init}"))
        result = subprocess.run([sys.executable, "-c", _FORK_IN_A_DEAD_PID_NAMESPACE, str(namespace)],
                                capture_output=True, text=True, timeout=30, pass_fds=[namespace])
    finally:
        os.close(namespace)
    assert "the pid namespace it is in has no init any more" in result.stdout, result.stderr


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def test_a_helpers_command_line_is_its_title_whatever_its_environment() -> None:
    """The title is written over the argument strings the kernel shows, found from /proc/self/stat,
    not next to the environment: python-prctl's set_proctitle, tried first, crashed a process whose
    environment was empty, or rewritten as a spare daemon and its forker's workers rewrite theirs
    when they adopt a container's. A forked child finds them at the address its parent worked out."""
    script = ("import os\n"
              "from railcar.runtime import process, syscalls\n"
              "os.environ.clear()\n"
              "os.environ.update({'PATH': '/bin'})\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    syscalls.write_memory(process._TITLE_AT, process._TITLE)\n"
              "    with open('/proc/self/cmdline', 'rb') as f:\n"
              "        os.write(1, f.read().rstrip(b'\\0'))\n"
              "    os._exit(0)\n"
              "assert os.waitpid(pid, 0)[1] == 0\n")
    for env in ({}, dict(os.environ)):
        ran = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
        assert (ran.returncode, ran.stdout) == (0, b"railcar init"), (env, ran)
