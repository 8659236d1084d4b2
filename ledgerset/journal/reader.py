"""Reading a journal: typed entries, page by page, filtered by time, model or key.

``read_entries`` never loads the stream whole: it walks it with ``XRANGE ... COUNT`` pages. A
malformed entry raises ``JournalEntryError`` naming its id, never a silent skip: replay relies on
it. A display goes on past such an entry instead: ``read_for_display`` yields it as a
``MalformedEntry`` saying what is wrong, and ``read_last`` reads the last entries backwards, as
far as it needs. Each honours a cancellation within a page, even one that redis-py's read
absorbed.

Positions are entry ids or moments. A moment is compared with each entry's ``ts`` (the writing
client's clock), not with its id (the server's clock): the stream is in the order the server
wrote it, so reading from a moment skips the entries before it, and reading up to a moment
stops at the first entry written after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from ledgerset.commands import wire
from ledgerset.commands.record import DEFAULT_STREAM
from ledgerset.errors import JournalEntryError

__all__ = [
    "JournalEntry",
    "MalformedEntry",
    "Position",
    "parse_any",
    "read_entries",
    "read_for_display",
    "read_last",
]

#: Where to start or stop reading: an entry id (``"1700000000000-0"``), or a moment.
Position = str | datetime

PAGE = 500


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal entry, decoded (see ``ledgerset.commands.record`` for the schema)."""

    id: str
    cmd: str
    v: int
    key: str
    args: dict[str, Any]
    ts: datetime
    txn: str
    seq: int
    of: int
    model: str
    pk: str
    field: str | None
    ctx: dict[str, Any]

    @property
    def target(self) -> str:
        """What the entry wrote, as the tool shows it: ``Model:pk``, or ``Model:pk.field``."""
        return f"{self.model}:{self.pk}" + (f".{self.field}" if self.field else "")

    @property
    def ts_ms(self) -> int:
        """``ts`` as Unix milliseconds, as stored."""
        return int(self.ts.timestamp() * 1000)

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict (``ts`` as ISO 8601 UTC)."""
        return {
            "id": self.id,
            "ts": self.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "cmd": self.cmd,
            "v": self.v,
            "model": self.model,
            "pk": self.pk,
            "field": self.field,
            "key": self.key,
            "args": self.args,
            "txn": self.txn,
            "seq": self.seq,
            "of": self.of,
            "ctx": self.ctx,
        }


async def read_entries(
    redis: Redis,
    stream: str = DEFAULT_STREAM,
    start: Position | None = None,
    end: Position | None = None,
    model: str | None = None,
    key: str | None = None,
    *,
    after: str | None = None,
) -> AsyncIterator[JournalEntry]:
    """Yield the entries of ``stream`` from ``start`` to ``end`` (both included), oldest first.

    ``start``/``end`` are entry ids (a bare millisecond covers all its entries) or datetimes (a
    naive datetime is taken as UTC); ``after`` starts just after an entry id instead. ``model``
    keeps only the entries of that model class, ``key`` those that wrote that key: its physical
    name, or its ``target`` as the tool shows it (``Model:pk.field``).
    """
    wire.check_client(redis, "read_entries")
    selected = _select(redis, stream, start, end, model, key, after, stop_at_malformed=True)
    async with aclosing(selected) as entries:
        async for entry in entries:
            assert isinstance(entry, JournalEntry)  # a malformed one raised its error
            yield entry


async def _select(
    redis: Redis,
    stream: str,
    start: Position | None,
    end: Position | None,
    model: str | None,
    key: str | None,
    after: str | None,
    *,
    stop_at_malformed: bool,
) -> AsyncGenerator[JournalEntry | MalformedEntry, None]:
    """The entries ``read_entries`` and ``read_for_display`` yield; a malformed one raises its
    ``JournalEntryError`` with ``stop_at_malformed``, whatever the filters."""
    since = _utc(start) if isinstance(start, datetime) else None
    until = _utc(end) if isinstance(end, datetime) else None
    async with aclosing(_pages(redis, stream, _low(start, after), _high(end))) as pages:
        async for page in pages:
            for raw_id, fields in page:
                entry = parse_any(stream, raw_id.decode(), fields)
                if stop_at_malformed and isinstance(entry, MalformedEntry):
                    raise entry.error
                if until is not None and entry.ts > until:
                    return
                if since is not None and entry.ts < since:
                    continue
                if _wanted(entry, model, key):
                    yield entry


Page = list[tuple[bytes, dict[bytes, bytes]]]


def _wanted(entry: JournalEntry | MalformedEntry, model: str | None, key: str | None) -> bool:
    """Whether ``entry`` passes the ``model`` and ``key`` filters (``key``: physical or shown)."""
    if model is not None and entry.model != model:
        return False
    return key is None or key == entry.key or key == entry.target


def _low(start: Position | None, after: str | None) -> str:
    return f"({after}" if after is not None else start if isinstance(start, str) else "-"


def _high(end: Position | None) -> str:
    return end if isinstance(end, str) else "+"


async def _pages(redis: Redis, stream: str, low: str, high: str) -> AsyncGenerator[Page, None]:
    """The entries from ``low`` to ``high``, ``PAGE`` at a time (close it when stopping early)."""
    # The next page is asked for before this one is decoded, so the server reads it while the
    # caller works through this one (replay: decoding, and applying its batches).
    reader = asyncio.current_task()
    asked = reader.cancelling() if reader is not None else 0
    upcoming: asyncio.Future[Page] | None = asyncio.ensure_future(_page(redis, stream, low, high))
    try:
        while upcoming is not None:
            page = await upcoming
            upcoming = None
            # Cancelling a task that awaits another cancels that one instead; if the read
            # absorbed it (redis-py's read path can) and returned its page, the request would
            # be lost here, and a cancelled reader would read the stream to its end.
            _raise_if_cancelled(reader, asked)
            if len(page) == PAGE:
                low = "(" + page[-1][0].decode()
                upcoming = asyncio.ensure_future(_page(redis, stream, low, high))
                await asyncio.sleep(0)  # one turn of the loop: the request goes out now
            yield page
    finally:
        if upcoming is not None:  # the caller stopped early: the next page is not wanted
            upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)


def _raise_if_cancelled(reader: asyncio.Task[Any] | None, asked: int) -> None:
    if reader is not None and reader.cancelling() > asked:
        raise asyncio.CancelledError


async def _page(redis: Redis, stream: str, low: str, high: str) -> Page:
    # Through ledgerset's wire, not redis.xrange(): on Python 3.11 redis-py's send path can lose
    # a cancellation (Ctrl-C during a replay ran on to the end), and the wire does not.
    command = ("XRANGE", stream, low, high, "COUNT", PAGE)
    raw = await wire.call(redis, command, resend=True)
    return [(entry_id, dict(zip(raw_fields[::2], raw_fields[1::2], strict=True)))
            for entry_id, raw_fields in raw]  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_any(
    stream: str, entry_id: str, fields: dict[bytes, bytes]
) -> JournalEntry | MalformedEntry:
    """Decode one raw stream entry, or say what is wrong with it (``MalformedEntry``), for the
    readers that show or deliver such an entry flagged instead of stopping at it."""
    try:
        return _decode(entry_id, fields)
    except _Malformed as exc:
        return MalformedEntry(
            id=entry_id, stream=stream, fields=fields, problem=str(exc), field=exc.field
        )


@dataclass(frozen=True, slots=True)
class MalformedEntry:
    """A stream entry that is not a readable ledgerset entry: the tool flags it, a subscription
    delivers it flagged, and replay stops at it (``error``).

    ``fields`` is the entry as Redis holds it; ``problem`` says what is wrong in an operator's
    words, and ``field`` names the field at fault. ``model`` and ``key`` are the entry's own
    fields of those names, when it has them, so that filters can tell whose it is.
    """

    id: str
    stream: str
    fields: dict[bytes, bytes]
    problem: str
    field: str

    @property
    def shown(self) -> dict[str, str]:
        """The fields decoded for people (undecodable bytes escaped)."""
        return {
            name.decode(errors="backslashreplace"): value.decode(errors="backslashreplace")
            for name, value in self.fields.items()
        }

    @property
    def model(self) -> str | None:
        """The entry's ``model`` field, if it has one."""
        return self.shown.get("model")

    @property
    def key(self) -> str | None:
        """The entry's ``key`` field, if it has one."""
        return self.shown.get("key")

    @property
    def target(self) -> None:
        """A malformed entry names no target the tool could show."""
        return None

    @property
    def ts(self) -> datetime:
        """The entry's ``ts`` if it is a number, else the server's time in its id."""
        stamp = self.shown.get("ts", "")
        millis = int(stamp) if stamp.isdigit() else int(self.id.split("-")[0])
        return datetime.fromtimestamp(millis / 1000, tz=UTC)

    @property
    def error(self) -> JournalEntryError:
        """The error a reader that cannot go on raises for this entry."""
        return JournalEntryError(
            f"journal entry {self.id} of stream {self.stream!r} is malformed ({self.problem}); it "
            f"was not written by ledgerset, or was changed. Nothing of its transaction is applied.",
            stream=self.stream,
            entry_id=self.id,
            field=self.field,
        )

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict: its id, ``"malformed"`` (the problem) and its fields."""
        return {"id": self.id, "malformed": self.problem, "fields": self.shown}


def read_for_display(
    redis: Redis,
    stream: str = DEFAULT_STREAM,
    start: Position | None = None,
    end: Position | None = None,
    model: str | None = None,
    key: str | None = None,
) -> AsyncIterator[JournalEntry | MalformedEntry]:
    """Like ``read_entries``, but a malformed entry is yielded as a ``MalformedEntry``, not raised.

    For the audit tool, which shows such an entry flagged and goes on. A ``model`` or ``key``
    filter keeps a malformed entry only if its own ``model``/``key`` field matches.
    """
    return _select(redis, stream, start, end, model, key, None, stop_at_malformed=False)


async def read_last(
    redis: Redis,
    stream: str,
    count: int,
    start: Position | None = None,
    end: Position | None = None,
    model: str | None = None,
    key: str | None = None,
) -> list[JournalEntry | MalformedEntry]:
    """The last ``count`` entries that ``read_for_display`` would yield, oldest first.

    The stream is read backwards, page by page, until ``count`` entries are found: the cost is
    that of the entries read, not of the stream. Moments filter each entry by its ``ts``.
    """
    since = _utc(start) if isinstance(start, datetime) else None
    until = _utc(end) if isinstance(end, datetime) else None
    found: list[JournalEntry | MalformedEntry] = []
    high, low = _high(end), _low(start, None)
    reader = asyncio.current_task()
    asked = reader.cancelling() if reader is not None else 0
    while len(found) < count:
        page: Page = await redis.xrevrange(stream, max=high, min=low, count=PAGE)  # type: ignore[assignment]
        _raise_if_cancelled(reader, asked)  # as in _pages: a read may absorb a cancellation
        for raw_id, fields in page:
            entry = parse_any(stream, raw_id.decode(), fields)
            if (until is not None and entry.ts > until) or (since is not None and entry.ts < since):
                continue
            if _wanted(entry, model, key):
                found.append(entry)
                if len(found) == count:
                    break
        if len(page) < PAGE:
            break
        high = "(" + page[-1][0].decode()
    found.reverse()
    return found


#: The fields every ledgerset entry has (see ``ledgerset.commands.record``).
_FIELDS = (b"cmd", b"v", b"key", b"args", b"ts", b"txn", b"seq", b"of", b"model", b"pk", b"field",
           b"ctx")  # fmt: skip


class _Malformed(ValueError):
    """What is wrong with an entry, in an operator's words, and the field at fault."""

    def __init__(self, problem: str, field: str) -> None:
        super().__init__(problem)
        self.field = field


def _decode(entry_id: str, fields: dict[bytes, bytes]) -> JournalEntry:
    missing = [name.decode() for name in _FIELDS if name not in fields]
    if len(missing) == len(_FIELDS):
        raise _Malformed("not a ledgerset entry: field 'cmd' is missing, and so are model, pk "
                         "and the rest; another program wrote it", "cmd")  # fmt: skip
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise _Malformed(f"field {names} is missing" if len(missing) == 1 else
                         f"fields {names} are missing", missing[0])  # fmt: skip
    ctx = fields[b"ctx"]
    return JournalEntry(
        id=entry_id,
        cmd=_text(fields, b"cmd"),
        v=_number(fields, b"v"),
        key=_text(fields, b"key"),
        args=_object(fields, b"args"),
        ts=datetime.fromtimestamp(_number(fields, b"ts") / 1000, tz=UTC),
        txn=_text(fields, b"txn"),
        seq=_number(fields, b"seq"),
        of=_number(fields, b"of"),
        model=_text(fields, b"model"),
        pk=_text(fields, b"pk"),
        field=_text(fields, b"field") or None,
        ctx={} if ctx == b"{}" else _object(fields, b"ctx"),
    )


def _text(fields: dict[bytes, bytes], name: bytes) -> str:
    try:
        return fields[name].decode()
    except UnicodeDecodeError:
        raise _Malformed(f"field {name.decode()!r} is not UTF-8 text", name.decode()) from None


def _number(fields: dict[bytes, bytes], name: bytes) -> int:
    try:
        return int(fields[name])
    except ValueError:
        shown = fields[name][:40].decode(errors="backslashreplace")
        raise _Malformed(
            f"field {name.decode()!r} is {shown!r}, not a whole number", name.decode()
        ) from None


def _object(fields: dict[bytes, bytes], name: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(fields[name])
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        shown = fields[name][:40].decode(errors="backslashreplace")
        raise _Malformed(f"field {name.decode()!r} is {shown!r}, not a JSON object", name.decode())
    return value
