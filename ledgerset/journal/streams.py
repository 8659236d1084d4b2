"""The streams of one journal: the one stream on a server, one stream per slot on a cluster.

On a Redis/Valkey Cluster each entry is appended, in the same atomic program as its writes, to
the stream of its slot, ``keys.journal_stream(stream, slot)`` (``<stream>:{<tag>}``). Reading the
journal there means finding those streams on every primary (``SCAN MATCH <stream>:{*}``, keeping
only the names that are exactly the stream of the slot they hash to) and reading each where it
lives, through the plain client of its primary that ledgerset routes calls through
(``routing.primaries``), so that the reader's pages and its cancellation handling apply
unchanged.

Ordering: a slot's stream is in the order its primary wrote it (total per slot); across slots
there is no server order, so the merged reading is by entry time (``ts``, the writing client's
clock), then by entry id, then by stream name -- a stable, documented order, not a causal one.
Entries of different slots touch different keys (a model and its sets share a slot, and a
transaction is one slot), so replaying each slot's stream on its own gives the same data.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ledgerset._server_errors import server_address
from ledgerset.commands import routing, wire
from ledgerset.commands.record import JournalEntry, MalformedEntry
from ledgerset.errors import JournalError
from ledgerset.journal.reader import Position, read_for_display, read_last
from ledgerset.keys import journal_stream, key_slot

__all__ = [
    "Journal",
    "JournalStream",
    "Source",
    "is_cluster_node",
    "open_journal",
    "order",
    "read_last_merged",
    "read_merged",
]

#: A journal's server: one server (``Redis``), or a cluster (``RedisCluster``).
Source = Redis | RedisCluster

#: Keys asked for per ``SCAN`` call when looking for slot streams.
SCAN_COUNT = 1000


@dataclass(frozen=True, slots=True)
class JournalStream:
    """One stream of a journal: its key ``name``, the client of the server that holds it, and
    on a cluster the ``slot`` it serves (``None`` on one server)."""

    name: str
    redis: Redis
    slot: int | None = None


@dataclass(slots=True)
class Journal:
    """A journal as found on its server: ``streams`` in name order (one on a server, one per
    written slot on a cluster), and the plain clients of a cluster's primaries (``nodes``, by
    ``host:port``: ``routing.primaries``, which live as long as the cluster client)."""

    stream: str
    cluster: bool
    streams: list[JournalStream]
    nodes: dict[str, Redis] = field(default_factory=dict)
    where: str = ""

    def require(self) -> None:
        """Raise ``JournalError`` (one line, naming the stream, the server and the fix) when
        the journal has no stream at all."""
        if self.streams:
            return
        if self.cluster:
            message = (
                f"no journal stream {self.stream!r} on the cluster at {self.where}: none of its "
                f"{len(self.nodes)} primaries holds a {self.stream}:{{<tag>}} stream; check "
                f"--stream, or enable a journal with ledgerset.init(..., "
                f"journal=StreamJournal({self.stream!r}))"
            )
        else:
            message = (
                f"no journal stream {self.stream!r} at {self.where}; check --stream, or enable a "
                f"journal with ledgerset.init(..., journal=StreamJournal({self.stream!r}))"
            )
        raise JournalError(message, stream=self.stream)

    async def rescan(self) -> list[JournalStream]:
        """Look for slot streams again (a cluster's first write in a slot creates one); add
        and return the new ones."""
        if not self.cluster:
            return []
        known = {found.name for found in self.streams}
        new = [found for found in await _scan(self.nodes, self.stream) if found.name not in known]
        self.streams = sorted([*self.streams, *new], key=lambda found: found.name)
        return new


async def is_cluster_node(redis: Redis) -> bool:
    """Whether the server of ``redis`` is a cluster node: ``INFO cluster`` says
    ``cluster_enabled:1``."""
    info = await wire.call(redis, ("INFO", "cluster"), resend=True)
    return b"cluster_enabled:1" in info


@asynccontextmanager
async def open_journal(redis: Source, stream: str) -> AsyncIterator[Journal]:
    """The streams of the journal ``stream`` on ``redis``, for the length of the block.

    On one server: ``stream`` itself, if it exists. On a cluster (a ``RedisCluster``): every
    ``journal_stream(stream, slot)`` on every primary, each with the plain client of its primary
    that ledgerset routes through (``routing.primaries``). Glob characters in ``stream`` are
    matched literally.
    """
    if not isinstance(redis, RedisCluster):
        wire.check_client(redis, "open_journal")
        exists = int(await wire.call(redis, ("EXISTS", stream), resend=True))
        yield Journal(
            stream,
            False,
            [JournalStream(stream, redis)] if exists else [],
            where=server_address(redis),
        )
        return
    routing.check_cluster(redis, "open_journal")
    nodes = await routing.primaries(redis)
    where = next(iter(nodes), "?")
    yield Journal(stream, True, await _scan(nodes, stream), nodes, where)


async def _scan(nodes: dict[str, Redis], stream: str) -> list[JournalStream]:
    """The slot streams of ``stream`` on each of ``nodes``: keys that are exactly the stream of
    the slot they hash to (``<stream>:{x}`` for a tag ``x`` of another slot is someone else's)."""
    pattern = _glob_literal(stream) + ":{*}"
    found: list[JournalStream] = []
    for client in nodes.values():
        cursor: bytes | int = 0
        while True:
            command = ("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT, "TYPE", "stream")
            cursor, names = await wire.call(client, command, resend=True)
            for raw in names:
                name = raw.decode(errors="surrogateescape")
                slot = key_slot(raw)
                if name == journal_stream(stream, slot):
                    found.append(JournalStream(name, client, slot))
            if int(cursor) == 0:
                break
    return sorted(found, key=lambda stream_: stream_.name)


def _glob_literal(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH glob."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def order(entry: JournalEntry | MalformedEntry, stream: str = "") -> tuple[Any, ...]:
    """The merged order of entries of several streams: entry time, then id, then stream."""
    millis, _, sequence = entry.id.partition("-")
    return (entry.ts, int(millis) if millis.isdigit() else 0,
            int(sequence) if sequence.isdigit() else 0, stream)  # fmt: skip


async def read_merged(
    streams: Sequence[JournalStream],
    start: Position | None = None,
    end: Position | None = None,
    model: str | None = None,
    key: str | None = None,
) -> AsyncGenerator[tuple[JournalStream, JournalEntry | MalformedEntry], None]:
    """Every entry of ``streams`` that ``read_for_display`` yields, merged by ``order``, with
    the stream it came from. Each stream is read page by page: memory stays flat."""
    if len(streams) == 1:  # one server: no merge, as it always read
        only = streams[0]
        single = read_for_display(only.redis, only.name, start, end, model, key)
        try:
            async for entry in single:
                yield only, entry
        finally:
            await _close(single)
        return
    readers = [read_for_display(s.redis, s.name, start, end, model, key) for s in streams]
    heap: list[tuple[tuple[Any, ...], int, JournalEntry | MalformedEntry]] = []
    try:
        for index, reader in enumerate(readers):
            first = await anext(reader, None)
            if first is not None:
                heap.append((order(first, streams[index].name), index, first))
        heapq.heapify(heap)
        while heap:
            _, index, entry = heap[0]
            yield streams[index], entry
            following = await anext(readers[index], None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (order(following, streams[index].name), index, following))
    finally:
        for reader in readers:
            await _close(reader)


async def _close(reader: AsyncIterator[Any]) -> None:
    """Close a reader stopped early (its page read ahead is cancelled)."""
    close = getattr(reader, "aclose", None)
    if close is not None:
        await close()


async def read_last_merged(
    streams: Sequence[JournalStream],
    count: int,
    start: Position | None = None,
    end: Position | None = None,
    model: str | None = None,
    key: str | None = None,
) -> list[tuple[JournalStream, JournalEntry | MalformedEntry]]:
    """The last ``count`` entries of ``streams`` in the merged order: the last ``count`` of
    each stream (read backwards), merged, the last ``count`` of those kept."""
    found: list[tuple[tuple[Any, ...], JournalStream, JournalEntry | MalformedEntry]] = []
    for journal_stream_ in streams:
        last = await read_last(journal_stream_.redis, journal_stream_.name, count, start, end,
                               model, key)  # fmt: skip
        found.extend((order(entry, journal_stream_.name), journal_stream_, entry)
                     for entry in last)  # fmt: skip
    found.sort(key=lambda item: item[0])
    return [(where, entry) for _, where, entry in found[-count:]]
