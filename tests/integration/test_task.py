"""Detached containers: exec, ps, metrics, pause/resume, kill and delete through `ctr task`."""

import json
import os
import re
import shlex
import subprocess

import pytest

from .conftest import RUNTIME, eventually, remove_task, task_status

pytestmark = [pytest.mark.integration, pytest.mark.cgroup_v2]  # run again in the pure v2 guest


@pytest.fixture
def detached(cd, image, cid):
    """A running `sleep` container; killed and removed afterwards whatever the test did."""
    result = cd.ctr("run", "-d", "--runtime", RUNTIME, image, cid, "sleep", "1000")
    assert result.returncode == 0, result.stderr
    assert task_status(cd, cid) == "RUNNING"
    yield cid
    remove_task(cd, cid)


def test_exec_output_and_exit_code(cd, detached) -> None:
    result = cd.ctr("task", "exec", "--exec-id", "e1", detached, "sh", "-c", "echo from exec; echo oops >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"from exec\n", b"oops\n")
    again = cd.ctr("task", "exec", "--exec-id", "e1", detached, "true")  # the id is free again after delete
    assert again.returncode == 0, again.stderr


def test_an_exec_into_a_container_with_megabytes_of_environment_runs(cd, image, cid, tmp_path) -> None:
    """ctr (and CRI) sends the container's whole process as an exec's spec: with Kubernetes' service
    variables that can be over a megabyte, which runc's exec takes (the kernel allows 2 MiB)."""
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"V{i}={'x' * 990}\n" for i in range(1500)))
    result = cd.ctr("run", "-d", "--runtime", RUNTIME, "--env-file", str(env_file), image, cid, "sleep", "1000")
    assert result.returncode == 0, result.stderr
    try:
        result = cd.ctr("task", "exec", "--exec-id", "big", cid, "sh", "-c", "env | grep -c '^V[0-9]*=x'")
        assert (result.returncode, result.stdout) == (0, b"1500\n"), result.stderr
    finally:
        remove_task(cd, cid)


def test_ps_marks_exec_processes(cd, detached) -> None:
    exec_proc = subprocess.Popen(["ctr", "--address", cd.address, "--namespace", cd.namespace, "task", "exec",
                                  "--exec-id", "bg", detached, "sleep", "30"], env=cd.env)
    try:
        assert eventually(lambda: len(cd.ctr("task", "ps", detached).stdout.splitlines()) >= 3)
        listing = cd.ctr("task", "ps", detached).stdout.decode()
        assert "bg" in listing  # ProcessDetails{exec_id} decoded by ctr
    finally:
        cd.ctr("task", "kill", "--exec-id", "bg", "-s", "SIGKILL", detached)
        exec_proc.wait(timeout=20)
    assert exec_proc.returncode == 137


def test_metrics(cd, detached) -> None:
    result = cd.ctr("task", "metrics", detached)
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert re.search(r"memory\.usage_in_bytes\s+\d+|memory\.usage\s+\d+", text), text
    # Every part is there for an idle container too: nerdctl stats reads Blkio (v1) or Io (v2)
    # without a nil check, and containerd's cgroups library always sends them.
    as_json = cd.ctr("task", "metrics", "--format", "json", detached)
    assert as_json.returncode == 0, as_json.stderr
    parts = set(json.loads(as_json.stdout))
    assert {"pids", "cpu", "memory"} <= parts and ("blkio" in parts or "io" in parts), parts


def test_what_sets_no_oom_score_runs_at_containerds_plus_one(cd, detached) -> None:
    """As under runc's shim: the daemon, an init whose spec sets no oomScoreAdj (ctr's) and an exec
    into it are a little more killable than containerd, whether the daemon came from a zygote's
    spare (forked before its `start`) or was spawned."""
    def score(pid: int | str) -> int:
        with open(f"/proc/{pid}/oom_score_adj") as f:
            return int(f.read())

    expected = min(score(cd.pid) + 1, 1000)
    [init] = [line.split()[1] for line in cd.ctr("task", "ls").stdout.decode().splitlines()[1:]
              if line.split()[0] == detached]
    daemon = (cd.bundle(detached) / "shim.pid").read_text()
    exec_score = cd.ctr("task", "exec", "--exec-id", "oom", detached, "cat", "/proc/self/oom_score_adj")
    assert exec_score.returncode == 0, exec_score.stderr
    assert (score(daemon), score(init), int(exec_score.stdout)) == (expected, expected, expected)


def test_pause_resume(cd, detached) -> None:
    assert cd.ctr("task", "pause", detached).returncode == 0
    assert task_status(cd, detached) == "PAUSED"
    refused = cd.ctr("task", "exec", "--exec-id", "p", detached, "true")
    assert refused.returncode != 0
    assert cd.ctr("task", "resume", detached).returncode == 0
    assert task_status(cd, detached) == "RUNNING"


def test_kill_then_delete(cd, detached) -> None:
    assert cd.ctr("task", "kill", "-s", "SIGKILL", detached).returncode == 0  # pid 1 ignores SIGTERM
    assert eventually(lambda: task_status(cd, detached) == "STOPPED")
    second = cd.ctr("task", "kill", "-s", "SIGTERM", detached)
    assert second.returncode != 0 and b"not found" in second.stderr
    deleted = cd.ctr("task", "rm", detached)
    assert deleted.returncode == 0, deleted.stderr
    assert task_status(cd, detached) == ""


def test_sigkill_ends_a_paused_task(cd, detached) -> None:
    """As with runc: the cgroup is thawed after the SIGKILL (a frozen process would not die)."""
    assert cd.ctr("task", "pause", detached).returncode == 0
    assert cd.ctr("task", "kill", "-s", "SIGKILL", detached).returncode == 0
    assert eventually(lambda: task_status(cd, detached) == "STOPPED")
    deleted = cd.ctr("task", "rm", detached)
    assert deleted.returncode == 0 and b"exit code 137" in deleted.stderr, deleted.stderr


def test_piped_stdin_of_an_exec_ends_whenever_ctr_closes_it(cd, detached) -> None:
    """ctr sends CloseIO as soon as its input ends, which for a short input is while the exec's
    Start is still under way: the exec must still see EOF."""
    for n in range(3):
        result = cd.ctr("task", "exec", "--exec-id", f"in{n}", detached, "cat", input=b"hi\n", timeout=30)
        assert (result.returncode, result.stdout) == (0, b"hi\n"), result.stderr


def test_an_exec_cwd_that_does_not_exist_fails(cd, detached) -> None:
    result = cd.ctr("task", "exec", "--exec-id", "cwd", "--cwd", "/newdir/sub", detached, "pwd")
    assert result.returncode != 0 and b"process.cwd '/newdir/sub'" in result.stderr, result.stderr
    listed = cd.ctr("task", "exec", "--exec-id", "ls", detached, "ls", "/newdir")
    assert listed.returncode != 0  # nothing was made


def test_without_a_pid_namespace_of_its_own_nothing_outlives_the_init(cd, image, cid) -> None:
    """Joined to another pid namespace (as a shareProcessNamespace pod joins its sandbox's; a
    hostPID pod has none of its own), a container's children are not killed by the kernel with its
    init. As runc's shim does, they are killed when the init exits, and kill --all works then."""
    holder = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "1000"])  # a pid ns to join
    try:
        assert eventually(lambda: bool(open(f"/proc/{holder.pid}/task/{holder.pid}/children").read().split()))
        [ns_init] = open(f"/proc/{holder.pid}/task/{holder.pid}/children").read().split()
        result = cd.ctr("run", "-d", "--runtime", RUNTIME, "--with-ns", f"pid:/proc/{ns_init}/ns/pid", image, cid,
                        "sh", "-c", "sleep 4243 & sleep 1; exit 3")
        assert result.returncode == 0, result.stderr
        assert eventually(lambda: task_status(cd, cid) == "STOPPED", timeout=10)
        assert eventually(lambda: len(cd.ctr("task", "ps", cid).stdout.splitlines()) <= 1)  # the header only
        assert not [p for p in _pids_running("sleep 4243")]
        swept = cd.ctr("task", "kill", "-a", "-s", "SIGKILL", cid)
        assert swept.returncode == 0, swept.stderr
        deleted = cd.ctr("task", "rm", cid)
        assert deleted.returncode == 0, deleted.stderr
    finally:
        remove_task(cd, cid)
        holder.kill()  # (--kill-child: the namespace's init, the sleep, dies with it)
        holder.wait()


def _pids_running(cmdline: str) -> list[int]:
    """Host processes whose command line is `cmdline`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").strip() \
                    == cmdline.encode():
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_a_terminal_takes_the_client_window_size(cd, detached) -> None:
    """ctr sends the size of its own terminal with ResizePty once the exec started."""
    ctr = ["ctr", "--address", cd.address, "--namespace", cd.namespace, "task", "exec", "-t", "--exec-id", "size",
           detached, "sh", "-c", "for i in $(seq 100); do [ \"$(stty size)\" = '45 123' ] && break; sleep 0.05; done; "
                                 "stty size"]
    script = f"stty cols 123 rows 45; {shlex.join(ctr)}"
    result = subprocess.run(["script", "-qec", script, "/dev/null"], capture_output=True, env=cd.env,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert "45 123" in result.stdout.decode(errors="replace"), result.stdout
    assert result.returncode == 0


def test_exec_with_a_terminal(cd, detached) -> None:
    ctr = ["ctr", "--address", cd.address, "--namespace", cd.namespace, "task", "exec", "-t", "--exec-id", "tty",
           detached, "sh", "-c", "tty; echo exec tty; exit 2"]
    result = subprocess.run(["script", "-qec", shlex.join(ctr), "/dev/null"], capture_output=True, env=cd.env,
                            timeout=60, stdin=subprocess.DEVNULL)
    text = result.stdout.decode(errors="replace")
    assert "/dev/pts/" in text and "exec tty\r" in text, text
    assert result.returncode == 2
