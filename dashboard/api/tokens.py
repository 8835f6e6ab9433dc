"""API tokens: making one, reading the ``Authorization`` header, finding its row."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import User
from django.db.models import Q
from django.utils import timezone

from dashboard.models import ApiToken

# Recognisable in a leaked config or a secret scanner's rules.
TOKEN_PREFIX = "cod_"  # noqa: S105 - a marker, not a secret
PREFIX_SHOWN = 12
# A header longer than this is no token of ours: refused before hashing.
MAX_TOKEN_LENGTH = 200
# Writing last_used_at on every call would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str


def create_token(*, user: User, name: str, expires_days: int | None = None) -> NewToken:
    """Store a new token for ``user``; the secret is returned here and never again."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=secret[:PREFIX_SHOWN],
        secret_hash=digest(secret),
        expires_at=expires_at,
    )
    return NewToken(token, secret)


def parse_bearer(header: str | None) -> str | None:
    """The token in ``Authorization: Bearer <token>``, or None when the header
    holds no bearer token at all (another scheme, or nothing after it).

    The scheme is case-insensitive (RFC 9110); the token is one run of
    token68 characters, with nothing after it.
    """
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH or not all(c in TOKEN68 for c in token):
        return None
    return token


TOKEN68 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")


class TokenRefused(Exception):
    """Why a bearer token does not authenticate, in words safe to answer with."""


def authenticate(secret: str) -> ApiToken:
    """The usable token with this secret, its last use noted; else TokenRefused."""
    token = ApiToken.objects.select_related("user").filter(secret_hash=digest(secret)).first()
    now = timezone.now()
    if token is None:
        raise TokenRefused("Unknown token.")
    if token.revoked_at is not None:
        raise TokenRefused("This token was revoked.")
    if token.expires_at is not None and token.expires_at <= now:
        raise TokenRefused("This token has expired.")
    if not token.user.is_active:
        raise TokenRefused("This token's user is inactive.")
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now)
    return token


def revoke(tokens: Iterable[ApiToken]) -> int:
    """Revoke the tokens not revoked yet; returns how many."""
    ids = [t.pk for t in tokens]
    return ApiToken.objects.filter(pk__in=ids, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
