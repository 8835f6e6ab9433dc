"""Settings come from the environment, strictly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from dashboard import env
from tests.helpers import ROOT


def _load_settings(**overrides: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    environment.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import dashboard.settings as s; print(s.DEBUG)"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secret_key_is_required_when_debug_is_off() -> None:
    result = _load_settings()
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG is off" in result.stderr


def test_secret_key_can_come_from_a_file(tmp_path: os.PathLike[str]) -> None:
    secret = os.path.join(tmp_path, "secret")
    with open(secret, "w") as f:
        f.write("from-a-docker-secret\n")
    result = _load_settings(SECRET_KEY_FILE=secret)
    assert result.returncode == 0, result.stderr


def test_debug_on_boots_without_a_secret_key() -> None:
    result = _load_settings(DEBUG="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_a_boolean_that_is_not_a_boolean_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_FLAG", "ture")
    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG='ture' is not a boolean"):
        env.env_bool("SOME_FLAG", False)


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("Yes", True), ("off", False), ("FALSE", False)]
)
def test_booleans_accept_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("SOME_FLAG", raw)
    assert env.env_bool("SOME_FLAG", not expected) is expected


def test_an_integer_below_its_minimum_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_NUMBER", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env.env_int("SOME_NUMBER", 5, minimum=1)


def test_an_empty_secret_file_is_no_secret(tmp_path: os.PathLike[str]) -> None:
    secret = os.path.join(tmp_path, "secret")
    with open(secret, "w") as f:
        f.write("\n")
    result = _load_settings(SECRET_KEY_FILE=secret)
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) is required" in result.stderr


def test_the_readme_documents_every_setting() -> None:
    import re

    read = set(re.findall(r'env_\w+\(\s*"(\w+)"', (ROOT / "dashboard/settings.py").read_text()))
    assert {"DEBUG", "LOG_FORMAT", "MONITOR_LEADER_LEASE_SECONDS"} <= read
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    documented = set(re.findall(r"^\| `(\w+)`", table, re.M)) | set(
        re.findall(r"^\| `\w+` / `(\w+)`", table, re.M)
    )
    documented |= {name.removesuffix("_FILE") for name in documented}
    assert read - documented == set()
