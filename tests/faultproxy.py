"""A fault-injecting HTTP proxy between the services and a real local engine.

The services reach an engine only through its endpoint URL, so a test points them at a
`FaultProxy` instead, and the proxy forwards each request to the real engine unless a `Fault`
says otherwise. Faults are chosen per request by the AWS operation it calls (the JSON protocol's
`X-Amz-Target`), so a test can, say, let `SendMessageBatch` reach ElasticMQ and then drop the
answer: the one fault an SDK cannot tell from "nothing happened".

Each request is forwarded over a fresh upstream connection (`Connection: close`), so its answer
is exactly what the engine sent until it closed; the client side keeps its connection alive as
the engine would. The proxy runs its own event loop in a daemon thread and listens on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import random
import socket
import struct
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

_MAX_HEADER_BYTES = 64 * 1024
_UPSTREAM_TIMEOUT_SECONDS = 60.0


class FaultKind(enum.Enum):
    DROP_RESPONSE = "drop_response"
    """Forward the request, let the engine apply it, then close the client's connection."""
    DELAY = "delay"
    """Hold the request for `seconds` before forwarding it (past a client's read timeout)."""
    RESET = "reset"
    """Reset the client's connection at once; the engine never sees the request."""
    SERVER_ERROR = "server_error"
    """Answer 500 InternalServerError without forwarding."""
    THROTTLE = "throttle"
    """Answer 400 ThrottlingException without forwarding (retryable for the SDKs)."""
    CANCEL_TRANSACTION = "cancel_transaction"
    """Answer TransactionCanceledException with `reasons` as the cancellation codes."""
    FAIL_ENTRIES = "fail_entries"
    """Answer a batch call (JSON protocol) with every entry failed, InternalError, unapplied."""


@dataclasses.dataclass
class Fault:
    kind: FaultKind
    operation: str = ""
    """Substring of the X-Amz-Target (e.g. "SendMessageBatch"); empty matches every request."""
    times: int | None = 1
    """How many matching requests get the fault; None: every one, while the fault is set."""
    probability: float = 1.0
    seconds: float = 0.0
    body_contains: str | tuple[str, ...] = ""
    """Only requests whose body holds this text, or all of these (e.g. an order id and the
    status being written)."""
    reasons: tuple[str, ...] = ()

    def matches(self, target: str, body: bytes) -> bool:
        return (
            (self.times is None or self.times > 0)
            and self.operation in target
            and all(needle.encode() in body for needle in self._needles())
        )

    def _needles(self) -> tuple[str, ...]:
        if isinstance(self.body_contains, str):
            return (self.body_contains,)
        return self.body_contains


@dataclasses.dataclass
class ProxyStats:
    forwarded: int = 0
    faulted: dict[str, int] = dataclasses.field(default_factory=dict)


class FaultProxy:
    """Listens on 127.0.0.1:<port> and forwards to `upstream` (an http:// endpoint URL)."""

    def __init__(self, upstream: str, *, seed: int | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"not an http://host:port endpoint: {upstream}")
        self._upstream = (parts.hostname, parts.port)
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.stats = ProxyStats()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            serving = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in serving:
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @contextlib.contextmanager
    def faults(self, *faults: Fault) -> Iterator[None]:
        self.inject(*faults)
        try:
            yield
        finally:
            self.clear()

    def _pick(self, target: str, body: bytes) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(target, body) and self._random.random() < fault.probability:
                    if fault.times is not None:
                        fault.times -= 1
                    name = fault.kind.value
                    self.stats.faulted[name] = self.stats.faulted.get(name, 0) + 1
                    return fault
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)  # a strong reference while it runs
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                head, body = request
                target = _target_of(head, body)
                fault = self._pick(target, body)
                if fault is not None and fault.kind is FaultKind.RESET:
                    _reset(writer)
                    return
                if fault is not None and fault.kind in _ANSWERED_HERE:
                    writer.write(_answer(fault, body))
                    await writer.drain()
                    continue
                if fault is not None and fault.kind is FaultKind.DELAY:
                    await asyncio.sleep(fault.seconds)
                answer = await self._forward(head, body)
                self.stats.forwarded += 1
                if fault is not None and fault.kind is FaultKind.DROP_RESPONSE:
                    _reset(writer)
                    return
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            return
        except asyncio.CancelledError:  # the proxy is stopping
            return
        finally:
            writer.close()
            self._serving.discard(task)

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        try:
            upstream_writer.write(_with_connection_close(head) + body)
            await upstream_writer.drain()
            # The engine closes after its answer; one stopped mid-request may never answer.
            answer = await asyncio.wait_for(upstream_reader.read(), _UPSTREAM_TIMEOUT_SECONDS)
        finally:
            upstream_writer.close()
        # The client keeps its connection: drop the engine's "Connection: close".
        answer_head, separator, answer_body = answer.partition(b"\r\n\r\n")
        lines = [
            line
            for line in answer_head.split(b"\r\n")
            if not line.lower().startswith(b"connection:")
        ]
        return b"\r\n".join(lines) + separator + answer_body


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise ConnectionError("request head too large") from None
    if len(head) > _MAX_HEADER_BYTES:
        raise ConnectionError("request head too large")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head, body


def _target_of(head: bytes, body: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-amz-target":
            return value.strip().decode()
    # The query protocol (SQS management calls from older SDKs): the action is in the form.
    for pair in body.split(b"&"):
        if pair.startswith(b"Action="):
            return pair.removeprefix(b"Action=").decode()
    return ""


def _with_connection_close(head: bytes) -> bytes:
    lines = [
        line
        for line in head.rstrip(b"\r\n").split(b"\r\n")
        if not line.lower().startswith(b"connection:")
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: the client sees its connection reset mid-request."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


_ANSWERED_HERE = {
    FaultKind.SERVER_ERROR,
    FaultKind.THROTTLE,
    FaultKind.CANCEL_TRANSACTION,
    FaultKind.FAIL_ENTRIES,
}


def _answer(fault: Fault, body: bytes) -> bytes:
    if fault.kind is FaultKind.FAIL_ENTRIES:
        entries = json.loads(body).get("Entries", [])
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            for e in entries
        ]
        return _response("200 OK", {"Successful": [], "Failed": failed})
    document: dict[str, object] = {"message": "injected fault"}
    if fault.kind is FaultKind.THROTTLE:
        status, code = "400 Bad Request", "ThrottlingException"
    elif fault.kind is FaultKind.CANCEL_TRANSACTION:
        status, code = "400 Bad Request", "TransactionCanceledException"
        document["CancellationReasons"] = [
            {"Code": r, "Message": "injected"} for r in fault.reasons
        ]
    else:
        status, code = "500 Internal Server Error", "InternalServerError"
    return _response(status, {"__type": f"com.amazonaws#{code}", **document})


def _response(status: str, document: dict[str, object]) -> bytes:
    body = json.dumps(document).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@contextlib.contextmanager
def proxied(upstream: str, *, seed: int | None = None) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, seed=seed).start()
    try:
        yield proxy
    finally:
        proxy.stop()
