"""The HTTP contract of the API: auth, signed URLs, idempotency, limits and bad input.

Served in the test's process on the real engines (`in_process_api`): what is tested is what the
app answers, not how uvicorn starts (test_failures and the end-to-end tests start processes).
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import orjson
import pytest

from order_api import security
from order_devtools import local
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
    # No PUBLIC_BASE_URL here: the URL is on the host the request was sent to.
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
    signer = security.Signer(two_clients.signing_secret.encode())
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


def test_health_readiness_metrics_and_docs(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json()["status"] == "ready"

    def accepted() -> float:  # the app's counters live as long as its process: compare
        (line,) = [
            line
            for line in api.get("/metrics").text.splitlines()
            if line.startswith("orders_accepted_total ")
        ]
        return float(line.split()[1])

    before = accepted()
    helpers.place(api, helpers.token(api), helpers.order_body())
    assert accepted() == before + 1
    metrics = api.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/v1/orders",status="202"}' in metrics
    assert "queue_send_batch_size_bucket" in metrics
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
