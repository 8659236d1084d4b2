"""Subscriptions: journal entries delivered at least once through a Redis consumer group.

``await subscribe(redis, journal=..., group=..., consumer=...)`` creates the group if needed
(``XGROUP CREATE ... MKSTREAM``) and returns a ``Subscription``, an async iterator that delivers,
in this order of preference:

1. the entries already pending to this consumer (delivered before, never acknowledged: it
   crashed, or was stopped), oldest first (``XREADGROUP ... 0``), once, when it starts;
2. the entries other consumers (or this one) left unacknowledged for ``claim_after``, taken over
   with ``XAUTOCLAIM``: a sweep when it starts, then every ``claim_after`` once it has delivered
   all it had read;
3. new entries (``XREADGROUP ... >``), waiting at most ``block`` for them between sweeps.

Nothing is acknowledged before the application has seen it, so an entry is delivered at least
once: a consumer killed between handling and acknowledging gets it again on restart, or another
consumer claims it. Redis acknowledges an id once (``XACK`` of an acknowledged id counts 0).

No task is started: every wait is an ``await`` of the caller's own task, so cancelling that task
ends the subscription at once and leaves nothing behind (redis-py drops a connection whose reply
was interrupted; an entry delivered to it is pending to this consumer, and delivered again).

One stream per subscription. A cluster journal's per-slot streams will need one such reader per
slot stream, merged, and ``ack`` routed to each delivery's stream (``MalformedEntry`` carries its
stream already; ``JournalEntry`` will need to).
"""

from __future__ import annotations

import re
import time
from collections import deque
from datetime import timedelta
from typing import Any, Self

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ledgerset._events import INFO, WARNING, emit, enabled
from ledgerset._server_errors import server_address, translate
from ledgerset.commands.record import (
    DEFAULT_STREAM,
    JournalEntry,
    MalformedEntry,
    StreamJournal,
    parse_any,
)
from ledgerset.errors import SubscriptionError

__all__ = ["Delivery", "MalformedEntry", "Subscription", "subscribe"]

Raw = tuple[bytes, dict[bytes, bytes]]

#: ``XGROUP CREATE``'s start: ``$``, or an entry id (``0``: the whole stream).
_START = re.compile(r"\$|\d+(-\d+)?")


#: What a subscription delivers: an entry, or one it could not read.
Delivery = JournalEntry | MalformedEntry


class Subscription:
    """The entries of one journal stream, delivered to one consumer of a consumer group.

    Iterate it with ``async for``. With ``auto_ack`` (the default), an entry is acknowledged when
    the loop asks for the next one, that is after the loop body returned for it; the entry the
    loop was at when it left (``break``, ``return``, an exception, cancellation) is not, and is
    delivered first by the next ``async for`` over the same subscription (or, if the process
    goes, again on restart or to another consumer). Without ``auto_ack``, ``await ack(entry)``
    acknowledges; an entry not acknowledged within ``claim_after`` is delivered again, to this
    consumer's or another's sweep. ``acked`` counts the entries this subscription acknowledged.
    """

    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int,
        block_s: float,
        claim_after_s: float | None,
        auto_ack: bool,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.auto_ack = auto_ack
        self.acked = 0
        self._count = count
        self._block_ms = max(1, round(block_s * 1000))
        self._claim_s = claim_after_s
        self._claim_ms = None if claim_after_s is None else max(1, round(claim_after_s * 1000))
        # Read from the server, not yet delivered: kept raw, decoded as each is delivered.
        self._buffer: deque[Raw] = deque()
        # auto_ack: the entry delivered last, acknowledged when the next one is asked for.
        self._previous: Raw | None = None
        # Where the reading of this consumer's own pending entries is; None once done.
        self._history: str | None = "0"
        self._claim_cursor = "0-0"
        self._next_sweep = 0.0  # monotonic time; 0: at once

    def __aiter__(self) -> Self:
        # A new loop over this subscription: the last loop left before asking for the next
        # entry, so the entry it was at was not handled to the end. It is delivered again.
        if self._previous is not None:
            self._buffer.appendleft(self._previous)
            self._previous = None
        return self

    async def __anext__(self) -> Delivery:
        if self._previous is not None:
            previous, self._previous = self._previous, None
            await self._acknowledge([previous[0]])
        while not self._buffer:
            await self._fill()
        raw = self._buffer.popleft()
        if self.auto_ack:
            self._previous = raw
        return self._decode(raw)

    async def ack(self, *entries: Delivery) -> int:
        """Acknowledge ``entries`` (in one ``XACK``); returns how many were still pending.

        An entry already acknowledged (by this consumer, or by another that claimed it) counts
        0, so across every consumer of the group each entry is counted once.
        """
        ids = [entry.id.encode() for entry in entries]
        if not ids:
            return 0
        if self._previous is not None and self._previous[0] in ids:
            self._previous = None  # acknowledged by hand: not again when the next is asked for
        return await self._acknowledge(ids)

    async def _acknowledge(self, ids: list[bytes]) -> int:
        done = int(await self._server(self.redis.xack(self.stream, self.group, *ids)))
        self.acked += done
        return done

    async def _fill(self) -> None:
        """Read the next page into the buffer: own pending first, then claims, then new."""
        if self._history is not None:
            page = await self._read(self._history, block_ms=None)
            self._history = None if len(page) < self._count else page[-1][0].decode()
            await self._take(page)
            return
        if self._claim_ms is not None and (
            self._claim_cursor != "0-0" or time.monotonic() >= self._next_sweep
        ):
            await self._sweep()
            if self._buffer or self._claim_cursor != "0-0":
                return
        block_ms = self._block_ms
        if self._claim_s is not None:
            until_sweep = round((self._next_sweep - time.monotonic()) * 1000)
            block_ms = max(1, min(block_ms, until_sweep))
        await self._take(await self._read(">", block_ms=block_ms))

    async def _read(self, position: str, block_ms: int | None) -> list[Raw]:
        reply: Any = await self._server(
            self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: position}, count=self._count,
                block=block_ms,
            )
        )  # fmt: skip
        if not reply:
            return []
        if not isinstance(reply, dict):  # RESP2: [[stream, entries]]
            return list(reply[0][1])
        # RESP3: {stream: [entries]}, or {stream: entries} with redis-py's unified replies.
        (entries,) = reply.values()
        return list(entries[0] if entries and isinstance(entries[0], list) else entries)

    async def _sweep(self) -> None:
        """One page of ``XAUTOCLAIM``: entries left idle past ``claim_after`` become ours."""
        assert self._claim_ms is not None and self._claim_s is not None
        reply: Any = await self._server(
            self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self._claim_ms,
                start_id=self._claim_cursor, count=self._count,
            )
        )  # fmt: skip
        cursor, claimed, deleted = reply[0], list(reply[1]), list(reply[2])
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":
            self._next_sweep = time.monotonic() + self._claim_s
        # The server has dropped from the group the pending ids it found deleted from the stream.
        self._gone(deleted)
        # A sweep runs only once the buffer is empty, so nothing claimed is waiting there too.
        if claimed and enabled(INFO):
            emit(
                INFO,
                "subscription.claimed",
                stream=self.stream,
                group=self.group,
                consumer=self.consumer,
                entries=len(claimed),
                first_id=claimed[0][0].decode(),
                last_id=claimed[-1][0].decode(),
            )
        await self._take(claimed)

    async def _take(self, page: list[Raw]) -> None:
        """Buffer ``page``; a pending entry deleted from the stream (no fields) is acknowledged."""
        gone = [entry_id for entry_id, fields in page if not fields]
        self._buffer.extend(entry for entry in page if entry[1])
        if gone:
            # Nothing is left to deliver; left pending, it would come back on every restart.
            await self._server(self.redis.xack(self.stream, self.group, *gone))
            self._gone(gone)

    def _gone(self, ids: list[bytes]) -> None:
        if ids and enabled(WARNING):
            emit(
                WARNING,
                "subscription.gone",
                stream=self.stream,
                group=self.group,
                consumer=self.consumer,
                entry_ids=[entry_id.decode() for entry_id in ids],
            )

    def _decode(self, raw: Raw) -> Delivery:
        entry = parse_any(self.stream, raw[0].decode(), raw[1])
        if isinstance(entry, MalformedEntry) and enabled(WARNING):
            emit(
                WARNING,
                "subscription.malformed",
                stream=self.stream,
                group=self.group,
                consumer=self.consumer,
                entry_id=entry.id,
                field=entry.field,
            )
        return entry

    async def _create_group(self, start: str) -> bool:
        """Create the group at ``start`` (and the stream, if needed); ``False`` if it existed."""
        try:
            await self._server(
                self.redis.xgroup_create(self.stream, self.group, start, mkstream=True)
            )
        except ResponseError as exc:
            if str(exc).startswith("BUSYGROUP"):
                return False
            if str(exc).startswith("WRONGTYPE"):
                actual = await self._server(self.redis.type(self.stream))
                raise SubscriptionError.not_a_stream(
                    self.stream, self.group, self.consumer, actual.decode()
                ) from exc
            raise
        return True

    async def _server(self, call: Any) -> Any:
        """Await one command; the server's refusals and a lost server become ledgerset errors."""
        pending = (
            f"What consumer {self.consumer!r} had not acknowledged stays pending to it: "
            f"subscribe again with the same consumer name to get it first."
        )
        try:
            async with translate("journal.subscribe", self.redis, pending):
                return await call
        except ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                raise SubscriptionError.group_gone(self.stream, self.group, self.consumer) from exc
            raise


async def subscribe(
    redis: Redis,
    journal: StreamJournal | str = DEFAULT_STREAM,
    *,
    group: str,
    consumer: str,
    start: str = "0",
    count: int = 100,
    block: float | timedelta = 1.0,
    claim_after: float | timedelta | None = 60.0,
    auto_ack: bool = True,
) -> Subscription:
    """Subscribe ``consumer`` of consumer ``group`` to ``journal`` (a ``StreamJournal`` or its
    stream's name); returns the ``Subscription`` to iterate.

    The group is created now if it does not exist (with the stream, if that does not either),
    reading from ``start``: ``"0"`` (the default) delivers the whole stream, ``"$"`` only the
    entries written from now on, an entry id the entries after it; an existing group goes on
    from where it is, whatever ``start``. ``count``: entries per read. ``block`` (seconds): the
    longest one read waits for new entries. ``claim_after`` (seconds): how long an entry may stay
    delivered and unacknowledged before another consumer claims it (``None``: never); it must be
    longer than handling ``count`` entries takes. ``auto_ack``: see ``Subscription``. A bad
    argument raises ``SubscriptionError`` (``reason="bad_option"``) before anything is sent.
    """
    stream = journal.stream if isinstance(journal, StreamJournal) else journal

    def bad(option: str, given: object, expected: str) -> SubscriptionError:
        shown = given if option == "redis" else repr(given)
        return SubscriptionError.bad_option(
            str(stream), str(group), str(consumer), option, str(shown), expected
        )

    if not isinstance(stream, str) or not stream:
        raise bad("journal", journal, "a StreamJournal or the name of its stream")
    for option, name in (("group", group), ("consumer", consumer)):
        if not isinstance(name, str) or not name:
            raise bad(option, name, "a non-empty str")
    if not isinstance(redis, Redis):
        shown = f"a {type(redis).__module__}.{type(redis).__qualname__}"
        raise bad("redis", shown, "a redis.asyncio.Redis client")
    options = redis.connection_pool.connection_kwargs
    if options.get("decode_responses"):
        shown = f"a client of {server_address(redis)} with decode_responses=True"
        raise bad("redis", shown, "a client with decode_responses=False (redis-py's default)")
    if not isinstance(start, str) or not _START.fullmatch(start):
        raise bad("start", start, "'0' (the whole stream), '$' (from now on) or an entry id")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise bad("count", count, "a positive int")
    block_s = _seconds(block)
    if block_s is None:
        raise bad("block", block, "a positive number of seconds or a timedelta")
    socket_timeout = options.get("socket_timeout")
    if socket_timeout is not None and block_s >= socket_timeout:
        raise bad(
            "block", block, f"shorter than the client's socket_timeout ({socket_timeout} s), "
            f"which would end a waiting read as a timeout"
        )  # fmt: skip
    claim_s = None if claim_after is None else _seconds(claim_after)
    if claim_after is not None and claim_s is None:
        raise bad("claim_after", claim_after, "a positive number of seconds, a timedelta or None")
    if not isinstance(auto_ack, bool):
        raise bad("auto_ack", auto_ack, "True or False")

    subscription = Subscription(
        redis, stream, group, consumer,
        count=count, block_s=block_s, claim_after_s=claim_s, auto_ack=auto_ack,
    )  # fmt: skip
    created = await subscription._create_group(start)
    if enabled(INFO):
        emit(
            INFO,
            "subscription.started",
            stream=stream,
            group=group,
            consumer=consumer,
            created=created,
            start=start if created else None,
        )
    return subscription


def _seconds(value: object) -> float | None:
    """``value`` as positive seconds (a number or a timedelta), or ``None`` if it is not one."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        return None
    return seconds if seconds > 0 and seconds != float("inf") else None
