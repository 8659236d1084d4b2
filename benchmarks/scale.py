"""Scale figures: how the big read and replay grow with size, and concurrent callers on one client.

- ``amembers()`` of a set of each size, read in fresh child processes (``probe.py``), so the
  peak resident memory is that size's alone: milliseconds of the first read (memory not yet
  mapped) and of the next, memory before, peak memory.
- ``aiter()`` over a set of each size, in a child process: its peak memory stays flat.
- Replay of a large journal, in a child process: entries per second, peak memory.
- A snapshot of many models (``journal.snapshot``), in a child process: time, peak memory; and
  replay of the same data from that snapshot against from its full history.
- 64 tasks doing ``aadd`` at once on one client, against raw redis-py ``SADD`` with the same 64
  tasks on the same client, in A B B A rounds: calls per second of each, and their ratio
  (connection reuse must not serialize concurrent callers).

These are figures, not rows: nothing here has a bar.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

import ledgerset
from benchmarks.data import (
    encoded,
    filled,
    fresh_model,
    journal_of,
    journal_of_pipelined,
    members,
    models_of,
)
from benchmarks.rounds import interleave
from ledgerset.journal import replay, snapshot

__all__ = ["CONCURRENT_TASKS", "figures"]

ROOT = Path(__file__).resolve().parent.parent
CONCURRENT_TASKS = 64


async def figures(
    url: str,
    target_url: str,
    sizes: tuple[int, ...],
    replay_entries: int,
    per_task: int,
    rounds: int,
    repeats: int,
    snapshot_models: int = 100_000,
    history_entries: int = 20_000,
) -> dict[str, Any]:
    """Every scale figure, measured on the server at ``url`` (``target_url``: replay's target,
    another database of the same server)."""
    redis = Redis.from_url(url)
    try:
        amembers = {f"{count:,}": await amembers_at(redis, url, count, repeats) for count in sizes}
        walked = {f"{count:,}": await aiter_at(redis, url, count) for count in sizes}
        concurrent = await concurrent_aadd(redis, per_task, rounds)
        replayed = await replay_at(redis, url, target_url, replay_entries)
        snapshotted = await snapshot_at(redis, url, snapshot_models)
        from_snapshot = await replay_from_snapshot(redis, target_url, history_entries)
        await redis.flushdb()
    finally:
        await redis.aclose()
    return {
        "amembers": amembers,
        "aiter": walked,
        "concurrent_aadd": concurrent,
        "replay": replayed,
        "snapshot": snapshotted,
        "replay_from_snapshot": from_snapshot,
    }


async def probe(*args: str) -> dict[str, Any]:
    """Run ``python -m benchmarks.probe *args`` and return what it measured."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.probe",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"benchmarks.probe {args[0]} failed: {err.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(out)
    return result


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


async def amembers_at(redis: Redis, url: str, count: int, repeats: int) -> dict[str, Any]:
    """``amembers()`` of a ``count``-member set in each of ``repeats`` child processes: the
    median of their first reads (a process that never held the set) and of their second reads
    (the first one's memory freed), the fastest second read, the median memory before, the
    highest peak."""
    model = await filled(redis, count)
    runs = [await probe("amembers", url, model.pk, str(count)) for _ in range(repeats)]
    await redis.flushdb()
    firsts = [run["first_s"] * 1000 for run in runs]
    times = [run["seconds"] * 1000 for run in runs]
    return {
        "members": count,
        "ms": round(statistics.median(times), 2),
        "ms_min": round(min(times), 2),
        "ms_first_read": round(statistics.median(firsts), 2),
        "rss_before_mib": mib(int(statistics.median(run["rss_before_kib"] for run in runs))),
        "peak_rss_mib": mib(max(run["peak_rss_kib"] for run in runs)),
        "runs": repeats,
    }


async def aiter_at(redis: Redis, url: str, count: int) -> dict[str, Any]:
    """One walk with ``aiter(count=1000)`` over a ``count``-member set, in a child process."""
    model = await filled(redis, count)
    run = await probe("aiter", url, model.pk, str(count))
    await redis.flushdb()
    return {
        "members": count,
        "ms": round(run["seconds"] * 1000, 2),
        "rss_before_mib": mib(run["rss_before_kib"]),
        "peak_rss_mib": mib(run["peak_rss_kib"]),
    }


async def replay_at(redis: Redis, url: str, target_url: str, count: int) -> dict[str, Any]:
    """Replay of a ``count``-entry journal, in a child process."""
    await journal_of_pipelined(redis, count)
    entries = int(await redis.xlen("ledgerset:journal"))
    run = await probe("replay", url, target_url, str(entries))
    target = Redis.from_url(target_url)
    await target.flushdb()
    await target.aclose()
    return {
        "entries": entries,
        "seconds": round(run["seconds"], 2),
        "entries_per_s": round(entries / run["seconds"]),
        "rss_before_mib": mib(run["rss_before_kib"]),
        "peak_rss_mib": mib(run["peak_rss_kib"]),
    }


async def snapshot_at(redis: Redis, url: str, count: int) -> dict[str, Any]:
    """A snapshot of ``count`` models of 5 tags each, in a child process."""
    await models_of(redis, count)
    run = await probe("snapshot", url, str(count))
    await redis.flushdb()
    return {
        "models": count,
        "seconds": round(run["seconds"], 2),
        "models_per_s": round(count / run["seconds"]),
        "rss_before_mib": mib(run["rss_before_kib"]),
        "peak_rss_mib": mib(run["peak_rss_kib"]),
    }


async def replay_from_snapshot(redis: Redis, target_url: str, entries: int) -> dict[str, Any]:
    """The same data replayed from its full history (``entries`` saves and adds, 10 entries
    per model) and from a snapshot taken at its end: the entries each read, and how long."""
    await journal_of(redis, entries)
    taken = await snapshot(redis)
    target = Redis.from_url(target_url)
    timings = {}
    try:
        for name, start_at_snapshot in (("full", False), ("snapshot", True)):
            await target.flushdb()
            started = time.perf_counter()
            report = await replay(redis, target, from_snapshot=start_at_snapshot)
            seconds = time.perf_counter() - started
            read = report.applied + report.expired
            timings[name] = {"entries": read, "seconds": round(seconds, 3),
                             "entries_per_s": round(read / seconds)}  # fmt: skip
        await target.flushdb()
    finally:
        await target.aclose()
    await redis.flushdb()
    return {
        "models": sum(taken.models.values()),
        "from_full_history": timings["full"],
        "from_snapshot": timings["snapshot"],
        "times_faster": round(timings["full"]["seconds"] / timings["snapshot"]["seconds"], 1),
    }


async def concurrent_aadd(redis: Redis, per_task: int, rounds: int) -> dict[str, Any]:
    """``CONCURRENT_TASKS`` tasks, each awaiting ``per_task`` calls one after another, all on
    one client: ledgerset's ``aadd`` on one model against redis-py's ``SADD`` on one key."""
    calls = CONCURRENT_TASKS * per_task
    values = members(calls)
    raw_values = encoded(values)

    async def at_once(call: Any, key: Any, arguments: list[Any]) -> float:
        async def task(share: list[Any]) -> None:
            for argument in share:
                await call(*key, argument)

        shares = [arguments[index::CONCURRENT_TASKS] for index in range(CONCURRENT_TASKS)]
        start = time.perf_counter()
        await asyncio.gather(*(task(share) for share in shares))
        return time.perf_counter() - start

    async def lib() -> float:
        await ledgerset.init(redis=redis)
        model = await fresh_model(redis)
        elapsed = await at_once(model.tags.aadd, (), values)
        assert await model.tags.asize() == calls
        return elapsed / calls

    async def raw() -> float:
        await redis.flushdb()
        elapsed = await at_once(redis.sadd, ("raw:set",), raw_values)
        assert await redis.scard("raw:set") == calls
        return elapsed / calls

    row = await interleave(
        "64 concurrent aadd",
        f"{CONCURRENT_TASKS} tasks x {per_task} aadd on one client vs the same with SADD",
        lib,
        raw,
        rounds,
        throughput=True,
    )
    return {
        "tasks": CONCURRENT_TASKS,
        "calls": calls,
        "ledgerset_calls_per_s": round(1 / row.ledgerset_s),
        "raw_calls_per_s": round(1 / row.raw_s),
        "ratio": round(row.median, 3),
        "ratio_low": round(row.low, 3),
        "ratio_high": round(row.high, 3),
        "rounds": row.rounds,
    }
