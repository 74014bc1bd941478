"""The HTTP contract of the API: auth, signed URLs, idempotency, limits and bad input.

Served in the test's process on the real engines (`in_process_api`): what is tested is what the
app answers, not how uvicorn starts (test_failures and the end-to-end tests start processes).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import re
import secrets
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import orjson
import pytest
from prometheus_client import parser as exposition

from order_api import security
from order_devtools import local
from tests import faultproxy
from tests.integration import helpers
from tests.integration.conftest import InProcessApi

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.fixture
def two_clients(make_pipeline: Callable[..., local.LocalPipeline]) -> local.LocalPipeline:
    pipeline = make_pipeline()
    return local.LocalPipeline(
        sqs_endpoint=pipeline.sqs_endpoint,
        dynamodb_endpoint=pipeline.dynamodb_endpoint,
        queue_name=pipeline.queue_name,
        table_prefix=pipeline.table_prefix,
        clients={"demo": "demo-secret", "other": "other-secret"},
    )


@pytest.fixture
def api(two_clients: local.LocalPipeline, in_process_api: InProcessApi) -> httpx.Client:
    return in_process_api(two_clients)


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


# --- authentication -------------------------------------------------------------------------


def test_token_endpoint_refuses_a_wrong_secret(api: httpx.Client) -> None:
    response = api.post("/v1/auth/token", json={"client_id": "demo", "client_secret": "nope"})
    _problem(response, 401)


def test_token_response_is_a_bearer_jwt_with_expiry(api: httpx.Client) -> None:
    response = api.post(
        "/v1/auth/token", json={"client_id": "demo", "client_secret": "demo-secret"}
    )
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"iss", "aud", "exp", "sub"} <= claims.keys()


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer not.a.jwt", "Bearer expired"],
    ids=["missing", "empty", "wrong-scheme", "garbled", "expired"],
)
def test_post_without_a_valid_token_is_401(
    api: httpx.Client, two_clients: local.LocalPipeline, header: str | None
) -> None:
    expired = header == "Bearer expired"
    if expired:
        claims = {
            "sub": "demo",
            "iss": "order-pipeline",
            "aud": "order-pipeline-api",
            "exp": int(time.time()) - 10,
        }
        header = "Bearer " + jwt.encode(claims, two_clients.jwt_secret, algorithm="HS256")
    headers = {"Authorization": header} if header else {}
    response = api.post("/v1/orders", json=helpers.order_body(), headers=headers)
    body = _problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    if expired:
        assert "expired" in body["detail"]
    assert helpers.queue_depths(two_clients)[two_clients.queue_name] == 0


def test_a_refused_token_is_described_in_our_own_words(api: httpx.Client) -> None:
    response = api.post(
        "/v1/orders", json=helpers.order_body(), headers={"Authorization": "Bearer not.a.jwt"}
    )
    assert _problem(response, 401)["detail"] == "the access token is not valid"


def test_a_token_for_a_client_that_is_not_configured_is_401(
    api: httpx.Client, two_clients: local.LocalPipeline
) -> None:
    claims = {
        "sub": "ghost",
        "iss": "order-pipeline",
        "aud": "order-pipeline-api",
        "exp": int(time.time()) + 600,
    }
    signed_by_us = jwt.encode(claims, two_clients.jwt_secret, algorithm="HS256")
    response = api.post("/v1/orders", json=helpers.order_body(), headers=helpers.auth(signed_by_us))
    _problem(response, 401)
    assert helpers.queue_depths(two_clients)[two_clients.queue_name] == 0


def test_status_urls_tokens_and_order_ids_outlive_a_key_rotation(
    two_clients: local.LocalPipeline, in_process_api: InProcessApi
) -> None:
    before = in_process_api(two_clients)
    access_token = helpers.token(before)
    accepted = helpers.place(before, access_token, helpers.order_body())
    old_url = httpx.URL(accepted["status_url"])
    assert old_url.params["kid"] == "1"
    after = in_process_api(
        two_clients,
        SIGNING_KEY_ID="2",
        SIGNING_SECRET=secrets.token_urlsafe(32),
        SIGNING_RETIRED_SECRETS=json.dumps({"1": two_clients.signing_secret}),
        JWT_KEY_ID="2",
        JWT_SECRET=secrets.token_urlsafe(32),
        JWT_RETIRED_KEYS=json.dumps({"1": two_clients.jwt_secret}),
    )
    assert after.get(old_url).json()["status"] == "QUEUED"
    by_owner = after.get(f"/v1/orders/{accepted['order_id']}", headers=helpers.auth(access_token))
    assert by_owner.status_code == 200, by_owner.text
    new_url = httpx.URL(
        helpers.place(after, helpers.token(after), helpers.order_body())["status_url"]
    )
    assert new_url.params["kid"] == "2"
    assert after.get(new_url).status_code == 200
    _problem(after.get(old_url.copy_merge_params({"kid": "2"})), 403)  # not the key that signed
    _problem(before.get(new_url), 403)  # the old deployment never knew the new key


# --- the token endpoint ---------------------------------------------------------------------


def _ask_token(api: httpx.Client, client_id: str, secret: str) -> httpx.Response:
    return api.post("/v1/auth/token", json={"client_id": client_id, "client_secret": secret})


def test_an_unknown_client_id_takes_as_long_as_a_wrong_secret(
    two_clients: local.LocalPipeline, in_process_api: InProcessApi
) -> None:
    api = in_process_api(
        two_clients, TOKEN_FAILURES_PER_CLIENT="100", TOKEN_FAILURES_PER_SOURCE="100"
    )

    def median_seconds(client_id: str) -> float:
        durations = []
        for _ in range(7):
            started = time.perf_counter()
            _problem(_ask_token(api, client_id, "not-the-secret"), 401)
            durations.append(time.perf_counter() - started)
        return statistics.median(durations)

    known, unknown = median_seconds("demo"), median_seconds("nobody")
    assert 0.5 < unknown / known < 2, f"known id {known:.4f} s, unknown id {unknown:.4f} s"


def _slow_hash(secret: str, *, iterations: int) -> str:
    """An older PBKDF2 hash (still accepted) that takes long to check."""
    salt = "00" * 16
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def test_the_api_keeps_answering_while_secrets_are_hashed_one_at_a_time(
    two_clients: local.LocalPipeline, in_process_api: InProcessApi
) -> None:
    clients = {"slow": _slow_hash("slow-secret", iterations=1_500_000)}
    api = in_process_api(two_clients, API_CLIENTS=json.dumps(clients), TOKEN_HASH_CONCURRENCY="1")

    def one_hash_seconds() -> float:
        started = time.perf_counter()
        helpers.token(api, "slow", "slow-secret")
        return time.perf_counter() - started

    one_hash = one_hash_seconds()
    probes = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        started = time.perf_counter()
        tokens = [pool.submit(helpers.token, api, "slow", "slow-secret") for _ in range(3)]
        time.sleep(one_hash / 4)  # the three are in flight
        for _ in range(3):
            probe_started = time.perf_counter()
            assert api.get("/healthz").status_code == 200
            probes.append(time.perf_counter() - probe_started)
        for token in tokens:
            token.result()
        three_hashes = time.perf_counter() - started
    assert max(probes) < one_hash / 2, f"/healthz took {probes} while hashing; one: {one_hash}"
    # TOKEN_HASH_CONCURRENCY=1: the three wait their turn rather than share the cores. The
    # fastest single hash stands for one, so a busy machine during the first cannot fail this.
    fastest = min(one_hash, one_hash_seconds())
    assert three_hashes > 2 * fastest, f"three hashes {three_hashes} s, one {fastest} s"


def test_failed_token_requests_lock_out_the_client_then_the_source(
    two_clients: local.LocalPipeline,
    in_process_api: InProcessApi,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="order_api")
    api = in_process_api(two_clients, TOKEN_FAILURES_PER_CLIENT="3", TOKEN_FAILURES_PER_SOURCE="5")
    helpers.in_a_fresh_rate_limit_window(needed_seconds=20, window_seconds=300)  # the default
    for _ in range(3):
        _problem(_ask_token(api, "demo", "guessed-secret"), 401)
    locked = _ask_token(api, "demo", "demo-secret")  # even the right secret, for now
    _problem(locked, 429)
    assert 1 <= int(locked.headers["retry-after"]) <= 300
    assert _ask_token(api, "other", "other-secret").status_code == 200  # another client may
    for client_id in ("nobody-1", "nobody-2"):
        _problem(_ask_token(api, client_id, "guessed-secret"), 401)
    _problem(_ask_token(api, "other", "other-secret"), 429)  # this source has no tries left

    refusals = [r.getMessage() for r in caplog.records if r.name == "order_api.credentials"]
    assert sum("wrong secret, client 'demo'" in line for line in refusals) == 3
    assert sum("unknown client, client 'nobody-1'" in line for line in refusals) == 1
    assert sum("too many failures" in line for line in refusals) == 2
    assert not any("secret" in line and "guessed" in line for line in refusals)


# --- the accept path --------------------------------------------------------------------------


def test_accept_returns_202_location_retry_after_and_a_request_id(api: httpx.Client) -> None:
    response = api.post(
        "/v1/orders",
        json=helpers.order_body(),
        headers={**helpers.auth(helpers.token(api)), "X-Request-ID": "req-123"},
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "QUEUED"
    assert body["order_id"].startswith("ord_")
    assert response.headers["location"] == body["status_url"]
    # The in-process client's PUBLIC_BASE_URL is the host it sends to.
    assert body["status_url"].startswith(f"{api.base_url}/v1/orders/{body['order_id']}?expires=")
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-request-id"] == "req-123"


def test_every_response_carries_a_request_id(api: httpx.Client) -> None:
    assert api.get("/healthz").headers["x-request-id"]
    assert api.get("/nope").headers["x-request-id"]


# --- status URLs and ownership ----------------------------------------------------------------


def test_signed_status_url_works_without_a_token_and_answers_queued_before_processing(
    api: httpx.Client,
) -> None:
    accepted = helpers.place(api, helpers.token(api), helpers.order_body())
    response = api.get(accepted["status_url"])  # no processor runs: not recorded yet
    assert response.status_code == 200
    assert response.json() == {
        **response.json(),
        "order_id": accepted["order_id"],
        "status": "QUEUED",
    }


def test_tampered_or_expired_signature_is_403(
    api: httpx.Client, two_clients: local.LocalPipeline
) -> None:
    accepted = helpers.place(api, helpers.token(api), helpers.order_body())
    url = httpx.URL(accepted["status_url"])
    expires = int(url.params["expires"])
    other = helpers.place(api, helpers.token(api), helpers.order_body())["order_id"]
    _problem(api.get(url.copy_with(path=f"/v1/orders/{other}")), 403)
    _problem(api.get(url.copy_merge_params({"expires": str(expires + 1)})), 403)
    _problem(api.get(url.copy_merge_params({"sig": "AAAA"})), 403)
    signer = security.Signer(keys={"1": two_clients.signing_secret.encode()}, current_kid="1")
    past = int(time.time()) - 1
    stale = url.copy_merge_params(
        {"expires": str(past), "sig": signer.sign_status(accepted["order_id"], past)}
    )
    _problem(api.get(stale), 403)


def test_owner_token_reads_the_order_and_another_client_gets_404(api: httpx.Client) -> None:
    accepted = helpers.place(api, helpers.token(api), helpers.order_body())
    path = f"/v1/orders/{accepted['order_id']}"
    mine = api.get(path, headers=helpers.auth(helpers.token(api)))
    assert mine.status_code == 200
    assert mine.json()["status"] == "QUEUED"
    theirs = api.get(path, headers=helpers.auth(helpers.token(api, "other", "other-secret")))
    _problem(theirs, 404)
    _problem(
        api.delete(path, headers=helpers.auth(helpers.token(api, "other", "other-secret"))), 404
    )
    _problem(api.get("/v1/orders/ord_invented", headers=helpers.auth(helpers.token(api))), 404)


@pytest.mark.parametrize("how", ["owner-get", "signed-get", "owner-delete"])
def test_a_non_ascii_order_id_is_a_4xx_problem(api: httpx.Client, how: str) -> None:
    access_token = helpers.token(api)
    accepted = helpers.place(api, access_token, helpers.order_body())
    path = f"/v1/orders/{accepted['order_id'][:-1]}é"
    if how == "owner-get":
        response = api.get(path, headers=helpers.auth(access_token))
    elif how == "signed-get":
        response = api.get(httpx.URL(accepted["status_url"]).copy_with(path=path))
    else:
        response = api.delete(path, headers=helpers.auth(access_token))
    assert 400 <= response.status_code < 500, response.text
    _problem(response, response.status_code)


def test_status_urls_point_at_the_public_base_whatever_the_request_says(
    two_clients: local.LocalPipeline, in_process_api: InProcessApi
) -> None:
    api = in_process_api(two_clients, PUBLIC_BASE_URL="https://orders.example/shop/")
    response = api.post(
        "/v1/orders",
        json=helpers.order_body(),
        headers={
            **helpers.auth(helpers.token(api)),
            "Host": "evil.example",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "http",
        },
    )
    assert response.status_code == 202, response.text
    order_id = response.json()["order_id"]
    assert response.headers["location"].startswith(
        f"https://orders.example/shop/v1/orders/{order_id}?"
    )
    assert response.json()["status_url"] == response.headers["location"]


# --- idempotency --------------------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_first_response(
    api: httpx.Client, two_clients: local.LocalPipeline
) -> None:
    headers = {**helpers.auth(helpers.token(api)), "Idempotency-Key": "k-1"}
    first = api.post("/v1/orders", json=helpers.order_body(), headers=headers)
    again = api.post("/v1/orders", json=helpers.order_body(), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert helpers.queue_depths(two_clients)[two_clients.queue_name] == 1


def test_same_idempotency_key_with_another_body_is_422(api: httpx.Client) -> None:
    headers = {**helpers.auth(helpers.token(api)), "Idempotency-Key": "k-2"}
    assert api.post("/v1/orders", json=helpers.order_body(), headers=headers).status_code == 202
    changed = api.post("/v1/orders", json=helpers.order_body(SKU_MUG=5), headers=headers)
    assert "different request body" in _problem(changed, 422)["detail"]


def test_idempotency_keys_are_per_client(api: httpx.Client) -> None:
    mine = api.post(
        "/v1/orders",
        json=helpers.order_body(),
        headers={**helpers.auth(helpers.token(api)), "Idempotency-Key": "shared"},
    )
    theirs = api.post(
        "/v1/orders",
        json=helpers.order_body(),
        headers={
            **helpers.auth(helpers.token(api, "other", "other-secret")),
            "Idempotency-Key": "shared",
        },
    )
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["order_id"] != theirs.json()["order_id"]


def test_concurrent_duplicates_queue_exactly_one_order(
    api: httpx.Client, two_clients: local.LocalPipeline
) -> None:
    headers = {**helpers.auth(helpers.token(api)), "Idempotency-Key": "race-1"}

    def post(_: int) -> httpx.Response:
        return api.post("/v1/orders", json=helpers.order_body(), headers=headers)

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(post, range(12)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 409}, statuses
    assert 202 in statuses
    assert len({r.json()["order_id"] for r in responses if r.status_code == 202}) == 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.headers["retry-after"]
    assert helpers.queue_depths(two_clients)[two_clients.queue_name] == 1


# --- rate limit ---------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(
    two_clients: local.LocalPipeline, in_process_api: InProcessApi
) -> None:
    api = in_process_api(two_clients, RATE_LIMIT_PER_MINUTE="5")
    access_token = helpers.token(api)
    helpers.in_a_fresh_rate_limit_window(needed_seconds=5)
    statuses = [
        api.post(
            "/v1/orders", json=helpers.order_body(), headers=helpers.auth(access_token)
        ).status_code
        for _ in range(6)
    ]
    assert statuses == [202] * 5 + [429]
    limited = api.post("/v1/orders", json=helpers.order_body(), headers=helpers.auth(access_token))
    _problem(limited, 429)
    assert 1 <= int(limited.headers["retry-after"]) <= 60  # the end of the minute's window
    other = helpers.token(api, "other", "other-secret")
    assert (
        api.post("/v1/orders", json=helpers.order_body(), headers=helpers.auth(other)).status_code
        == 202
    )


# --- bad input ----------------------------------------------------------------------------------

_VALID = helpers.order_body()


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b'{"customer_id": "c1", "items": [', 400, "not valid JSON"),
        (b"[]", 422, "should be an object"),
        ({**_VALID, "items": "SKU-MUG"}, 422, "items"),
        ({**_VALID, "customer_id": 7}, 422, "customer_id"),
        ({**_VALID, "coupon": "FREE"}, 422, "coupon"),
        ({**_VALID, "items": []}, 422, "at least 1"),
        (
            {**_VALID, "items": [{"sku": f"SKU-{i}", "quantity": 1} for i in range(101)]},
            422,
            "at most 100",
        ),
        ({**_VALID, "items": [{"sku": "SKU-MUG", "quantity": 0}]}, 422, "greater than 0"),
        ({**_VALID, "items": [{"sku": "SKU-MUG", "quantity": -3}]}, 422, "greater than 0"),
        ({**_VALID, "items": [{"sku": "SKU-MUG", "quantity": 1001}]}, 422, "1000"),
        ({**_VALID, "items": [{"sku": "SKU-MUG", "quantity": 1.5}]}, 422, "quantity"),
        ({**_VALID, "items": [{"sku": "sku with spaces", "quantity": 1}]}, 422, "sku"),
        ({**_VALID, "currency": "usd"}, 422, "currency"),
        ({k: v for k, v in _VALID.items() if k != "payment_token"}, 422, "payment_token"),
        (b"", 422, "body: Field required"),
    ],
    ids=[
        "malformed-json",
        "not-an-object",
        "items-wrong-type",
        "customer-wrong-type",
        "unknown-field",
        "no-items",
        "too-many-items",
        "zero-quantity",
        "negative-quantity",
        "huge-quantity",
        "fractional-quantity",
        "bad-sku",
        "bad-currency",
        "missing-field",
        "empty-body",
    ],
)
def test_bad_input_is_a_4xx_problem_that_says_what_is_wrong(
    api: httpx.Client,
    two_clients: local.LocalPipeline,
    content: bytes | dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    headers = {**helpers.auth(helpers.token(api)), "Content-Type": "application/json"}
    if isinstance(content, dict):
        response = api.post("/v1/orders", json=content, headers=headers)
    else:
        response = api.post("/v1/orders", content=content, headers=headers)
    body = _problem(response, status)
    assert fragment in (body["detail"] + str(body.get("errors", ""))), body
    assert helpers.queue_depths(two_clients)[two_clients.queue_name] == 0


def test_oversized_body_is_413_whether_declared_or_streamed(api: httpx.Client) -> None:
    headers = {**helpers.auth(helpers.token(api)), "Content-Type": "application/json"}
    big = b'{"customer_id": "' + b"x" * (65 * 1024) + b'"}'
    _problem(api.post("/v1/orders", content=big, headers=headers), 413)

    def chunks() -> Any:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    _problem(api.post("/v1/orders", content=chunks(), headers=headers), 413)


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_an_idempotency_key_out_of_bounds_is_422_with_the_body_errors_too(
    api: httpx.Client, two_clients: local.LocalPipeline, key: str
) -> None:
    headers = {**helpers.auth(helpers.token(api)), "Idempotency-Key": key}
    response = api.post("/v1/orders", json={**_VALID, "currency": "EUR"}, headers=headers)
    fields = {error["field"] for error in _problem(response, 422)["errors"]}
    assert fields == {"header.Idempotency-Key", "body.currency"}
    assert helpers.queue_depths(two_clients)[two_clients.queue_name] == 0


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/x+json"]
)
def test_an_order_not_sent_as_json_is_415(
    api: httpx.Client, two_clients: local.LocalPipeline, content_type: str | None
) -> None:
    headers = helpers.auth(helpers.token(api))
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = _problem(api.post("/v1/orders", content=orjson.dumps(_VALID), headers=headers), 415)
    assert "application/json" in body["detail"]
    assert helpers.queue_depths(two_clients)[two_clients.queue_name] == 0


# --- operations endpoints -----------------------------------------------------------------------


def test_readiness_names_what_is_unreachable_but_not_the_error(
    make_pipeline: Callable[..., local.LocalPipeline], in_process_api: InProcessApi
) -> None:
    pipeline = make_pipeline()
    api = in_process_api(dataclasses.replace(pipeline, queue_name=f"missing-{uuid.uuid4().hex}"))
    response = api.get("/readyz")
    body = _problem(response, 503)
    assert body["detail"] == "not ready: queue unreachable"  # the AWS error text is logged only
    assert body["checks"] == {"queue": "unreachable", "table": "ok"}
    assert response.headers["retry-after"]


def test_unauthenticated_readers_reach_aws_once_per_period_whatever_the_traffic(
    two_clients: local.LocalPipeline, in_process_api: InProcessApi
) -> None:
    with (
        faultproxy.proxied(two_clients.sqs_endpoint) as sqs,
        faultproxy.proxied(two_clients.dynamodb_endpoint) as dynamodb,
    ):
        proxied = dataclasses.replace(
            two_clients, sqs_endpoint=sqs.endpoint, dynamodb_endpoint=dynamodb.endpoint
        )
        api = in_process_api(proxied, READINESS_CACHE_SECONDS="60", STATUS_READ_CACHE_SECONDS="60")
        access_token = helpers.token(api)
        first, second = (helpers.place(api, access_token, helpers.order_body()) for _ in "12")
        assert api.get(first["status_url"]).status_code == 200  # learns the queue's retention
        sqs_calls, dynamodb_calls = sqs.stats.forwarded, dynamodb.stats.forwarded

        urls = ["/readyz", second["status_url"]] * 20
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            statuses = [r.status_code for r in pool.map(api.get, urls)]
        assert statuses == [200] * len(urls)
        # /readyz: one GetQueueAttributes and one DescribeTable; the status URL: one GetItem.
        assert sqs.stats.forwarded - sqs_calls == 1
        assert dynamodb.stats.forwarded - dynamodb_calls == 2


def test_health_readiness_metrics_and_docs(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json()["status"] == "ready"

    def samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = api.get("/metrics").text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in exposition.text_string_to_metric_families(text)
            for sample in family.samples
        }

    release = {("version", "dev"), ("track", "stable")}
    accepted = ("orders_accepted_total", frozenset(release))
    before = samples()[accepted]  # the app's counters live as long as its process: compare
    helpers.place(api, helpers.token(api), helpers.order_body())
    after = samples()
    assert after[accepted] == before + 1
    route = {("method", "POST"), ("route", "/v1/orders"), ("status", "202")}
    assert after[("http_requests_total", frozenset(route | release))] >= 1
    assert any(name == "queue_send_batch_size_bucket" for name, _ in after)
    assert api.get("/docs").status_code == 200
    assert api.get("/redoc").status_code == 200
    document = api.get("/openapi.json").json()
    accept = document["paths"]["/v1/orders"]["post"]
    # The route parses its own body: the document must still describe it, and every $ref resolve.
    body_ref = accept["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/OrderCreate"
    assert [p["name"] for p in accept["parameters"]] == ["Idempotency-Key"]
    components = document["components"]["schemas"]
    refs = re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', orjson.dumps(document).decode())
    assert {"OrderCreate", "OrderItem", "OrderAccepted"} <= set(refs)
    assert set(refs) <= set(components)
    assert set(components["OrderCreate"]["properties"]) == {
        "customer_id",
        "items",
        "currency",
        "payment_token",
    }
