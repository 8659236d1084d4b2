"""Comparing a live database with a replay of its journal, key by key.

The keys compared are those of every model class the journal mentions (``{Model}:*`` and
``{prefix}:{Model}:*``), found with ``SCAN`` on both sides, so a key created, changed or deleted
behind the journal's back shows up. The library's own keys (``ledgerset:*``) are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from ledgerset.commands import wire
from ledgerset.commands.record import DEFAULT_STREAM
from ledgerset.journal.replay import read_skipping
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
    redis: Redis,
    stream: str = DEFAULT_STREAM,
    *,
    skip: Collection[str] = (),
    on_progress: Callable[[int, int], None] | None = None,
) -> set[str]:
    """The model class names that appear in the journal (but in the entries ``skip`` names).

    ``on_progress(done, total)`` is called every few hundred entries read, and at the end.
    """
    total = int(await redis.xlen(stream)) if on_progress is not None else 0
    models: set[str] = set()
    done = 0
    async for entry in read_skipping(redis, stream, skip):
        if entry.model:  # the journal's own entries (snapshots, trims) name no model
            models.add(entry.model)
        done += 1
        if on_progress is not None and done % PROGRESS_EVERY == 0:
            on_progress(done, max(done, total))
    if on_progress is not None:
        on_progress(done, done)
    return models


async def compare(
    live: Redis,
    replayed: Redis,
    models: set[str],
    layout: KeyLayout | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Difference]:
    """Every difference between ``live`` and ``replayed`` in the keys of ``models``.

    ``on_progress(done, total)`` is called every few hundred keys compared, and at the end.
    """
    wire.check_client(live, "compare", "live")
    wire.check_client(replayed, "compare", "replayed")
    layout = layout or KeyLayout()
    patterns = [
        pattern
        for model in sorted(models)
        for pattern in (
            f"{_escape(model)}:*",
            f"{_escape(layout.special_prefix)}:{_escape(model)}:*",
        )
    ]
    keys = sorted(await _keys(live, patterns) | await _keys(replayed, patterns))
    differences = []
    for done, key in enumerate(keys, start=1):
        mine, theirs = await _describe(live, key), await _describe(replayed, key)
        if not _same(mine, theirs):
            differences.append(Difference(key, _show(mine), _show(theirs)))
        if on_progress is not None and (done % PROGRESS_EVERY == 0 or done == len(keys)):
            on_progress(done, len(keys))
    if on_progress is not None and not keys:
        on_progress(0, 0)
    return differences


async def _keys(redis: Redis, patterns: list[str]) -> set[str]:
    found: set[str] = set()
    for pattern in patterns:
        async for key in redis.scan_iter(match=pattern, count=1000):
            found.add(key.decode() if isinstance(key, bytes) else key)
    return found


async def _describe(redis: Redis, key: str) -> tuple[str, Any, int] | None:
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
