"""The event publisher against a real ttrpc server standing in for containerd's events service."""

import logging

import pytest
import trio
from google.protobuf import empty_pb2

from railcar.shim.events import NAMESPACE_KEY, Publisher, envelope
from railcar.ttrpc_proto.api import events_task_pb2 as ev

from .conftest import FakeContainerd

LOG = logging.getLogger("test-events")


def test_envelope_has_topic_namespace_bare_url_and_real_time() -> None:
    request = envelope("k8s.io", ev.TaskExit(container_id="c", id="c", pid=7, exit_status=1))
    env = request.envelope
    assert (env.topic, env.namespace, env.event.type_url) == ("/tasks/exit", "k8s.io", "containerd.events.TaskExit")
    assert env.timestamp.seconds > 1_600_000_000
    with pytest.raises(ValueError, match="not a task event"):
        envelope("n", empty_pb2.Empty())


async def test_events_arrive_in_order_with_namespace_metadata_despite_failures(tmp_path) -> None:
    fake = FakeContainerd(failures=2)
    path = str(tmp_path / "ttrpc.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve, path)
        publisher = Publisher(path, "default", LOG, retry_delay=0.01)
        nursery.start_soon(publisher.run)
        publisher.publish(ev.TaskStart(container_id="c", pid=1))
        publisher.publish(ev.TaskExit(container_id="c", id="c", pid=1, exit_status=3))
        publisher.publish(ev.TaskDelete(container_id="c", pid=1, exit_status=3))
        await publisher.drained()
        publisher.close()
        nursery.cancel_scope.cancel()
    assert [e.topic for e, _ in fake.received] == ["/tasks/start", "/tasks/exit", "/tasks/delete"]
    assert all(md[NAMESPACE_KEY] == ["default"] for _, md in fake.received)
    exit_event = ev.TaskExit.FromString(fake.received[1][0].event.value)
    assert exit_event.exit_status == 3


async def test_unreachable_containerd_drops_after_retries_and_is_not_fatal(tmp_path, caplog) -> None:
    publisher = Publisher(str(tmp_path / "nobody.sock"), "default", LOG, attempts=2, retry_delay=0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(ev.TaskOOM(container_id="c"))
        await publisher.drained()
        publisher.close()
    assert "dropping event /tasks/oom after 2 attempts" in caplog.text


async def test_events_wait_for_a_containerd_that_restarts_and_arrive_in_order(tmp_path, caplog) -> None:
    """containerd, reached once, goes away for longer than the retries last and comes back on the
    same socket: the events published meanwhile are held, not dropped, and arrive in order."""
    path = tmp_path / "ttrpc.sock"
    caplog.set_level(logging.INFO, logger=LOG.name)
    before, after = FakeContainerd(), FakeContainerd()
    publisher = Publisher(str(path), "default", LOG, attempts=2, retry_delay=0.01, outage_poll=0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        async with trio.open_nursery() as first:
            await first.start(before.serve, str(path))
            publisher.publish(ev.TaskStart(container_id="c", pid=1))
            await publisher.drained()
            first.cancel_scope.cancel()
        path.unlink()  # (containerd removes its socket on the way out, and binds a new one)
        for code in (3, 4, 5):
            publisher.publish(ev.TaskExit(container_id="c", id=f"e{code}", pid=code, exit_status=code))
        await trio.sleep(0.3)  # ten times what two attempts take
        assert publisher.pending == 3
        await nursery.start(after.serve, str(path))
        with trio.fail_after(5):
            await publisher.drained()
        publisher.close()
        nursery.cancel_scope.cancel()
    assert [e.topic for e, _ in before.received] == ["/tasks/start"]
    assert [ev.TaskExit.FromString(e.event.value).exit_status for e, _ in after.received] == [3, 4, 5]
    assert "holding events until it is back" in caplog.text and "forwarding the 3 events queued" in caplog.text
    assert "dropping" not in caplog.text


async def test_a_taskoom_like_one_still_queued_is_not_queued_again(tmp_path) -> None:
    """An OOM loop while containerd is away must not fill the queue and push out the exit after it."""
    fake = FakeContainerd()
    path = str(tmp_path / "ttrpc.sock")
    publisher = Publisher(path, "default", LOG, queue_size=3, retry_delay=0.01)
    for event in (ev.TaskOOM(container_id="c"), ev.TaskOOM(container_id="c"), ev.TaskOOM(container_id="d"),
                  ev.TaskOOM(container_id="c"), ev.TaskExit(container_id="c", id="c", pid=1, exit_status=137),
                  ev.TaskOOM(container_id="c")):
        publisher.publish(event)
    assert publisher.pending == 3
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve, path)
        nursery.start_soon(publisher.run)
        await publisher.drained()
        publisher.publish(ev.TaskOOM(container_id="c"))  # the first went out: this one is news
        await publisher.drained()
        publisher.close()
        nursery.cancel_scope.cancel()
    assert [e.topic for e, _ in fake.received] == ["/tasks/oom", "/tasks/oom", "/tasks/exit", "/tasks/oom"]


async def test_a_full_queue_drops_with_a_log_line(caplog) -> None:
    publisher = Publisher("/nonexistent", "default", LOG, queue_size=1)
    publisher.publish(ev.TaskPaused(container_id="c"))
    publisher.publish(ev.TaskResumed(container_id="c"))
    assert "dropping event /tasks/resumed" in caplog.text
    publisher.close()
