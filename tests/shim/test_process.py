"""The lifecycle table: legal verbs move the state, illegal ones fail with containerd's codes."""

import pytest

from railcar.shim.process import Process, Status
from railcar.ttrpc_proto import Code, TtrpcError


def _process(status: Status) -> Process:
    process = Process("c1", "")
    process.status = status
    return process


def test_normal_life() -> None:
    process = Process("c1", "")
    for verb, expected in [("start", Status.RUNNING), ("pause", Status.PAUSED), ("resume", Status.RUNNING),
                           ("exit", Status.STOPPED), ("delete", Status.DELETED)]:
        process.apply(verb)
        assert process.status is expected


def test_created_process_can_be_deleted_and_killed() -> None:
    process = Process("c1", "e1")
    assert process.check("kill") is Status.CREATED
    process.apply("delete")
    assert process.status is Status.DELETED


# Which verbs each status refuses, by the code containerd expects: NOT_FOUND for a process that is
# gone, FAILED_PRECONDITION for one that exists but cannot take the verb now.
_REFUSED = {
    Code.NOT_FOUND: [(Status.STOPPED, "kill"), (Status.DELETED, "kill"), (Status.DELETED, "delete")],
    Code.FAILED_PRECONDITION: [
        (Status.RUNNING, "start"), (Status.STOPPED, "start"), (Status.RUNNING, "delete"), (Status.PAUSED, "delete"),
        (Status.PAUSED, "exec"), (Status.STOPPED, "exec"), (Status.CREATED, "pause"), (Status.RUNNING, "resume"),
        (Status.STOPPED, "update"), (Status.STOPPED, "resize"),
    ],
}


@pytest.mark.parametrize(("status", "verb", "code"),
                         [(status, verb, code) for code, cases in _REFUSED.items() for status, verb in cases])
def test_illegal_verbs_fail_by_construction(status: Status, verb: str, code: Code) -> None:
    process = _process(status)
    with pytest.raises(TtrpcError) as info:
        process.apply(verb)
    assert info.value.code is code and (verb in info.value.message or "finished" in info.value.message)
    assert process.status is status


def test_id_is_the_exec_id_or_the_container_id() -> None:
    assert Process("c1", "").id == "c1" and Process("c1", "e1").id == "e1"
