"""One measured operation in a process of its own, so that its peak memory is its own.

``python -m benchmarks.probe amembers URL PK COUNT`` reads a ``BenchArticle``'s whole set twice;
``python -m benchmarks.probe aiter URL PK COUNT`` walks it once with ``aiter(count=1000)``;
``python -m benchmarks.probe replay SOURCE_URL TARGET_URL ENTRIES`` replays the source's journal
into the (empty) target; ``python -m benchmarks.probe snapshot URL MODELS`` snapshots the
``BenchArticle``s into the journal. Each prints one JSON object: the seconds the operation took,
and the process's resident memory before it and at its peak (``VmHWM``, not ``ru_maxrss``: Linux
carries ``ru_maxrss`` over ``exec`` from the larger parent). ``scale.py`` starts these; a process
per figure means one figure's memory cannot hide the next one's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from redis.asyncio import Redis

import ledgerset
from benchmarks.data import BenchArticle
from ledgerset.journal import replay, snapshot


def peak_rss_kib() -> int:
    """The process's peak resident memory so far (``VmHWM``), in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


async def read_members(url: str, pk: str, count: int) -> dict[str, Any]:
    """Two reads of the whole set: the first in a process that has never held it (its memory
    is not mapped yet), the second once the first's members and model are gone, as a long-lived
    application sees it. The peak is the higher of the two reads'."""
    redis = Redis.from_url(url)
    await ledgerset.init(redis=redis)
    before = peak_rss_kib()
    times = []
    for _ in range(2):
        model = BenchArticle(pk=pk)  # not loaded: aget would read the whole set already
        start = time.perf_counter()
        got = len(await model.tags.amembers())
        times.append(time.perf_counter() - start)
        del model  # with its mirror: the second read does not hold the first's members
        if got != count:
            raise RuntimeError(f"amembers() returned {got:,} members, expected {count:,}")
    peak = peak_rss_kib()
    await redis.aclose()
    return {
        "first_s": times[0],
        "seconds": times[1],
        "rss_before_kib": before,
        "peak_rss_kib": peak,
    }


async def walk_members(url: str, pk: str, count: int) -> dict[str, Any]:
    """One walk over the whole set with ``aiter``: its memory is bounded by the page size, not
    by the set's size."""
    redis = Redis.from_url(url)
    await ledgerset.init(redis=redis)
    before = peak_rss_kib()
    start = time.perf_counter()
    seen = 0
    async for _ in BenchArticle(pk=pk).tags.aiter(count=1000):
        seen += 1
    elapsed = time.perf_counter() - start
    peak = peak_rss_kib()
    await redis.aclose()
    if seen < count:  # SSCAN may yield a member twice, never skip one present throughout
        raise RuntimeError(f"aiter() yielded {seen:,} members, expected {count:,}")
    return {"seconds": elapsed, "rss_before_kib": before, "peak_rss_kib": peak}


async def replay_journal(source_url: str, target_url: str, entries: int) -> dict[str, Any]:
    source, target = Redis.from_url(source_url), Redis.from_url(target_url)
    await target.flushdb()
    before = peak_rss_kib()
    start = time.perf_counter()
    report = await replay(source, target)
    elapsed = time.perf_counter() - start
    peak = peak_rss_kib()
    await source.aclose()
    await target.aclose()
    if report.applied != entries:
        raise RuntimeError(f"replay applied {report.applied:,} entries, expected {entries:,}")
    return {"seconds": elapsed, "rss_before_kib": before, "peak_rss_kib": peak}


async def snapshot_models(url: str, count: int) -> dict[str, Any]:
    redis = Redis.from_url(url)
    before = peak_rss_kib()
    start = time.perf_counter()
    report = await snapshot(redis, models=["BenchArticle"])
    elapsed = time.perf_counter() - start
    peak = peak_rss_kib()
    await redis.aclose()
    if report.models != {"BenchArticle": count}:
        raise RuntimeError(f"snapshot recorded {report.models}, expected {count:,} BenchArticle")
    return {"seconds": elapsed, "rss_before_kib": before, "peak_rss_kib": peak}


def main(argv: list[str]) -> int:
    match argv:
        case ["amembers", url, pk, count]:
            result = asyncio.run(read_members(url, pk, int(count)))
        case ["aiter", url, pk, count]:
            result = asyncio.run(walk_members(url, pk, int(count)))
        case ["replay", source_url, target_url, entries]:
            result = asyncio.run(replay_journal(source_url, target_url, int(entries)))
        case ["snapshot", url, count]:
            result = asyncio.run(snapshot_models(url, int(count)))
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
