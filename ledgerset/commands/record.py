"""Journal records: where they go (``StreamJournal``), the entry schema, and the command registry.

One stream entry per command, written by the dispatcher in the same atomic program as the
command's writes. Schema version 1, every field a string:

=========  =================================================================================
``cmd``    the command's name (``set.add``, ``model.save``, ...)
``v``      the command's record version
``key``    the physical key written at the source (for people: replay rebuilds keys)
``args``   the command's arguments as a JSON object (``record_args``)
``ts``     client wall-clock time, Unix milliseconds, UTC
``txn``    id shared by the entries of one transaction (a lone command has its own)
``seq``    1-based position in the transaction; ``of``: the transaction's size
``model``  model class name; ``pk``: its pk; ``field``: the set field, or ``""``
``ctx``    the caller's bound structlog context variables, as a JSON object
=========  =================================================================================

Reading a record back goes through ``REGISTRY`` (``(cmd, v)`` -> class) after ``UPCASTERS``
have brought an old version's args up to date; an unknown ``(cmd, v)`` is an error, never a skip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ledgerset import _events
from ledgerset.commands.catalog import (
    AddMembers,
    ClearSet,
    Command,
    DeleteModel,
    PopMember,
    RemoveMembers,
    RetainMembers,
    SaveModel,
    Target,
    ToggleMembers,
    UpdateModel,
)

__all__ = [
    "DEFAULT_STREAM",
    "REGISTRY",
    "UPCASTERS",
    "StreamJournal",
    "bound_context",
    "decode",
    "entry_fields",
    "upcast",
]

DEFAULT_STREAM = "ledgerset:journal"

#: Every command a journal may hold, by ``(name, version)``.
REGISTRY: dict[tuple[str, int], type[Command[Any]]] = {
    (command.name, command.version): command
    for command in (
        AddMembers,
        RemoveMembers,
        PopMember,
        ClearSet,
        RetainMembers,
        ToggleMembers,
        SaveModel,
        UpdateModel,
        DeleteModel,
    )
}

#: ``(name, old version)`` -> a function turning that version's args into the next version's.
#: When a command's record changes, bump its ``version`` and add its old version here.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


@dataclass(frozen=True, slots=True)
class StreamJournal:
    """Record every command in the Redis Stream ``stream``, atomically with its writes.

    ``maxlen`` trims the stream to about that many entries (``XADD MAXLEN ~``); ``None`` keeps all.
    """

    stream: str = DEFAULT_STREAM
    maxlen: int | None = None

    def __post_init__(self) -> None:
        if self.maxlen is not None and (isinstance(self.maxlen, bool) or self.maxlen <= 0):
            raise ValueError(f"StreamJournal(maxlen={self.maxlen!r}): a positive entry count")


def entry_fields(
    command: Command[Any], *, txn: str, seq: int, of: int, ts: int, ctx: str
) -> tuple[bytes, bool]:
    """The field/value pairs of ``command``'s journal entry, as one JSON array of strings, and
    whether the server must add ``args`` (the effect of a pop, which only it knows)."""
    fields = [
        "cmd", command.name,
        "v", str(command.version),
        "key", command.key,
        "ts", str(ts),
        "txn", txn,
        "seq", str(seq),
        "of", str(of),
        "model", command.model,
        "pk", command.pk,
        "field", command.field or "",
        "ctx", ctx,
    ]  # fmt: skip
    args = command.record_args()
    if args is not None:
        fields.append("args")
        fields.append(args.decode())
    return orjson.dumps(fields), args is None


def bound_context() -> str:
    """The caller's structlog context variables as JSON (``ctx``), e.g. a request id."""
    context = _events.bound_context()
    return orjson.dumps(context, default=str).decode() if context else "{}"


def upcast(name: str, version: int, args: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """Bring ``args`` of an old record version up to a registered one; ``None`` if impossible."""
    while (name, version) not in REGISTRY:
        step = UPCASTERS.get((name, version))
        if step is None:
            return None
        args, version = step(args), version + 1
    return version, args


def decode(name: str, version: int, args: dict[str, Any], target: Target) -> Command[Any] | None:
    """The command a record describes; raises ``LookupError`` for an unknown ``(name, version)``."""
    current = upcast(name, version, args)
    if current is None:
        raise LookupError(f"no command {name!r} version {version} is known")
    version, args = current
    return REGISTRY[(name, version)].from_record(args, target)
