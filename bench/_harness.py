"""What the benchmarks share: the parent/child runner, their common options and report pieces.

Django reads its settings once per process, so a benchmark measures in a child
process. The parent sets up what the child needs (a scratch directory, an
embedded Redis, a throwaway database) and runs its own module again with
``--child DATABASE_URL`` and the caller's options, in an environment that
points the settings there. The child migrates, measures and prints its figures
as one JSON line on stdout; its progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

P = ParamSpec("P")
T = TypeVar("T")


# --- options --------------------------------------------------------------------------------


def parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m bench {name}", description=description)
    # Internal: measure in this process and print a JSON line.
    parser.add_argument("--child", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    return parser


def add_profile(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--profile", metavar="DIR", type=_absolute, default=None, help=help)


def _absolute(text: str) -> Path:
    return Path(text).resolve()


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


# --- the parent -----------------------------------------------------------------------------


class Child:
    """The benchmark's own module, run again as the child with the caller's options."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv

    def run(
        self, database_url: str, directory: Path, *, label: str = "", **env: str | None
    ) -> dict[str, Any]:
        """The figures the child prints; ``env`` adds to its environment (None: removes).

        Exits, showing the child's output, when it fails or prints no figures.
        """
        # Whitenoise warns on every request when STATIC_ROOT is missing.
        (directory / "data" / "static").mkdir(parents=True, exist_ok=True)
        child_env = dict(os.environ)
        settings = {
            "SECRET_KEY_FILE": None,
            "SECRET_KEY": secrets.token_urlsafe(32),
            "DEBUG": "false",
            "DATA_DIR": str(directory / "data"),
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            **env,
        }
        for key, value in settings.items():
            if value is None:
                child_env.pop(key, None)
            else:
                child_env[key] = value
        command = [sys.executable, "-m", f"bench.{self.name}", "--child", database_url, *self.argv]
        child = subprocess.run(
            command, cwd=ROOT, env=child_env, stdout=subprocess.PIPE, text=True, check=False
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        if child.returncode != 0 or not lines:
            sys.stdout.write(child.stdout)
            raise SystemExit(
                f"{label or self.name}: the measurement failed (exit status {child.returncode})"
            )
        figures: dict[str, Any] = json.loads(lines[-1])
        return figures


def main(
    name: str,
    argv: list[str],
    parser: argparse.ArgumentParser,
    *,
    parent: Callable[[argparse.Namespace, Child], int],
    child: Callable[[argparse.Namespace], dict[str, Any]],
) -> int:
    """``parent`` sets up and runs the child; the child sets Django up and runs ``child``."""
    args = parser.parse_args(argv)
    if args.child is None:
        if getattr(args, "profile", None):
            # The child runs in ROOT: the last --profile wins, so it gets this one.
            argv = [*argv, "--profile", str(args.profile)]
        return parent(args, Child(name, argv))
    # The parent set DATABASE_URL and the rest in our environment: settings read them at setup.
    if os.environ.get("DATABASE_URL") != args.child:
        raise SystemExit(f"--child is internal: run `python -m bench {name}`")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(json.dumps(child(args)), flush=True)
    return 0


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ops-bench-") as tmp:
        yield Path(tmp)


@contextmanager
def embedded_redis(directory: Path) -> Iterator[str]:
    """A Redis of the benchmark's own in ``directory``; yields its URL."""
    from demo.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(directory / "redis")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'bench.sqlite3'}"


def postgres_server(name: str, why: str) -> str | None:
    """The PostgreSQL server DATABASE_URL names; None, once said, when it names none."""
    server_url = os.environ.get("DATABASE_URL", "")
    if server_url.startswith("postgres"):
        return server_url
    print(
        f"The {name} benchmark needs PostgreSQL ({why}): "
        "set DATABASE_URL=postgres://user@host:5432/name. Not measured."
    )
    return None


class ThrowawayDatabase:
    """A fresh database on the PostgreSQL server of ``server_url``, dropped on exit.

    ``keep``: left for EXPLAIN afterwards, and its name printed.
    """

    def __init__(self, server_url: str, *, keep: bool = False) -> None:
        self.server_url = server_url
        self.keep = keep
        self.name = f"ops_bench_{secrets.token_hex(4)}"

    def _execute(self, statement: str) -> None:
        import psycopg
        from psycopg import sql

        # CREATE/DROP DATABASE cannot run in a transaction: autocommit.
        with psycopg.connect(self.server_url, autocommit=True) as connection:
            connection.execute(sql.SQL(statement).format(sql.Identifier(self.name)))

    def __enter__(self) -> str:
        self._execute("CREATE DATABASE {}")
        parts = urlsplit(self.server_url)
        return urlunsplit(parts._replace(path=f"/{self.name}"))

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            print(f"kept the database {self.name}; drop it when done", flush=True)
            return
        # The child has exited, so nobody is connected; FORCE is for a child
        # that was killed and left a connection behind (PostgreSQL 13+).
        self._execute("DROP DATABASE IF EXISTS {} WITH (FORCE)")


# --- the child ------------------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def server_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sqlite_version()" if connection.vendor == "sqlite" else "SHOW server_version"
        )
        return str(cursor.fetchone()[0]).split()[0]


def on_this_machine() -> bool:
    """Whether the database server is reached over loopback or a Unix socket."""
    from django.db import connection

    host = str(connection.settings_dict.get("HOST") or "")
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


def explain(name: str, sql: str, params: Any = None) -> None:
    """Print EXPLAIN (ANALYZE, BUFFERS) of ``sql``; without ``params``, they are inlined in it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        plan = "\n".join(f"    {row[0]}" for row in cursor.fetchall())
    print(f"  EXPLAIN of {name}'s slowest query:\n    {sql}\n{plan}", file=sys.stderr, flush=True)


def profile(
    path: Path, pattern: str | None, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``call`` under cProfile, its stats written to ``path``.

    With a ``pattern``, also prints where the time went to stderr: the
    functions of matching modules by cumulative time, then all by own time.
    """
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(call, *args, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(path)
    if pattern is not None:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(pattern, 40)
        stats.sort_stats("tottime").print_stats(25)
    return result


# --- the report -----------------------------------------------------------------------------


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], *, right_from: int) -> list[str]:
    """Lines of aligned columns, those from ``right_from`` on right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if index >= right_from else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)]


def verdict(met: bool) -> str:
    return "met " if met else "MISS"


def shorten(sql: str, limit: int = 400) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def machine() -> str:
    model = ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return (
        f"{os.cpu_count()} CPUs ({model or 'unknown model'}), {platform.platform()}, "
        f"Python {platform.python_version()}"
    )
