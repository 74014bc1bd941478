"""Fuzzing the API from its own OpenAPI description (schemathesis), on the real engines.

Schemathesis generates valid and invalid requests for every documented operation (and the
methods it does not document); they go to one real API process on a fresh queue and tables,
once with a valid bearer token and once without. Every answer must hold the contract: no 5xx,
every error an RFC 9457 problem document, answers as documented, and nothing queued by a refused
request (the queue holds exactly one message per order id a 202 handed out).

FUZZ_EXAMPLES sets how many cases are generated per operation, credential and mode (valid,
invalid); `make fuzz` runs this module at full count and asks for at least FUZZ_MIN_REQUESTS.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import hypothesis
import orjson
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import checks

from order_api import app as api_app
from order_api import problems
from order_api import settings as api_settings
from order_devtools import engines, local
from tests.integration import conftest, helpers

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
MIN_REQUESTS = int(os.environ.get("FUZZ_MIN_REQUESTS", "0"))


def _description() -> dict[str, Any]:
    """/openapi.json of an app configured as the API process is (no lifespan: nothing reached).

    Built at import, as the tests are generated from it; test_the_served_description_is_the_
    fuzzed_one checks the process serves the same."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in local.LocalPipeline("", "").api_env(port=0).items():
            env.setenv(name, value)
        return api_app.create_app(api_settings.ApiSettings()).openapi()


DESCRIPTION = _description()
SCHEMA = schemathesis.openapi.from_dict(
    DESCRIPTION,
    config=schemathesis.Config.from_dict(
        {"generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none"}}
    ),
)

# An order id's shape (security.Signer.new_order_id): "ord_", 16 random characters, then the
# ownership tag. Invented ids mostly fail at the prefix; with it the generated text is checked
# as a tag.
_ORDER_ID_HEAD = "ord_" + "A" * 16


@SCHEMA.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Half the generated order ids get the head of a real one."""
    generated = (path_parameters or {}).get("order_id")
    if path_parameters is None or not isinstance(generated, str):
        return st.just(path_parameters)
    shaped = {**path_parameters, "order_id": _ORDER_ID_HEAD + generated}
    return st.sampled_from([path_parameters, shaped])


SENT: collections.Counter[str] = collections.Counter()
"""Requests sent, by credential, operation and status: the run's summary."""


@dataclass
class FuzzedApi:
    pipeline: local.LocalPipeline
    base_url: str
    access_token: str
    session: requests.Session = field(default_factory=requests.Session)
    accepted: set[str] = field(default_factory=set)
    """Order ids the API answered 202 for: what the queue may hold, and all it must hold."""

    def __post_init__(self) -> None:
        self._sqs = boto3.client("sqs", endpoint_url=self.pipeline.sqs_endpoint)
        self._queue_url = self._sqs.get_queue_url(QueueName=self.pipeline.queue_name)["QueueUrl"]

    def assert_nothing_else_queued(self, when: str) -> None:
        """The queue holds one message per accepted order (no processor runs: none has gone)."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        queued = sum(int(value) for value in attributes.values())
        assert queued == len(self.accepted), (
            f"the queue holds {queued} messages for {len(self.accepted)} accepted orders {when}"
        )


@pytest.fixture(scope="module")
def fuzzed_api(
    local_engines: engines.Engines, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzedApi]:
    """One API process and queue for the whole module: the queue's count spans every request."""
    with pytest.MonkeyPatch.context() as env:
        # What `_local_aws_credentials` sets for each test, for this module-wide fixture.
        for name, value in conftest.LOCAL_AWS_ENV.items():
            env.setenv(name, value)
        yield from _fuzzed_api(local_engines, tmp_path_factory)


def _fuzzed_api(
    local_engines: engines.Engines, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzedApi]:
    pipeline = conftest.new_pipeline(local_engines)
    # The per-client limit is not under test here; at its default most requests would be 429s.
    service = local.api_process(
        pipeline,
        local.free_port(),
        tmp_path_factory.mktemp("fuzzed-api"),
        RATE_LIMIT_PER_MINUTE="1000000",
    )
    service.start()
    try:
        base_url = service.health_url.removesuffix("/healthz")
        with requests.Session() as session:
            token = session.post(
                f"{base_url}/v1/auth/token",
                json={"client_id": "demo", "client_secret": "demo-secret"},
            ).json()["access_token"]
        api = FuzzedApi(pipeline, base_url, token)
        yield api
        api.session.close()
        api.assert_nothing_else_queued("after all the fuzzed requests")
    finally:
        service.stop()


@pytest.fixture(params=["valid-token", "no-token"])
def credentials(request: pytest.FixtureRequest, fuzzed_api: FuzzedApi) -> dict[str, str]:
    return helpers.auth(fuzzed_api.access_token) if request.param == "valid-token" else {}


def problem_document(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool:
    """Every error is an RFC 9457 problem document whose status is the response's."""
    if response.status_code < 400:
        return True
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith(problems.PROBLEM_JSON), (
        f"{response.status_code} answered as {content_type!r}, not {problems.PROBLEM_JSON}"
    )
    body = orjson.loads(response.content)
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == response.status_code, body
    return True


CHECKS = [
    checks.not_a_server_error,
    problem_document,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
    checks.unsupported_method,
    # Not positive_data_acceptance: valid requests are refused by state the generator cannot
    # see (an Idempotency-Key reused with another body is 422, an invented order id 404).
]


@SCHEMA.parametrize()
@hypothesis.settings(
    deadline=None,
    # The module's one API and queue are shared by every generated case on purpose.
    suppress_health_check=[
        hypothesis.HealthCheck.function_scoped_fixture,
        hypothesis.HealthCheck.too_slow,
    ],
)
def test_fuzzed_requests_hold_the_contract(
    case: schemathesis.Case[Any], fuzzed_api: FuzzedApi, credentials: dict[str, str]
) -> None:
    response = case.call(
        base_url=fuzzed_api.base_url, session=fuzzed_api.session, headers=credentials
    )
    credential = "valid-token" if credentials else "no-token"
    SENT[f"{credential} {case.method} {case.path} {response.status_code}"] += 1
    if response.status_code == 202:
        fuzzed_api.accepted.add(response.json()["order_id"])
    case.validate_response(response, checks=CHECKS, headers=credentials)
    if case.operation.path == "/v1/orders":  # the route that queues; the rest at the module's end
        fuzzed_api.assert_nothing_else_queued(
            f"after {response.status_code} to:\n{case.as_curl_command(headers=credentials)}"
        )


def test_the_served_description_is_the_fuzzed_one(fuzzed_api: FuzzedApi) -> None:
    served = fuzzed_api.session.get(f"{fuzzed_api.base_url}/openapi.json").json()
    assert served == DESCRIPTION


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    yield
    total = sum(SENT.values())
    print(f"\nfuzz: {total} requests")
    for line, count in sorted(SENT.items()):
        print(f"  {count:6d}  {line}")
    assert total >= MIN_REQUESTS, f"{total} requests sent, fewer than {MIN_REQUESTS}"
