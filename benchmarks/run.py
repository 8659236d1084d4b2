"""Side-by-side benchmarks: ledgerset against raw redis-py doing the same Redis work.

Every row times a ledgerset workload (A) and its raw redis-py twin (B) on the same embedded server
and the same client, interleaved A, B, A, B ... for several rounds, and reports the median of the
per-round ratios A/B (a time ratio, or for replay a throughput ratio) with its spread (min..max).
Ratios, not absolute times, because the machine is shared: both sides see the same load.

    python -m benchmarks                 # full sizes; writes benchmarks/results.json and the plot
    python -m benchmarks --quick         # tiny sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import platform
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal
from ledgerset.commands import dispatcher
from ledgerset.embedded import EmbeddedServer
from ledgerset.journal import replay

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.json"
PLOT = ROOT / "docs" / "img" / "benchmarks.png"

Timed = Callable[[], Awaitable[float]]


@dataclass(frozen=True, slots=True)
class Bar:
    """A row's target: ``ratio <= limit`` (times) or ``ratio >= limit`` (throughputs)."""

    limit: float
    higher_is_better: bool = False

    def met(self, ratio: float) -> bool:
        return ratio >= self.limit if self.higher_is_better else ratio <= self.limit

    def __str__(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.limit:.2f}"


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    workload: str
    bar: Bar
    median: float
    low: float
    high: float
    rounds: int
    ledgerset_s: float
    raw_s: float

    @property
    def met(self) -> bool:
        return self.bar.met(self.median)


class BenchArticle(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class Sizes:
    def __init__(self, quick: bool) -> None:
        self.calls = 50 if quick else 1000
        self.big = 2_000 if quick else 100_000
        self.replay = 200 if quick else 20_000
        self.rounds = 3 if quick else 31  # the VM is noisy: many short rounds, not a few long ones
        self.scaling = (1_000, 2_000) if quick else (10_000, 100_000, 1_000_000)
        self.replay_scale = 500 if quick else 1_000_000
        self.scan_scale = (1_000, 2_000) if quick else (10_000, 1_000_000)


async def interleave(name: str, workload: str, bar: Bar, a: Timed, b: Timed, rounds: int) -> Row:
    """Run ``a`` and ``b`` alternately, A B B A each round (so a drift in the machine's speed
    weighs on both alike), after one warm-up each; one ratio per round."""
    await a()
    await b()
    ratios, a_times, b_times = [], [], []
    for _ in range(rounds):
        times = {"a": 0.0, "b": 0.0}
        for side, run in (("a", a), ("b", b), ("b", b), ("a", a)):
            gc.collect()
            times[side] += await run()
        ta, tb = times["a"] / 2, times["b"] / 2
        a_times.append(ta)
        b_times.append(tb)
        ratios.append(tb / ta if bar.higher_is_better else ta / tb)
    return Row(
        name,
        workload,
        bar,
        statistics.median(ratios),
        min(ratios),
        max(ratios),
        rounds,
        statistics.median(a_times),
        statistics.median(b_times),
    )


async def fresh_model(redis: Redis) -> BenchArticle:
    await redis.flushdb()
    model = BenchArticle()
    await model.asave()
    return model


async def timed_aadds(redis: Redis, values: list[str], clock: Callable[[], float]) -> float:
    """How long, by ``clock``, one ``aadd`` per value takes, awaited one after another, on a
    fresh model."""
    model = await fresh_model(redis)
    aadd = model.tags.aadd
    start = clock()
    for value in values:
        await aadd(value)
    return clock() - start


def members(count: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def encoded(values: list[str]) -> list[bytes]:
    return [orjson.dumps(value) for value in values]


async def row_immediate(redis: Redis, sizes: Sizes, journal: bool) -> Row:
    values = members(sizes.calls)
    raw_values = encoded(values)

    async def lib() -> float:
        await ledgerset.init(redis=redis, journal=StreamJournal() if journal else None)
        return await timed_aadds(redis, values, time.perf_counter)

    async def raw() -> float:
        await redis.flushdb()
        sadd = redis.sadd
        start = time.perf_counter()
        for value in raw_values:
            await sadd("raw:set", value)
        return time.perf_counter() - start

    if journal:
        return await interleave(
            "journaled call",
            f"{sizes.calls:,} sequential aadd with a StreamJournal vs plain SADD",
            Bar(1.30),
            lib,
            raw,
            sizes.rounds,
        )
    return await interleave(
        "immediate call",
        f"{sizes.calls:,} sequential aadd of one member vs SADD",
        Bar(1.10),
        lib,
        raw,
        sizes.rounds,
    )


async def row_transaction(redis: Redis, sizes: Sizes) -> Row:
    values = members(sizes.calls)
    raw_values = encoded(values)

    async def lib() -> float:
        await ledgerset.init(redis=redis)
        model = await fresh_model(redis)
        start = time.perf_counter()
        async with model.apipeline():
            add = model.tags.add
            for value in values:
                add(value)
        return time.perf_counter() - start

    async def raw() -> float:
        await redis.flushdb()
        start = time.perf_counter()
        async with redis.pipeline(transaction=True) as pipe:
            for value in raw_values:
                pipe.sadd("raw:set", value)
            await pipe.execute()
        return time.perf_counter() - start

    return await interleave(
        "transaction",
        f"one apipeline() of {sizes.calls:,} add vs a transaction=True pipeline of SADD",
        Bar(1.15),
        lib,
        raw,
        sizes.rounds,
    )


async def filled(redis: Redis, count: int) -> BenchArticle:
    await ledgerset.init(redis=redis)
    model = await fresh_model(redis)
    values = members(count)
    for start in range(0, count, 50_000):
        await model.tags.aadd_many(values[start : start + 50_000])
    return model


def timed_read(read: Callable[[], Awaitable[Sized]], count: int) -> Timed:
    """A side of a read row: the seconds ``read()`` takes; it must return ``count`` members."""

    async def run() -> float:
        start = time.perf_counter()
        result = await read()
        elapsed = time.perf_counter() - start
        assert len(result) == count
        return elapsed

    return run


async def row_big_read(redis: Redis, sizes: Sizes) -> Row:
    model = await filled(redis, sizes.big)
    key = model.tags._require_binding().key
    return await interleave(
        "big read",
        f"amembers() of a {sizes.big:,}-member RedisSet[str] (decoded) vs SMEMBERS (bytes)",
        Bar(1.15),
        timed_read(model.tags.amembers, sizes.big),
        timed_read(lambda: redis.smembers(key), sizes.big),
        sizes.rounds,
    )


async def reference_hand_decoding(redis: Redis, sizes: Sizes) -> Row:
    """Not a row of the issue: what a redis-py user pays over raw ``SMEMBERS`` to get the same
    decoded members by hand (one ``orjson.loads`` of the joined members, then a ``set``), with
    no validation and no mirror. ``big read`` is judged against raw bytes; this says how much of
    its gap any decoding client pays."""
    model = await filled(redis, sizes.big)
    key = model.tags._require_binding().key

    async def decoded_by_hand() -> set[str]:
        raws: set[bytes] = await redis.smembers(key)  # type: ignore[assignment]
        return set(orjson.loads(b"[" + b",".join(raws) + b"]"))

    return await interleave(
        "decoding by hand",
        f"SMEMBERS of {sizes.big:,} members + orjson.loads + set (no checks) vs SMEMBERS (bytes)",
        Bar(1.15),
        timed_read(decoded_by_hand, sizes.big),
        timed_read(lambda: redis.smembers(key), sizes.big),
        sizes.rounds,
    )


async def journal_of(redis: Redis, count: int, per_model: int = 10) -> list[str]:
    """A journal of ``count`` entries: saves and single-member adds; returns the members."""
    await redis.flushdb()
    await ledgerset.init(redis=redis, journal=StreamJournal())
    values = members(count)
    model = BenchArticle()
    for index, value in enumerate(values):
        if index % per_model == 0:
            model = BenchArticle()
            await model.asave()
        else:
            await model.tags.aadd(value)
    await ledgerset.init(redis=redis)
    return values


async def row_replay(redis: Redis, target: Redis, sizes: Sizes) -> Row:
    await journal_of(redis, sizes.replay)
    entries = int(await redis.xlen("ledgerset:journal"))
    raw_values = encoded(members(entries))

    async def lib() -> float:
        await target.flushdb()
        start = time.perf_counter()
        report = await replay(redis, target)
        elapsed = time.perf_counter() - start
        assert report.applied == entries
        return entries / elapsed

    async def raw() -> float:
        await target.flushdb()
        start = time.perf_counter()
        for offset in range(0, entries, 500):
            async with target.pipeline(transaction=False) as pipe:
                for value in raw_values[offset : offset + 500]:
                    pipe.sadd("raw:set", value)
                await pipe.execute()
        return entries / (time.perf_counter() - start)

    # Throughputs: the ratio is ledgerset's entries/s over raw's; interleave() inverts for us.
    async def lib_time() -> float:
        return 1 / await lib()

    async def raw_time() -> float:
        return 1 / await raw()

    return await interleave(
        "replay",
        f"entries/s replaying {entries:,} entries vs pipelined raw SADD of as many members",
        Bar(0.5, higher_is_better=True),
        lib_time,
        raw_time,
        max(3, sizes.rounds // 3),
    )


async def row_logging_off(redis: Redis, sizes: Sizes) -> Row:
    values = members(sizes.calls * 2)
    real_enabled = dispatcher.enabled  # type: ignore[attr-defined]

    async def run_calls() -> float:
        # Process CPU time, not wall time: both sides do the same server work, and what differs
        # (the level checks) is this process's CPU; wall time here mostly measures the VM's noise.
        return await timed_aadds(redis, values, time.process_time)

    async def filtered() -> float:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        dispatcher.enabled = real_enabled  # type: ignore[attr-defined]
        try:
            return await run_calls()
        finally:
            structlog.reset_defaults()

    async def without() -> float:
        # The dispatcher with its event code compiled out: every level check is a constant.
        dispatcher.enabled = _never  # type: ignore[attr-defined]
        try:
            return await run_calls()
        finally:
            dispatcher.enabled = real_enabled  # type: ignore[attr-defined]

    await ledgerset.init(redis=redis)
    return await interleave(
        "logging off",
        f"{len(values):,} aadd with events filtered out (WARNING) vs the path without them"
        " (client CPU time)",
        Bar(1.02),
        filtered,
        without,
        sizes.rounds,
    )


def _never(level: int) -> bool:
    return False


async def amembers_scaling(redis: Redis, sizes: Sizes) -> dict[str, float]:
    """Seconds per ``amembers()`` at each size: the cost should grow linearly."""
    timings = {}
    for count in sizes.scaling:
        model = await filled(redis, count)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            await model.tags.amembers()
            best = min(best, time.perf_counter() - start)
        timings[f"{count:,}"] = best
        await redis.flushdb()
    return timings


async def replay_scale(url: str, target_url: str, count: int) -> dict[str, Any]:
    """Replay a ``count``-entry journal; peak RSS is measured in a child process of its own."""
    redis, target = Redis.from_url(url), Redis.from_url(target_url)
    await journal_of_pipelined(redis, count)
    await redis.aclose()
    await target.aclose()
    code = (
        "import asyncio, time\n"
        "from redis.asyncio import Redis\n"
        "from ledgerset.journal import replay\n"
        "async def main():\n"
        f"    source, target = Redis.from_url({url!r}), Redis.from_url({target_url!r})\n"
        "    await target.flushdb()\n"
        "    start = time.perf_counter()\n"
        "    report = await replay(source, target)\n"
        "    elapsed = time.perf_counter() - start\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (larger) parent.
        "    rss = next(int(line.split()[1]) for line in open('/proc/self/status')\n"
        "               if line.startswith('VmHWM:'))\n"
        "    print(report.applied, elapsed, rss)\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    applied, elapsed, rss_kib = out.split()
    return {
        "entries": int(applied),
        "seconds": round(float(elapsed), 2),
        "entries_per_s": round(int(applied) / float(elapsed)),
        "peak_rss_mib": round(int(rss_kib) / 1024, 1),
    }


async def scan_scale(url: str, counts: tuple[int, ...]) -> dict[str, Any]:
    """Peak RSS of ``aiter()`` over sets of each size: flat, where ``amembers()`` grows with it.

    Each read runs in a child process of its own, on a model instance that was never loaded
    (loading would fill its mirror), so its peak is the read's alone.
    """
    redis = Redis.from_url(url)
    peaks: dict[str, dict[str, float]] = {"aiter": {}, "amembers": {}}
    for count in counts:
        await redis.flushdb()
        key = BenchArticle(pk="scan").tags.special_key
        values = encoded(members(count))
        for start in range(0, count, 10_000):
            await redis.sadd(key, *values[start : start + 10_000])
        for read in ("aiter", "amembers"):
            peaks[read][f"{count:,}"] = await _child_peak_rss_mib(url, read, count)
    await redis.flushdb()
    await redis.aclose()
    return {f"{read}_peak_rss_mib": by_size for read, by_size in peaks.items()}


async def _child_peak_rss_mib(url: str, read: str, count: int) -> float:
    walk = (
        "    seen = 0\n    async for _ in tags.aiter(count=1000):\n        seen += 1\n"
        if read == "aiter"
        else "    seen = len(await tags.amembers())\n"
    )
    code = (
        "import asyncio\n"
        "from pydantic import Field\n"
        "import ledgerset\n"
        "from ledgerset import AtomicRedisModel, RedisSet\n"
        "class BenchArticle(AtomicRedisModel):\n"
        "    tags: RedisSet[str] = Field(default_factory=RedisSet)\n"
        "async def main():\n"
        f"    await ledgerset.init(redis={url!r})\n"
        "    tags = BenchArticle(pk='scan').tags\n"
        f"{walk}"
        "    rss = next(int(line.split()[1]) for line in open('/proc/self/status')\n"
        "               if line.startswith('VmHWM:'))\n"
        "    print(seen, rss)\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    seen, rss_kib = out.split()
    assert int(seen) == count, f"{read} saw {seen} of {count} members"
    return round(int(rss_kib) / 1024, 1)


async def journal_of_pipelined(redis: Redis, count: int) -> None:
    """A large journal, fast: one model save, then transactions of 1,000 adds each."""
    await redis.flushdb()
    await ledgerset.init(redis=redis, journal=StreamJournal())
    model = BenchArticle()
    await model.asave()
    values = members(count - 1)
    for start in range(0, len(values), 1000):
        async with model.apipeline():
            for value in values[start : start + 1000]:
                model.tags.add(value)
    await ledgerset.init(redis=redis)


def plot(rows: list[Row], references: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    shown = rows + references
    names = [row.name if row in rows else f"({row.name})" for row in shown]
    medians = [row.median for row in shown]
    errors = [[row.median - row.low for row in shown], [row.high - row.median for row in shown]]
    colors = ["tab:green" if row.met else "tab:red" for row in rows]
    colors += ["tab:gray"] * len(references)
    ax.bar(names, medians, yerr=errors, color=colors, capsize=4)
    ax.tick_params(axis="x", labelsize=8)
    for index, row in enumerate(rows):
        ax.hlines(row.bar.limit, index - 0.4, index + 0.4, colors="black", linestyles="dashed")
    ax.set_ylabel("ratio ledgerset / raw redis-py (replay: throughput)")
    ax.set_title("median ratio per row (whiskers: min..max); dashed: its bar; grey: a reference")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


ROWS = ("immediate", "journaled", "transaction", "big-read", "replay", "logging-off")


async def main_async(
    quick: bool, output: Path, plot_path: Path | None, only: set[str] | None = None
) -> int:
    sizes = Sizes(quick)
    wanted = only or set(ROWS)
    async with EmbeddedServer() as server:
        redis = Redis.from_url(server.url)
        target = Redis.from_url(server.url.rsplit("/", 1)[0] + "/1")
        runs = {
            "immediate": lambda: row_immediate(redis, sizes, journal=False),
            "journaled": lambda: row_immediate(redis, sizes, journal=True),
            "transaction": lambda: row_transaction(redis, sizes),
            "big-read": lambda: row_big_read(redis, sizes),
            "replay": lambda: row_replay(redis, target, sizes),
            "logging-off": lambda: row_logging_off(redis, sizes),
        }
        rows = [await runs[name]() for name in ROWS if name in wanted]
        references = [await reference_hand_decoding(redis, sizes)] if "big-read" in wanted else []
        full = only is None
        scaling = await amembers_scaling(redis, sizes) if full else {}
        big_replay = (
            await replay_scale(server.url, server.url.rsplit("/", 1)[0] + "/1", sizes.replay_scale)
            if full
            else {}
        )
        big_scan = await scan_scale(server.url, sizes.scan_scale) if full else {}
        await redis.aclose()
        await target.aclose()
    for row in rows + references:
        verdict = f"bar {row.bar}  {'ok' if row.met else 'MISSED'}" if row in rows else "reference"
        print(
            f"{row.name:<16} median {row.median:6.3f}  (min {row.low:.3f} .. max {row.high:.3f},"
            f" {row.rounds} rounds)  {verdict}   {row.workload}"
        )
    if not full:
        return 0 if all(row.met for row in rows) else 1  # a partial run writes no results
    print("amembers() seconds by size:", {size: round(t, 4) for size, t in scaling.items()})
    print("replay at scale:", big_replay)
    print("peak RSS (MiB) of aiter() and amembers() by set size:", big_scan)
    results = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "quick": quick,
        "rows": [{**asdict(row), "bar": str(row.bar), "met": row.met} for row in rows],
        "references": [{**asdict(row), "bar": None} for row in references],
        "amembers_seconds": scaling,
        "replay_scale": big_replay,
        "scan_scale": big_scan,
        "benchmark_peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    output.write_text(json.dumps(results, indent=2) + "\n")
    if plot_path is not None:
        plot(rows, references, plot_path)
    return 0 if all(row.met for row in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--only", action="append", choices=ROWS, help="run only this row (repeatable; no files)"
    )
    args = parser.parse_args(argv)
    plot_path = None if args.no_plot else PLOT
    only = set(args.only) if args.only else None
    return asyncio.run(main_async(args.quick, args.output, plot_path, only))


if __name__ == "__main__":
    sys.exit(main())
