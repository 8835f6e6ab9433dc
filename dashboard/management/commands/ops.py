"""``python manage.py ops``: what an operator can click, in a terminal (docs/cli.md)."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from collections.abc import Callable
from typing import IO, Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from dashboard.cli import parser
from dashboard.cli.base import USAGE, OpsError, OpsParser, Output, to_json, via_cli


class Stream:
    """stdout for a progress bar: Django's wrapper would end each write with a newline."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, ending="")

    def flush(self) -> None:
        self.wrapper.flush()

    def isatty(self) -> bool:
        return self.wrapper.isatty()


class Command(BaseCommand):
    help = (
        "What an operator can click, in a terminal: dead letters, bulk actions, queues,"
        " workers, beat entries, the audit and the overview's state."
    )
    # A test (or a script) may hand the confirmation prompt its own input.
    stealth_options = ("stdin",)
    requires_system_checks: list[str] = []

    def add_arguments(self, parser_: ArgumentParser) -> None:
        # One line naming the argument instead of argparse's usage block; set
        # before the subcommands are added, whose parsers are made of its class.
        parser_.__class__ = OpsParser
        parser.build(parser_)

    def run_from_argv(self, argv: list[str]) -> None:
        try:
            super().run_from_argv(argv)
        except OpsError as exc:  # from the argument parser, before Django's own handler
            self._fail(exc)

    def execute(self, *args: Any, **options: Any) -> str | None:
        if not getattr(self, "_called_from_command_line", False):
            return super().execute(*args, **options)
        try:
            return super().execute(*args, **options)
        except OpsError as exc:
            self._fail(exc)
        except CommandError:
            raise
        except KeyboardInterrupt:
            self.stderr.write("ops: interrupted")
            sys.exit(130)
        except Exception as exc:
            if options.get("traceback"):
                raise
            # Never a traceback for an operator: what failed, in one line.
            said = " ".join(str(exc).split())
            self.stderr.write(
                f"ops: failed: {type(exc).__name__}: {said} (--traceback shows where)"
            )
            sys.exit(1)

    def _fail(self, exc: OpsError) -> NoReturn:
        if not exc.data.get("said"):
            self.stderr.write(f"ops: {exc}")
        sys.exit(exc.code)

    def handle(self, *args: Any, **options: Any) -> None:
        options.setdefault("json", False)
        options.setdefault("user", None)
        options["stream"] = Stream(self.stdout)
        stdin: IO[str] = options.get("stdin") or sys.stdin
        options["stdin"] = stdin
        handler: Callable[[dict[str, Any]], Output] | None = options.get("handler")
        if handler is None:
            raise OpsError("choose a command (ops --help)", USAGE)
        with via_cli():
            try:
                out = handler(options)
            except OpsError as exc:
                if options["json"]:
                    document = {"ok": False, "error": str(exc), "exit_code": exc.code, **exc.data}
                    self.stdout.write(to_json(document))
                raise
        if options["json"] or out.text:
            self.stdout.write(to_json(out.data) if options["json"] else out.text)
        for line in out.errors:
            self.stderr.write(f"ops: {line}")
        if out.code:
            raise OpsError("; ".join(out.errors), out.code, said=True)
