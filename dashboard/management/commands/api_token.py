from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from dashboard.api.tokens import create_token


class Command(BaseCommand):
    help = (
        "Make an API token for USERNAME and print it, once: only its hash is kept."
        " The token acts with the user's roles."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What it is for, e.g. deploy-pipeline.")
        parser.add_argument(
            "--expires", type=int, default=None, metavar="DAYS", help="Expire after DAYS days."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.")
        days = options["expires"]
        if days is not None and not 1 <= days <= 36500:
            raise CommandError("--expires: a number of days from 1 to 36500.")
        name = options["name"].strip()
        if len(name) > 100 or "\x00" in name:
            raise CommandError("--name: at most 100 characters.")
        try:
            new = create_token(user=user, name=name or "token", expires_days=days)
        except IntegrityError:
            raise CommandError(f"{user} already has a token named {name or 'token'!r}.") from None
        if not name:
            # Named after its prefix, which is unique enough to tell tokens apart.
            new.token.name = f"token {new.token.prefix}"
            new.token.save(update_fields=["name"])
        expiry = f"expires {new.token.expires_at:%Y-%m-%d %H:%M %Z}" if days else "never expires"
        self.stderr.write(
            f"Token {new.token.name!r} for {user} ({expiry}). It is shown once; keep it"
            " secret. Send it as: Authorization: Bearer <token>"
        )
        self.stdout.write(new.secret)
