"""Every error the API answers, and every error its OpenAPI description lists, is an RFC 9457
problem document (application/problem+json, the `Problem` model)."""

from __future__ import annotations

import asyncio
import logging

import fastapi
import fastapi.exceptions
import orjson
import pydantic
import pytest
from starlette import testclient

from order_api import app as api_app
from order_api import middleware, problems, schemas
from order_api import settings as api_settings
from order_devtools import local

PROBLEM_CONTENT = {
    problems.PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}},
}


def _app() -> fastapi.FastAPI:
    """The app configured as a local API process is (no lifespan runs: nothing is reached)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in local.LocalPipeline("", "").api_env(port=0).items():
            env.setenv(name, value)
        return api_app.create_app(api_settings.ApiSettings())


def test_every_documented_error_response_is_a_problem_document() -> None:
    document = _app().openapi()
    errors = {
        f"{method.upper()} {path} {status}": response["content"]
        for path, path_item in document["paths"].items()
        for method, operation in path_item.items()
        for status, response in operation["responses"].items()
        if int(status) >= 400
    }
    assert errors == dict.fromkeys(errors, PROBLEM_CONTENT)
    components = document["components"]["schemas"]
    assert {"Problem", "FieldError"} <= components.keys()
    assert not {"HTTPValidationError", "ValidationError"} & components.keys()


@pytest.mark.parametrize(
    ("operation", "statuses"),
    [
        ("POST /v1/auth/token", {"400", "401", "413", "422", "429", "503"}),
        ("POST /v1/orders", {"400", "401", "409", "413", "415", "422", "429", "503"}),
        ("GET /v1/orders/{order_id}", {"401", "403", "404", "422", "429", "503"}),
        ("DELETE /v1/orders/{order_id}", {"401", "404", "409", "422", "429", "503"}),
        ("GET /readyz", {"503"}),
    ],
)
def test_each_operation_documents_the_errors_it_answers(operation: str, statuses: set[str]) -> None:
    method, path = operation.split(" ")
    responses = _app().openapi()["paths"][path][method.lower()]["responses"]
    assert {status for status in responses if int(status) >= 400} == statuses


def test_problem_documents_are_what_the_problem_model_describes() -> None:
    uncertain = problems.problem_response(
        503, "maybe accepted", extra={"order_id": "ord_x", "status_url": "http://h/v1/orders/ord_x"}
    )
    assert uncertain.media_type == problems.PROBLEM_JSON
    assert schemas.Problem.model_validate_json(bytes(uncertain.body)).order_id == "ord_x"

    with pytest.raises(pydantic.ValidationError) as invalid:
        schemas.TokenRequest.model_validate({"client_id": ""})
    validation = asyncio.run(
        problems._on_validation(
            None,  # type: ignore[arg-type]  # the handler does not read the request
            fastapi.exceptions.RequestValidationError(invalid.value.errors()),
        )
    )
    problem = schemas.Problem.model_validate_json(bytes(validation.body))
    assert problem.status == 422
    assert problem.errors is not None
    assert {error.field for error in problem.errors} == {"client_id", "client_secret"}


def test_an_unexpected_error_is_a_500_problem_document_that_tells_nothing_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app()

    @app.get("/explode")
    async def explode() -> None:
        raise RuntimeError("internal state the client must not see")

    # No lifespan runs, so the app has no services: the accept route fails too, on its fast path.
    client = testclient.TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger=middleware.__name__):
        answers = [
            client.get("/explode", headers={"x-request-id": "req-explode"}),
            client.post("/v1/orders", json={}, headers={"x-request-id": "req-accept"}),
        ]
    for response, request_id in zip(answers, ("req-explode", "req-accept"), strict=True):
        assert response.status_code == 500
        assert response.headers["content-type"] == problems.PROBLEM_JSON
        body = orjson.loads(response.content)
        assert body["status"] == 500
        assert "internal state" not in body["detail"]
        assert "services" not in body["detail"]
        # The id the client can quote is the one on the logged traceback.
        assert response.headers["x-request-id"] == request_id
        assert request_id in body["detail"]
    logged = [record for record in caplog.records if record.exc_info]
    assert [record.request_id for record in logged] == ["req-explode", "req-accept"]
    assert "internal state the client must not see" in str(logged[0].exc_info[1])
