"""``manage.py jobkit_worker``: run the tasks of a JobkitBackend until SIGINT or SIGTERM."""

from __future__ import annotations

import importlib
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import autodiscover_modules

from ....._errors import JobkitError
from .....cli._worker import serve
from ..._worker import build_worker
from ._common import backend_named


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Run the Django tasks of a JobkitBackend: sync tasks in threads, async tasks on the event loop. "
        "SIGINT or SIGTERM stops it (running tasks go back to pending); a second one forces it."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="A queue to take tasks from (repeatable; default: every queue in the backend's QUEUES).",
        )
        parser.add_argument(
            "--concurrency", type=int, help="Most tasks at once (default: OPTIONS concurrency)."
        )
        parser.add_argument("--backend", default="default", help="The alias in settings.TASKS.")
        parser.add_argument(
            "--import",
            action="append",
            dest="modules",
            default=[],
            metavar="MODULE",
            help="A module defining tasks, besides every installed app's tasks module (repeatable).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import anyio

        backend = backend_named(options["backend"])
        autodiscover_modules("tasks")
        for module in options["modules"]:
            importlib.import_module(module)
        queues = options["queues"] or sorted(backend.queues)
        if not queues:
            raise CommandError("The backend's QUEUES is empty (any queue): name the queues with --queue.")
        concurrency = options["concurrency"]
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        try:
            manager = build_worker(backend, queues, concurrency=concurrency)
        except JobkitError as exc:
            raise CommandError(exc.message) from None

        def say(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        name = f"the {options['backend']!r} task backend, queues {', '.join(queues)}"
        try:
            forced = anyio.run(serve, manager, name, say)
        finally:
            from django.db import connections

            connections.close_all()
        if forced:
            sys.exit(1)
