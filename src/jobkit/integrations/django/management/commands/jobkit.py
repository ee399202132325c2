"""``manage.py jobkit …``: the ``jobkit`` command on a JobkitBackend's store.

``python manage.py jobkit jobs list`` is ``jobkit --store URL --blobs URL jobs list`` with the
URLs of ``settings.TASKS["default"]["OPTIONS"]`` (``--backend`` picks another alias).
"""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from ._common import backend_named


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Run the jobkit command (jobs list|show|cancel|retry|delete|priority|artifacts, status, audit, "
        "sweep) on a JobkitBackend's store, e.g. manage.py jobkit jobs list."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--backend", default="default", help="The alias in settings.TASKS.")
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help="The jobkit command's arguments.")

    def handle(self, *args: Any, **options: Any) -> None:
        from .....cli import main

        backend = backend_named(options["backend"])
        prefix = ["--store", backend.options["store"]]
        if backend.options.get("blobs"):
            prefix += ["--blobs", backend.options["blobs"]]
        main([*prefix, *options["arguments"]])
