"""Event order as containerd's clients see it (`ctr events`): reference §3.3."""

import itertools
import json
import re
import subprocess
import threading

import pytest

from .conftest import RUNTIME, eventually, remove_task, run

pytestmark = [pytest.mark.integration, pytest.mark.cgroup_v2]  # run again in the pure v2 guest


class Events:
    """`ctr events` running in the background, read as it goes: `wait(cid, topic)` waits for an
    event to arrive, `stop()` lists every event that did. No fixed sleeps: in the cgroup v2 guest
    every step takes several times as long as on this host."""

    def __init__(self, cd) -> None:
        self._proc = subprocess.Popen(["ctr", "--address", cd.address, "events"], stdout=subprocess.PIPE,
                                      env=cd.env)
        self._events: list[tuple[str, dict]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # Subscribed once an event of our own arrives: a label on the namespace publishes one.
        for attempt in itertools.count():
            assert cd.ctr("namespaces", "label", cd.namespace, f"railcar-test={attempt}").returncode == 0
            if eventually(lambda: any(t == "/namespaces/update" for t, _ in self._events), timeout=0.5):
                break
            assert attempt < 40, "`ctr events` never showed an event"

    def _read(self) -> None:
        for line in self._proc.stdout:
            # "2026-11-30 07:06:07.26 +0000 UTC <namespace> /tasks/exit {json}"
            match = re.match(r"\S+ \S+ \S+ \S+ \S+ (/\S+) ?(.*)$", line.decode())
            if match:
                self._events.append((match[1], json.loads(match[2] or "{}")))

    def wait(self, cid: str, topic: str, who: str | None = None) -> None:
        """Until `topic` arrived for container `cid` (and, given `who`, for that process id)."""
        assert eventually(lambda: any(t == topic and (who is None or (p.get("id") or p.get("exec_id")) == who)
                                      for t, p in _for(self._events, cid)), timeout=60), (topic, self._events)

    def stop(self) -> list[tuple[str, dict]]:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return [(t, p) for t, p in self._events if t.startswith("/tasks/")]


def _for(events: list[tuple[str, dict]], cid: str) -> list[tuple[str, dict]]:
    return [(t, p) for t, p in events if p.get("container_id") == cid]


def test_run_emits_create_start_exit_delete_in_order(cd, image, cid) -> None:
    events = Events(cd)
    assert run(cd, image, cid, "sh", "-c", "exit 3").returncode == 3
    events.wait(cid, "/tasks/delete")
    got = _for(events.stop(), cid)
    assert [t for t, _ in got] == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    exit_payload = got[2][1]
    assert exit_payload["exit_status"] == 3 and exit_payload["id"] == cid


def test_exec_exits_precede_the_init_exit(cd, image, cid) -> None:
    events = Events(cd)
    assert cd.ctr("run", "-d", "--runtime", RUNTIME, image, cid, "sleep", "1000").returncode == 0
    execer = subprocess.Popen(["ctr", "--address", cd.address, "--namespace", cd.namespace, "task", "exec",
                               "--exec-id", "long", cid, "sleep", "1000"], env=cd.env)
    try:
        events.wait(cid, "/tasks/exec-started", "long")
        assert cd.ctr("task", "kill", "-s", "SIGKILL", cid).returncode == 0  # init dies; the exec must go first
        execer.wait(timeout=60)
        events.wait(cid, "/tasks/exit", cid)
    finally:
        if execer.poll() is None:
            execer.kill()
            execer.wait()
        remove_task(cd, cid)
    got = _for(events.stop(), cid)
    topics = [(t, p.get("id") or p.get("exec_id")) for t, p in got]
    exits = [who for t, who in topics if t == "/tasks/exit"]
    assert exits == ["long", cid], topics
    assert topics.index(("/tasks/exec-started", "long")) < topics.index(("/tasks/exit", "long"))


def test_oom_is_reported_before_the_exit(cd, image, cid) -> None:
    events = Events(cd)
    result = run(cd, image, cid, "sh", "-c", "x=a; while true; do x=$x$x; done",
                 ctr_flags=("--memory-limit", str(32 * 1024 * 1024)))
    assert result.returncode == 137
    events.wait(cid, "/tasks/delete")
    topics = [t for t, _ in _for(events.stop(), cid)]
    assert "/tasks/oom" in topics, topics
    assert topics.index("/tasks/oom") < topics.index("/tasks/exit")
