"""Run the whole demo: embedded Redis, the web, the monitor, a worker and a producer.

``python3 dev.py demo`` runs this inside the project's virtual environment.
Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from demo.workers import worker_command

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DATA_DIR", ROOT / "var"))


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


# The demo's beat, which sends demo.celery_app's beat_schedule.
BEAT = [sys.executable, "-m", "celery", "-A", "demo.celery_app", "beat", "-l", "WARNING"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between demo rounds")
    options = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from demo.embedded_redis import EmbeddedRedis

    DATA.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", DATA_DIR=str(DATA))
    env.setdefault("DEBUG", "true")
    redis_server = None
    if "CELERY_BROKER_URL" not in os.environ:
        redis_server = EmbeddedRedis(DATA / "redis")
        env["CELERY_BROKER_URL"] = redis_server.start()
        print(f"embedded Redis at {env['CELERY_BROKER_URL']}", flush=True)

    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], env=env, check=True
    )
    username, password = ensure_demo_user(env)

    commands = {
        "web": [
            sys.executable,
            "manage.py",
            "runserver",
            f"127.0.0.1:{options.port}",
            "--noreload",
        ],
        "monitor": [sys.executable, "manage.py", "monitor"],
        "worker": worker_command("demo", loglevel="WARNING", quiet=False),
        "producer": [sys.executable, "-m", "demo.producer", str(options.interval)],
        "beat": [*BEAT, "-s", str(DATA / "celerybeat-schedule")],
    }
    processes = {name: subprocess.Popen(cmd, env=env, cwd=ROOT) for name, cmd in commands.items()}

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    time.sleep(2)
    print(
        "\n"
        f"  Celery Ops Dashboard: http://127.0.0.1:{options.port}/\n"
        f"  log in as {username} / {password}\n"
        "  a demo worker is failing tasks in every way the hook captures; Ctrl-C stops it all\n",
        flush=True,
    )
    try:
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping the demo", flush=True)
                    stopping = True
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
