"""``/api/v1/``: the API's routes, answered in JSON whoever calls.

The site's LoginRequiredMiddleware would send a program without a session to
the login page; the API authenticates on its own (a token or the session)
and answers 401 in JSON instead. Only the browsable docs need a login.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, re_path

from dashboard.api.main import api

_patterns, _app, _namespace = api.urls
# The namespace the API reverses its own routes in (the docs find the schema so).
app_name = _namespace


@login_not_required
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return JsonResponse({"detail": "No such API endpoint."}, status=404)


def _open(patterns: list[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    for pattern in patterns:
        if isinstance(pattern, URLPattern) and pattern.name != "openapi-view":
            pattern.callback.login_required = False  # type: ignore[attr-defined]
    return patterns


urlpatterns = [*_open(_patterns), re_path(r"^(?P<rest>.*)$", not_found)]
