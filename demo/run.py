"""Run the whole demo: embedded Redis, the web, the monitor, a worker and a producer.

``python3 dev.py demo`` runs this inside the project's virtual environment.
Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from demo.workers import worker_command

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DATA_DIR", ROOT / "var"))

# Started as root (a container), a worker warns at length that it should not
# run as root. The demo's app accepts JSON only, so what Celery guards against,
# a pickled message run with root's rights, cannot happen here; the warning
# would be the first thing a newcomer reads, with nothing for them to do.
# (Dropping the worker to "nobody" with --uid fails where the interpreter lives
# under /root.) Python's -W syntax, matching the start of the message.
ROOT_WARNING_FILTER = "ignore:You're running the worker with superuser privileges"


def ensure_demo_user(env: dict[str, str]) -> tuple[str, str]:
    """An ``admin`` superuser whose password is made once and kept in var/."""
    credentials = DATA / "demo-login.txt"
    if credentials.exists():
        username, password = credentials.read_text().split(":", 1)
    else:
        username, password = "admin", secrets.token_urlsafe(12)
    script = (
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        f"user, _ = User.objects.get_or_create(username={username!r})\n"
        "user.is_staff = user.is_superuser = True\n"
        f"user.set_password({password!r})\n"
        "user.save()\n"
        # The demo app turns reject_on_worker_lost off on purpose (see its
        # config): said once, as an operator would, with the reason.
        "from dashboard.models import CheckSilence\n"
        "CheckSilence.objects.get_or_create(check_name='reject_on_worker_lost',"
        " scope='queue', target='default', defaults={'username': user.username,"
        " 'reason': 'demo: a task that kills its pool child would be redelivered forever;"
        " the hook keeps it as a dead letter instead'})\n"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", script], env=env, check=True
    )
    credentials.write_text(f"{username}:{password}")
    credentials.chmod(0o600)
    return username, password.strip()


def metrics_token(data: Path) -> str:
    """The bearer token of the demo's /metrics: made once, kept in ``data`` like the login."""
    kept = data / "demo-metrics-token.txt"
    if kept.exists() and (token := kept.read_text().strip()):
        return token
    token = secrets.token_urlsafe(24)
    kept.write_text(token)
    kept.chmod(0o600)
    return token


def way_in(port: int, username: str, password: str, token: str) -> str:
    """What the demo says at the start, and again every minute until someone logs in."""
    base = f"http://127.0.0.1:{port}"
    return (
        "\n"
        f"  Celery Ops Dashboard: {base}/\n"
        f"  log in as {username} / {password}   (kept in {DATA / 'demo-login.txt'})\n"
        f'  metrics: curl -H "Authorization: Bearer {token}" {base}/metrics\n'
        "  a demo worker is failing tasks in every way the hook captures; Ctrl-C stops it all\n"
    )


def logged_in_since(username: str, moment: datetime) -> bool:
    """Whether ``username`` has logged in after ``moment``: Django sets ``last_login``
    at each login. A database that is busy for a moment answers "not yet"."""
    from django.contrib.auth import get_user_model
    from django.db import DatabaseError

    try:
        return get_user_model().objects.filter(username=username, last_login__gt=moment).exists()
    except DatabaseError:
        return False


def web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def worker_answers(name: str) -> bool:
    from kombu.exceptions import OperationalError

    from demo.celery_app import app

    try:
        return bool(app.control.ping(destination=[name], timeout=0.5))
    except (OSError, OperationalError):
        return False


# The demo's beat, which sends demo.celery_app's beat_schedule. Quiet: its banner
# (its scheduler and config file) says nothing a newcomer needs; the periodic page shows it.
BEAT = [sys.executable, "-m", "celery", "-A", "demo.celery_app", "--quiet", "beat", "-l", "WARNING"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between demo rounds")
    parser.add_argument(
        "--remind",
        type=float,
        default=60.0,
        help="seconds between reminders of the URL and login, until someone logs in",
    )
    options = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from demo.embedded_redis import EmbeddedRedis

    DATA.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", DATA_DIR=str(DATA))
    env.setdefault("DEBUG", "true")
    env.setdefault("METRICS_TOKEN", metrics_token(DATA))
    redis_server = None
    if "CELERY_BROKER_URL" not in os.environ:
        redis_server = EmbeddedRedis(DATA / "redis")
        env["CELERY_BROKER_URL"] = redis_server.start()
        print(f"embedded Redis at {env['CELERY_BROKER_URL']}", flush=True)

    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], env=env, check=True
    )
    username, password = ensure_demo_user(env)
    # This process reads what its children read: the database, for the login
    # check, and the broker, to hear the worker answer.
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.db import connection

    worker_name = f"demo@{socket.gethostname()}"
    commands = {
        "web": [
            sys.executable,
            "manage.py",
            "runserver",
            f"127.0.0.1:{options.port}",
            "--noreload",
        ],
        "monitor": [sys.executable, "manage.py", "monitor"],
        "worker": worker_command("demo", loglevel="INFO", quiet=False, console=True),
        "producer": [sys.executable, "-m", "demo.producer", str(options.interval)],
        "beat": [*BEAT, "-s", str(DATA / "celerybeat-schedule")],
    }
    warning_filters = ",".join(filter(None, (env.get("PYTHONWARNINGS"), ROOT_WARNING_FILTER)))
    worker_env = dict(env, PYTHONWARNINGS=warning_filters)
    processes = {
        name: subprocess.Popen(cmd, env=worker_env if name == "worker" else env, cwd=ROOT)
        for name, cmd in commands.items()
    }
    started = datetime.now(UTC)

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def running() -> bool:
        nonlocal stopping
        for name, process in processes.items():
            if not stopping and process.poll() is not None:
                print(f"{name} exited with {process.returncode}; stopping the demo", flush=True)
                stopping = True
        return not stopping

    try:
        # Said once the web answers and the worker has printed its banner, so
        # that the way in is the last thing on the screen, not above the banner.
        deadline = time.monotonic() + 60
        while running() and time.monotonic() < deadline:
            if web_answers(options.port) and worker_answers(worker_name):
                break
            time.sleep(0.5)
        said = way_in(options.port, username, password, env["METRICS_TOKEN"])
        print(said, flush=True)
        # Until someone has logged in, the way in is what a newcomer needs, and
        # the worker's lines push it off the screen: it is said again every
        # minute. After a login it would only be noise: one line says so.
        awaiting_login, remind_at = True, time.monotonic() + options.remind
        while running():
            if awaiting_login and time.monotonic() >= remind_at:
                remind_at += options.remind
                if logged_in_since(username, started):
                    awaiting_login = False
                    print(f"\n  {username} has logged in.\n", flush=True)
                else:
                    print(said, flush=True)
                connection.close()  # nothing held open on SQLite for the minute between
            time.sleep(0.5)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if redis_server is not None:
            redis_server.stop()


if __name__ == "__main__":
    main()
