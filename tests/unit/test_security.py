"""Tokens, client secrets, order-id ownership tags and signed status URLs."""

from __future__ import annotations

import subprocess
import sys
import time

import pydantic
import pytest

from order_api import security, settings


def _settings(**overrides: object) -> settings.ApiSettings:
    values: dict[str, object] = {"signing_secret": "s" * 32, "jwt_secret": "j" * 32}
    values.update(overrides)
    return settings.ApiSettings.model_validate(values)


def test_client_secret_verifies_only_the_right_secret() -> None:
    hashed = security.hash_client_secret("demo-secret")
    assert security.verify_client_secret("demo-secret", hashed)
    assert not security.verify_client_secret("demo-secreT", hashed)
    assert not security.verify_client_secret("demo-secret", "garbage")


def test_the_hash_command_prints_a_hash_of_the_secret_on_stdin() -> None:
    def hash_command(stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "order_api.security", "hash"],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    hashed = hash_command("s3cret pass\n")
    assert hashed.returncode == 0, hashed.stderr
    assert security.verify_client_secret("s3cret pass", hashed.stdout.strip())
    empty = hash_command("\n")
    assert empty.returncode == 2
    assert "the secret is empty" in empty.stderr


def test_token_round_trip_names_the_client() -> None:
    tokens = security.TokenService(_settings())
    assert tokens.verify(tokens.issue("demo")) == "demo"


def test_expired_token_is_refused_with_a_clear_reason() -> None:
    tokens = security.TokenService(_settings(token_ttl_seconds=60))
    stale = tokens.issue("demo", now=time.time() - 3600)
    with pytest.raises(security.InvalidTokenError, match="expired"):
        tokens.verify(stale)


@pytest.mark.parametrize("field", ["jwt_audience", "jwt_issuer", "jwt_secret"])
def test_token_from_another_issuer_audience_or_key_is_refused(field: str) -> None:
    other = security.TokenService(_settings(**{field: "something-else-entirely-32-bytes!"}))
    with pytest.raises(security.InvalidTokenError):
        security.TokenService(_settings()).verify(other.issue("demo"))


def test_garbled_token_is_refused() -> None:
    with pytest.raises(security.InvalidTokenError):
        security.TokenService(_settings()).verify("not.a.jwt")


def test_rs256_tokens_verify_with_the_public_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    tokens = security.TokenService(
        _settings(jwt_algorithm="RS256", jwt_private_key=private, jwt_public_key=public)
    )
    assert tokens.verify(tokens.issue("demo")) == "demo"


def test_order_id_belongs_only_to_its_client() -> None:
    signer = security.Signer(b"k" * 32)
    order_id = signer.new_order_id("alice")
    assert signer.order_belongs_to(order_id, "alice")
    assert not signer.order_belongs_to(order_id, "bob")
    assert not security.Signer(b"x" * 32).order_belongs_to(order_id, "alice")
    assert not signer.order_belongs_to("ord_short", "alice")
    assert not signer.order_belongs_to(
        order_id[:-1] + ("A" if order_id[-1] != "A" else "B"), "alice"
    )


def test_status_signature_rejects_tampering_and_expiry() -> None:
    signer = security.Signer(b"k" * 32)
    now = time.time()
    expires = int(now) + 60
    sig = signer.sign_status("ord_1", expires)
    assert signer.verify_status("ord_1", expires, sig, now=now)
    assert not signer.verify_status("ord_2", expires, sig, now=now)
    assert not signer.verify_status("ord_1", expires + 1, sig, now=now)
    assert not signer.verify_status("ord_1", expires, sig[:-2] + "AA", now=now)
    assert not signer.verify_status("ord_1", expires, "%%%not-base64", now=now)
    assert not signer.verify_status("ord_1", expires, sig, now=expires + 1)


def test_settings_require_a_signing_secret() -> None:
    with pytest.raises(pydantic.ValidationError, match="signing_secret"):
        settings.ApiSettings.model_validate({})


def test_no_client_can_log_in_by_default() -> None:
    assert _settings().api_clients == {}


def test_a_cached_token_still_expires() -> None:
    tokens = security.TokenService(_settings(token_ttl_seconds=60))
    almost_stale = tokens.issue("demo", now=time.time() - 59)
    assert tokens.verify(almost_stale) == "demo"  # verified once: now cached
    time.sleep(1.2)
    with pytest.raises(security.InvalidTokenError, match="expired"):
        tokens.verify(almost_stale)
