"""The API object: its routers, how it authenticates, and how it answers errors."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Swagger
from ninja.errors import ValidationError

from dashboard.api import deadletters, periodic, queues, site, tasks
from dashboard.api.auth import AUTH

api = NinjaAPI(
    title="Celery Ops Dashboard API",
    version="1",
    description=(
        "Everything an operator can click, for programs: the same roles, the same"
        " rules and the same audit as the pages. Authenticate with"
        " `Authorization: Bearer <token>` (`manage.py api_token USERNAME`), or a"
        " signed-in browser session (with CSRF on changes)."
    ),
    auth=AUTH,
    urls_namespace="api",
    # The site's CSP allows no third-party host: Swagger UI comes from
    # django-ninja's static files, and never asks the online validator.
    docs=Swagger(settings={"validatorUrl": None}),
)
api.add_router("", deadletters.router)
api.add_router("", queues.router)
api.add_router("", periodic.router)
api.add_router("", site.router)
# After the queues': their POST /tasks/revoke is routed before a task id.
api.add_router("", tasks.router)


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": "Not found."}, status=404)


@api.exception_handler(PermissionDenied)
def forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden."}, status=403)


@api.exception_handler(ValidationError)
def invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    # Pydantic's entries may carry the offending value and Python objects in
    # "ctx" and "input": answer with where, what and why only.
    detail = [
        {"loc": _loc(error.get("loc", [])), "msg": str(error.get("msg", "")),
         "type": str(error.get("type", "invalid")), **_ctx(error)}
        for error in exc.errors
    ]  # fmt: skip
    return api.create_response(request, {"detail": detail}, status=422)


# The names of the functions' parameters that hold a whole body or query schema:
# a caller knows ["body", "queue"], not our ["body", "payload", "queue"].
_HOLDERS = {"payload", "filters"}


def _loc(loc: object) -> list[object]:
    parts = list(loc) if isinstance(loc, list | tuple) else [str(loc)]
    if len(parts) > 2 and parts[1] in _HOLDERS:
        del parts[1]
    return parts


def _ctx(error: dict[str, object]) -> dict[str, object]:
    ctx = error.get("ctx")
    if error.get("type") == "confirmation" and isinstance(ctx, dict):
        return {"ctx": ctx}
    return {}
