"""The AWS JSON protocol for the calls made once per order, at a fraction of aiobotocore's CPU.

aiobotocore spends about 1 ms of CPU on every call whatever its size (endpoint rules, event
hooks, user-agent assembly, (de)serialisers that walk the service model). With SendMessageBatch
behind every accepted order and ReceiveMessage/DeleteMessageBatch behind every processed one,
that was the largest share of the services' own CPU (docs/performance.md has the figures).

This client keeps every part that carries meaning and takes each from botocore: the aiobotocore
client's endpoint, region and service model; the session's (refreshing) credentials and CA
bundle; botocore's standard-mode retry conditions, backoff and retry quota; botocore's error
parser and the client's modelled exceptions, so callers catch the same `ClientError` subclasses.
Requests and answers that hold no blobs or timestamps skip (de)serialisation by shape: for those
the JSON on the wire is exactly what boto takes and returns. The others (bytes in the request,
a blob or timestamp member's name in the answer) go through botocore's own serialiser and
parser. It signs with `RequestSigner` below, whose signatures a test checks
against botocore's, and posts through an aiohttp session (proxies from the environment, TLS
verified against the CA bundle, idle connections expired), raising transport failures as
botocore does.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ssl
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import yarl
from botocore import exceptions as botocore_exceptions
from botocore import parsers, serialize
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.retries import quota, standard
from botocore.utils import normalize_url_path

from order_common import tracing

if TYPE_CHECKING:
    from botocore.model import OperationModel, ServiceModel, Shape

_SHAPE_TYPES = frozenset({"blob", "timestamp"})
"""Member types whose JSON form is not what boto returns (base64 text, epoch numbers)."""


class CredentialSource(Protocol):
    """aiobotocore's credentials: static ones, or ones that refresh themselves before expiry."""

    async def get_frozen_credentials(self) -> ReadOnlyCredentials: ...


class ErrorFactory(Protocol):
    """A client's `exceptions`: the modelled `ClientError` subclass for an error code."""

    def from_code(self, error_code: str) -> type[botocore_exceptions.ClientError]: ...


class RequestSigner:
    """AWS Signature Version 4 for this client's one kind of request: a POST of a JSON body to
    the endpoint itself, with a content type and an `X-Amz-Target`.

    botocore's `SigV4Auth` took about 55 µs of CPU per call: it builds an `email.message`
    header map and splits the URL several times per request, and derives the signing key with
    four HMACs each time. This takes about 8 µs: what is fixed per endpoint (host, path, query)
    is worked out once, by botocore, and the signing key once a day. The algorithm is the
    published one, unchanged; tests/unit/test_aws_signing.py checks that every signature
    equals botocore's for the same request and time.
    """

    def __init__(self, endpoint_url: str, *, service: str, region: str) -> None:
        template = AWSRequest(method="POST", url=endpoint_url)
        reference = SigV4Auth(ReadOnlyCredentials("", "", None), service, region)
        self._host = reference.headers_to_sign(template)["host"]
        self._path = quote(normalize_url_path(urlsplit(endpoint_url).path), safe="/~")
        self._query = reference.canonical_query_string(template)
        self._scope_tail = f"{region}/{service}/aws4_request"
        self._key: tuple[str, str, bytes] | None = None  # secret, day, signing key

    def headers(
        self,
        credentials: ReadOnlyCredentials,
        body: bytes,
        *,
        content_type: str,
        target: str,
        now: float,
    ) -> dict[str, str]:
        """The request's headers, `Authorization` included, signed at `now` (epoch seconds)."""
        if credentials.secret_key is None:
            raise botocore_exceptions.NoCredentialsError()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        signed = {"content-type": content_type, "host": self._host, "x-amz-date": stamp}
        if credentials.token:
            signed["x-amz-security-token"] = credentials.token
        signed["x-amz-target"] = target  # names in sorted order, as the algorithm wants them
        names = ";".join(signed)
        canonical_request = "\n".join(
            (
                "POST",
                self._path,
                self._query,
                *(f"{name}:{value}" for name, value in signed.items()),
                "",
                names,
                hashlib.sha256(body).hexdigest(),
            )
        )
        scope = f"{day}/{self._scope_tail}"
        digest = hashlib.sha256(canonical_request.encode()).hexdigest()
        string_to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
        key = self._signing_key(credentials.secret_key, day)
        signature = hmac.digest(key, string_to_sign.encode(), "sha256").hex()
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        return signed  # the Host sent is the one signed

    def _signing_key(self, secret_key: str, day: str) -> bytes:
        if self._key is None or self._key[:2] != (secret_key, day):
            key = hmac.digest(f"AWS4{secret_key}".encode(), day.encode(), "sha256")
            for part in self._scope_tail.split("/"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._key = (secret_key, day, key)
        return self._key[2]


@dataclass(frozen=True)
class HttpResponse:
    """What botocore's retry conditions and error parser read of an answer."""

    status_code: int
    headers: Mapping[str, str]
    """Looked up by any case."""
    content: bytes


def _member_names(
    shape: Shape | None, types: frozenset[str], seen: frozenset[str] = frozenset()
) -> set[str]:
    """The names of the members of `shape`, at any depth, whose type is one of `types`."""
    if shape is None or shape.name in seen:
        return set()
    seen = seen | {shape.name}
    found: set[str] = set()
    if shape.type_name == "structure":
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            element = (
                member.member  # a list of blobs (BinaryListValues, BS) is named by the list
                if member.type_name == "list"
                else member.value
                if member.type_name == "map"
                else member
            )
            if element.type_name in types:
                found.add(name)
            found |= _member_names(member, types, seen)
    elif shape.type_name == "list":
        found |= _member_names(shape.member, types, seen)  # type: ignore[attr-defined]
    elif shape.type_name == "map":
        found |= _member_names(shape.value, types, seen)  # type: ignore[attr-defined]
    return found


def _plain_json(params: Mapping[str, Any]) -> bytes | None:
    """The params as JSON, or None when they hold bytes (a blob member), which JSON cannot."""
    try:
        return orjson.dumps(params)
    except TypeError:  # orjson's JSONEncodeError is one
        return None


def _proxy_for(endpoint_url: str) -> str | None:
    """The proxy for the endpoint from HTTP(S)_PROXY and NO_PROXY, read once, as botocore
    reads them when a client is made (aiohttp's `trust_env` reads them, and ~/.netrc in a
    worker thread, on every request)."""
    parts = urlsplit(endpoint_url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The certificates botocore would trust: the configured bundle, else the system's."""
    return ssl.create_default_context(cafile=ca_bundle)


class JsonProtocolClient:
    """Calls one JSON-protocol service (SQS, DynamoDB) by operation name and boto's params."""

    def __init__(
        self,
        *,
        service_model: ServiceModel,
        endpoint_url: str,
        region: str,
        credentials: CredentialSource | None,
        errors: ErrorFactory,
        http: aiohttp.ClientSession,
        max_attempts: int,
        proxy: str | None = None,
    ) -> None:
        self._service_model = service_model
        self._endpoint_url = endpoint_url
        self._url = yarl.URL(endpoint_url)  # parsed once, not on every post
        self._credentials = credentials
        self._errors = errors
        self._http = http
        self._proxy = proxy
        self._content_type = f"application/x-amz-json-{service_model.metadata['jsonVersion']}"
        self._signer = RequestSigner(
            endpoint_url, service=service_model.signing_name, region=region
        )
        self._target_prefix = service_model.metadata["targetPrefix"]
        self._error_parser = parsers.create_parser(service_model.protocol)
        self._serializer = serialize.create_serializer(service_model.protocol)
        self._retry_conditions = standard.StandardRetryConditions(max_attempts=max_attempts)
        self._backoff = standard.ExponentialBackoff()
        # As botocore's standard mode: retries spend from a shared bucket that successes refill,
        # so an engine that keeps failing gets one attempt per call, not three.
        self._retry_quota = standard.RetryQuotaChecker(quota.RetryQuota())
        self._traced = tracing.AwsEndpoint.of(
            service=service_model.service_id, region=region, endpoint_url=endpoint_url
        )

    @classmethod
    def create(
        cls,
        client: Any,
        credentials: CredentialSource | None,
        *,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
        ca_bundle: str | None = None,
    ) -> JsonProtocolClient:
        """A client for the same service, endpoint and region as `client` (an aiobotocore
        client); call inside the event loop that will use it. `ca_bundle`: the certificates
        to trust for https (botocore's `ca_bundle` setting, `AWS_CA_BUNDLE`)."""
        endpoint_url = client.meta.endpoint_url
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=max_connections,
                ssl=_tls_context(ca_bundle) if endpoint_url.startswith("https:") else True,
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout, sock_read=read_timeout
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
        )
        return cls(
            proxy=_proxy_for(endpoint_url),
            service_model=client.meta.service_model,
            endpoint_url=endpoint_url,
            region=client.meta.region_name,
            credentials=credentials,
            errors=client.exceptions,
            http=http,
            max_attempts=max_attempts,
        )

    async def close(self) -> None:
        await self._http.close()

    async def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Call `operation` with `params` as boto would take them; return its parsed result,
        or raise what the aiobotocore client would have raised. Traced as one CLIENT span per
        call, its retries included (`tracing.record_aws_call`)."""
        if not tracing.enabled:
            return await self._call(operation, params)
        started = time.time_ns()
        try:
            result = await self._call(operation, params)
        except Exception as exc:
            tracing.record_aws_call(self._traced, operation, params, started=started, error=exc)
            raise
        tracing.record_aws_call(self._traced, operation, params, started=started, result=result)
        return result

    async def _call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        operation_model = self._service_model.operation_model(operation)  # cached by botocore
        timestamps_in, shaped_out = self._shaped(operation)
        body = None if timestamps_in else _plain_json(params)
        if body is None:  # a blob (bytes) or a timestamp member: botocore encodes them
            body = self._serializer.serialize_to_request(params, operation_model)["body"]
        target = f"{self._target_prefix}.{operation}"
        attempt = 0
        # The first attempt that may have been applied without us seeing the answer. If every
        # later attempt fails before reaching the service, that one describes the outcome:
        # "maybe applied", never "refused".
        uncertain: Exception | None = None
        request_context: dict[str, Any] = {}  # what the retry quota lent this call
        while True:
            attempt += 1
            parsed: dict[str, Any] | None = None
            response: HttpResponse | None = None
            failure: Exception | None = None
            try:
                response = await self._send(body, target)
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = self._as_botocore_error(exc)
                if uncertain is None and not _surely_not_sent(exc):
                    uncertain = failure
            else:
                if response.status_code >= 300:
                    parsed = self._parse_error(response, operation_model)
                elif any(name in response.content for name in shaped_out):
                    parsed = self._parse_by_shape(response, operation_model)
                else:
                    parsed = orjson.loads(response.content) if response.content else {}
            context = standard.RetryContext(
                attempt_number=attempt,
                operation_model=operation_model,
                parsed_response=parsed,
                http_response=response,
                caught_exception=failure,
                request_context=request_context,
            )
            # Asked of successes too, as botocore does: a DynamoDB answer whose CRC32 does not
            # match its body is retried.
            if self._retry_conditions.is_retryable(
                context
            ) and self._retry_quota.acquire_retry_quota(context):
                await asyncio.sleep(self._backoff.delay_amount(context))
                continue
            # botocore hands this hook the request context, whatever its stubs say.
            self._retry_quota.release_retry_quota(request_context, response)  # type: ignore[arg-type]
            if failure is not None:
                raise uncertain or failure
            assert response is not None
            assert parsed is not None
            if response.status_code < 300:
                return parsed
            if uncertain is not None and response.status_code < 500:
                raise uncertain  # refused now, but an earlier attempt may have been applied
            error_class = self._errors.from_code(parsed["Error"]["Code"])
            raise error_class(parsed, operation)  # type: ignore[arg-type]

    @functools.cache  # noqa: B019 - one entry per operation, for the client's lifetime
    def _shaped(self, operation: str) -> tuple[bool, tuple[bytes, ...]]:
        """Whether the input has timestamp members (botocore encodes them, whatever type the
        caller gave), and the output's blob or timestamp member names as they appear in JSON:
        an answer holding one of them is parsed by botocore, by shape."""
        model = self._service_model.operation_model(operation)
        names = _member_names(model.output_shape, _SHAPE_TYPES)
        return bool(_member_names(model.input_shape, frozenset({"timestamp"}))), tuple(
            f'"{name}"'.encode() for name in sorted(names)
        )

    def _parse_by_shape(
        self, response: HttpResponse, operation_model: OperationModel
    ) -> dict[str, Any]:
        raw = {"status_code": response.status_code, "headers": response.headers}
        shape = operation_model.output_shape
        assert shape is not None  # an operation without output has nothing to parse by shape
        parsed: dict[str, Any] = self._error_parser.parse({**raw, "body": response.content}, shape)
        parsed.pop("ResponseMetadata", None)  # the fast path returns none either
        return parsed

    def _parse_error(
        self, response: HttpResponse, operation_model: OperationModel
    ) -> dict[str, Any]:
        """Code and message, plus the error's modelled members (a cancelled transaction's
        CancellationReasons), as botocore's endpoint adds them."""
        raw = {
            "status_code": response.status_code,
            "headers": response.headers,
            "body": response.content,
        }
        # The generic error parse never reads the output shape (some operations have none).
        output_shape: Any = operation_model.output_shape
        parsed: dict[str, Any] = self._error_parser.parse(raw, output_shape)
        error_shape = self._service_model.shape_for_error_code(parsed["Error"]["Code"])
        if error_shape is not None:
            parsed.update(self._error_parser.parse(raw, error_shape))
        return parsed

    async def _send(self, body: bytes, target: str) -> HttpResponse:
        if self._credentials is None:  # as the SDK client fails, at call time
            raise botocore_exceptions.NoCredentialsError()
        credentials = await self._credentials.get_frozen_credentials()
        # Signed per attempt, as botocore does: a retry carries a fresh date.
        headers = self._signer.headers(
            credentials, body, content_type=self._content_type, target=target, now=time.time()
        )
        async with self._http.post(
            self._url, data=body, headers=headers, proxy=self._proxy
        ) as answer:
            # Its headers are case-insensitive already, as botocore's parsers expect.
            return HttpResponse(answer.status, answer.headers, await answer.read())

    def _as_botocore_error(self, exc: Exception) -> Exception:
        """The exception botocore raises for the same transport failure (its retry conditions
        and our callers know those)."""
        endpoint = self._endpoint_url
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return botocore_exceptions.ConnectTimeoutError(endpoint_url=endpoint)
        if isinstance(exc, aiohttp.ClientSSLError):
            return botocore_exceptions.SSLError(endpoint_url=endpoint, error=exc)
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return botocore_exceptions.ProxyConnectionError(proxy_url=str(exc), error=exc)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return botocore_exceptions.EndpointConnectionError(endpoint_url=endpoint)
        if isinstance(exc, TimeoutError):  # aiohttp's read timeout is one too
            return botocore_exceptions.ReadTimeoutError(endpoint_url=endpoint)
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return botocore_exceptions.ConnectionClosedError(endpoint_url=endpoint)
        return botocore_exceptions.HTTPClientError(error=exc)


def _surely_not_sent(exc: Exception) -> bool:
    """No connection was made (refused, unreachable, TLS or proxy refused, connect timeout):
    the request never reached the service."""
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
