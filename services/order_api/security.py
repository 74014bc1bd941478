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
import re
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import argon2
import jwt

from order_api import settings as settings_module

# OWASP's Password Storage Cheat Sheet, first argon2id configuration: 19 MiB, 2 passes, 1 lane
# (~40 ms of one core). Verification reads the parameters from each hash, so raising them later
# leaves existing hashes valid.
_ARGON2 = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_LEGACY_PBKDF2 = "pbkdf2_sha256"
_ORDER_ID_PREFIX = "ord_"
_ORDER_RANDOM_BYTES = 12
_ORDER_TAG_BYTES = 8
_ORDER_ID = re.compile(r"ord_[A-Za-z0-9_-]{27}")
"""The prefix, then the random part and the tag as unpadded base64url (16 + 11 characters)."""


class InvalidTokenError(Exception):
    """The bearer token is missing, garbled, expired, for another audience or another client.

    Its message is fixed text meant for the client: never the JWT library's own words."""


def hash_client_secret(secret: str) -> str:
    """An argon2id hash of a client secret, for API_CLIENTS."""
    return _ARGON2.hash(secret)


def verify_client_secret(secret: str, hashed: str) -> bool:
    """Whether `secret` matches `hashed`: argon2 (current) or `pbkdf2_sha256$...` (older)."""
    if hashed.startswith(f"{_LEGACY_PBKDF2}$"):
        return _verify_pbkdf2(secret, hashed)
    try:
        return _ARGON2.verify(hashed, secret)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def _verify_pbkdf2(secret: str, hashed: str) -> bool:
    try:
        _, iterations, salt, expected = hashed.split("$")
        rounds = int(iterations)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt.encode(), rounds)
    return hmac.compare_digest(digest.hex().encode(), expected.encode())


_VERIFIED_CACHE_SIZE = 10_000


@dataclass
class TokenService:
    """Issues JWTs with the current key (its id in the `kid` header) and verifies them with
    whichever configured key their `kid` names, so a key can be replaced while tokens it
    signed are still out."""

    settings: settings_module.ApiSettings
    _verified: dict[str, tuple[str, float]] = field(default_factory=dict)
    """token -> (client id, expiry): a client reuses one token for many requests, and
    verifying its signature again each time is the largest cost of an accepted order."""
    _verifying_keys: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        current = s.jwt_public_key if s.jwt_algorithm == "RS256" else self._signing_key()
        assert current is not None  # the settings refuse RS256 without a public key
        retired = {kid: key.get_secret_value() for kid, key in s.jwt_retired_keys.items()}
        self._verifying_keys = {**retired, s.jwt_key_id: current}

    def _signing_key(self) -> str:
        s = self.settings
        key = s.jwt_secret if s.jwt_algorithm == "HS256" else s.jwt_private_key
        assert key is not None  # the settings refuse an algorithm without its key
        return key.get_secret_value()

    def issue(self, client_id: str, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": client_id,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": issued,
            "exp": issued + self.settings.token_ttl_seconds,
        }
        return jwt.encode(
            claims,
            self._signing_key(),
            algorithm=self.settings.jwt_algorithm,
            headers={"kid": self.settings.jwt_key_id},
        )

    def verify(self, token: str, *, now: float | None = None) -> str:
        """Return the client id the token was issued to, a client configured now."""
        cached = self._verified.get(token)
        if cached is not None:
            client_id, expires = cached
            if (now if now is not None else time.time()) < expires:
                return client_id
            del self._verified[token]
        try:
            # Tokens from before key ids were issued with the key that is still current.
            kid = jwt.get_unverified_header(token).get("kid", self.settings.jwt_key_id)
            key = self._verifying_keys.get(str(kid))
            if key is None:
                raise InvalidTokenError("the access token is not valid")
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.settings.jwt_algorithm],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("the access token is not valid") from exc
        client_id = str(claims["sub"])
        if client_id not in self.settings.api_clients:
            # Signed by us, but for a client that is no longer (or never was) configured.
            raise InvalidTokenError("the access token is not valid")
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()  # crude but bounded; a miss only costs one verification
        self._verified[token] = (client_id, float(claims["exp"]))
        return client_id


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_order_id(text: str) -> bool:
    """Whether `text` has the shape of an order id this API hands out (ASCII, fixed length)."""
    return _ORDER_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Signer:
    """HMAC-SHA256 over order ids (ownership) and status URLs (access without a token).

    Signs with the current key; verifies with any key of the ring. A status URL names its key
    (`kid`); an order id does not (its format predates key ids), so its tag is checked against
    each key, a handful of HMACs at most.
    """

    keys: Mapping[str, bytes]
    """kid -> key, the current one included."""
    current_kid: str

    @classmethod
    def from_settings(cls, settings: settings_module.ApiSettings) -> Signer:
        retired = settings.signing_retired_secrets.items()
        keys = {kid: secret.get_secret_value().encode() for kid, secret in retired}
        keys[settings.signing_key_id] = settings.signing_secret.get_secret_value().encode()
        return cls(keys=keys, current_kid=settings.signing_key_id)

    @staticmethod
    def _mac(key: bytes, *parts: str) -> bytes:
        return hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).digest()

    def _order_tag(self, key: bytes, random_part: str, client_id: str) -> str:
        return _b64(self._mac(key, "order", random_part, client_id)[:_ORDER_TAG_BYTES])

    def new_order_id(self, client_id: str) -> str:
        random_part = _b64(secrets.token_bytes(_ORDER_RANDOM_BYTES))
        tag = self._order_tag(self.keys[self.current_kid], random_part, client_id)
        return f"{_ORDER_ID_PREFIX}{random_part}{tag}"

    def order_belongs_to(self, order_id: str, client_id: str) -> bool:
        if not is_order_id(order_id):
            return False
        body = order_id.removeprefix(_ORDER_ID_PREFIX)
        random_len = len(_b64(bytes(_ORDER_RANDOM_BYTES)))
        random_part, tag = body[:random_len], body[random_len:]
        return any(
            hmac.compare_digest(tag, self._order_tag(key, random_part, client_id))
            for key in self.keys.values()
        )

    def sign_status(self, order_id: str, expires: int) -> str:
        """The signature of a status URL, by the key `current_kid` names."""
        return _b64(self._mac(self.keys[self.current_kid], "status", order_id, str(expires)))

    def verify_status(
        self, order_id: str, expires: int, signature: str, *, kid: str | None, now: float
    ) -> bool:
        """`kid` None: a URL from before key ids, signed by a key that may since be retired."""
        if expires < now:
            return False
        try:
            given = _unb64(signature)
        except (ValueError, TypeError):
            return False
        if kid is None:
            candidates = list(self.keys.values())
        elif kid in self.keys:
            candidates = [self.keys[kid]]
        else:
            return False
        return any(
            hmac.compare_digest(given, self._mac(key, "status", order_id, str(expires)))
            for key in candidates
        )


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
