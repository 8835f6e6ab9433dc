"""Who calls: a bearer token or a browser session; what they may do; whom the audit names.

A token acts as its user, with the user's roles: ``request.user`` is that
user, so the permission checks and the services are the pages' own.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.errors import AuthenticationError, AuthorizationError, HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.throttling import SimpleRateThrottle
from ninja.utils import check_csrf

from dashboard import audit
from dashboard.api import tokens
from dashboard.models import ApiToken


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>``. A header that names a bearer token
    which is unknown, expired or revoked is refused (401) with the reason,
    rather than passed on to the session."""

    def __call__(self, request: HttpRequest) -> ApiToken | None:
        header = request.headers.get("Authorization")
        if header is None:
            return None
        secret = tokens.parse_bearer(header)
        if secret is None:
            raise AuthenticationError(message="Authorization: send 'Bearer <token>'.")
        return self.authenticate(request, secret)

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken:
        try:
            found = tokens.authenticate(token)
        except tokens.TokenRefused as exc:
            raise AuthenticationError(message=str(exc)) from None
        request.user = found.user
        request.api_token = found  # type: ignore[attr-defined]
        return found


class Session(APIKeyCookie):
    """The browser's own login, for the docs page and scripts in the page.

    CSRF is checked on unsafe methods, as for every form of the site; a
    request without a signed-in session is a 401, never a CSRF 403.
    """

    param_name = settings.SESSION_COOKIE_NAME

    def __init__(self) -> None:
        super().__init__(csrf=True)

    def __call__(self, request: HttpRequest) -> Any:
        if not request.user.is_authenticated:
            return None
        # Read (and keep) the body first: the CSRF check may parse a form out of
        # the stream, which would leave nothing for the JSON parser after it.
        request.body  # noqa: B018
        if check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: send the X-CSRFToken header.")
        return self.authenticate(request, request.COOKIES.get(self.param_name))

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return request.user if request.user.is_authenticated else None


AUTH = [BearerToken(), Session()]


def require(request: HttpRequest, *perms: str) -> None:
    """403 unless the caller holds every one of ``perms``, as the pages' decorators say."""
    user = request.user
    if not all(user.has_perm(perm) for perm in perms):
        raise AuthorizationError(message=f"You need the permission {', '.join(perms)}.")


# --- the audit names the token -----------------------------------------------------


def acting(request: HttpRequest) -> audit.acting_via:
    """Audit events written inside name how the change came: the API, and which token."""
    token: ApiToken | None = getattr(request, "api_token", None)
    if token is None:
        return audit.acting_via(via="api")
    # Not "token": run now keeps its form's one-time token under that key.
    return audit.acting_via(via="api", api_token=token.name, api_token_prefix=token.prefix)


# --- rate limits -------------------------------------------------------------------


class PerToken(SimpleRateThrottle):
    """``API_RATE_LIMIT`` requests per token (or signed-in user) on one kind of
    expensive endpoint; read at each request, so a settings change applies."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__(rate=settings.API_RATE_LIMIT)

    def allow_request(self, request: HttpRequest) -> bool:
        self.rate = settings.API_RATE_LIMIT
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request)

    def get_cache_key(self, request: HttpRequest) -> str | None:
        token: ApiToken | None = getattr(request, "api_token", None)
        # The hash, not the id: ids of deleted tokens come back, hashes never do.
        ident = f"token{token.secret_hash[:16]}" if token else f"user{request.user.pk}"
        return f"api_throttle_{self.scope}_{ident}"
