"""jobkit's loggers: structlog bound loggers that write into the standard library's ``logging``.

A library never writes to stdout and never configures logging globally. Every line goes to
one of three standard loggers, and the host's logging settings decide what is shown:

- ``jobkit``: the manager, workers, sweeper and stores;
- ``jobkit.audit``: one line per management action (who did what to which job);
- ``jobkit.job``: what handlers log through ``ctx.log``.

Nothing is printed until the host configures logging (a ``NullHandler`` keeps Python's
last-resort handler quiet). The message is the event followed by its bound keys
(``job_failed job_id='…' kind='…'``); the keys are also on the record as ``record.jobkit``
(a dict) for structured handlers.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import structlog.stdlib

__all__ = ["LOGGER_NAMES", "get_logger"]

#: The standard library loggers jobkit writes to.
LOGGER_NAMES = ("jobkit", "jobkit.audit", "jobkit.job")


def _to_stdlib(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The last processor: the event as a standard ``logging`` call."""
    exc_info = event.pop("exc_info", None)
    name = event.pop("event", "")
    text = " ".join(f"{key}={value!r}" for key, value in event.items())
    message = f"{name} {text}" if text else str(name)
    if exc_info is not None:
        exc = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(exc, BaseException):
            import traceback

            trace = "".join(traceback.format_exception(exc))
            try:
                trace.encode("utf-8")
            except UnicodeEncodeError:
                # Text no handler could write (a lone surrogate in the message): escaped, inline.
                message += "\n" + trace.encode("utf-8", "backslashreplace").decode("utf-8").rstrip()
                exc_info = None
    return (message,), {"exc_info": exc_info, "extra": {"jobkit": dict(event), "jobkit_event": name}}


_quieted = False


def _wrap(name: str) -> structlog.stdlib.BoundLogger:
    global _quieted
    import logging

    import structlog

    if not _quieted:  # before jobkit's first line: nothing shows until the host configures logging
        logging.getLogger("jobkit").addHandler(logging.NullHandler())
        _quieted = True
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[structlog.stdlib.filter_by_level, _to_stdlib],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger


class _Deferred:
    """A logger that imports structlog when it first logs (``import jobkit`` stays quick:
    structlog with its development renderers costs more to import than all of jobkit)."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: structlog.stdlib.BoundLogger | None = None

    def __getattr__(self, attribute: str) -> Any:
        logger = self._logger
        if logger is None:
            logger = self._logger = _wrap(self._name)
        return getattr(logger, attribute)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A bound logger writing to the standard library logger ``name``."""
    return cast("structlog.stdlib.BoundLogger", _Deferred(name))
