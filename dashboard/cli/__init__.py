"""``python manage.py ops``: the console's actions in a terminal, for people and scripts.

Every command reads through the selectors and acts through the services that
the pages call, so the rules (roles, confirmation, idempotency, redaction) are
the pages' own; ``dashboard.management.commands.ops`` only parses and renders.
"""
