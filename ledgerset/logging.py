"""structlog set-up for applications and the ``ledgerset`` tool; the library never calls it.

``configure(format="json", level="info")`` makes structlog render every event (ledgerset's and the
application's) as one JSON object per line on stderr, with ISO UTC timestamps, the level, and the
bound context variables (``structlog.contextvars.bind_contextvars(request_id=...)``).
``format="console"`` renders the same events for people.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

__all__ = ["configure"]

Format = Literal["console", "json"]
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(
    format: Format = "console", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog process-wide: ``format`` ``"console"`` or ``"json"``, minimum ``level``.

    Events go to ``stream`` (default: standard error), so a tool's own output stays on stdout.
    """
    try:
        min_level = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"ledgerset.logging.configure(level={level!r}): choose one of {', '.join(_LEVELS)}"
        ) from None
    if format == "json":
        renderer: structlog.typing.Processor = structlog.processors.JSONRenderer()
    elif format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        raise ValueError(f"ledgerset.logging.configure(format={format!r}): use 'console' or 'json'")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
