"""How the library emits its structlog events, quietly by default and cheaply when filtered out.

While the application has not configured structlog, events go to the stdlib logger
``"ledgerset"``, which shows nothing until the application configures logging (e.g.
``logging.basicConfig()``, which shows WARNING and above, by Python's convention); once it has,
they flow through the application's structlog pipeline. The library never
calls ``structlog.configure``. Callers ask ``enabled(level)`` before building an event's fields,
so a filtered-out event costs a flag read and a level check.

Every event carries the caller's bound structlog context variables (``bind_contextvars``).

structlog is looked up in ``sys.modules``, never imported here: importing it pulls in its
console renderer's dependencies (rich, when installed), and an application that never imported
structlog can have neither configured it nor bound context variables.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["DEBUG", "ERROR", "INFO", "WARNING", "bound_context", "emit", "enabled"]

DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR

_METHODS = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}
_stdlib = logging.getLogger("ledgerset")
# The stdlib's advice for libraries: without it, Python's last-resort handler would print our
# warnings to stderr in an application that configured no logging at all.
_stdlib.addHandler(logging.NullHandler())


class _Bound:
    """A logger bound to one structlog configuration, and which levels it lets through."""

    __slots__ = ("key", "levels", "logger")

    def __init__(self, key: tuple[object, ...], logger: Any) -> None:
        self.key = key
        self.logger = logger
        check = getattr(logger, "is_enabled_for", None) or getattr(logger, "isEnabledFor", None)
        self.levels = {level: True if check is None else bool(check(level)) for level in _METHODS}


_bound: _Bound | None = None
_structlog_config: Any = None  # structlog's configuration object, once found


def enabled(level: int) -> bool:
    """Whether an event at ``level`` would be emitted anywhere.

    This runs before every command, so it is kept to a few attribute reads.
    """
    structlog = sys.modules.get("structlog")
    if structlog is None or not structlog.is_configured():
        return _stdlib.isEnabledFor(level)
    bound, config = _bound, _structlog_config
    # The configuration compared in place, by identity: the usual answer with no call and no
    # tuple built (this is the whole cost of an event filtered out); any change rebinds.
    if (
        bound is None
        or config is None
        or bound.key[0] is not config.default_wrapper_class
        or bound.key[1] is not config.default_processors
        or bound.key[2] is not config.logger_factory
        or bound.key[3] is not config.default_context_class
    ):
        bound = _bound_logger(structlog)
    return bound.levels[level]


def emit(level: int, event: str, **fields: Any) -> None:
    """Emit ``event`` with ``fields`` (and the bound context variables) at ``level``."""
    context = bound_context()
    if context:
        fields = {**context, **fields}
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured():
        getattr(_bound_logger(structlog).logger, _METHODS[level])(event, **fields)
    else:
        rendered = " ".join(f"{name}={value!r}" for name, value in fields.items())
        _stdlib.log(
            level, "%s %s", event, rendered, extra={"ledgerset": {"event": event, **fields}}
        )


def bound_context() -> dict[str, Any]:
    """The caller's structlog context variables (``bind_contextvars``), if structlog is in use."""
    contextvars = sys.modules.get("structlog.contextvars")
    return contextvars.get_contextvars() if contextvars is not None else {}


def _bound_logger(structlog: Any) -> _Bound:
    """The logger for the current structlog configuration, bound again when that changes."""
    bound = _bound
    if bound is None or bound.key != _configuration(structlog):
        bound = _rebind(structlog)
    return bound


def _rebind(structlog: Any) -> _Bound:
    global _bound
    _bound = _Bound(_configuration(structlog), structlog.get_logger("ledgerset").bind())
    return _bound


def _configuration(structlog: Any) -> tuple[object, ...]:
    """What identifies structlog's configuration: its wrapper, processors, factory, context.

    This runs before every command, so it reads structlog's configuration object directly when
    it can (``get_config()`` builds a dict each call, a measurable part of an aadd's cost), and
    falls back to ``get_config()`` if that object ever moves.
    """
    global _structlog_config
    config = _structlog_config
    if config is None:
        config = _structlog_config = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
    if config is not None:
        return (
            config.default_wrapper_class,
            config.default_processors,
            config.logger_factory,
            config.default_context_class,
        )
    public = structlog.get_config()
    return (
        public["wrapper_class"],
        public["processors"],
        public["logger_factory"],
        public["context_class"],
    )
