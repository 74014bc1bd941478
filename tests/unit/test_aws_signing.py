"""The lean client's SigV4 signatures equal botocore's for the same request and time."""

from __future__ import annotations

import datetime

import pytest
from botocore import auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from order_common.aws_json import RequestSigner

SIGNED_AT = datetime.datetime(2026, 11, 24, 23, 59, 58, tzinfo=datetime.UTC)
BODY = b'{"QueueUrl":"http://127.0.0.1:9324/000000000000/orders","Entries":[]}'
CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET = "AmazonSQS.SendMessageBatch"


def _botocore_headers(
    monkeypatch: pytest.MonkeyPatch,
    endpoint_url: str,
    credentials: ReadOnlyCredentials,
    *,
    service: str,
    region: str,
    at: datetime.datetime,
) -> dict[str, str]:
    monkeypatch.setattr(auth, "get_current_datetime", lambda: at.replace(tzinfo=None))
    request = AWSRequest(
        method="POST",
        url=endpoint_url,
        data=BODY,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET},
    )
    auth.SigV4Auth(credentials, service, region).add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


@pytest.mark.parametrize(
    "endpoint_url",
    [
        "http://127.0.0.1:9324",
        "https://sqs.eu-west-1.amazonaws.com",
        "https://sqs.eu-west-1.amazonaws.com:443/",
        "http://LocalHost:80",
        "http://[::1]:4566",
        "https://proxy.example/aws/sqs%20path/../sqs",
    ],
)
@pytest.mark.parametrize("token", [None, "session token from an assumed role"])
def test_signatures_equal_botocores(
    monkeypatch: pytest.MonkeyPatch, endpoint_url: str, token: str | None
) -> None:
    credentials = ReadOnlyCredentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
    )
    expected = _botocore_headers(
        monkeypatch, endpoint_url, credentials, service="sqs", region="eu-west-1", at=SIGNED_AT
    )
    signer = RequestSigner(endpoint_url, service="sqs", region="eu-west-1")
    headers = signer.headers(
        credentials, BODY, content_type=CONTENT_TYPE, target=TARGET, now=SIGNED_AT.timestamp()
    )
    host = headers.pop("host")
    assert headers == expected
    assert (
        host
        == auth.SigV4Auth(credentials, "sqs", "eu-west-1").headers_to_sign(
            AWSRequest(method="POST", url=endpoint_url)
        )["host"]
    )


def test_the_signing_key_follows_the_day_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is kept between calls; a new day or rotated credentials must not reuse it."""
    endpoint_url = "http://127.0.0.1:8000"
    signer = RequestSigner(endpoint_url, service="dynamodb", region="us-east-1")
    first = ReadOnlyCredentials("AKID", "first secret", None)
    rotated = ReadOnlyCredentials("AKID", "rotated secret", None)
    next_day = SIGNED_AT + datetime.timedelta(seconds=3)
    for credentials, at in [(first, SIGNED_AT), (first, next_day), (rotated, next_day)]:
        expected = _botocore_headers(
            monkeypatch, endpoint_url, credentials, service="dynamodb", region="us-east-1", at=at
        )
        headers = signer.headers(
            credentials, BODY, content_type=CONTENT_TYPE, target=TARGET, now=at.timestamp()
        )
        assert headers["authorization"] == expected["authorization"]
