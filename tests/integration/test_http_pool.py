"""The lean AWS client's HTTP/1.1 connection pool against loopback servers that misbehave the
ways real ones do: closing idle connections, answering late, in chunks, or not at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from order_common import http_pool
from order_devtools import local

pytestmark = pytest.mark.integration

Answer = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[None]]
"""What the server does with request number n (from 0) and its body."""


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in (f"Content-Length: {len(body)}", *extra))
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{head}\r\n".encode() + body


async def echo(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(ok(b'{"n":%d,"echo":' % n + body + b"}"))


@dataclass
class Server:
    answer: Answer
    connections: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if line)
                self.requests.append({"request-line": lines[0], **headers})
                body = await reader.readexactly(int(headers["Content-Length"]))
                await self.answer(len(self.requests) - 1, body, writer)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def serving(answer: Answer = echo) -> AsyncIterator[tuple[Server, str]]:
    server = Server(answer)
    port = local.free_port()
    listener = await asyncio.start_server(server.serve, "127.0.0.1", port)
    try:
        yield server, f"http://127.0.0.1:{port}/base/path?x=1"
    finally:
        for writer in server.writers:
            writer.close()
        listener.close()


def pool(
    url: str, *, connections: int = 4, read_timeout: float = 5
) -> http_pool.HttpConnectionPool:
    return http_pool.HttpConnectionPool(
        url, max_connections=connections, connect_timeout=2, read_timeout=read_timeout
    )


HEADERS = {"host": "svc", "x-amz-target": "T.Op"}


async def test_sequential_posts_share_one_kept_alive_connection() -> None:
    async with serving() as (server, url):
        client = pool(url)
        answers = [await client.post(HEADERS, b'"%d"' % i) for i in range(5)]
        await client.close()
    assert [a.content for a in answers] == [b'{"n":%d,"echo":"%d"}' % (i, i) for i in range(5)]
    assert answers[0].status_code == 200
    assert answers[0].headers["content-type"] == "application/json"
    assert server.connections == 1
    first = server.requests[0]
    assert first["request-line"] == "POST /base/path?x=1 HTTP/1.1"
    assert first["host"] == "svc"
    assert first["x-amz-target"] == "T.Op"
    assert first["Content-Length"] == "3"


async def test_concurrent_posts_use_at_most_max_connections() -> None:
    async def slow_echo(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.01)
        await echo(n, body, writer)

    async with serving(slow_echo) as (server, url):
        client = pool(url, connections=3)
        answers = await asyncio.gather(*(client.post(HEADERS, b"%d" % i) for i in range(20)))
        await client.close()
    assert sorted(a.content.rsplit(b":", 1)[1] for a in answers) == sorted(
        b"%d}" % i for i in range(20)
    )
    assert server.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async with serving() as (server, url):
        client = pool(url)
        await client.post(HEADERS, b"1")
        server.writers[0].close()  # an idle timeout on the server's side
        await asyncio.sleep(0.05)
        answer = await client.post(HEADERS, b"2")
        await client.close()
    assert answer.content == b'{"n":1,"echo":2}'
    assert server.connections == 2


async def test_an_answer_saying_connection_close_is_not_reused() -> None:
    async def closing(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(body, "Connection: close"))
        await writer.drain()
        writer.close()

    async with serving(closing) as (server, url):
        client = pool(url)
        answers = [await client.post(HEADERS, b"%d" % i) for i in range(3)]
        await client.close()
    assert [a.content for a in answers] == [b"0", b"1", b"2"]
    assert server.connections == 3


async def test_an_interim_100_continue_is_skipped_for_the_real_answer() -> None:
    async def continue_first(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)  # the real answer in a later packet
        await echo(n, body, writer)

    async with serving(continue_first) as (_, url):
        client = pool(url)
        answers = [await client.post(HEADERS, b"%d" % i) for i in range(2)]
        await client.close()
    assert [(a.status_code, a.content) for a in answers] == [
        (200, b'{"n":0,"echo":0}'),
        (200, b'{"n":1,"echo":1}'),
    ]


async def test_closing_the_pool_closes_connections_still_in_use() -> None:
    started = asyncio.Event()

    async def slow(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        started.set()
        await asyncio.sleep(0.1)
        await echo(n, body, writer)

    async with serving(slow) as (server, url):
        client = pool(url)
        in_flight = asyncio.create_task(client.post(HEADERS, b"1"))
        await started.wait()
        await client.close()
        assert (await in_flight).content == b'{"n":0,"echo":1}'
        await asyncio.sleep(0.05)
        assert server.writers[0].transport.is_closing()  # the server saw the client hang up


async def test_a_chunked_answer_is_joined() -> None:
    async def chunked(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b'{"a":', b"1", b"}"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with serving(chunked) as (_, url):
        client = pool(url)
        answers = [await client.post(HEADERS, b"") for _ in range(2)]
        await client.close()
    assert [a.content for a in answers] == [b'{"a":1}', b'{"a":1}']


async def test_a_late_answer_times_out_and_never_reaches_the_next_request() -> None:
    async def late_first(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        if n == 0:
            await asyncio.sleep(0.5)
        await echo(n, body, writer)

    async with serving(late_first) as (server, url):
        client = pool(url, read_timeout=0.2)
        with pytest.raises(TimeoutError):
            await client.post(HEADERS, b'"late"')
        answer = await client.post(HEADERS, b'"next"')
        await client.close()
    assert answer.content == b'{"n":1,"echo":"next"}'
    assert server.connections == 2


async def test_a_connection_dropped_mid_answer_raises_connection_lost() -> None:
    async def half(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()
        writer.close()

    async with serving(half) as (_, url):
        client = pool(url)
        with pytest.raises(http_pool.ConnectionLostError):
            await client.post(HEADERS, b"x")
        await client.close()


async def test_an_answer_that_is_not_http_raises_connection_lost() -> None:
    async def garbage(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    async with serving(garbage) as (_, url):
        client = pool(url)
        with pytest.raises(http_pool.ConnectionLostError, match="malformed"):
            await client.post(HEADERS, b"x")
        await client.close()


async def test_a_refused_connection_raises_connect_failed() -> None:
    client = pool(f"http://127.0.0.1:{local.free_port()}")
    with pytest.raises(http_pool.ConnectFailedError) as failed:
        await client.post(HEADERS, b"x")
    assert not failed.value.timed_out


def test_only_http_urls_are_taken() -> None:
    with pytest.raises(ValueError, match="not an http"):
        pool("ftp://127.0.0.1/")
