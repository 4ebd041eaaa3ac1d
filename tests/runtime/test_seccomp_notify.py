"""SCMP_ACT_NOTIFY: a seccomp agent at linux.seccomp.listenerPath gets each process's listener
and answers the calls the filter hands it (runtime-spec's seccomp section, as runc does it)."""

import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import threading

import pytest

from railcar.runtime import Container, RuntimeFailure, seccomp
from railcar.runtime.errors import ContainerNotFound

from .conftest import create_captured, exec_captured, finish, run_container

_NOTIF = struct.Struct("=QIIiIQ6Q")   # struct seccomp_notif: id, pid, flags, nr, arch, ip, args
_RESP = struct.Struct("=QqiI")        # struct seccomp_notif_resp: id, val, error, flags
_NOTIF_RECV = 0xC0000000 | _NOTIF.size << 16 | ord("!") << 8 | 0
_NOTIF_SEND = 0xC0000000 | _RESP.size << 16 | ord("!") << 8 | 1
_CONTINUE = 1                         # SECCOMP_USER_NOTIF_FLAG_CONTINUE
_MKDIR = (83, 258)                    # x86_64 mkdir, mkdirat


class Agent:
    """A seccomp agent on a unix socket: it keeps the container process states it is sent and
    answers mkdir with ENOMEDIUM (any other notified call goes on as if unfiltered)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen()
        self.states: list[dict] = []
        self.answered: list[int] = []   # pids whose mkdir was answered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve)

    def __enter__(self) -> "Agent":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        os.unlink(self.path)

    def _serve(self) -> None:
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        listeners: set[int] = set()
        try:
            while not self._stop.is_set():
                for fd, events in poll.poll(50):
                    if fd == self.sock.fileno():
                        listener = self._accept()
                        listeners.add(listener)
                        poll.register(listener, select.POLLIN)
                    elif events & select.POLLIN:
                        self._answer(fd)
                    else:   # every process of that filter is gone
                        poll.unregister(fd)
                        listeners.discard(fd)
                        os.close(fd)
        finally:
            for fd in listeners:
                os.close(fd)

    def _accept(self) -> int:
        conn, _ = self.sock.accept()
        with conn:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 1)
            while chunk := conn.recv(65536):   # one state per connection, closed after
                data += chunk
        assert len(fds) == 1, fds
        self.states.append(json.loads(data))
        return fds[0]

    def _answer(self, listener: int) -> None:
        notif = bytearray(_NOTIF.size)
        try:
            fcntl.ioctl(listener, _NOTIF_RECV, notif, True)
        except OSError:   # the caller died meanwhile
            return
        id_, pid, _flags, nr, *_ = _NOTIF.unpack(notif)
        if nr in _MKDIR:
            self.answered.append(pid)
            resp = _RESP.pack(id_, 0, -errno.ENOMEDIUM, 0)
        else:
            resp = _RESP.pack(id_, 0, 0, _CONTINUE)
        try:
            fcntl.ioctl(listener, _NOTIF_SEND, bytearray(resp), True)
        except OSError:
            pass


def _notifying(path: str):
    def edit(c: dict) -> None:
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
                                 "listenerMetadata": "railcar-test",
                                 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    return edit


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_the_agent_gets_the_init_s_listener_and_answers_its_calls(make_bundle, state_root, tmp_path,
                                                                  no_new_privileges) -> None:
    """Without no_new_privs the filter goes in before the user switch, with it at the end of the set-up:
    either way the listener reaches the agent before the process makes a call it must answer."""
    with Agent(str(tmp_path / "agent.sock")) as agent:
        notifying = _notifying(agent.path)

        def edit(c: dict) -> None:
            notifying(c)
            c["process"]["noNewPrivileges"] = no_new_privileges

        bundle = make_bundle(["sh", "-c", "mkdir /tmp/d; echo rc=$?"], edit=edit)
        container, created = create_captured(bundle, state_root)
        pid = created.result.pid
        container.start()
        ran = finish(container, created)
    assert ran.status == 0
    assert os.strerror(errno.ENOMEDIUM) in ran.output and "rc=1" in ran.output, ran.output
    assert len(agent.answered) == 1   # from sh's child running mkdir
    [state] = agent.states
    assert (state["fds"], state["pid"], state["metadata"]) == (["seccompFd"], pid, "railcar-test")
    assert {k: state["state"][k] for k in ("id", "status", "pid")} == {"id": bundle.id, "status": "creating",
                                                                      "pid": pid}
    assert state["state"]["bundle"] == bundle.path


def test_an_exec_s_listener_reaches_the_agent_too(make_bundle, state_root, tmp_path) -> None:
    with Agent(str(tmp_path / "agent.sock")) as agent:
        bundle = make_bundle(["sleep", "100"], edit=_notifying(agent.path))
        container, created = create_captured(bundle, state_root)
        container.start()
        ran = exec_captured(container, {"args": ["mkdir", "/tmp/e"], "cwd": "/", "user": {"uid": 0, "gid": 0}})
        container.kill(signal.SIGKILL)
        finish(container, created)
    assert ran.status == 1 and os.strerror(errno.ENOMEDIUM) in ran.output, ran
    init, exec_ = agent.states
    assert init["pid"] == created.result.pid and init["state"]["status"] == "creating"
    assert exec_["pid"] not in (0, created.result.pid) and exec_["state"]["status"] == "running"
    assert exec_["state"]["pid"] == created.result.pid
    assert agent.answered == [exec_["pid"]]


def test_no_agent_fails_create_naming_the_listener_and_leaves_nothing(make_bundle, state_root, tmp_path) -> None:
    path = str(tmp_path / "nobody.sock")
    bundle = make_bundle(["true"], edit=_notifying(path))
    with pytest.raises(RuntimeFailure, match="linux.seccomp.listenerPath") as failed:
        run_container(bundle, state_root)
    assert failed.value.stage == "seccomp"
    with pytest.raises(ContainerNotFound):
        Container.load(bundle.id, root=state_root)


def test_an_exec_whose_listener_cannot_be_passed_never_runs(make_bundle, state_root, tmp_path,
                                                           monkeypatch) -> None:
    """The exec process waits until the agent has its listener (as runc's does): with an agent that
    takes no connection, the exec fails naming the listener once the wait is over, and its program
    never ran meanwhile."""
    monkeypatch.setattr(seccomp, "AGENT_TIMEOUT", 1)
    with Agent(str(tmp_path / "agent.sock")) as agent:
        bundle = make_bundle(["sleep", "100"], edit=_notifying(agent.path))
        container, created = create_captured(bundle, state_root)
        container.start()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(agent.path)
    stuck.listen(0)
    queued = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    queued.connect(agent.path)   # the backlog is full: the next connect waits
    marker = f"/proc/{created.result.pid}/root/dev/shm/ran"
    try:
        with pytest.raises(RuntimeFailure, match=r"linux.seccomp.listenerPath.*took nothing for 1 s"):
            exec_captured(container, {"args": ["sh", "-c", "echo > /dev/shm/ran"], "cwd": "/",
                                      "user": {"uid": 0, "gid": 0}})
        assert os.path.isdir(os.path.dirname(marker)) and not os.path.exists(marker)
    finally:
        queued.close()
        stuck.close()
        os.unlink(agent.path)
        container.kill(signal.SIGKILL)
        finish(container, created)


def test_a_large_state_reaches_the_agent_whole_and_tsync_is_left_out(make_bundle, state_root, tmp_path) -> None:
    """The state goes on a stream: all of it, however large the annotations. The kernel refuses TSYNC
    with a listener, and a one-thread process needs none."""
    with Agent(str(tmp_path / "agent.sock")) as agent:
        notifying = _notifying(agent.path)

        def edit(c: dict) -> None:
            notifying(c)
            c["linux"]["seccomp"]["flags"] = ["SECCOMP_FILTER_FLAG_TSYNC"]
            c["annotations"] = {"big": "x" * 400_000}

        ran = run_container(make_bundle(["true"], edit=edit), state_root)
    assert ran.status == 0, ran.output
    [state] = agent.states
    assert state["state"]["annotations"]["big"] == "x" * 400_000


def test_listener_fields_without_notify_rules_are_ignored() -> None:
    """runtime-spec: listenerPath and listenerMetadata mean nothing without SCMP_ACT_NOTIFY (runc ignores them)."""
    program = seccomp.compile_seccomp({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
                                       "listenerMetadata": "m"})
    assert not program.notifies and program.listener_path == ""
