"""The lean AWS client's transport against loopback servers that misbehave the ways real ones
do (closing idle connections, answering late, dropping the answer), over https with a private
CA, through a proxy, and with botocore's retry quota and (de)serialisation by shape."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiobotocore.session
import pytest
from botocore import exceptions as botocore_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from order_common import aws_json
from order_devtools import local

pytestmark = pytest.mark.integration

Answer = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[None]]
"""What the server does with request number n (from 0) and its body."""

SENT = {"Successful": [{"Id": "0", "MessageId": "m-0", "MD5OfMessageBody": "x"}], "Failed": []}


def ok(document: object, *extra: str) -> bytes:
    body = json.dumps(document).encode()
    head = "".join(f"{line}\r\n" for line in (f"Content-Length: {len(body)}", *extra))
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n{head}\r\n".encode() + body
    )


async def sent(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(ok(SENT))


@dataclass
class Server:
    answer: Answer
    connections: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:] if ln)}
                self.requests.append({"request-line": lines[0], **headers})
                self.bodies.append(await reader.readexactly(int(headers["content-length"])))
                await self.answer(len(self.requests) - 1, self.bodies[-1], writer)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def serving(
    answer: Answer = sent, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[Server, str]]:
    server = Server(answer)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        for writer in server.writers:
            writer.close()
        listener.close()


@contextlib.asynccontextmanager
async def lean_sqs(
    endpoint: str,
    *,
    connections: int = 4,
    read_timeout: float = 5,
    max_attempts: int = 1,
    ca_bundle: str | None = None,
) -> AsyncIterator[aws_json.JsonProtocolClient]:
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ) as client:
        credentials = client._get_credentials()
        lean = aws_json.JsonProtocolClient.create(
            client,
            credentials,
            max_connections=connections,
            connect_timeout=2,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
            ca_bundle=ca_bundle,
        )
        try:
            yield lean
        finally:
            await lean.close()


def send(lean: aws_json.JsonProtocolClient, body: str = "x") -> Awaitable[dict[str, object]]:
    entries = [{"Id": "0", "MessageBody": body}]
    return lean.call("SendMessageBatch", {"QueueUrl": "q", "Entries": entries})


async def test_sequential_calls_share_one_kept_alive_connection_and_are_signed() -> None:
    async with serving() as (server, url), lean_sqs(url) as lean:
        answers = [await send(lean, str(i)) for i in range(5)]
    assert answers == [SENT] * 5
    assert server.connections == 1
    first = server.requests[0]
    assert first["request-line"] == "POST / HTTP/1.1"
    assert first["x-amz-target"] == "AmazonSQS.SendMessageBatch"
    assert first["authorization"].startswith("AWS4-HMAC-SHA256 Credential=local/")
    assert json.loads(server.bodies[0])["Entries"] == [{"Id": "0", "MessageBody": "0"}]


async def test_concurrent_calls_use_at_most_max_connections() -> None:
    async def slow(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.01)
        await sent(n, body, writer)

    async with serving(slow) as (server, url), lean_sqs(url, connections=3) as lean:
        answers = await asyncio.gather(*(send(lean) for _ in range(20)))
    assert answers == [SENT] * 20
    assert server.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async with serving() as (server, url), lean_sqs(url, max_attempts=3) as lean:
        await send(lean)
        server.writers[0].close()  # an idle timeout on the server's side
        await asyncio.sleep(0.05)
        assert await send(lean) == SENT
    assert server.connections == 2


async def test_a_late_answer_is_a_read_timeout_and_never_reaches_the_next_call() -> None:
    async def late_first(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        if n == 0:
            await asyncio.sleep(0.5)
        await sent(n, body, writer)

    async with serving(late_first) as (server, url), lean_sqs(url, read_timeout=0.2) as lean:
        with pytest.raises(botocore_exceptions.ReadTimeoutError):
            await send(lean)
        assert await send(lean) == SENT
    assert server.connections == 2


async def test_a_connection_dropped_mid_answer_is_connection_closed() -> None:
    async def half(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()
        writer.close()

    async with serving(half) as (_, url), lean_sqs(url) as lean:
        with pytest.raises(botocore_exceptions.ConnectionClosedError):
            await send(lean)


async def test_a_refused_connection_is_an_endpoint_connection_error() -> None:
    async with lean_sqs(f"http://127.0.0.1:{local.free_port()}") as lean:
        with pytest.raises(botocore_exceptions.EndpointConnectionError):
            await send(lean)


def _private_ca(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for 127.0.0.1: the server's TLS context and the CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "order-pipeline test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


async def test_https_trusts_the_ca_bundle_it_is_given_and_nothing_else(tmp_path: Path) -> None:
    tls, ca_file = _private_ca(tmp_path)
    async with serving(tls=tls) as (server, url):
        async with lean_sqs(url, ca_bundle=str(ca_file)) as lean:
            assert await send(lean) == SENT
        async with lean_sqs(url) as untrusting:
            with pytest.raises(botocore_exceptions.SSLError):
                await send(untrusting)
    assert len(server.requests) == 1


async def test_the_ca_bundle_comes_from_aws_ca_bundle_as_botocore_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, ca_file = _private_ca(tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    ca_bundle = aiobotocore.session.get_session().get_config_variable("ca_bundle")
    async with serving(tls=tls) as (_, url), lean_sqs(url, ca_bundle=ca_bundle) as lean:
        assert await send(lean) == SENT


async def test_an_http_proxy_from_the_environment_carries_the_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    nowhere = f"http://127.0.0.1:{local.free_port()}"  # only the proxy can answer for it
    async with serving() as (proxy, proxy_url):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        async with lean_sqs(nowhere) as lean:
            assert await send(lean) == SENT
    assert proxy.requests[0]["request-line"].startswith(f"POST {nowhere}")


async def test_retries_spend_from_botocores_quota_until_none_is_left() -> None:
    async def failing(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        document = json.dumps({"__type": "com.amazonaws#InternalError", "message": "no"}).encode()
        writer.write(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s"
            % (len(document), document)
        )

    async with serving(failing) as (server, url), lean_sqs(url, max_attempts=3) as lean:
        lean._backoff.delay_amount = lambda context: 0.0  # type: ignore[method-assign]
        for _ in range(60):
            with pytest.raises(botocore_exceptions.ClientError):
                await send(lean)
    # A quota of 500, 5 per retry: 100 retries in all, then one attempt per call.
    assert len(server.requests) == 60 + 100


async def test_blob_members_are_decoded_as_boto_returns_them() -> None:
    received = {
        "Messages": [
            {
                "MessageId": "m-1",
                "ReceiptHandle": "r-1",
                "MD5OfBody": "x",
                "Body": "{}",
                "MessageAttributes": {
                    "raw": {
                        "DataType": "Binary",
                        "BinaryValue": base64.b64encode(b"\x00\x01").decode(),
                    }
                },
            }
        ]
    }

    async def answer(n: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(received if n == 0 else SENT))

    async with serving(answer) as (server, url), lean_sqs(url) as lean:
        result = await lean.call(
            "ReceiveMessage", {"QueueUrl": "q", "MessageAttributeNames": ["All"]}
        )
        await lean.call(
            "SendMessageBatch",
            {
                "QueueUrl": "q",
                "Entries": [
                    {
                        "Id": "0",
                        "MessageBody": "{}",
                        "MessageAttributes": {
                            "raw": {"DataType": "Binary", "BinaryValue": b"\x02\x03"}
                        },
                    }
                ],
            },
        )
    (message,) = result["Messages"]  # type: ignore[misc]
    assert message["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\x01"
    entry = json.loads(server.bodies[1])["Entries"][0]
    assert (
        entry["MessageAttributes"]["raw"]["BinaryValue"] == base64.b64encode(b"\x02\x03").decode()
    )
