"""Lifecycle through the library: create, start, state, exec, kill, delete, on real namespaces."""

import logging
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable

import pytest

from tests.polling import eventually, pid_gone

from railcar.runtime import Container, ContainerNotFound, InvalidState, RuntimeFailure, SpecError

from .conftest import (CGROUP_PARENT, CGROUP_ROOT, Bundle, Ran, create_captured, exec_captured, finish, read_console,
                       run_container, wait_for)


def test_pid_1_and_hostname(make_bundle, state_root) -> None:
    bundle = make_bundle(["sh", "-c", "echo pid=$$; hostname"])
    ran = run_container(bundle, state_root)
    assert ran.status == 0
    assert ran.output.split() == ["pid=1", "railcar"]


def test_create_without_start_runs_no_user_code(make_bundle, state_root) -> None:
    def edit(c: dict) -> None:
        c["root"]["readonly"] = False

    bundle = make_bundle(["touch", "/ran"], edit=edit)
    marker = os.path.join(bundle.rootfs, "ran")
    container, created = create_captured(bundle, state_root)
    assert container.state().status == "created"
    assert container.state().pid == created.result.pid
    assert not os.path.exists(marker)
    loaded = Container.load(bundle.id, root=state_root)
    assert loaded.state().status == "created"
    loaded.start()
    ran = finish(container, created)
    assert ran.status == 0
    assert os.path.exists(marker)


def test_states_and_delete_twice(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    assert container.state().status == "running"
    with pytest.raises(InvalidState):
        container.start()
    with pytest.raises(InvalidState):
        container.delete()
    assert created.result.pid in container.pids()
    container.kill(signal.SIGKILL)
    assert wait_for(created.result.pid) == -signal.SIGKILL
    state = container.state()
    assert (state.status, state.pid) == ("stopped", 0)
    with pytest.raises(InvalidState):
        container.kill(signal.SIGTERM)
    created.read_all()
    container.delete()
    container.delete()
    with pytest.raises(ContainerNotFound):
        Container.load(bundle.id, root=state_root)


def test_delete_force_kills_every_process(make_bundle, state_root) -> None:
    bundle = make_bundle(["sh", "-c", "sleep 100 & sleep 100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    container.delete(force=True)
    wait_for(created.result.pid)
    created.read_all()
    assert not os.path.exists(os.path.join(state_root, bundle.id))


def test_delete_of_created_container(make_bundle, state_root) -> None:
    bundle = make_bundle(["true"])
    container, created = create_captured(bundle, state_root)
    container.delete()
    wait_for(created.result.pid)
    created.read_all()
    with pytest.raises(ContainerNotFound):
        Container.load(bundle.id, root=state_root)


def test_a_helper_in_the_container_shows_no_host_command_line(make_bundle, state_root) -> None:
    """A created container's init waits for its start in a helper that runs the runtime's code, in the
    container's pid namespace: an exec sees its command line there, which must not be the host's
    (the interpreter's path, the daemon's arguments), as runc's reads `runc init`."""
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    try:
        ran = exec_captured(container, {"args": ["cat", "/proc/1/cmdline"], "cwd": "/", "env": ["PATH=/bin"]})
        assert (ran.status, ran.output.rstrip("\0")) == (0, "railcar init")
    finally:
        container.kill(signal.SIGKILL, all=True)
        finish(container, created)


def test_exec_sees_same_pid_namespace(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    ran = exec_captured(container, {"args": ["sh", "-c", "echo $$; cat /proc/self/cgroup; echo; "
                                             "cat /proc/1/cgroup; echo; cat /proc/1/cmdline"],
                                    "cwd": "/", "env": ["PATH=/bin"]})
    assert ran.status == 0
    exec_pid, cgroups = ran.output.split("\n", 1)
    exec_cgroup, init_cgroup, init_cmdline = cgroups.split("\n\n")
    assert int(exec_pid) > 1
    assert exec_cgroup == init_cgroup and bundle.id in exec_cgroup
    assert init_cmdline.split("\0")[:2] == ["sleep", "100"]
    container.kill(signal.SIGKILL, all=True)
    finish(container, created)


def test_an_exec_reaped_before_its_caller_looks_is_still_its_own(make_bundle, state_root, monkeypatch) -> None:
    """A short exec can exit, and be reaped by the subreaper (the shim's reaper, here a thread), before
    the caller has looked at it again once it moved it into its cgroup: the caller holds it by the
    pidfd its intermediate opened."""
    from railcar.runtime import channel

    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    reaped: list[int] = []
    stop = threading.Event()

    def reap_true() -> None:   # only the exec's process: the caller waits for its own helper itself
        while not stop.is_set():
            for pid in _children():
                if _comm(pid) == "true":
                    os.waitpid(pid, 0)
                    reaped.append(pid)
            time.sleep(0.005)

    recv = channel.Channel.recv
    forked: list[int] = []

    def late(self, stage, *expected):   # the caller is slow to go on once the exec has its cgroup
        msg, fds = recv(self, stage, *expected)
        if isinstance(msg, channel.ExecForked):
            forked.append(msg.pid)
        elif isinstance(msg, channel.Parked):
            assert eventually(lambda: forked[0] in reaped, timeout=10)
        return msg, fds

    monkeypatch.setattr(channel.Channel, "recv", late)
    reaper = threading.Thread(target=reap_true)
    reaper.start()
    try:
        result = container.exec({"args": ["true"], "cwd": "/"})
    finally:
        stop.set()
        reaper.join()
        monkeypatch.undo()
        container.kill(signal.SIGKILL)
        finish(container, created)
    assert result.pid in reaped
    assert result.started is None   # it was reaped: its start time cannot be told (nor mistaken)


def _children() -> list[int]:
    with open(f"/proc/self/task/{threading.main_thread().native_id}/children") as f:
        return [int(p) for p in f.read().split()]


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def test_annotations_larger_than_a_datagram_and_in_container_hooks(make_bundle, state_root) -> None:
    """The state in-container hooks get holds the annotations; it comes with the fork, not in a message."""
    def edit(c: dict) -> None:
        c["annotations"] = {"big": "x" * 400_000}
        c["root"]["readonly"] = False
        c["hooks"] = {"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "wc -c > hook.out"]}]}

    bundle = make_bundle(["true"], edit=edit)
    ran = run_container(bundle, state_root)
    assert ran.status == 0, ran.output
    with open(f"{bundle.rootfs}/hook.out") as f:   # createContainer hooks run in the rootfs
        assert int(f.read()) > 400_000


def test_exec_failure_is_reported(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    with pytest.raises(Exception, match="no-such-program"):
        container.exec({"args": ["no-such-program"], "cwd": "/"})
    container.delete(force=True)
    finish_quietly(created)


def test_an_init_whose_execve_fails_after_start_exits_1_as_runcs(make_bundle, state_root) -> None:
    """Nobody listens for an error once the init is started: it writes it to its stderr and exits
    1, as runc's init exits (127 would read as "command not found" to anyone who looks)."""
    def edit(config: dict) -> None:
        config["process"]["env"].append("BIG=" + "x" * (3 << 20))   # over execve's limit, not the spec's

    container, created = create_captured(make_bundle(["true"], edit=edit), state_root)
    container.start()
    ran = finish(container, created)
    assert ran.status == 1 and "Argument list too long" in ran.output


def test_exec_failing_at_execve_with_a_terminal_leaks_no_console(make_bundle, state_root) -> None:
    """The pty master arrives before execve is tried; when execve fails it must not stay open
    (the autouse no_leaks fixture counts our fds and children)."""
    bundle = make_bundle(["sleep", "100"])
    with open(os.path.join(bundle.rootfs, "not-a-program"), "w") as f:
        f.write("\x7fELF garbage")
    os.chmod(os.path.join(bundle.rootfs, "not-a-program"), 0o755)
    container, created = create_captured(bundle, state_root)
    container.start()
    with pytest.raises(RuntimeFailure, match="exec"):
        container.exec({"args": ["/not-a-program"], "cwd": "/"}, terminal=True)
    container.delete(force=True)
    finish_quietly(created)


def finish_quietly(created) -> None:
    created.read_all()
    wait_for(created.result.pid)


def test_the_init_cwd_is_made_but_an_exec_cwd_must_exist(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"], edit=lambda c: c["process"].update(cwd="/made/for/init"))
    assert bundle.config["root"]["readonly"]  # made before the root turns read-only
    container, created = create_captured(bundle, state_root)
    try:
        container.start()
        assert os.path.isdir(os.path.join(bundle.path, "rootfs", "made", "for", "init"))
        with pytest.raises(Exception, match="process.cwd '/newdir/sub'"):
            container.exec({"args": ["true"], "cwd": "/newdir/sub"})
        assert not os.path.exists(os.path.join(bundle.path, "rootfs", "newdir"))  # a typo makes nothing
    finally:
        container.kill(signal.SIGKILL, all=True)
        finish(container, created)


def test_sigkill_ends_a_paused_init(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    container.pause()
    try:
        container.kill(signal.SIGKILL)  # on cgroup v1, without the thaw that follows, it would never die
        assert eventually(lambda: pid_gone(created.result.pid))
    finally:
        container.resume()  # (so that a failure here leaves no frozen process behind)
    assert finish(container, created).status == -signal.SIGKILL


def test_delete_kills_what_outlived_an_init_without_a_pid_namespace(make_bundle, state_root) -> None:
    bundle = make_bundle(["sh", "-c", "sleep 4244 >/dev/null 2>&1 & echo $!"], edit=_host_pids)
    container, created = create_captured(bundle, state_root)
    container.start()
    ran = finish_reading(created)
    orphan = int(ran.output)
    try:
        assert ran.status == 0 and not pid_gone(orphan)  # the init is gone, its child is not
        container.delete()
        assert eventually(lambda: pid_gone(orphan))
        assert not os.path.isdir(os.path.join(CGROUP_ROOT, "memory", CGROUP_PARENT.lstrip("/"), bundle.id))
    finally:
        try:
            with open(f"/proc/{orphan}/cmdline", "rb") as f:  # (our child: the number cannot be reused yet)
                if f.read().startswith(b"sleep\0"):
                    os.kill(orphan, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass
        container.delete(force=True)


def _host_pids(config: dict) -> None:
    """No pid namespace of its own (as a hostPID pod)."""
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"]


def test_sigkill_of_an_init_without_a_pid_namespace_kills_the_whole_cgroup(make_bundle, state_root) -> None:
    bundle = make_bundle(["sh", "-c", "sleep 4245 >/dev/null 2>&1 & echo $!; exec sleep 100"], edit=_host_pids)
    container, created = create_captured(bundle, state_root)
    container.start()
    try:
        child = int(os.read(created.read_fd, 100))
        container.kill(signal.SIGKILL)  # as runc: the init's SIGKILL reaches the whole cgroup
        assert eventually(lambda: pid_gone(child))
    finally:
        container.kill(signal.SIGKILL, all=True)
    assert finish(container, created).status == -signal.SIGKILL


def test_a_cgroup_with_processes_in_it_is_refused(make_bundle, state_root) -> None:
    """As runc: deleting one of two containers sharing a cgroup would kill the other."""
    first = make_bundle(["sleep", "100"])
    container, created = create_captured(first, state_root)
    try:
        shared = first.config["linux"]["cgroupsPath"]
        second = make_bundle(["true"], edit=lambda c: c["linux"].update(cgroupsPath=shared))
        with pytest.raises(RuntimeFailure, match="linux.cgroupsPath: cgroup .* is not empty"):
            Container.create(second.id, second.path, root=state_root)
        assert container.state().status == "created"  # untouched
    finally:
        container.kill(signal.SIGKILL, all=True)
        finish(container, created)


def finish_reading(created) -> Ran:
    """The init's output and exit, with the container left for the test to delete."""
    output = created.read_all()
    return Ran(wait_for(created.result.pid), output)


def test_pause_and_resume(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    container.pause()
    assert container.state().status == "paused"
    container.resume()
    assert container.state().status == "running"
    container.delete(force=True)
    finish_quietly(created)


def test_terminal_gives_the_caller_the_pty_master(make_bundle, state_root) -> None:
    # As runc, the terminal is also /dev/console, and root's keeps the tty group devpts gives it.
    bundle = make_bundle(["sh", "-c", "tty; echo console > /dev/console; stat -c %u:%g $(tty); echo done"])
    container, result = Container.create(bundle.id, bundle.path, root=state_root, terminal=True)
    assert result.console_fd is not None
    container.start()
    out = read_console(result.console_fd)
    wait_for(result.pid)
    container.delete()
    assert out.split() == ["/dev/pts/0", "console", "0:5", "done"]


@pytest.mark.parametrize("console", ["symlink", "none"])
def test_the_console_goes_only_where_it_may(make_bundle, state_root, console) -> None:
    """Without a /dev of its own (the image's, under a read-only root), a symlink at /dev/console is
    refused, never followed (it could point anywhere); with no file there and none to be made, the
    terminal goes without a /dev/console."""
    def edit(c: dict) -> None:
        c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/dev"]

    bundle = make_bundle(["sh", "-c", "tty"], edit=edit)
    dev = os.path.join(bundle.rootfs, "dev")
    os.makedirs(dev, exist_ok=True)
    os.mknod(os.path.join(dev, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the image's own /dev
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    if console == "symlink":
        with open(os.path.join(bundle.rootfs, "etc", "target"), "w"):
            pass
        os.symlink("/etc/target", os.path.join(dev, "console"))
        try:
            container, result = Container.create(bundle.id, bundle.path, root=state_root, terminal=True)
        except RuntimeFailure as e:
            assert "/dev/console" in str(e)
            return
        container.kill(signal.SIGKILL)  # (what a regression made goes, then the test fails)
        wait_for(result.pid)
        container.delete()
        pytest.fail("the symlink at /dev/console was followed")
    container, result = Container.create(bundle.id, bundle.path, root=state_root, terminal=True)
    container.start()
    out = read_console(result.console_fd)
    wait_for(result.pid)
    container.delete()
    assert out.split()[0].startswith("/dev/pts/") or out.split() == ["not", "a", "tty"], out


def test_hooks_run_at_their_moments(make_bundle, state_root, tmp_path) -> None:
    log = tmp_path / "hooks.log"

    def hook(kind: str) -> dict:
        # Each hook appends its kind and the status from the state JSON on its stdin.
        script = (f"read state; s=${{state#*\\\"status\\\": \\\"}}; "
                  f"echo {kind} ${{s%%\\\"*}} >> {log}")
        return {"path": "/bin/sh", "args": ["sh", "-c", script]}

    def edit(c: dict) -> None:
        c["hooks"] = {k: [hook(k)] for k in ("prestart", "createRuntime", "createContainer",
                                             "poststart", "poststop")}

    bundle = make_bundle(["true"], edit=edit)
    container, created = create_captured(bundle, state_root)
    assert log.read_text().split("\n")[:3] == ["prestart creating", "createRuntime creating",
                                               "createContainer creating"]
    container.start()
    finish(container, created)
    assert log.read_text().split() == ["prestart", "creating", "createRuntime", "creating",
                                       "createContainer", "creating", "poststart", "running",
                                       "poststop", "stopped"]


def test_create_runtime_hooks_see_the_container_mounts(make_bundle, state_root, tmp_path) -> None:
    """runtime-spec: createRuntime runs after the environment exists (the spec's mounts are up),
    before pivot_root (so under the bundle's rootfs); the hook finds them through the init's pid in
    the state on its stdin."""
    log = tmp_path / "mounts.log"
    script = (f"p=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'); "
              f"grep -c '/rootfs/mnt/marker ' /proc/$p/mountinfo > {log}")

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/mnt/marker", "type": "tmpfs", "source": "tmpfs"})
        c["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}

    bundle = make_bundle(["true"], edit=edit)
    container, created = create_captured(bundle, state_root)
    container.start()
    finish(container, created)
    assert log.read_text().strip() == "1"


def test_failing_hook_fails_create_and_leaves_nothing(make_bundle, state_root) -> None:
    def edit(c: dict) -> None:
        c["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}

    bundle = make_bundle(["true"], edit=edit)
    with pytest.raises(RuntimeFailure, match="createRuntime"):
        Container.create(bundle.id, bundle.path, root=state_root)
    assert not os.path.exists(os.path.join(state_root, bundle.id))


def _join_path(path: str):
    return lambda c: [ns.update(path=path) for ns in c["linux"]["namespaces"] if ns["type"] == "network"]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["process"].update(cwd="/bin/busybox"), "process.cwd '/bin/busybox': Not a directory"),
    (lambda c: c["process"].update(args=["/etc/passwd"]), "process.args[0]: '/etc/passwd' in the container "
                                                          "is not executable: permission denied"),
    (lambda c: c["process"].update(args=["/nonexistent"]), "process.args[0]: '/nonexistent' in the container: "
                                                           "no such file or directory"),
    (lambda c: c["process"].update(args=["nonexistent"]), "process.args[0]: 'nonexistent': executable file not "
                                                          "found in $PATH, in the container"),
    (lambda c: c["process"].update(args=["passwd"], env=["PATH=/etc"]),  # as runc: not found, not "denied"
     "process.args[0]: 'passwd': executable file not found in $PATH, in the container ('/etc/passwd' is "
     "not executable)"),
    (lambda c: c["process"].update(args=["/etc"]), "process.args[0]: '/etc' in the container is a directory"),
    (_join_path("/proc/999999999/ns/net"), "linux.namespaces[1] (network): cannot open /proc/999999999/ns/net"),
    (_join_path("/etc/hostname"), "linux.namespaces[1] (network /etc/hostname): cannot join it"),
    (lambda c: c["linux"]["resources"].update(cpu={"cpus": "abc"}), "linux.resources.cpu"),
    (lambda c: (c["linux"]["namespaces"].append({"type": "user"}),
                c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 100000, "size": 10},
                                               {"containerID": 5, "hostID": 200000, "size": 1}],
                                  gidMappings=[{"containerID": 0, "hostID": 100000, "size": 10}])),
     "linux.uidMappings: the kernel refused them"),
    # Killed before it could report anything: the cgroup's OOM counter says why.
    (lambda c: c["linux"]["resources"].update(memory={"limit": 1}),
     "the OOM killer killed the container while it was being set up: linux.resources.memory.limit (1)"),
])
def test_a_create_that_fails_in_the_container_names_the_setting(make_bundle, state_root, edit, message) -> None:
    bundle = make_bundle(["true"], edit=edit)
    with pytest.raises(RuntimeFailure) as failed:
        Container.create(bundle.id, bundle.path, root=state_root)
    assert message in str(failed.value)
    assert not os.path.exists(os.path.join(state_root, bundle.id))
    cgroup = os.path.join(CGROUP_ROOT, "memory", CGROUP_PARENT.lstrip("/"), bundle.id)
    assert not os.path.exists(cgroup)


def test_a_root_that_is_not_a_directory_is_a_spec_error(make_bundle, state_root) -> None:
    bundle = make_bundle(["true"], edit=lambda c: c["root"].update(path="/nonexistent-root"))
    with pytest.raises(SpecError, match="root.path: /nonexistent-root does not exist"):
        Container.create(bundle.id, bundle.path, root=state_root)
    assert not os.path.exists(os.path.join(state_root, bundle.id))


def test_failing_poststop_hook_is_logged_and_delete_goes_on(make_bundle, state_root, caplog) -> None:
    bundle = make_bundle(["true"], edit=lambda c: c.update(hooks={"poststop": [{"path": "/bin/false"}]}))
    with caplog.at_level(logging.WARNING, logger="railcar.runtime"):
        assert run_container(bundle, state_root).status == 0
    assert not os.path.exists(os.path.join(state_root, bundle.id))
    assert any("poststop" in r.getMessage() and bundle.id in r.getMessage() for r in caplog.records), caplog.text


def _deleting_in_a_child(bundle: Bundle, state_root: str,
                         before: Callable[[], None] | None = None) -> tuple[Container, int]:
    """Run the container to its exit, then delete it in a forked child (after `before`, which
    changes that child only), as a worker would: the container, and the child's pid."""
    container, created = create_captured(bundle, state_root)
    container.start()
    created.read_all()
    wait_for(created.result.pid)
    deleting = os.fork()
    if deleting == 0:
        code = 1
        try:
            if before is not None:
                before()
            container.delete()
            code = 2  # (not cut short)
        finally:
            os._exit(code)
    return container, deleting


def test_a_delete_killed_while_its_poststop_hooks_run_is_not_redone(make_bundle, state_root, tmp_path) -> None:
    """As in runc, the container's state goes before its poststop hooks run: after a delete whose
    process died meanwhile (a worker killed), the next delete has nothing to redo, and the hooks
    ran once."""
    log = tmp_path / "poststop.log"
    script = f"echo $$ >> {log}; [ $(wc -l < {log}) -gt 1 ] || exec sleep 30"
    bundle = make_bundle(["true"], edit=lambda c: c.update(
        hooks={"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}))
    container, deleting = _deleting_in_a_child(bundle, state_root)
    assert eventually(lambda: log.exists() and log.read_text().endswith("\n"))
    os.kill(deleting, signal.SIGKILL)
    os.waitpid(deleting, 0)
    hook = int(log.read_text())
    os.kill(hook, signal.SIGKILL)  # our orphan (we are a subreaper)
    os.waitpid(hook, 0)
    container.delete()
    assert len(log.read_text().split()) == 1
    assert not os.path.exists(os.path.join(state_root, bundle.id))


def test_a_delete_killed_while_it_removed_the_directory_leaves_the_id_free(make_bundle, state_root) -> None:
    """A delete killed part-way through removing the container's directory (here once config.json
    was gone): an exec answers that the container stopped, the next delete removes the rest, and
    the id can be created again."""
    def cut_short(path: str, ignore_errors: bool = False) -> None:
        os.unlink(os.path.join(path, "config.json"))
        os._exit(0)

    bundle = make_bundle(["true"])
    _, deleting = _deleting_in_a_child(bundle, state_root, lambda: setattr(shutil, "rmtree", cut_short))
    _, status = os.waitpid(deleting, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # cut short where meant
    for process in ({"args": ["true"], "cwd": "/"}, {"args": ["true"], "cwd": "relative"}):  # (the state first)
        with pytest.raises(InvalidState, match="stopped"):
            Container.load(bundle.id, root=state_root).exec(process)
    Container.load(bundle.id, root=state_root).delete()
    assert not os.path.exists(os.path.join(state_root, bundle.id))
    assert run_container(bundle, state_root).status == 0


def test_console_size_is_applied_to_init_and_exec(make_bundle, state_root) -> None:
    """process.consoleSize sets the pty's window size before the program runs (not ignored)."""
    bundle = make_bundle(["sh", "-c", "stty size; sleep 100"],
                         edit=lambda c: c["process"].update(terminal=True, consoleSize={"height": 31, "width": 97}))
    container, result = Container.create(bundle.id, bundle.path, root=state_root, terminal=True)
    container.start()
    first_line = b""
    while not first_line.endswith(b"\n"):
        first_line += os.read(result.console_fd, 1)
    assert first_line.decode().split() == ["31", "97"], first_line
    ran = container.exec({"args": ["stty", "size"], "cwd": "/", "consoleSize": {"height": 5, "width": 7}},
                         terminal=True)
    assert read_console(ran.console_fd).split() == ["5", "7"]
    assert wait_for(ran.pid) == 0
    container.kill(signal.SIGKILL)
    os.close(result.console_fd)
    wait_for(result.pid)
    container.delete()


def test_failure_after_the_init_is_parked_leaves_nothing(make_bundle, state_root, monkeypatch) -> None:
    """The last step of create (recording it as created) failing must not leave a parked init,
    its pty master or its cgroup behind (the autouse no_leaks fixture checks)."""
    import railcar.runtime.container as container_module
    real_write = container_module.write_record

    def failing_write(directory: str, record) -> None:
        if record.created:
            raise OSError(28, "No space left on device")
        real_write(directory, record)

    monkeypatch.setattr(container_module, "write_record", failing_write)
    bundle = make_bundle(["true"])
    with pytest.raises(OSError, match="No space"):
        Container.create(bundle.id, bundle.path, root=state_root, terminal=True)
    assert not os.path.exists(os.path.join(state_root, bundle.id))


def _when_exec_forked(monkeypatch, act: Callable[[int], None]) -> None:
    """Run `act(pid)` in the caller as soon as an exec's helper reports the exec's process forked."""
    from railcar.runtime import channel

    recv = channel.Channel.recv

    def reporting(self, stage, *expected):
        msg, fds = recv(self, stage, *expected)
        if isinstance(msg, channel.ExecForked):
            act(msg.pid)
        return msg, fds

    monkeypatch.setattr(channel.Channel, "recv", reporting)


def test_an_exec_whose_container_ends_while_it_is_set_up_fails_as_for_a_stopped_container(
        make_bundle, state_root, monkeypatch) -> None:
    """An exec racing its container's end: the init's exit kills what is in its pid namespace, the
    exec's process too, half set up. That is answered as an exec that came after the end is, not
    by its symptom: through ctr, 2 of 30 such execs failed with "internal: BrokenPipeError" and 2
    with "helper exited without reporting"."""
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()

    def init_ends(pid: int) -> None:
        os.kill(container.init_pid, signal.SIGKILL)
        assert eventually(lambda: pid_gone(pid), timeout=10)

    _when_exec_forked(monkeypatch, init_ends)
    try:
        with pytest.raises(InvalidState, match="cannot exec a container that is stopped"):
            container.exec({"args": ["true"], "cwd": "/"})
    finally:
        monkeypatch.undo()
        finish(container, created)


def test_an_exec_whose_helper_dies_before_the_move_fails_and_holds_only_its_gate(make_bundle, state_root,
                                                                                  monkeypatch) -> None:
    """The exec process waits at its gate holding only the gate's read end (so its helper's death is
    EOF there), and the caller does not move a pid whose helper, its holder, is gone."""
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    pipes: list[list[str]] = []

    def kill_helper(pid: int) -> None:
        fd_dir = f"/proc/{pid}/fd"   # once it waits at its gate (it closes what it inherited first)
        assert eventually(lambda: "pipe_read" in open(f"/proc/{pid}/wchan").read(), timeout=10)
        targets = [os.readlink(f"{fd_dir}/{n}") for n in os.listdir(fd_dir)]
        pipes.append([t for t in targets if t.startswith("pipe:")])
        with open(f"/proc/{pid}/stat") as f:
            helper = int(f.read().rpartition(")")[2].split()[1])
        os.kill(helper, signal.SIGKILL)
        os.waitid(os.P_PID, helper, os.WEXITED | os.WNOWAIT)

    _when_exec_forked(monkeypatch, kill_helper)
    try:
        with pytest.raises(RuntimeFailure, match="helper died"):
            container.exec({"args": ["true"], "cwd": "/"})
    finally:
        monkeypatch.undo()
        container.kill(signal.SIGKILL)
        finish(container, created)
    assert len(pipes[0]) == len(set(pipes[0])), pipes   # never both ends of one pipe


def test_an_error_quoting_a_huge_value_comes_back_shortened_whole(make_bundle, state_root) -> None:
    """A helper's failure travels in one message of at most 64 KiB: one quoting an args[0] of 100 KB
    came back cut, as "internal: JSONDecodeError", and over ~208 KB the helper could not report."""
    bundle = make_bundle(["a" * 100_000])
    with pytest.raises(RuntimeFailure) as info:
        create_captured(bundle, state_root)
    message = str(info.value)
    assert message.startswith("process: process.args[0]: 'aaa") and "characters left out" in message
    assert message.endswith("executable file not found in $PATH, in the container") and len(message) < 5000
