"""Task events to containerd: one ordered, bounded queue forwarded over ttrpc to `$TTRPC_ADDRESS`.

Order matters to containerd's clients (start before exit, exit before delete, reference §3.3), so
events leave in the order they were published, one at a time, and a failing event is retried before
the next goes out. An event containerd refuses, or does not answer, is dropped after the last retry:
Wait and State stay authoritative, and containerd re-queries them. But while a containerd that was
reached before cannot be reached at all (it is restarting: its socket is gone or refuses), events
are held, in order, and go out once it is back (tried four times a second): containerd's shims
outlive its restarts, and the exits that happen meanwhile are the events its clients most need.
(containerd-shim-runc-v2 drops an event after five tries over 15 s, whatever the cause; a restart
that takes longer loses them.)
A publisher that never reached containerd (a shim run by hand) drops after its retries.
"""

import logging
import time
from contextlib import AsyncExitStack

import trio
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from railcar.ttrpc_proto.api import events_task_pb2, events_ttrpc_pb2
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


def envelope(namespace: str, event: Message) -> events_ttrpc_pb2.ForwardRequest:
    """The ForwardRequest for one event: its topic, the namespace, a real timestamp, a bare type URL."""
    name = event.DESCRIPTOR.name
    if name not in TOPICS:
        raise ValueError(f"{event.DESCRIPTOR.full_name} is not a task event")
    request = events_ttrpc_pb2.ForwardRequest()
    env = request.envelope
    env.timestamp.FromNanoseconds(time.time_ns())
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
        outage_poll: float = 0.25,
        call_timeout: float = 5.0,
    ) -> None:
        self._address = address
        self._namespace = namespace
        self._log = logger
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._outage_poll = outage_poll  # how often a containerd that is away is tried again (connects are cheap)
        self._call_timeout = call_timeout
        self._send, self._receive = trio.open_memory_channel[tuple[events_ttrpc_pb2.ForwardRequest, str | None]](
            queue_size)
        self._idle = trio.Event()
        self._idle.set()
        self._pending = 0
        self._reached = False  # containerd answered once: an unreachable one is restarting
        self._oom_queued: set[str] = set()  # the containers with a TaskOOM in the queue
        self._down_since: float | None = None  # when the current outage began

    def publish(self, event: Message) -> None:
        """Queue `event` now (its timestamp is now). A full queue drops it with a log line.

        A TaskOOM for a container that has one queued already is not queued again: it says nothing
        more (CRI marks the container OOMKilled once), and a process that the OOM killer keeps
        killing while containerd is away must not fill the queue and push out the exits after it."""
        oom_of = event.container_id if isinstance(event, events_task_pb2.TaskOOM) else None
        if oom_of is not None and oom_of in self._oom_queued:
            return
        request = envelope(self._namespace, event)
        try:
            self._send.send_nowait((request, oom_of))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._log.error("dropping event %s: the event queue is full or closed", request.envelope.topic)
            return
        if oom_of is not None:
            self._oom_queued.add(oom_of)
        self._pending += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    async def run(self) -> None:
        """Forward queued events until the queue is closed and empty (see `close`)."""
        async with AsyncExitStack() as stack:
            client: Client | None = None
            async for request, oom_of in self._receive:
                if oom_of is not None:  # (a TaskOOM's container) from now on, a new one is news
                    self._oom_queued.discard(oom_of)
                attempt = 0
                while True:
                    try:
                        if client is None or client.closed:
                            await stack.aclose()
                            try:
                                client = await stack.enter_async_context(connect_unix(self._address))
                            except OSError as e:
                                if not self._reached:
                                    raise
                                self._down(e)
                                await trio.sleep(self._outage_poll)
                                continue
                        await client.call(SERVICE, "Forward", request, empty_pb2.Empty,
                                          timeout=self._call_timeout,
                                          metadata={NAMESPACE_KEY: self._namespace})
                        self._up()
                        break
                    except Exception as e:  # whatever went wrong, a publisher failure is never fatal
                        client = None
                        attempt += 1
                        self._log.warning("publish %s failed (attempt %d/%d): %s",
                                          request.envelope.topic, attempt, self._attempts, e)
                        if attempt == self._attempts:
                            self._log.error("dropping event %s after %d attempts", request.envelope.topic,
                                            self._attempts)
                            break
                        await trio.sleep(self._retry_delay * attempt)
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    def _down(self, error: OSError) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._log.warning("containerd is unreachable (%s): holding events until it is back", error)

    def _up(self) -> None:
        self._reached = True
        if self._down_since is not None:
            self._log.info("containerd is back, %.1f s after an event first found it away: forwarding the %d "
                           "events queued", time.monotonic() - self._down_since, self._pending)
            self._down_since = None

    @property
    def pending(self) -> int:
        """Events queued and not yet forwarded or dropped."""
        return self._pending

    async def drained(self) -> None:
        """Return once every event queued so far was forwarded or dropped."""
        while self._pending:
            await self._idle.wait()

    def close(self) -> None:
        """Accept no more events; `run` returns after the queue is empty."""
        self._send.close()
