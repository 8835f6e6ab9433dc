"""The worker-side hook: importable without Django, and stamps every publish."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import redis

from tests.helpers import ROOT


def test_it_imports_where_django_cannot_be_imported() -> None:
    code = (
        "import sys\n"
        "sys.modules['django'] = None  # any 'import django' now raises ImportError\n"
        "import deadletters.hook\n"
        "from celery import Celery\n"
        "app = Celery('team', broker='memory://', imports=('deadletters.hook',))\n"
        "app.loader.import_default_modules()\n"
        "print('ok')\n"
    )
    # A team's worker has no Django settings module; pytest-django set one here.
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _messages(client: redis.Redis, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def test_it_stamps_sent_at_and_queue_on_publish(broker: redis.Redis) -> None:
    from demo import tasks

    tasks.add.apply_async((1, 2), queue="requeue-target")
    (message,) = _messages(broker, "requeue-target")
    headers = message["headers"]
    assert headers["x_queue"] == "requeue-target"
    assert isinstance(headers["x_sent_at"], float)
    body = json.loads(base64.b64decode(message["properties"] and message["body"]))
    assert body[0] == [1, 2]


def test_it_replaces_an_old_stamp_instead_of_keeping_it(broker: redis.Redis) -> None:
    """A retry republishes the old headers: its queue age must start again."""
    from demo import tasks

    stale: dict[str, Any] = {"x_sent_at": 1.0, "x_queue": "elsewhere"}
    tasks.add.apply_async((1, 2), queue="requeue-target", headers=stale)
    (message,) = _messages(broker, "requeue-target")
    assert message["headers"]["x_sent_at"] > 1.0
    assert message["headers"]["x_queue"] == "requeue-target"
