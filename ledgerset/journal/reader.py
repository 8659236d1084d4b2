"""Reading a journal: typed entries, page by page, filtered by time, model or key.

``read_entries`` never loads the stream whole: it walks it with ``XRANGE ... COUNT`` pages. A
malformed entry raises ``JournalEntryError`` naming its id, never a silent skip.

Positions are entry ids or moments. A moment is compared with each entry's ``ts`` (the writing
client's clock), not with its id (the server's clock): the stream is in the order the server
wrote it, so reading from a moment skips the entries before it, and reading up to a moment
stops at the first entry written after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from ledgerset.commands import wire
from ledgerset.commands.record import DEFAULT_STREAM
from ledgerset.errors import JournalEntryError

__all__ = ["JournalEntry", "Position", "parse_entry", "read_entries"]

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
    and ``key`` keep only the entries of that model class or that physical key.
    """
    wire.check_client(redis, "read_entries")
    low = f"({after}" if after is not None else start if isinstance(start, str) else "-"
    high = end if isinstance(end, str) else "+"
    since = _utc(start) if isinstance(start, datetime) else None
    until = _utc(end) if isinstance(end, datetime) else None
    # The next page is asked for before this one is decoded, so the server reads it while the
    # caller works through this one (replay: decoding, and applying its batches).
    upcoming: asyncio.Future[Page] | None = asyncio.ensure_future(_page(redis, stream, low, high))
    try:
        while upcoming is not None:
            page = await upcoming
            upcoming = None
            if len(page) == PAGE:
                low = "(" + page[-1][0].decode()
                upcoming = asyncio.ensure_future(_page(redis, stream, low, high))
                await asyncio.sleep(0)  # one turn of the loop: the request goes out now
            for raw_id, fields in page:
                entry = parse_entry(stream, raw_id.decode(), fields)
                if until is not None and entry.ts > until:
                    return
                if since is not None and entry.ts < since:
                    continue
                if (model is None or entry.model == model) and (key is None or entry.key == key):
                    yield entry
    finally:
        if upcoming is not None:  # the caller stopped early: the next page is not wanted
            upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)


Page = list[tuple[bytes, dict[bytes, bytes]]]


async def _page(redis: Redis, stream: str, low: str, high: str) -> Page:
    # Through ledgerset's wire, not redis.xrange(): on Python 3.11 redis-py's send path can lose
    # a cancellation (Ctrl-C during a replay ran on to the end), and the wire does not.
    command = ("XRANGE", stream, low, high, "COUNT", PAGE)
    raw = await wire.call(redis, command, resend=True)
    return [(entry_id, dict(zip(raw_fields[::2], raw_fields[1::2], strict=True)))
            for entry_id, raw_fields in raw]  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_entry(stream: str, entry_id: str, fields: dict[bytes, bytes]) -> JournalEntry:
    """Decode one raw stream entry; ``JournalEntryError`` names it if it is malformed."""
    try:
        ctx = fields[b"ctx"]
        return JournalEntry(
            id=entry_id,
            cmd=fields[b"cmd"].decode(),
            v=int(fields[b"v"]),
            key=fields[b"key"].decode(),
            args=_object(fields[b"args"]),
            ts=datetime.fromtimestamp(int(fields[b"ts"]) / 1000, tz=UTC),
            txn=fields[b"txn"].decode(),
            seq=int(fields[b"seq"]),
            of=int(fields[b"of"]),
            model=fields[b"model"].decode(),
            pk=fields[b"pk"].decode(),
            field=fields[b"field"].decode() or None,
            ctx={} if ctx == b"{}" else _object(ctx),
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, KeyError):
            name = exc.args[0]
            reason = f"field {name.decode() if isinstance(name, bytes) else name!r} is missing"
        else:
            reason = str(exc)
        raise JournalEntryError(
            f"journal entry {entry_id} of stream {stream!r} is malformed ({reason}); it was not "
            f"written by ledgerset, or was changed. Nothing of its transaction is applied.",
            stream=stream,
            entry_id=entry_id,
        ) from exc


def _object(text: bytes) -> dict[str, Any]:
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{text[:40]!r} is not a JSON object")
    return value
