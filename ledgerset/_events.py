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
_bound_for: tuple[tuple[object, ...], Any] | None = None


def enabled(level: int) -> bool:
    """Whether an event at ``level`` would be emitted anywhere."""
    structlog = sys.modules.get("structlog")
    if structlog is None or not structlog.is_configured():
        return _stdlib.isEnabledFor(level)
    logger = _structlog_logger(structlog)
    check = getattr(logger, "is_enabled_for", None) or getattr(logger, "isEnabledFor", None)
    return True if check is None else bool(check(level))


def emit(level: int, event: str, **fields: Any) -> None:
    """Emit ``event`` with ``fields`` (and the bound context variables) at ``level``."""
    context = bound_context()
    if context:
        fields = {**context, **fields}
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured():
        getattr(_structlog_logger(structlog), _METHODS[level])(event, **fields)
    else:
        rendered = " ".join(f"{name}={value!r}" for name, value in fields.items())
        _stdlib.log(
            level, "%s %s", event, rendered, extra={"ledgerset": {"event": event, **fields}}
        )


def bound_context() -> dict[str, Any]:
    """The caller's structlog context variables (``bind_contextvars``), if structlog is in use."""
    contextvars = sys.modules.get("structlog.contextvars")
    return contextvars.get_contextvars() if contextvars is not None else {}


def _structlog_logger(structlog: Any) -> Any:
    """A logger bound to the current structlog configuration, made again when that changes."""
    global _bound_for
    config = structlog.get_config()
    identity = (
        config["wrapper_class"],
        config["processors"],
        config["logger_factory"],
        config["context_class"],
    )
    cached = _bound_for
    if cached is None or any(a is not b for a, b in zip(cached[0], identity, strict=True)):
        cached = _bound_for = (identity, structlog.get_logger("ledgerset").bind())
    return cached[1]
