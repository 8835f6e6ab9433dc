"""The API's browsable docs: Swagger UI from our own static files, under the
site's Content-Security-Policy, in a real headless Chromium."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.helpers import make_user
from tests.test_browser import browser, log_in, page  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def test_the_schema_is_openapi_3_and_lists_every_area(client: Client) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    for path in ("/api/v1/deadletters", "/api/v1/deadletters/{pk}/requeue", "/api/v1/bulk",
                 "/api/v1/queues/{name}/purge", "/api/v1/workers/{hostname}/pool",
                 "/api/v1/periodic/{name}/run", "/api/v1/audit", "/api/v1/overview",
                 "/api/v1/tasks", "/api/v1/tasks/{task_id}"):  # fmt: skip
        assert path in paths
    assert {"BearerToken", "Session"} <= set(schema["components"]["securitySchemes"])


def test_the_docs_need_a_login_like_every_page(client: Client) -> None:
    response = client.get("/api/v1/docs")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.browser
def test_the_docs_render_every_operation_under_the_csp(page: Any, live_server: Any) -> None:  # noqa: F811
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    make_user("olivia", group="Operator")
    log_in(page, live_server.url, "olivia")
    response = page.goto(f"{live_server.url}/api/v1/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector(".opblock", timeout=20_000)
    page.wait_for_load_state("networkidle")
    assert page.locator(".opblock").count() >= 20
    assert page.get_by_text("/api/v1/deadletters/{pk}/requeue").count() >= 1
    assert page.evaluate("window.__violations") == []
    assert [text for text in console if "Content Security Policy" in text] == []
    # Everything came from the site itself: no CDN, no online validator.
    assert all(url.startswith(live_server.url) or url.startswith("data:") for url in requests)
