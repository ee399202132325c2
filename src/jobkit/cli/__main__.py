"""``python -m jobkit.cli``: the same as the ``jobkit`` command."""

from __future__ import annotations

from . import main

if __name__ == "__main__":
    main()
