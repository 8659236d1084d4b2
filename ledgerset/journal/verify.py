"""Comparing a live database with a replay of its journal, key by key.

The keys compared are those of every model class the journal mentions (``{Model}:*`` and
``{prefix}:{Model}:*``, and on a cluster ``{prefix}:{{Model}:*``), found with ``SCAN`` on both
sides (on every primary of a cluster), so a key created, changed or deleted behind the journal's
back shows up. The library's own keys (``ledgerset:*``) are left out.

Each side may be a single server or a cluster, whose set keys are spelled differently
(``keys.KeyLayout``): a key is compared under its single-server spelling, so a database moved
into a cluster by replay (or back) is found identical when its data is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ledgerset.commands import routing, wire
from ledgerset.commands.record import DEFAULT_STREAM
from ledgerset.journal.replay import read_skipping
from ledgerset.journal.streams import Source, open_journal
from ledgerset.keys import KeyLayout

__all__ = ["Difference", "compare", "journal_models"]

#: TTLs within this many seconds of each other are equal: replay restores absolute expiries.
TTL_TOLERANCE_S = 2


@dataclass(frozen=True, slots=True)
class Difference:
    """One key that differs: ``live`` and ``replayed`` describe each side (``None``: missing)."""

    key: str
    live: str | None
    replayed: str | None

    def __str__(self) -> str:
        if self.replayed is None:
            return f"{self.key}: only live ({self.live})"
        if self.live is None:
            return f"{self.key}: only in the replay ({self.replayed})"
        return f"{self.key}: live {self.live}, replayed {self.replayed}"


#: Entries read, or keys compared, between two calls of an ``on_progress``.
PROGRESS_EVERY = 500


async def journal_models(
    redis: Source,
    stream: str = DEFAULT_STREAM,
    *,
    skip: Collection[str] = (),
    on_progress: Callable[[int, int], None] | None = None,
) -> set[str]:
    """The model class names that appear in the journal (but in the entries ``skip`` names),
    in its one stream, or in every slot stream of a cluster.

    ``on_progress(done, total)`` is called every few hundred entries read, and at the end.
    """
    if not isinstance(redis, RedisCluster):
        wire.check_client(redis, "journal_models")
    models: set[str] = set()
    done = 0
    async with open_journal(redis, stream) as journal:
        total = 0
        if on_progress is not None:
            for found in journal.streams:
                total += int(await wire.call(found.redis, ("XLEN", found.name), resend=True))
        for found in journal.streams:
            async for entry in read_skipping(found.redis, found.name, skip):
                if entry.model:  # the journal's own entries (snapshots, trims) name no model
                    models.add(entry.model)
                done += 1
                if on_progress is not None and done % PROGRESS_EVERY == 0:
                    on_progress(done, max(done, total))
    if on_progress is not None:
        on_progress(done, done)
    return models


async def compare(
    live: Source,
    replayed: Source,
    models: set[str],
    layout: KeyLayout | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Difference]:
    """Every difference between ``live`` and ``replayed`` in the keys of ``models``.

    ``layout`` gives the set prefix (and a single server's layout); a ``RedisCluster`` side is
    read through the cluster layout with that prefix, and keys are compared, and named in each
    ``Difference``, by their single-server spelling. ``on_progress(done, total)`` is called
    every few hundred keys compared, and at the end.
    """
    for side, argument in ((live, "live"), (replayed, "replayed")):
        if isinstance(side, RedisCluster):
            routing.check_cluster(side, "compare", argument)
        else:
            wire.check_client(side, "compare", argument)
    layout = layout or KeyLayout()
    mine = await _keys(live, models, layout)
    theirs = await _keys(replayed, models, layout)
    keys = sorted(mine.keys() | theirs.keys())
    differences = []
    for done, key in enumerate(keys, start=1):
        a, b = await _contents_at(mine.get(key)), await _contents_at(theirs.get(key))
        if not _same(a, b):
            differences.append(Difference(key, _show(a), _show(b)))
        if on_progress is not None and (done % PROGRESS_EVERY == 0 or done == len(keys)):
            on_progress(done, len(keys))
    if on_progress is not None and not keys:
        on_progress(0, 0)
    return differences


#: Where one key is: the client of its server (a cluster's primary) and its physical name.
_Located = tuple[Redis, str]


async def _keys(redis: Source, models: set[str], layout: KeyLayout) -> dict[str, _Located]:
    """The keys of ``models`` on ``redis``, by their single-server spelling (a cluster's: on
    each primary, through the client ledgerset routes to it through, ``routing.primaries``)."""
    prefix = layout.special_prefix
    patterns = [
        pattern
        for model in sorted(models)
        for pattern in (f"{_escape(model)}:*", f"{_escape(prefix)}:{_escape(model)}:*")
    ]
    if not isinstance(redis, RedisCluster):
        return {name: (redis, name) for name in await _scan(redis, patterns)}
    # The cluster layout braces the model key in a set key: {prefix}:{{Model}:pk}:field.
    patterns += [f"{_escape(prefix)}:{{{_escape(model)}:*" for model in sorted(models)]
    found: dict[str, _Located] = {}
    nodes = await routing.primaries(redis)
    for client in nodes.values():
        for name in await _scan(client, patterns):
            found[_single_spelling(name, prefix)] = (client, name)
    return found


def _single_spelling(key: str, prefix: str) -> str:
    """A cluster layout's set key as one server spells it: ``{prefix}:{{M:pk}}:f`` is
    ``{prefix}:M:pk:f``; any other key is spelled the same on both."""
    head = f"{prefix}:{{"
    if key.startswith(head):
        tag, close, field = key[len(head) :].partition("}:")
        if close:
            return f"{prefix}:{tag}:{field}"
    return key


async def _scan(redis: Redis, patterns: list[str]) -> set[str]:
    found: set[str] = set()
    for pattern in patterns:
        async for key in redis.scan_iter(match=pattern, count=1000):
            found.add(key.decode() if isinstance(key, bytes) else key)
    return found


async def _contents_at(located: _Located | None) -> tuple[str, Any, int] | None:
    return None if located is None else await _contents(*located)


async def _contents(redis: Redis, key: str) -> tuple[str, Any, int] | None:
    kind = await redis.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "none":
        return None
    value: Any
    if kind == "hash":
        value = await redis.hgetall(key)
    elif kind == "set":
        value = await redis.smembers(key)
    elif kind == "string":
        value = await redis.get(key)
    else:
        value = kind
    ttl_ms = int(await redis.pttl(key))
    return kind, value, ttl_ms


def _same(a: tuple[str, Any, int] | None, b: tuple[str, Any, int] | None) -> bool:
    if a is None or b is None:
        return a is b
    (kind_a, value_a, ttl_a), (kind_b, value_b, ttl_b) = a, b
    if kind_a != kind_b or value_a != value_b:
        return False
    if ttl_a < 0 or ttl_b < 0:
        return ttl_a == ttl_b
    return abs(ttl_a - ttl_b) <= TTL_TOLERANCE_S * 1000


def _show(description: tuple[str, Any, int] | None) -> str | None:
    if description is None:
        return None
    kind, value, ttl_ms = description
    if isinstance(value, dict):
        shown = ", ".join(f"{k.decode()}={v.decode()}" for k, v in sorted(value.items()))
    elif isinstance(value, set):
        shown = ", ".join(sorted(member.decode() for member in value))
    else:
        shown = repr(value)
    expiry = "" if ttl_ms < 0 else f", expires in {ttl_ms / 1000:.0f} s"
    return f"{kind} {{{shown}}}{expiry}"


def _escape(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH glob."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
