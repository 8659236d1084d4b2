"""Helpers the tests share: which server binary the suite runs, a whole-database snapshot (of
every primary, on a cluster), a journal's entries in order (its one stream, or every slot stream
of a cluster), set keys under the configured layout, and waiting for a process to end.

Imported as ``support`` (``tests/`` is on ``sys.path`` through its ``conftest.py``), never
through ``conftest``: pytest loads several ``conftest`` modules, and the name means the last one.
"""

from __future__ import annotations

import os
import select
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ledgerset import RedisConfig
from ledgerset.embedded import find_server_binary
from ledgerset.journal import DEFAULT_STREAM, JournalEntry, MalformedEntry, read_entries
from ledgerset.journal.streams import open_journal, read_merged
from ledgerset.keys import journal_stream, key_slot

Snapshot = dict[bytes, tuple[str, Any, int]]


def server_binary() -> str:
    """The server the suite starts: ``LEDGERSET_TEST_SERVER``, else the embedded default."""
    return os.environ.get("LEDGERSET_TEST_SERVER") or find_server_binary()


async def take_snapshot(redis: Redis) -> Snapshot:
    """Every key of the database: its type, its whole value, and whether it has a TTL."""
    state: Snapshot = {}
    for key in sorted(await all_keys(redis)):
        kind = (await redis.type(key)).decode()
        value: Any
        if kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "string":
            value = await redis.get(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            value = await redis.xrange(key)
        else:
            value = None
        has_ttl = 1 if await redis.pttl(key) > 0 else 0
        state[key] = (kind, value, has_ttl)
    return state


async def all_keys(redis: Redis, pattern: str = "*") -> list[bytes]:
    """Every key matching ``pattern``: of the database, or of every primary of a cluster."""
    if isinstance(redis, RedisCluster):
        return await redis.keys(pattern, target_nodes=RedisCluster.PRIMARIES)  # type: ignore[no-any-return]
    return await redis.keys(pattern)  # type: ignore[no-any-return]


def spec_set_key(model: Any, field: str) -> str:
    """The documented key of set ``field`` of ``model`` under the configured layout: the
    specification's on one server, the model key braced on a cluster (docs/cluster.md)."""
    return set_key_of(type(model).__name__, model.pk, field)


def set_key_of(model: str, pk: str, field: str) -> str:
    """``spec_set_key`` by model class name and pk: on a cluster the model key is braced,
    unless the pk carries a hash tag of its own, which already co-locates the spec's key."""
    owner = f"{model}:{pk}"
    start = pk.find("{")
    tagged = start != -1 and pk.find("}", start + 1) > start + 1  # a tag: "{" then a non-empty tag
    if RedisConfig().layout.cluster and not tagged:
        return f"__rapyer_special__:{{{owner}}}:{field}"
    return f"__rapyer_special__:{owner}:{field}"


def single_spelling(key: bytes) -> bytes:
    """A cluster's set key as one server spells it (``__rapyer_special__:{M:pk}:f`` is
    ``__rapyer_special__:M:pk:f``), to compare a cluster's data with a server's; any other key
    as it is."""
    braced = b"__rapyer_special__:{"
    if not key.startswith(braced):
        return key
    owner, _, field = key[len(braced) :].partition(b"}:")
    return b"__rapyer_special__:" + owner + b":" + field


async def journal_entries(
    redis: Redis, stream: str = DEFAULT_STREAM, **filters: Any
) -> list[JournalEntry]:
    """The entries of journal ``stream`` of ``redis`` in the journal's order, read by ledgerset,
    with ``read_entries``' filters (``start``, ``end``, ``model``, ``key``).

    On one server ``read_entries`` of the stream; on a cluster every slot stream, found and
    merged by time as the tool and replay read them (``open_journal``, ``read_merged``), a
    malformed entry raising its ``JournalEntryError`` as ``read_entries`` does.
    """
    if not isinstance(redis, RedisCluster):
        return [entry async for entry in read_entries(redis, stream, **filters)]
    found: list[JournalEntry] = []
    async with open_journal(redis, stream) as journal:
        async for _, entry in read_merged(journal.streams, **filters):
            if isinstance(entry, MalformedEntry):
                raise entry.error
            found.append(entry)
    return found


async def journal_ids(redis: Redis, stream: str = DEFAULT_STREAM) -> list[str]:
    """The ids of ``journal_entries(redis, stream)``, in that order."""
    return [entry.id for entry in await journal_entries(redis, stream)]


async def journal_streams(redis: Redis, stream: str = DEFAULT_STREAM) -> list[str]:
    """The stream keys journal ``stream`` has on ``redis``, by name: ``stream`` if it exists on
    one server, each slot stream that exists on a cluster."""
    async with open_journal(redis, stream) as journal:
        return [found.name for found in journal.streams]


async def raw_ids(redis: Redis, stream: str = DEFAULT_STREAM) -> list[str]:
    """The entry ids of journal ``stream`` as ``XRANGE`` lists them, not through ledgerset's
    reader: of its one stream, or of each slot stream of a cluster in turn (by name)."""
    return [
        raw_id.decode()
        for name in await journal_streams(redis, stream)
        for raw_id, _ in await redis.xrange(name)
    ]


def stream_of(redis: Redis, key: str, stream: str = DEFAULT_STREAM) -> str:
    """The stream key that holds the entries of the commands on ``key``: ``stream`` itself on
    one server, the stream of the key's slot on a cluster (``keys.journal_stream``)."""
    if isinstance(redis, RedisCluster):
        return journal_stream(stream, key_slot(key))
    return stream


def wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    """Block until process ``pid`` has ended (its pidfd is readable), or fail after ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        assert readable, f"process {pid} still running after {timeout} s"
    finally:
        os.close(fd)
