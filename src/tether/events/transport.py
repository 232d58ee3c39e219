"""Events between processes on Celery deployments: a fanout exchange on the broker.

Every process that commits transitions (``tether worker`` processes, and ``tether
serve`` in Celery mode for other servers) publishes what it committed to the
exchange ``tether.events`` on the Celery broker; every ``tether serve`` consumes it
into its hub. The broker is the one Celery already uses, so nothing new is run: on
Redis kombu implements the fanout with PUBLISH/SUBSCRIBE, on RabbitMQ it is a fanout
exchange with an exclusive, auto-deleted queue per server.

Delivery is best effort and that is enough: a status event lost while a server
reconnects is read from the database by the hub (gap filling, and a read of the
history's tail after a quiet second), so it arrives late, never not at all; progress
carries the latest figures anyway. Messages are JSON, never pickle (see ``wire``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from kombu import Connection, Exchange, Producer, Queue
from kombu import Consumer as KombuConsumer
from kombu.message import Message

from tether.events import bus
from tether.events.records import PipelineUpdate, ProgressUpdate
from tether.events.wire import Item, decode, encode
from tether.redaction import redact
from tether.transitions import Change

log = logging.getLogger(__name__)

EXCHANGE = "tether.events"
BUFFER_LIMIT = 10_000  # items waiting to be sent; past it progress goes first
QUEUE_LIMIT = 10_000  # messages a RabbitMQ queue keeps for a slow server (oldest dropped)
HEARTBEAT = 10  # seconds (AMQP): a consumer notices a silently dead connection
CONNECT_TIMEOUT = 3.0
SEND_TIMEOUT = 5.0
RETRY_MAX_SECONDS = 5.0

Connect = Callable[[], Connection]


def exchange() -> Exchange:
    return Exchange(EXCHANGE, type="fanout", durable=False)


def new_origin() -> str:
    """Names this process in its messages, so that it skips its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# -- publishing ------------------------------------------------------------------------------
class Publisher:
    """A bus sink that only queues; its thread sends everything waiting as soon as it
    can, so whatever accumulates while one send runs goes in the next message.

    The buffer is bounded: past ``limit`` waiting items the oldest progress figures
    are dropped first, then the oldest status and pipeline changes (a server finds
    the former in the database). A broker that goes away is reconnected to with
    backoff, the batch in hand kept for the next attempt."""

    def __init__(self, connect: Connect, *, origin: str | None = None, limit: int = BUFFER_LIMIT):
        self.connect = connect
        self.origin = origin or new_origin()
        self.limit = limit
        self.messages_sent = 0
        self.dropped = 0
        self._reported_drops = 0
        self._statuses: deque[Change | PipelineUpdate] = deque()  # in order, never merged
        self._progress: dict[int, ProgressUpdate] = {}  # the latest figures of each task
        self._in_flight = 0
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._failing = False

    def __call__(self, items: Sequence[Any]) -> None:
        """The bus sink (runs in the thread that committed): queue, never wait."""
        with self._lock:
            for item in items:
                if isinstance(item, ProgressUpdate):
                    self._progress[item.task_id] = item
                elif isinstance(item, PipelineUpdate) or (
                    isinstance(item, Change) and item.event_id is not None
                ):
                    self._statuses.append(item)
            self._shed()
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="tether-events-out", daemon=True)
        self._thread.start()
        bus.add_sink(self)

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is waiting or being sent; False if that took too long."""
        deadline = time.monotonic() + timeout
        with self._settled:
            while self._statuses or self._progress or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._settled.wait(left)
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is waiting (for at most ``timeout``), then close."""
        bus.remove_sink(self)
        self.flush(timeout)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _shed(self) -> None:
        over = len(self._statuses) + len(self._progress) - self.limit
        while over > 0 and self._progress:
            del self._progress[next(iter(self._progress))]
            self.dropped += 1
            over -= 1
        while over > 0:
            self._statuses.popleft()
            self.dropped += 1
            over -= 1

    def take(self) -> list[Item]:
        """Everything waiting, oldest status first (the sending thread's; also tests')."""
        with self._lock:
            items: list[Item] = [*self._statuses, *self._progress.values()]
            self._statuses.clear()
            self._progress.clear()
            self._in_flight = len(items)
            return items

    def _put_back(self, items: list[Item]) -> None:
        with self._lock:
            self._statuses.extendleft(
                reversed([i for i in items if not isinstance(i, ProgressUpdate)])
            )
            newer = self._progress
            self._progress = {i.task_id: i for i in items if isinstance(i, ProgressUpdate)}
            self._progress.update(newer)
            self._shed()

    def _run(self) -> None:
        backoff = 0.0
        while True:
            self._wake.wait()
            self._wake.clear()
            items = self.take()
            try:
                if items:
                    self._send(encode(self.origin, items))
                    backoff = 0.0
            except Exception as exc:
                self._disconnect()
                if not self._stopping.is_set():
                    self._put_back(items)
                    self._failed(exc)
                    backoff = min(max(backoff * 2, 0.1), RETRY_MAX_SECONDS)
                    self._stopping.wait(backoff)
                    self._wake.set()  # try again
            finally:
                with self._settled:
                    self._in_flight = 0
                    self._settled.notify_all()
            self._report_drops()
            if self._stopping.is_set():
                self._disconnect(graceful=True)
                return

    def _send(self, bodies: list[bytes]) -> None:
        for body in bodies:
            try:
                self._publish(body)
            except Exception:  # e.g. the broker restarted: one fresh connection, at once
                self._disconnect()
                self._publish(body)
            self.messages_sent += 1
        if self._failing:
            self._failing = False
            log.warning("event publishing to the broker works again")

    def _publish(self, body: bytes) -> None:
        if self._producer is None:
            conn = self.connect()
            self._conn = conn
            self._producer = Producer(conn.channel(), exchange=exchange(), auto_declare=True)
        self._producer.publish(
            body,
            routing_key="",
            content_type="application/json",
            content_encoding="utf-8",
            retry=False,
            timeout=SEND_TIMEOUT,
        )

    def _disconnect(self, graceful: bool = False) -> None:
        conn, self._conn, self._producer = self._conn, None, None
        if conn is None:
            return
        if graceful:  # stopping, the broker answering: say goodbye
            with contextlib.suppress(Exception):
                conn.release()
                return
        drop(conn)

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("cannot publish events to the broker (%s); retrying", _why(exc))

    def _report_drops(self) -> None:
        if self.dropped > self._reported_drops:
            log.warning(
                "event publisher buffer full: %d event(s) dropped so far (servers read "
                "status events from the database instead)",
                self.dropped,
            )
            self._reported_drops = self.dropped


# -- consuming -----------------------------------------------------------------------------
class Consumer:
    """Hears every process's events (its own ``origin`` left out) and hands them to
    ``ingest`` (the hub's). Its queue is exclusive and auto-deleted: it lives while this
    server is connected, so nothing piles up for a server that is gone."""

    def __init__(self, connect: Connect, ingest: Callable[[list[Item]], None], *, origin: str):
        self.connect = connect
        self.ingest = ingest
        self.origin = origin
        self.queue_name = f"{EXCHANGE}.{new_origin()}"
        self.connected = threading.Event()
        self.messages_received = 0
        self.messages_ignored = 0
        self._failing = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tether-events-in", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                self._consume()
            except Exception as exc:
                if not self._failing and not self._stopping.is_set():
                    log.warning("cannot receive events from the broker (%s); retrying", _why(exc))
                    self._failing = True
            else:
                backoff = 0.0
            finally:
                if self.connected.is_set():
                    backoff = 0.0  # it worked until now: the first retry is immediate
                self.connected.clear()
            backoff = min(max(backoff * 2, 0.1), RETRY_MAX_SECONDS)
            self._stopping.wait(backoff)

    def _consume(self) -> None:
        conn = self.connect()
        try:
            conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT)
            queue = Queue(
                self.queue_name,
                exchange(),
                routing_key="",
                durable=False,
                exclusive=True,
                auto_delete=True,
                queue_arguments={"x-max-length": QUEUE_LIMIT},
            )
            KombuConsumer(
                conn.channel(), [queue], on_message=self._on_message, no_ack=True, accept=["json"]
            ).consume()
            self.connected.set()
            if self._failing:
                self._failing = False
                log.warning("receiving events from the broker again")
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):  # quiet: check heartbeats
                    conn.drain_events(timeout=1.0)
                conn.heartbeat_check()
        finally:
            drop(conn)  # the exclusive queue goes with the connection

    def _on_message(self, message: Message) -> None:
        body = message.body
        decoded = decode(body) if isinstance(body, bytes | str) else None
        if decoded is None:
            self.messages_ignored += 1
            log.debug("ignored a malformed or oversized event message")
            return
        origin, items = decoded
        if origin == self.origin:
            return
        self.messages_received += 1
        if items:
            self.ingest(items)


def drop(conn: Connection) -> None:
    """Close without a closing handshake, which a broker that stopped answering would
    never complete (RabbitMQ logs the connection as closed abruptly)."""
    try:
        conn.collect()
    except Exception:  # already broken: nothing more to free
        log.debug("dropping a broker connection failed", exc_info=True)


def _why(exc: Exception) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


# -- wiring ----------------------------------------------------------------------------------
def broker_connection(url: str, heartbeat: float = 0) -> Connection:
    """A connection to the broker at ``url``, for publishing (or, with ``heartbeat``,
    for consuming). On RabbitMQ each publish waits for the broker's confirmation, so a
    message sent into a dropped connection is sent again (a duplicate is harmless: the
    hub drops status events it has seen); a broker that stops answering fails a send
    after SEND_TIMEOUT instead of holding the publisher for ever."""
    options: dict[str, Any] = {"confirm_publish": True}
    if not heartbeat:
        options["socket_timeout"] = SEND_TIMEOUT  # Redis; RabbitMQ: publish(timeout=)
    return Connection(
        url, heartbeat=heartbeat, connect_timeout=CONNECT_TIMEOUT, transport_options=options
    )


def broker_url() -> str:
    from django.conf import settings

    return str(settings.TETHER.get("BROKER_URL") or "")


_publisher: Publisher | None = None
_consumer: Consumer | None = None
_wiring = threading.Lock()


def start_publisher() -> Publisher | None:
    """Publish this process's committed changes (``tether worker``; idempotent). None
    when no broker is configured."""
    global _publisher
    url = broker_url()
    with _wiring:
        if _publisher is None and url:
            _publisher = Publisher(lambda: broker_connection(url))
            _publisher.start()
        return _publisher


def start_for_serve() -> None:
    """``tether serve`` with Celery workers: the hub, fed by every process's events,
    and this process's own changes published for other servers."""
    global _consumer
    from tether.events.hub import get_hub

    hub = get_hub()
    publisher = start_publisher()
    url = broker_url()
    with _wiring:
        if _consumer is None and publisher is not None:
            _consumer = Consumer(
                lambda: broker_connection(url, HEARTBEAT), hub.ingest, origin=publisher.origin
            )
            _consumer.start()


def receiving() -> bool:
    """Whether this process hears other processes' events now: its consumer is
    connected to the broker and feeds a running hub."""
    from tether.events.hub import current_hub

    consumer, hub = _consumer, current_hub()
    return consumer is not None and consumer.connected.is_set() and hub is not None and hub.running


def stop(timeout: float = 2.0) -> None:
    """Stop receiving; send what is still waiting (for at most ``timeout``)."""
    global _publisher, _consumer
    with _wiring:
        consumer, publisher, _consumer, _publisher = _consumer, _publisher, None, None
    if consumer is not None:
        consumer.stop(timeout)
    if publisher is not None:
        publisher.stop(timeout)
