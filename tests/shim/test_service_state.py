"""State's answer for a process whose Delete is under way (unit test of the service's table lookup)."""

import logging

from railcar.shim.process import Process, Status
from railcar.shim.service import Task, TaskService
from railcar.ttrpc_proto.api import task_v2_pb2 as pb


def _service_with(task: Task) -> TaskService:
    """A service holding only `task`: State reads the table and nothing else (no forker, reaper or events)."""
    service = TaskService(namespace="ns", root="/nonexistent", forker=None, reaper=None, publisher=None,
                          nursery=None, logger=logging.getLogger("test"), log_bundle="")
    service.tasks[task.id] = task
    return service


async def test_state_during_delete_reports_stopped_not_the_internal_deleted() -> None:
    """Delete marks the process DELETED and then awaits stdio, the runtime and the unmount before it
    drops the task; a State in that window must still answer with a containerd Status value."""
    init = Process("c1", "", pid=42, exit_status=137, exited_at_ns=1_000_000_000)
    exec_ = Process("c1", "e1", pid=43, exit_status=1, exited_at_ns=2_000_000_000)
    for process in (init, exec_):
        process.apply("start")
        process.apply("exit")
        process.apply("delete")
    service = _service_with(Task("c1", "/bundle", init, execs={"e1": exec_}))
    for exec_id, pid, code in [("", 42, 137), ("e1", 43, 1)]:
        response = await service.state(pb.StateRequest(id="c1", exec_id=exec_id), None)
        assert (response.status, response.pid, response.exit_status) == (Status.STOPPED, pid, code)
