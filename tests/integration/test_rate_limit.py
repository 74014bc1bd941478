"""The per-client rate limit and the limits on failed token requests, shared by every API
replica through the pipeline's DynamoDB.

Real API processes on the real engines: a client spreading its requests over several replicas
gets exactly the limit in a window, a client over it costs no DynamoDB call, and a limiter that
cannot reach its store refuses (503) rather than letting everyone through. A guesser spreading
wrong secrets over the replicas gets exactly the configured number of tries.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Iterator

import httpx
import pytest

from order_api import ratelimit
from order_devtools import local
from tests import faultproxy
from tests.faultproxy import Fault, FaultKind
from tests.integration import helpers
from tests.integration.conftest import ApiClients

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.fixture
def dynamodb_proxy(pipeline: local.LocalPipeline) -> Iterator[faultproxy.FaultProxy]:
    with faultproxy.proxied(pipeline.dynamodb_endpoint) as proxy:
        yield proxy


def _post_orders(
    clients: list[httpx.Client], access_token: str, count: int, *, workers: int = 6
) -> list[httpx.Response]:
    """`count` orders, request i to clients[i % len(clients)], `workers` at a time."""
    headers = helpers.auth(access_token)

    def post(i: int) -> httpx.Response:
        body = helpers.order_body(customer_id=f"c{i}")
        return clients[i % len(clients)].post("/v1/orders", json=body, headers=headers)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(post, range(count)))


def _ask_token(api: httpx.Client, client_id: str, secret: str) -> httpx.Response:
    return api.post("/v1/auth/token", json={"client_id": client_id, "client_secret": secret})


def _assert_refused_as_over_the_limit(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert 1 <= int(response.headers["retry-after"]) <= ratelimit.WINDOW_SECONDS


def test_a_client_spreading_requests_over_three_replicas_gets_exactly_the_limit(
    pipeline: local.LocalPipeline, start_api_client: ApiClients
) -> None:
    limit = 100
    replicas = [start_api_client(pipeline, RATE_LIMIT_PER_MINUTE=str(limit)) for _ in range(3)]
    access_token = helpers.token(replicas[0])
    helpers.in_a_fresh_rate_limit_window(needed_seconds=20)
    responses = _post_orders(replicas, access_token, count=2 * limit + limit // 2)

    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == limit, {s: statuses.count(s) for s in set(statuses)}
    for refused in (r for r in responses if r.status_code != 202):
        _assert_refused_as_over_the_limit(refused)
    assert helpers.queue_depths(pipeline)[pipeline.queue_name] == limit


def test_a_client_over_the_limit_is_refused_without_calling_dynamodb(
    pipeline: local.LocalPipeline,
    dynamodb_proxy: faultproxy.FaultProxy,
    start_api_client: ApiClients,
) -> None:
    two_clients = dataclasses.replace(
        pipeline,
        dynamodb_endpoint=dynamodb_proxy.endpoint,
        clients={"demo": "demo-secret", "other": "other-secret"},
    )
    api = start_api_client(two_clients, RATE_LIMIT_PER_MINUTE="5")
    access_token = helpers.token(api)
    helpers.in_a_fresh_rate_limit_window(needed_seconds=15)
    assert [r.status_code for r in _post_orders([api], access_token, 5)] == [202] * 5
    _assert_refused_as_over_the_limit(_post_orders([api], access_token, 1)[0])

    calls = dynamodb_proxy.stats.forwarded
    for refused in _post_orders([api], access_token, 20):
        _assert_refused_as_over_the_limit(refused)
    assert dynamodb_proxy.stats.forwarded == calls  # the refusal is remembered locally
    other = helpers.token(api, "other", "other-secret")
    assert _post_orders([api], other, 1)[0].status_code == 202  # a limit per client


@pytest.mark.parametrize(
    "fault",
    [FaultKind.RESET, FaultKind.SERVER_ERROR],
    ids=["unreachable", "failing"],
)
def test_a_limiter_without_its_store_refuses_with_503_and_queues_nothing(
    pipeline: local.LocalPipeline,
    dynamodb_proxy: faultproxy.FaultProxy,
    start_api_client: ApiClients,
    fault: FaultKind,
) -> None:
    api = start_api_client(dataclasses.replace(pipeline, dynamodb_endpoint=dynamodb_proxy.endpoint))
    access_token = helpers.token(api)
    with dynamodb_proxy.faults(Fault(fault, times=None)):
        response = _post_orders([api], access_token, 1)[0]
        token_response = _ask_token(api, "demo", "demo-secret")
    # Secrets are not checked uncounted either.
    assert token_response.status_code == 503, token_response.text
    assert "cannot be counted" in token_response.json()["detail"]
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "rate limit" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert helpers.queue_depths(pipeline)[pipeline.queue_name] == 0
    # Back once the store is: the same client is served again.
    assert _post_orders([api], access_token, 1)[0].status_code == 202


def test_a_guesser_spreading_wrong_secrets_over_three_replicas_gets_exactly_the_tries(
    pipeline: local.LocalPipeline, start_api_client: ApiClients
) -> None:
    window = 600
    env = {
        "TOKEN_FAILURE_WINDOW_SECONDS": str(window),
        "TOKEN_FAILURES_PER_CLIENT": "4",
        "TOKEN_FAILURES_PER_SOURCE": "7",
    }
    two_clients = dataclasses.replace(
        pipeline, clients={"demo": "demo-secret", "other": "other-secret"}
    )
    replicas = [start_api_client(two_clients, **env) for _ in range(3)]
    helpers.in_a_fresh_rate_limit_window(needed_seconds=30, window_seconds=window)

    guesses = [_ask_token(replicas[i % 3], "demo", f"guess-{i}") for i in range(9)]
    assert [r.status_code for r in guesses] == [401] * 4 + [429] * 5
    assert 1 <= int(guesses[-1].headers["retry-after"]) <= window
    # Locked for every replica, even with the right secret; a right secret refunds its try.
    assert {_ask_token(api, "demo", "demo-secret").status_code for api in replicas} == {429}
    assert helpers.token(replicas[1], "other", "other-secret")

    # The source's own count: 4 failures so far, 3 more tries over unknown ids, then none.
    unknown = [_ask_token(replicas[i % 3], f"nobody-{i}", "guess") for i in range(5)]
    assert [r.status_code for r in unknown] == [401] * 3 + [429] * 2
    assert _ask_token(replicas[2], "other", "other-secret").status_code == 429
