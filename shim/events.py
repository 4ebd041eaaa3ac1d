"""Task events to containerd: one ordered, bounded queue forwarded over ttrpc to `$TTRPC_ADDRESS`.

Order matters to containerd's clients (start before exit, exit before delete, reference §3.3), so
events leave in the order they were published, one at a time, and a failing event is retried before
the next goes out. A publisher that cannot reach containerd (restarting, gone) logs and, after the
last retry, drops the event: Wait and State stay authoritative, and containerd re-queries them.
"""

import logging
import time
from contextlib import AsyncExitStack

import trio
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from railcar.ttrpc_proto.api import events_ttrpc_pb2
from railcar.ttrpc_proto.client import Client, connect_unix
from railcar.ttrpc_proto.typeurl import pack

SERVICE = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_KEY = "containerd-namespace-ttrpc"
TOPICS = {
    "TaskCreate": "/tasks/create",
    "TaskStart": "/tasks/start",
    "TaskDelete": "/tasks/delete",
    "TaskExit": "/tasks/exit",
    "TaskOOM": "/tasks/oom",
    "TaskExecAdded": "/tasks/exec-added",
    "TaskExecStarted": "/tasks/exec-started",
    "TaskPaused": "/tasks/paused",
    "TaskResumed": "/tasks/resumed",
    "TaskCheckpointed": "/tasks/checkpointed",
}


def envelope(namespace: str, event: Message, now_ns: int | None = None) -> events_ttrpc_pb2.ForwardRequest:
    """The ForwardRequest for one event: its topic, the namespace, a real timestamp, a bare type URL."""
    name = event.DESCRIPTOR.name
    if name not in TOPICS:
        raise ValueError(f"{event.DESCRIPTOR.full_name} is not a task event")
    request = events_ttrpc_pb2.ForwardRequest()
    env = request.envelope
    env.timestamp.FromNanoseconds(time.time_ns() if now_ns is None else now_ns)
    env.namespace = namespace
    env.topic = TOPICS[name]
    env.event.CopyFrom(pack(event))
    return request


class Publisher:
    """Queues events (never blocking the caller) and forwards them in order from `run`."""

    def __init__(
        self,
        address: str,
        namespace: str,
        logger: logging.Logger,
        *,
        queue_size: int = 2048,
        attempts: int = 5,
        retry_delay: float = 1.0,
        call_timeout: float = 5.0,
    ) -> None:
        self._address = address
        self._namespace = namespace
        self._log = logger
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._call_timeout = call_timeout
        self._send, self._receive = trio.open_memory_channel[events_ttrpc_pb2.ForwardRequest](queue_size)
        self._idle = trio.Event()
        self._idle.set()
        self._pending = 0

    def publish(self, event: Message) -> None:
        """Queue `event` now (its timestamp is now). A full queue drops it with a log line."""
        request = envelope(self._namespace, event)
        try:
            self._send.send_nowait(request)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._log.error("dropping event %s: the event queue is full or closed", request.envelope.topic)
            return
        self._pending += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    async def run(self) -> None:
        """Forward queued events until the queue is closed and empty (see `aclose`)."""
        async with AsyncExitStack() as stack:
            client: Client | None = None
            async for request in self._receive:
                for attempt in range(1, self._attempts + 1):
                    try:
                        if client is None or client.closed:
                            await stack.aclose()
                            client = await stack.enter_async_context(connect_unix(self._address))
                        await client.call(SERVICE, "Forward", request, empty_pb2.Empty,
                                          timeout=self._call_timeout,
                                          metadata={NAMESPACE_KEY: self._namespace})
                        break
                    except Exception as e:  # whatever went wrong, a publisher failure is never fatal
                        client = None
                        self._log.warning("publish %s failed (attempt %d/%d): %s",
                                          request.envelope.topic, attempt, self._attempts, e)
                        if attempt < self._attempts:
                            await trio.sleep(self._retry_delay * attempt)
                else:
                    self._log.error("dropping event %s after %d attempts", request.envelope.topic, self._attempts)
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    async def drained(self) -> None:
        """Return once every event queued so far was forwarded or dropped."""
        while self._pending:
            await self._idle.wait()

    def close(self) -> None:
        """Accept no more events; `run` returns after the queue is empty."""
        self._send.close()
