"""Client secrets, access tokens, order ids and signed status URLs.

Order ids carry a MAC of the owning client, so the API can tell a genuine not-yet-recorded
order (answer QUEUED) from someone else's or an invented one (answer 404) without a second
durable write on the accept path.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import jwt

from order_api import settings as settings_module

_PBKDF2_ITERATIONS = 200_000
_ORDER_ID_PREFIX = "ord_"
_ORDER_RANDOM_BYTES = 12
_ORDER_TAG_BYTES = 8


class InvalidTokenError(Exception):
    """The bearer token is missing, garbled, expired or for another audience."""


def hash_client_secret(secret: str, *, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt.encode(), _PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${_PBKDF2_ITERATIONS}${salt}${digest.hex()}"


def verify_client_secret(secret: str, hashed: str) -> bool:
    try:
        scheme, iterations, salt, expected = hashed.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt.encode(), int(iterations))
    return hmac.compare_digest(digest.hex(), expected)


_VERIFIED_CACHE_SIZE = 10_000


@dataclass
class TokenService:
    settings: settings_module.ApiSettings
    _verified: dict[str, tuple[str, float]] = field(default_factory=dict)
    """token -> (client id, expiry): a client reuses one token for many requests, and
    verifying its signature again each time is the largest cost of an accepted order."""

    def _signing_key(self) -> str:
        s = self.settings
        key = s.jwt_secret if s.jwt_algorithm == "HS256" else s.jwt_private_key
        if key is None:
            raise RuntimeError(f"no signing key configured for {s.jwt_algorithm}")
        return key.get_secret_value()

    def _verifying_key(self) -> str:
        s = self.settings
        if s.jwt_algorithm == "RS256":
            if s.jwt_public_key is None:
                raise RuntimeError("RS256 needs JWT_PUBLIC_KEY")
            return s.jwt_public_key
        return self._signing_key()

    def issue(self, client_id: str, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": client_id,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": issued,
            "exp": issued + self.settings.token_ttl_seconds,
        }
        return jwt.encode(claims, self._signing_key(), algorithm=self.settings.jwt_algorithm)

    def verify(self, token: str, *, now: float | None = None) -> str:
        """Return the client id the token was issued to."""
        cached = self._verified.get(token)
        if cached is not None:
            client_id, expires = cached
            if (now if now is not None else time.time()) < expires:
                return client_id
            del self._verified[token]
        try:
            claims = jwt.decode(
                token,
                self._verifying_key(),
                algorithms=[self.settings.jwt_algorithm],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"the access token is not valid: {exc}") from exc
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()  # crude but bounded; a miss only costs one verification
        self._verified[token] = (str(claims["sub"]), float(claims["exp"]))
        return str(claims["sub"])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Signer:
    """HMAC-SHA256 over order ids (ownership) and status URLs (access without a token)."""

    secret: bytes

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self.secret, "\x1f".join(parts).encode(), hashlib.sha256).digest()

    def new_order_id(self, client_id: str) -> str:
        random_part = _b64(secrets.token_bytes(_ORDER_RANDOM_BYTES))
        tag = _b64(self._mac("order", random_part, client_id)[:_ORDER_TAG_BYTES])
        return f"{_ORDER_ID_PREFIX}{random_part}{tag}"

    def order_belongs_to(self, order_id: str, client_id: str) -> bool:
        body = order_id.removeprefix(_ORDER_ID_PREFIX)
        random_len = len(_b64(bytes(_ORDER_RANDOM_BYTES)))
        if not order_id.startswith(_ORDER_ID_PREFIX) or len(body) <= random_len:
            return False
        random_part, tag = body[:random_len], body[random_len:]
        expected = _b64(self._mac("order", random_part, client_id)[:_ORDER_TAG_BYTES])
        return hmac.compare_digest(tag, expected)

    def sign_status(self, order_id: str, expires: int) -> str:
        return _b64(self._mac("status", order_id, str(expires)))

    def verify_status(self, order_id: str, expires: int, signature: str, *, now: float) -> bool:
        if expires < now:
            return False
        try:
            given = _unb64(signature)
        except (ValueError, TypeError):
            return False
        return hmac.compare_digest(given, self._mac("status", order_id, str(expires)))


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m order_api.security hash`: print a client secret's hash for API_CLIENTS."""
    parser = argparse.ArgumentParser(
        prog="python -m order_api.security",
        description="Hash a client secret for the API_CLIENTS setting.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "hash", help="hash the secret read from stdin (prompted for, unechoed, on a terminal)"
    )
    parser.parse_args(argv)
    if sys.stdin.isatty():
        secret = getpass.getpass("client secret: ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        parser.error("the secret is empty")
    print(hash_client_secret(secret))


if __name__ == "__main__":
    main()
