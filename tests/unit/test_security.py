"""Tokens, client secrets, order-id ownership tags and signed status URLs."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time

import argon2
import jwt
import pydantic
import pytest

from order_api import security, settings

REQUIRED: dict[str, object] = {
    "signing_secret": "s" * 32,
    "jwt_secret": "j" * 32,
    "public_base_url": "https://orders.example",
}


def _settings(**overrides: object) -> settings.ApiSettings:
    values: dict[str, object] = {**REQUIRED, "api_clients": {"demo": "hash unused here"}}
    values.update(overrides)
    return settings.ApiSettings.model_validate(values)


def _signer(*keys: tuple[str, bytes]) -> security.Signer:
    """A signer whose first key is the current one."""
    return security.Signer(keys=dict(keys), current_kid=keys[0][0])


def test_client_secret_verifies_only_the_right_secret() -> None:
    hashed = security.hash_client_secret("demo-secret")
    assert security.verify_client_secret("demo-secret", hashed)
    assert not security.verify_client_secret("demo-secreT", hashed)
    assert not security.verify_client_secret("demo-secret", "garbage")
    assert not security.verify_client_secret("demo-secret", "pbkdf2_sha256$x$y$z")


def test_new_hashes_use_argon2id_at_owasps_work_factor() -> None:
    hashed = security.hash_client_secret("demo-secret")
    parameters = argon2.extract_parameters(hashed)
    assert hashed.startswith("$argon2id$")
    assert parameters.memory_cost >= 19 * 1024
    assert parameters.time_cost >= 2


def test_a_pbkdf2_hash_from_before_argon2_still_verifies() -> None:
    salt = "0f" * 16
    digest = hashlib.pbkdf2_hmac("sha256", b"old-secret", salt.encode(), 200_000).hex()
    hashed = f"pbkdf2_sha256$200000${salt}${digest}"
    assert security.verify_client_secret("old-secret", hashed)
    assert not security.verify_client_secret("old-secreT", hashed)


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


def test_garbled_token_is_refused_in_words_of_our_own() -> None:
    with pytest.raises(security.InvalidTokenError) as refused:
        security.TokenService(_settings()).verify("not.a.jwt")
    assert str(refused.value) == "the access token is not valid"  # not PyJWT's own message


def test_a_token_for_a_client_that_is_not_configured_is_refused() -> None:
    tokens = security.TokenService(_settings())
    with pytest.raises(security.InvalidTokenError):
        tokens.verify(tokens.issue("ghost"))


def test_tokens_carry_a_key_id_and_verify_after_their_key_is_retired() -> None:
    old = security.TokenService(_settings(jwt_key_id="2025", jwt_secret="a" * 32))
    token = old.issue("demo")
    assert jwt.get_unverified_header(token)["kid"] == "2025"
    rotated = security.TokenService(
        _settings(jwt_key_id="2026", jwt_secret="b" * 32, jwt_retired_keys={"2025": "a" * 32})
    )
    assert rotated.verify(token) == "demo"
    assert jwt.get_unverified_header(rotated.issue("demo"))["kid"] == "2026"
    forgotten = security.TokenService(_settings(jwt_key_id="2026", jwt_secret="b" * 32))
    with pytest.raises(security.InvalidTokenError):
        forgotten.verify(token)


def test_a_token_naming_a_key_it_was_not_signed_with_is_refused() -> None:
    rotated = security.TokenService(
        _settings(jwt_key_id="2026", jwt_secret="b" * 32, jwt_retired_keys={"2025": "a" * 32})
    )
    claims = jwt.decode(rotated.issue("demo"), options={"verify_signature": False})
    forged = jwt.encode(claims, "c" * 32, algorithm="HS256", headers={"kid": "2025"})
    with pytest.raises(security.InvalidTokenError):
        rotated.verify(forged)


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
    signer = _signer(("1", b"k" * 32))
    order_id = signer.new_order_id("alice")
    assert security.is_order_id(order_id)
    assert signer.order_belongs_to(order_id, "alice")
    assert not signer.order_belongs_to(order_id, "bob")
    assert not _signer(("1", b"x" * 32)).order_belongs_to(order_id, "alice")
    assert not signer.order_belongs_to("ord_short", "alice")
    assert not signer.order_belongs_to(
        order_id[:-1] + ("A" if order_id[-1] != "A" else "B"), "alice"
    )


def test_a_non_ascii_order_id_is_simply_not_anyones() -> None:
    signer = _signer(("1", b"k" * 32))
    order_id = signer.new_order_id("alice")
    for garbled in (order_id[:-1] + "é", "ord_" + "é" * 27, "ord_\u0000" * 3):
        assert not security.is_order_id(garbled)
        assert not signer.order_belongs_to(garbled, "alice")


def test_order_ids_stay_owned_after_their_key_is_retired() -> None:
    order_id = _signer(("1", b"k" * 32)).new_order_id("alice")
    rotated = _signer(("2", b"n" * 32), ("1", b"k" * 32))
    assert rotated.order_belongs_to(order_id, "alice")
    assert not rotated.order_belongs_to(order_id, "bob")
    assert rotated.order_belongs_to(rotated.new_order_id("bob"), "bob")


def test_status_signature_rejects_tampering_and_expiry() -> None:
    signer = _signer(("1", b"k" * 32))
    now = time.time()
    expires = int(now) + 60
    sig = signer.sign_status("ord_1", expires)
    assert signer.verify_status("ord_1", expires, sig, kid="1", now=now)
    assert not signer.verify_status("ord_2", expires, sig, kid="1", now=now)
    assert not signer.verify_status("ord_1", expires + 1, sig, kid="1", now=now)
    assert not signer.verify_status("ord_1", expires, sig[:-2] + "AA", kid="1", now=now)
    assert not signer.verify_status("ord_1", expires, "%%%not-base64", kid="1", now=now)
    assert not signer.verify_status("ord_1", expires, "é", kid="1", now=now)
    assert not signer.verify_status("ord_1", expires, sig, kid="1", now=expires + 1)
    assert not signer.verify_status("ord_1", expires, sig, kid="unknown", now=now)


def test_status_urls_verify_by_the_key_they_name_after_a_rotation() -> None:
    now = time.time()
    expires = int(now) + 60
    before = _signer(("1", b"k" * 32))
    old_sig = before.sign_status("ord_1", expires)
    rotated = _signer(("2", b"n" * 32), ("1", b"k" * 32))
    assert rotated.current_kid == "2"
    assert rotated.verify_status("ord_1", expires, old_sig, kid="1", now=now)
    assert not rotated.verify_status("ord_1", expires, old_sig, kid="2", now=now)
    # A URL from before key ids names none: any key of the ring may have signed it.
    assert rotated.verify_status("ord_1", expires, old_sig, kid=None, now=now)
    new_sig = rotated.sign_status("ord_1", expires)
    assert rotated.verify_status("ord_1", expires, new_sig, kid="2", now=now)
    assert not before.verify_status("ord_1", expires, new_sig, kid="2", now=now)


def test_the_signer_is_built_from_the_current_and_retired_secrets() -> None:
    signer = security.Signer.from_settings(
        _settings(
            signing_key_id="b",
            signing_secret="n" * 32,
            signing_retired_secrets={"a": "k" * 32},
        )
    )
    assert signer.current_kid == "b"
    assert dict(signer.keys) == {"a": b"k" * 32, "b": b"n" * 32}


def test_settings_require_a_signing_secret() -> None:
    with pytest.raises(pydantic.ValidationError, match="signing_secret"):
        settings.ApiSettings.model_validate({})


def test_no_client_can_log_in_by_default() -> None:
    assert settings.ApiSettings.model_validate(REQUIRED).api_clients == {}


_STRONG = "x" * 32


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"signing_secret": "short"}, "at least 32 bytes, got 5"),
        ({"jwt_secret": "j" * 31}, "at least 32 bytes, got 31"),
        ({"jwt_secret": None}, "JWT_SECRET is required with JWT_ALGORITHM=HS256"),
        ({"jwt_algorithm": "RS256"}, "JWT_PRIVATE_KEY and JWT_PUBLIC_KEY are required"),
        ({"signing_retired_secrets": {"old": "short"}}, "at least 32 bytes"),
        ({"jwt_retired_keys": {"old": "short"}}, "at least 32 bytes"),
        ({"signing_retired_secrets": {"1": _STRONG}}, "reuses the current SIGNING_KEY_ID"),
        ({"jwt_retired_keys": {"1": _STRONG}}, "reuses the current JWT_KEY_ID"),
        ({"signing_key_id": "a key"}, "signing_key_id"),
        ({"public_base_url": None}, "PUBLIC_BASE_URL is required"),
        ({"public_base_url": "orders.example"}, "absolute http(s) URL"),
        ({"public_base_url": "https://orders.example/?x=1"}, "no query or fragment"),
    ],
)
def test_weak_or_missing_keys_and_base_urls_are_refused(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        settings.ApiSettings.model_validate({**REQUIRED, **overrides})


def test_a_cached_token_still_expires() -> None:
    tokens = security.TokenService(_settings(token_ttl_seconds=60))
    almost_stale = tokens.issue("demo", now=time.time() - 59)
    assert tokens.verify(almost_stale) == "demo"  # verified once: now cached
    time.sleep(1.2)
    with pytest.raises(security.InvalidTokenError, match="expired"):
        tokens.verify(almost_stale)
