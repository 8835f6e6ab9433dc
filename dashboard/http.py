"""Answering HTTP: the request type behind django-htmx's middleware, the one way
an action answers (the fragment to htmx, a redirect otherwise), the one way a
table reads its page from the request, and the URL converters that keep
values the database cannot hold out of the views."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.paginator import EmptyPage, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBase, QueryDict
from django.shortcuts import redirect, render
from django.urls import register_converter
from django_htmx.middleware import HtmxDetails
from django_tables2 import RequestConfig, Table

# Announced by every action that changed something; polling parts of a page
# refresh at once on it instead of at their next turn.
CHANGED = "ops-changed"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def page_or_fragment(
    request: HtmxHttpRequest, template: str, fragment: str, context: dict[str, Any]
) -> HttpResponse:
    """The whole page, or only its refreshing fragment for htmx."""
    return render(request, f"{template}#{fragment}" if request.htmx else template, context)


def action_response(
    request: HtmxHttpRequest,
    template: str,
    fragment: str,
    context: dict[str, Any],
    *,
    back: Any,
    status: int = 200,
) -> HttpResponse:
    """The answer to an action, whose ``notice`` or ``error`` is in ``context``.

    htmx gets the fragment (announced with ``HX-Trigger`` unless refused);
    without htmx a refusal renders the whole page with its error, and anything
    else is a message and a redirect to ``back`` (a URL, a URL name or a model).
    """
    if request.htmx:
        response = render(request, f"{template}#{fragment}", context, status=status)
        if status < 400:
            response["HX-Trigger"] = CHANGED
        return response
    if status >= 400:
        return render(request, template, context, status=status)
    if context.get("error"):
        messages.error(request, context["error"])
    else:
        messages.success(request, context.get("notice", ""))
    return redirect(back)


# --- pagination ---------------------------------------------------------------

# Far past any real table, and small enough that the offset it asks the
# database for fits a 64-bit integer whatever the page size.
MAX_PAGE = 1_000_000


def page_number(request: HttpRequest, table: Table) -> int:
    """The page the request asks for: 1 unless a whole number, at most MAX_PAGE."""
    raw = request.GET.get(table.prefixed_page_field, "")
    if not (raw.isascii() and raw.isdigit()):
        return 1  # "abc", "-1", "1e5": the first page, as for no page at all
    digits = raw.lstrip("0") or "0"
    # int() of thousands of digits is refused (and slow): anything this long is past the end.
    number = MAX_PAGE if len(digits) > len(str(MAX_PAGE)) else int(digits)
    return max(1, min(number, MAX_PAGE))


def paginate(
    request: HttpRequest,
    table: Table,
    *,
    per_page: int,
    paginator_class: type[Paginator] = Paginator,
) -> Table:
    """Sort ``table`` as the request asks and show the page it asks for.

    The page size is the view's, never the request's: ``?per_page=`` would let
    anyone ask for the whole table. A page that is not a positive whole number
    shows the first page, one past the end the last. A lazy paginator cannot
    know the end: it shows the first, and its view sends the reader on.
    """
    RequestConfig(request, paginate=False).configure(table)  # the sort only
    number = page_number(request, table)
    try:
        table.paginate(paginator_class=paginator_class, per_page=per_page, page=number)
    except EmptyPage:
        table.page = table.paginator.page(table.paginator.num_pages or 1)
    return table


# --- query strings ------------------------------------------------------------


def without_empty(query: QueryDict) -> QueryDict:
    """``query`` with only the parameters that have a value, in their order."""
    kept = QueryDict(mutable=True)
    for name, values in query.lists():
        if values := [value for value in values if value != ""]:
            kept.setlist(name, values)
    return kept


def drops_empty_params(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A GET whose query carries empty parameters (a filter form submits every
    field) is sent to the same URL without them: the address bar, the history and
    every link built from the query then say only what is set. No JavaScript
    needed; htmx follows the redirect and pushes the clean URL."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "GET" and any("" in values for _, values in request.GET.lists()):
            query = without_empty(request.GET).urlencode()
            return redirect(f"{request.path}?{query}" if query else request.path)
        return view(request, *args, **kwargs)

    return wrapped


# --- URL converters -----------------------------------------------------------


# The largest id a row has: the id columns are 64-bit (BigAutoField).
MAX_ID = 2**63 - 1


class IdConverter:
    """A row id: digits that fit the 64-bit id column, else no match (404)."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_ID:
            raise ValueError(f"{value} is not an id the database can hold")
        return number

    def to_url(self, value: int) -> str:
        return str(value)


class NameConverter:
    """A queue or worker name: any text, slashes included, as long as the name
    columns (255); no NUL, which PostgreSQL refuses in text. Else no match (404)."""

    regex = "[^\\x00]{1,255}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


# Registered when this module is first imported: every urls module imports its
# views, which import this, before it lists its routes.
register_converter(IdConverter, "id")
register_converter(NameConverter, "name")
