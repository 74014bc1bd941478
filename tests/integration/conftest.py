"""Fixtures for tests against the real local engines (ElasticMQ, Dynoxide).

One pair of engines per test session; every test gets its own queue and tables (unique names),
and real API/processor processes started the way `make run` starts them, or the API app served
in the test's own process (`in_process_api`) where the HTTP contract is what is tested. A test
that asks for `jaeger` gets one Jaeger for the session; `start_traced_api` and
`start_traced_processor` start services that send their spans to it.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette import testclient

from order_api import app as api_app
from order_api import settings as api_settings
from order_common import schema
from order_devtools import engines, local, provision
from order_devtools import jaeger as local_jaeger


@pytest.fixture(scope="session")
def local_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engines]:
    engines.ensure_installed()
    with engines.running_engines(tmp_path_factory.mktemp("engines"), persistent=True) as running:
        yield running


PipelineFactory = Callable[..., local.LocalPipeline]


def new_pipeline(
    local_engines: engines.Engines,
    *,
    catalog: dict[str, tuple[str, int, int]] | None = None,
    visibility_timeout: int = 30,
    max_receive_count: int = 3,
) -> local.LocalPipeline:
    """A fresh queue + DLQ + tables (unique names) with its catalog seeded."""
    suffix = uuid.uuid4().hex[:10]
    pipeline = local.LocalPipeline(
        sqs_endpoint=local_engines.sqs_endpoint,
        dynamodb_endpoint=local_engines.dynamodb_endpoint,
        queue_name=f"orders-{suffix}",
        table_prefix=f"t{suffix}-",
    )
    provision.provision(
        pipeline.aws_settings(),
        queue=schema.QueueConfig(
            visibility_timeout_seconds=visibility_timeout, max_receive_count=max_receive_count
        ),
        catalog=catalog if catalog is not None else provision.DEMO_CATALOG,
    )
    return pipeline


@pytest.fixture
def make_pipeline(local_engines: engines.Engines) -> PipelineFactory:
    """`make_pipeline(**options)`: `new_pipeline` on the session's engines."""
    return functools.partial(new_pipeline, local_engines)


@pytest.fixture
def pipeline(make_pipeline: PipelineFactory) -> local.LocalPipeline:
    return make_pipeline()


# The engines accept any credentials; boto3 in the test process still needs some.
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(autouse=True)
def _local_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LOCAL_AWS_ENV.items():
        monkeypatch.setenv(name, value)


ServiceFactory = Callable[..., local.ServiceProcess]


def _service_starter(
    make: Callable[..., local.ServiceProcess], log_dir: Path
) -> Iterator[ServiceFactory]:
    started: list[local.ServiceProcess] = []

    def start(pipeline: local.LocalPipeline, **env: str) -> local.ServiceProcess:
        service = make(pipeline, local.free_port(), log_dir, **env)
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start real `python -m order_api` processes on free ports; stopped after the test."""
    yield from _service_starter(local.api_process, tmp_path)


@pytest.fixture
def start_processor(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start real `python -m order_processor` processes; stopped after the test."""
    yield from _service_starter(local.processor_process, tmp_path)


# Why Jaeger could not be built, found by pytest_collection_finish; the fixture fails with it.
_jaeger_build_error: str | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build Jaeger, when a collected test needs it and the cache has none, before any test
    runs: a cold build takes 10 to 20 minutes and must not be cut off by a test's timeout."""
    global _jaeger_build_error
    if not any("jaeger" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    if local_jaeger.is_installed():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[engines] building Jaeger into {local_jaeger.install_dir()} ...")
    started = time.monotonic()
    try:
        local_jaeger.ensure_jaeger()
    except RuntimeError as error:
        _jaeger_build_error = str(error)
    if reporter is not None:
        outcome = "failed" if _jaeger_build_error else "done"
        reporter.write_line(
            f"[engines] Jaeger build {outcome} after {time.monotonic() - started:.0f} s"
        )


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_jaeger.RunningJaeger]:
    """One Jaeger for the session (built into the cache on first use), traces in memory."""
    if _jaeger_build_error is not None:
        pytest.fail(f"Jaeger could not be built: {_jaeger_build_error}")
    with local_jaeger.running_jaeger(tmp_path_factory.mktemp("jaeger")) as running:
        yield running


# The SDK's batch processor waits 5 s between exports by default; tests look for spans sooner.
TRACED_SERVICE_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "200"}


def _traced(start: ServiceFactory, otlp_env: dict[str, str]) -> ServiceFactory:
    def start_traced(pipeline: local.LocalPipeline, **env: str) -> local.ServiceProcess:
        return start(pipeline, **{**otlp_env, **TRACED_SERVICE_ENV, **env})

    return start_traced


@pytest.fixture
def start_traced_api(
    start_api: ServiceFactory, jaeger: local_jaeger.RunningJaeger
) -> ServiceFactory:
    """`start_api`, the process exporting its spans to the session's Jaeger as `order-api`."""
    return _traced(start_api, jaeger.otlp_env(local_jaeger.API_SERVICE_NAME))


@pytest.fixture
def start_traced_processor(
    start_processor: ServiceFactory, jaeger: local_jaeger.RunningJaeger
) -> ServiceFactory:
    """`start_processor`, exporting its spans to the session's Jaeger as `order-processor`."""
    return _traced(start_processor, jaeger.otlp_env(local_jaeger.PROCESSOR_SERVICE_NAME))


def base_url(service: local.ServiceProcess) -> str:
    return service.health_url.removesuffix("/healthz")


@pytest.fixture
def api_client() -> Iterator[Callable[[local.ServiceProcess], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(service: local.ServiceProcess) -> httpx.Client:
        client = httpx.Client(base_url=base_url(service), timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


ApiClients = Callable[..., httpx.Client]


@pytest.fixture
def start_api_client(
    start_api: ServiceFactory, api_client: Callable[[local.ServiceProcess], httpx.Client]
) -> ApiClients:
    """`start_api_client(pipeline, **env)`: a client of a real API process started on it."""

    def start(pipeline: local.LocalPipeline, **env: str) -> httpx.Client:
        return api_client(start_api(pipeline, **env))

    return start


PipelineWithApi = Callable[..., tuple[local.LocalPipeline, httpx.Client]]


@pytest.fixture
def pipeline_with_api(
    make_pipeline: PipelineFactory, start_api_client: ApiClients
) -> PipelineWithApi:
    """`pipeline_with_api(**queue)`: a fresh pipeline (`make_pipeline`'s queue settings) and a
    client of a real API process started on it."""

    def make(**queue: int) -> tuple[local.LocalPipeline, httpx.Client]:
        pipeline = make_pipeline(**queue)
        return pipeline, start_api_client(pipeline)

    return make


InProcessApi = Callable[..., httpx.Client]

IN_PROCESS_BASE_URL = "http://testserver"
"""Where the in-process client sends requests, and so the API's PUBLIC_BASE_URL there."""


@pytest.fixture
def in_process_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessApi]:
    """`in_process_api(pipeline, **env)`: the API app on `pipeline` served in this process
    (Starlette's TestClient: httpx over ASGI, the lifespan run), configured from the
    environment `python -m order_api` would get; no uvicorn, no port, no process start."""
    clients: list[testclient.TestClient] = []

    def make(pipeline: local.LocalPipeline, **env: str) -> httpx.Client:
        env = {"PUBLIC_BASE_URL": IN_PROCESS_BASE_URL} | env
        for name, value in pipeline.api_env(port=0, **env).items():
            monkeypatch.setenv(name, value)
        client = testclient.TestClient(
            api_app.create_app(api_settings.ApiSettings()),
            base_url=IN_PROCESS_BASE_URL,
            raise_server_exceptions=False,
        )
        client.__enter__()  # runs the lifespan: AWS clients, the send batcher
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
