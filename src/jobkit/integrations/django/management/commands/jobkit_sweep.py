"""``manage.py jobkit_sweep``: one sweep of a JobkitBackend's store now."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

import attrs
from django.core.management.base import BaseCommand

from ._common import backend_named


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Sweep a JobkitBackend's store once: expire finished tasks past their retention, retry artifact "
        "purges, recover tasks of lost workers, promote due deferred tasks. Prints the report as JSON."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--backend", default="default", help="The alias in settings.TASKS.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = backend_named(options["backend"]).manager.sweep()
        self.stdout.write(json.dumps(attrs.asdict(report), sort_keys=True))
