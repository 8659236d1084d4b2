"""Reading a journal: its entries, page by page, filtered by time, model or key.

What an entry holds and how it is decoded (``JournalEntry``, ``MalformedEntry``, ``parse_any``)
is the journal schema's, in ``ledgerset.commands.record``; this module only pages through streams.

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
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from ledgerset.commands import wire
from ledgerset.commands.record import (
    DEFAULT_STREAM,
    JournalEntry,
    MalformedEntry,
    parse_any,
    parse_flat,
)

__all__ = ["Position", "read_entries", "read_for_display", "read_last"]

#: Where to start or stop reading: an entry id (``"1700000000000-0"``), or a moment.
Position = str | datetime

PAGE = 500


async def read_entries(
    redis: Redis,
    stream: str = DEFAULT_STREAM,
    start: Position | None = None,
    end: Position | None = None,
    model: str | None = None,
    key: str | None = None,
    *,
    after: str | None = None,
) -> AsyncGenerator[JournalEntry, None]:
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
            for raw_id, raw_fields in page:
                entry = parse_flat(stream, raw_id.decode(), raw_fields)
                if stop_at_malformed and isinstance(entry, MalformedEntry):
                    raise entry.error
                if until is not None and entry.ts > until:
                    return
                if since is not None and entry.ts < since:
                    continue
                if (model is None and key is None) or _wanted(entry, model, key):
                    yield entry


Page = list[tuple[bytes, dict[bytes, bytes]]]
#: A page as the server sends it: ``[id, [field, value, field, value, ...]]`` per entry.
RawPage = list[list[Any]]


def _wanted(entry: JournalEntry | MalformedEntry, model: str | None, key: str | None) -> bool:
    """Whether ``entry`` passes the ``model`` and ``key`` filters (``key``: physical or shown)."""
    if model is not None and entry.model != model:
        return False
    return key is None or key == entry.key or key == entry.target


def _low(start: Position | None, after: str | None) -> str:
    return f"({after}" if after is not None else start if isinstance(start, str) else "-"


def _high(end: Position | None) -> str:
    return end if isinstance(end, str) else "+"


async def _pages(redis: Redis, stream: str, low: str, high: str) -> AsyncGenerator[RawPage, None]:
    """The entries from ``low`` to ``high``, ``PAGE`` at a time (close it when stopping early)."""
    # The next page is asked for before this one is decoded, so the server reads it while the
    # caller works through this one (replay: decoding, and applying its batches).
    reader = asyncio.current_task()
    asked = reader.cancelling() if reader is not None else 0
    upcoming: asyncio.Future[RawPage] | None = asyncio.ensure_future(
        _page(redis, stream, low, high)
    )
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


async def _page(redis: Redis, stream: str, low: str, high: str) -> RawPage:
    # Through ledgerset's wire, not redis.xrange(): on Python 3.11 redis-py's send path can lose
    # a cancellation (Ctrl-C during a replay ran on to the end), and the wire does not.
    command = ("XRANGE", stream, low, high, "COUNT", PAGE)
    page: RawPage = await wire.call(redis, command, resend=True)
    return page


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    wire.check_client(redis, "read_for_display")
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
    wire.check_client(redis, "read_last")
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
