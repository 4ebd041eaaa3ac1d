"""Event order as containerd's clients see it (`ctr events`): reference §3.3."""

import json
import re
import subprocess
import time

import pytest

from .conftest import RUNTIME, run

pytestmark = [pytest.mark.integration, pytest.mark.cgroup_v2]  # run again in the pure v2 guest


class Events:
    """`ctr events` running in the background; `topics(cid)` lists what arrived for one container."""

    def __init__(self, cd) -> None:
        self._proc = subprocess.Popen(["ctr", "--address", cd.address, "events"], stdout=subprocess.PIPE,
                                      env=cd.env)
        time.sleep(0.3)  # subscribed before anything happens

    def stop(self) -> list[tuple[str, dict]]:
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        events = []
        for line in out.decode().splitlines():
            # "2026-11-30 07:06:07.26 +0000 UTC <namespace> /tasks/exit {json}"
            match = re.match(r"\S+ \S+ \S+ \S+ \S+ (/tasks/\S+) ?(.*)$", line)
            if match:
                events.append((match[1], json.loads(match[2] or "{}")))
        return events


def _for(events: list[tuple[str, dict]], cid: str) -> list[tuple[str, dict]]:
    return [(t, p) for t, p in events if p.get("container_id") == cid]


def test_run_emits_create_start_exit_delete_in_order(cd, image, cid) -> None:
    events = Events(cd)
    assert run(cd, image, cid, "sh", "-c", "exit 3").returncode == 3
    time.sleep(0.5)
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
        time.sleep(1.0)
        assert cd.ctr("task", "kill", "-s", "SIGKILL", cid).returncode == 0  # init dies; the exec must go first
        execer.wait(timeout=20)
    finally:
        cd.ctr("task", "kill", "-s", "SIGKILL", cid)
        time.sleep(0.5)
        cd.ctr("task", "rm", cid)
        cd.ctr("container", "rm", cid)
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
    time.sleep(0.5)
    topics = [t for t, _ in _for(events.stop(), cid)]
    assert "/tasks/oom" in topics, topics
    assert topics.index("/tasks/oom") < topics.index("/tasks/exit")
