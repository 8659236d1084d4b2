"""Side-by-side benchmarks: ledgerset against raw redis-py, and against the floor, doing the same
Redis work.

Every row times a ledgerset workload (A) and its twin (B) on the same embedded server and the same
client, in A B B A rounds (``rounds.py``), and reports the median of the per-round ratios A/B (a
time ratio, or for replay a throughput ratio) with its spread (min..max), against its bar. The
twins are raw redis-py doing the same Redis work, and for the first row the floor (``floor.py``):
ledgerset's own request bytes sent by the least client asyncio allows. The immediate rows run a
second time under uvloop, which this script (the application) installs, never ledgerset. The
scale figures (``scale.py``) come last.

    python -m benchmarks                 # everything; writes benchmarks/results.json and the plot
    python -m benchmarks --only floor    # one row (repeatable), nothing written
    python -m benchmarks --scale         # only the scale figures, nothing written
    python -m benchmarks --quick         # tiny sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import platform
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sized
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

import ledgerset
from benchmarks import scale
from benchmarks.data import (
    BenchArticle,
    encoded,
    filled,
    fresh_model,
    journal_of,
    members,
)
from benchmarks.floor import MinimalClient, capture_cluster_requests, capture_requests
from benchmarks.rounds import Bar, Row, Timed, interleave
from ledgerset import StreamJournal
from ledgerset.commands import dispatcher, wire
from ledgerset.embedded import EmbeddedCluster, EmbeddedServer
from ledgerset.journal import replay

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.json"
PLOT = ROOT / "docs" / "img" / "benchmarks.png"

#: The pk of the model the floor row writes: fixed, so ledgerset's captured request bytes name
#: the same keys as the calls they are compared with.
FLOOR_PK = "floor"


class Sizes:
    def __init__(self, quick: bool) -> None:
        self.calls = 50 if quick else 1000
        self.big = 2_000 if quick else 100_000
        self.replay = 200 if quick else 20_000
        self.rounds = 3 if quick else 31  # the VM is noisy: many short rounds, not a few long ones
        self.scaling = (1_000, 2_000) if quick else (10_000, 100_000, 1_000_000)
        self.scaling_repeats = 1 if quick else 3  # child processes per size
        self.replay_scale = 500 if quick else 1_000_000
        self.per_task = 5 if quick else 200  # calls per task, 64 tasks at once
        self.concurrent_rounds = 3 if quick else 11
        self.snapshot_models = 500 if quick else 100_000


async def timed_aadds(
    redis: Redis, values: list[str], clock: Callable[[], float], pk: str | None = None
) -> float:
    """How long, by ``clock``, one ``aadd`` per value takes, awaited one after another, on a
    fresh model."""
    model = await fresh_model(redis, pk)
    aadd = model.tags.aadd
    start = clock()
    for value in values:
        await aadd(value)
    return clock() - start


async def timed_sadds(redis: Redis | RedisCluster, raw_values: list[bytes]) -> float:
    """How long raw redis-py ``SADD`` of each value takes, awaited one after another, into a
    set of an empty database: the twin of the rows against redis-py."""
    await redis.flushdb()
    sadd = redis.sadd
    start = time.perf_counter()
    for value in raw_values:
        await sadd("raw:set", value)
    return time.perf_counter() - start


async def row_floor(redis: Redis, url: str, sizes: Sizes, label: str = "") -> Row:
    values = members(sizes.calls)
    requests = await capture_requests(url, FLOOR_PK, values)
    await ledgerset.init(redis=redis)
    kwargs = redis.connection_pool.connection_kwargs
    client = await MinimalClient.connect(kwargs["host"], kwargs["port"])
    key = BenchArticle(pk=FLOOR_PK).tags._require_binding().key
    expected = set(encoded(values))

    async def lib() -> float:
        await ledgerset.init(redis=redis)
        return await timed_aadds(redis, values, time.perf_counter, FLOOR_PK)

    async def floor() -> float:
        await fresh_model(redis, FLOOR_PK)
        elapsed, replies = await client.timed(requests)
        # The same bytes must have done the same work: every program ran, every member landed.
        refused = [reply for reply in replies if not (isinstance(reply, list) and reply[0] == 1)]
        if refused or await redis.smembers(key) != expected:
            raise RuntimeError(f"the floor's replies are not ledgerset's: {refused[:3]}")
        return elapsed

    try:
        return await interleave(
            f"immediate vs floor{label}",
            f"{sizes.calls:,} sequential aadd vs their own request bytes sent by a minimal"
            " client (asyncio streams + hiredis)",
            lib,
            floor,
            sizes.rounds,
            bar=Bar(1.8),
        )
    finally:
        await client.aclose()


async def references_of_the_floor(redis: Redis, url: str, sizes: Sizes) -> list[Row]:
    """Not rows of the issue: how far below raw redis-py ``SADD`` any asyncio client gets on
    this machine. The floor (ledgerset's own request bytes, sent by the minimal client) ÷ redis-py
    ``SADD`` bounds the immediate row from below: no client sending those bytes beats it. A
    minimal client's ``SADD`` ÷ redis-py's bounds every row against ``SADD``: it is a round trip
    with nothing around it, so a bar under it is out of reach of any asyncio client here. The
    journaled floor (the requests of journaled ``aadd``) bounds the journaled row the same way."""
    values = members(sizes.calls)
    raw_values = encoded(values)
    requests = await capture_requests(url, FLOOR_PK, values)
    journaled = await capture_requests(url, FLOOR_PK, values, StreamJournal())
    await ledgerset.init(redis=redis)
    kwargs = redis.connection_pool.connection_kwargs
    client = await MinimalClient.connect(kwargs["host"], kwargs["port"])
    sadds = [wire.pack(("SADD", "raw:set", value)) for value in raw_values]

    async def minimal(prepare: Callable[[], Awaitable[object]], sent: list[bytes]) -> float:
        await prepare()
        elapsed, _ = await client.timed(sent)
        return elapsed

    async def raw() -> float:
        return await timed_sadds(redis, raw_values)

    fresh = lambda: fresh_model(redis, FLOOR_PK)  # noqa: E731
    # name, what the minimal client sends, how each round starts, the requests
    sides: list[tuple[str, str, Callable[[], Awaitable[object]], list[bytes]]] = [
        ("floor vs redis-py", "of ledgerset's aadd requests", fresh, requests),
        ("journaled floor vs redis-py", "of ledgerset's journaled aadd requests", fresh, journaled),
        ("minimal SADD vs redis-py", "SADD", redis.flushdb, sadds),
    ]
    try:
        return [
            await interleave(
                name,
                f"{sizes.calls:,} {what} sent by the minimal client vs redis-py SADD",
                functools.partial(minimal, prepare, sent),
                raw,
                sizes.rounds,
            )
            for name, what, prepare, sent in sides
        ]
    finally:
        await client.aclose()


async def row_immediate(redis: Redis, sizes: Sizes, journal: bool, label: str = "") -> Row:
    values = members(sizes.calls)
    raw_values = encoded(values)

    async def lib() -> float:
        await ledgerset.init(redis=redis, journal=StreamJournal() if journal else None)
        return await timed_aadds(redis, values, time.perf_counter)

    async def raw() -> float:
        return await timed_sadds(redis, raw_values)

    if journal:
        return await interleave(
            f"journaled call{label}",
            f"{sizes.calls:,} sequential aadd with a StreamJournal vs plain SADD",
            lib,
            raw,
            sizes.rounds,
            bar=Bar(1.00),
        )
    return await interleave(
        f"immediate call{label}",
        f"{sizes.calls:,} sequential aadd of one member vs SADD",
        lib,
        raw,
        sizes.rounds,
        bar=Bar(0.70),
    )


async def row_chained(redis: Redis, sizes: Sizes) -> Row:
    values = members(sizes.calls)

    async def chained() -> float:
        await ledgerset.init(redis=redis, journal=StreamJournal(chain=True))
        return await timed_aadds(redis, values, time.perf_counter)

    async def plain() -> float:
        await ledgerset.init(redis=redis, journal=StreamJournal())
        return await timed_aadds(redis, values, time.perf_counter)

    return await interleave(
        "chained journaled call",
        f"{sizes.calls:,} sequential aadd with StreamJournal(chain=True) vs StreamJournal()",
        chained,
        plain,
        sizes.rounds,
        bar=Bar(1.15),
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
        lib,
        raw,
        sizes.rounds,
        bar=Bar(0.80),
    )


async def row_amove(redis: Redis, sizes: Sizes) -> Row:
    values = members(sizes.calls)

    async def moves() -> float:
        await ledgerset.init(redis=redis)
        source = await fresh_model(redis)
        await source.tags.aadd_many(values)
        destination = await BenchArticle().asave()
        amove, to = source.tags.amove, destination.tags
        start = time.perf_counter()
        for value in values:
            await amove(value, to)
        elapsed = time.perf_counter() - start
        if await to.asize() != len(values):
            raise RuntimeError("not every member moved")
        return elapsed

    async def adds() -> float:
        await ledgerset.init(redis=redis)
        return await timed_aadds(redis, values, time.perf_counter)

    return await interleave(
        "amove",
        f"{sizes.calls:,} sequential amove between two models vs {sizes.calls:,} aadd",
        moves,
        adds,
        sizes.rounds,
        bar=Bar(1.20),
    )


def timed_read(read: Callable[[], Awaitable[Sized]], count: int) -> Timed:
    """A side of a read row: the seconds ``read()`` takes; it must return ``count`` members."""

    async def run() -> float:
        start = time.perf_counter()
        result = await read()
        elapsed = time.perf_counter() - start
        assert len(result) == count
        return elapsed

    return run


def decoding_by_hand(redis: Redis, key: str) -> Callable[[], Awaitable[set[str]]]:
    """What a redis-py user writes to get the same decoded members: raw ``SMEMBERS``, one
    ``orjson.loads`` of the joined members, then a ``set``; no checks, no mirror."""

    async def read() -> set[str]:
        raws: set[bytes] = await redis.smembers(key)  # type: ignore[assignment]
        return set(orjson.loads(b"[" + b",".join(raws) + b"]"))

    return read


async def row_big_read(redis: Redis, sizes: Sizes) -> Row:
    model = await filled(redis, sizes.big)
    key = model.tags._require_binding().key
    return await interleave(
        "big read",
        f"amembers() of a {sizes.big:,}-member RedisSet[str] (decoded) vs SMEMBERS (bytes)",
        timed_read(model.tags.amembers, sizes.big),
        timed_read(lambda: redis.smembers(key), sizes.big),
        sizes.rounds,
        bar=Bar(1.40),
    )


async def row_big_read_by_hand(redis: Redis, sizes: Sizes) -> Row:
    model = await filled(redis, sizes.big)
    key = model.tags._require_binding().key
    return await interleave(
        "big read vs by hand",
        f"amembers() of {sizes.big:,} members vs SMEMBERS + orjson.loads + set (the same"
        " decoded members by hand)",
        timed_read(model.tags.amembers, sizes.big),
        timed_read(decoding_by_hand(redis, key), sizes.big),
        sizes.rounds,
        bar=Bar(0.70),
    )


async def reference_hand_decoding(redis: Redis, sizes: Sizes) -> Row:
    """Not a row of the issue: what a redis-py user pays over raw ``SMEMBERS`` to get the same
    decoded members by hand. ``big read`` is judged against raw bytes; this says how much of
    its gap any decoding client pays."""
    model = await filled(redis, sizes.big)
    key = model.tags._require_binding().key
    return await interleave(
        "decoding by hand",
        f"SMEMBERS of {sizes.big:,} members + orjson.loads + set (no checks) vs SMEMBERS (bytes)",
        timed_read(decoding_by_hand(redis, key), sizes.big),
        timed_read(lambda: redis.smembers(key), sizes.big),
        sizes.rounds,
    )


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
        return elapsed / entries

    async def raw() -> float:
        await target.flushdb()
        start = time.perf_counter()
        for offset in range(0, entries, 500):
            async with target.pipeline(transaction=False) as pipe:
                for value in raw_values[offset : offset + 500]:
                    pipe.sadd("raw:set", value)
                await pipe.execute()
        return (time.perf_counter() - start) / entries

    return await interleave(
        "replay",
        f"entries/s replaying {entries:,} entries vs pipelined raw SADD of as many members",
        lib,
        raw,
        max(3, sizes.rounds // 3),
        bar=Bar(0.80, higher_is_better=True),
        throughput=True,
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
        filtered,
        without,
        sizes.rounds,
        bar=Bar(1.02),
    )


async def row_cluster(redis: RedisCluster, sizes: Sizes, journal: bool) -> Row:
    """The immediate (or journaled) call on a 3-primary cluster, against ``RedisCluster.sadd``
    (redis-py's own routing) on the same cluster."""
    values = members(sizes.calls)
    raw_values = encoded(values)

    async def lib() -> float:
        await ledgerset.init(redis=redis, journal=StreamJournal() if journal else None)
        return await timed_aadds(redis, values, time.perf_counter)  # type: ignore[arg-type]

    async def raw() -> float:
        return await timed_sadds(redis, raw_values)

    name = "cluster journaled call" if journal else "cluster immediate call"
    what = "with a StreamJournal " if journal else ""
    return await interleave(
        name,
        f"{sizes.calls:,} sequential aadd {what}on a 3-primary cluster vs RedisCluster.sadd",
        lib,
        raw,
        sizes.rounds,
        bar=Bar(1.30 if journal else 1.00),
    )


async def reference_cluster_floor(redis: RedisCluster, sizes: Sizes) -> Row:
    """Not a row of the issue: the floor on the cluster, ledgerset's own ``aadd`` requests sent
    by the minimal client straight to the slot's primary, against ``RedisCluster.sadd``: no
    client sending those bytes beats it, so it bounds the cluster rows from below."""
    values = members(sizes.calls)
    raw_values = encoded(values)
    await ledgerset.init(redis=redis)
    requests, host, port = await capture_cluster_requests(redis, FLOOR_PK, values)
    client = await MinimalClient.connect(host, port)

    async def floor() -> float:
        await fresh_model(redis, FLOOR_PK)  # type: ignore[arg-type]
        elapsed, _ = await client.timed(requests)
        return elapsed

    try:
        return await interleave(
            "cluster floor vs RedisCluster",
            f"{sizes.calls:,} of ledgerset's aadd requests sent by the minimal client to the"
            " slot's primary vs RedisCluster.sadd",
            floor,
            lambda: timed_sadds(redis, raw_values),
            sizes.rounds,
        )
    finally:
        await client.aclose()


async def cluster_rows(sizes: Sizes) -> tuple[list[Row], list[Row]]:
    """The cluster rows and their reference, on an embedded cluster of their own."""
    async with EmbeddedCluster() as cluster:
        redis = RedisCluster.from_url(cluster.url)
        try:
            rows = [
                await row_cluster(redis, sizes, journal=False),
                await row_cluster(redis, sizes, journal=True),
            ]
            references = [await reference_cluster_floor(redis, sizes)]
            await ledgerset.aclose()
        finally:
            await redis.aclose()
    return rows, references


def _never(level: int) -> bool:
    return False


#: The rows, in the order they run and are reported; ``uvloop`` is the immediate rows again.
ROWS = (
    "floor",
    "immediate",
    "journaled",
    "chained",
    "transaction",
    "amove",
    "big-read",
    "big-read-by-hand",
    "replay",
    "logging-off",
    "uvloop",
    "cluster",
)


async def default_loop_rows(
    url: str, target_url: str, sizes: Sizes, wanted: set[str]
) -> tuple[list[Row], list[Row]]:
    """The rows in ``wanted`` but uvloop's, on asyncio's own event loop; and the reference."""
    redis, target = Redis.from_url(url), Redis.from_url(target_url)
    runs = {
        "floor": lambda: row_floor(redis, url, sizes),
        "immediate": lambda: row_immediate(redis, sizes, journal=False),
        "journaled": lambda: row_immediate(redis, sizes, journal=True),
        "chained": lambda: row_chained(redis, sizes),
        "transaction": lambda: row_transaction(redis, sizes),
        "amove": lambda: row_amove(redis, sizes),
        "big-read": lambda: row_big_read(redis, sizes),
        "big-read-by-hand": lambda: row_big_read_by_hand(redis, sizes),
        "replay": lambda: row_replay(redis, target, sizes),
        "logging-off": lambda: row_logging_off(redis, sizes),
    }
    try:
        rows = [await run() for name, run in runs.items() if name in wanted]
        references = []
        if "floor" in wanted:
            references += await references_of_the_floor(redis, url, sizes)
        if "big-read" in wanted:
            references.append(await reference_hand_decoding(redis, sizes))
        await redis.flushdb()
        await target.flushdb()
    finally:
        await redis.aclose()
        await target.aclose()
    return rows, references


async def uvloop_rows(url: str, sizes: Sizes) -> list[Row]:
    """The immediate rows again, on the uvloop loop the caller runs this in."""
    import uvloop

    loop = asyncio.get_running_loop()
    if not isinstance(loop, uvloop.Loop):
        raise RuntimeError(f"uvloop_rows runs under uvloop.run, not on {type(loop).__name__}")
    redis = Redis.from_url(url)
    try:
        rows = [
            await row_floor(redis, url, sizes, " (uvloop)"),
            await row_immediate(redis, sizes, journal=False, label=" (uvloop)"),
        ]
        await redis.flushdb()
    finally:
        await redis.aclose()
    return rows


def run_under_uvloop(url: str, sizes: Sizes) -> list[Row]:
    try:
        import uvloop
    except ImportError:
        raise SystemExit(
            "the uvloop rows need uvloop: pip install -e '.[dev]' (or '.[uvloop]'),"
            " or leave them out with --only"
        ) from None
    return uvloop.run(uvloop_rows(url, sizes))


def plot(rows: list[Row], references: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    shown = rows + references
    names = [row.name if row.bar is not None else f"({row.name})" for row in shown]
    medians = [row.median for row in shown]
    errors = [[row.median - row.low for row in shown], [row.high - row.median for row in shown]]
    colors = [
        "tab:gray" if row.bar is None else "tab:green" if row.met else "tab:red" for row in shown
    ]
    ax.bar(names, medians, yerr=errors, color=colors, capsize=4)
    ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    for index, row in enumerate(shown):
        if row.bar is not None:
            ax.hlines(row.bar.limit, index - 0.4, index + 0.4, colors="black", linestyles="dashed")
    ax.set_ylabel("ratio ledgerset / its twin (replay: throughput)")
    ax.set_title("median ratio per row (whiskers: min..max); dashed: its bar; grey: a reference")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def row_result(row: Row) -> dict[str, Any]:
    return {**asdict(row), "bar": None if row.bar is None else str(row.bar), "met": row.met}


def report(rows: list[Row], references: list[Row], figures: dict[str, Any] | None) -> None:
    for row in rows + references:
        verdict = (
            "reference" if row.bar is None else f"bar {row.bar}  {'ok' if row.met else 'MISSED'}"
        )
        print(
            f"{row.name:<28} median {row.median:6.3f}  (min {row.low:.3f} .. max {row.high:.3f},"
            f" {row.rounds} rounds)  {verdict}   {row.workload}"
        )
    if figures is not None:
        for size, figure in figures["amembers"].items():
            print(f"amembers() of {size}: {figure}")
        for size, figure in figures["aiter"].items():
            print(f"aiter() over {size}: {figure}")
        print("64 concurrent aadd:", figures["concurrent_aadd"])
        print("replay at scale:", figures["replay"])
        print("snapshot at scale:", figures["snapshot"])
        print("replay from a snapshot:", figures["replay_from_snapshot"])


async def server_version(url: str) -> str:
    redis = Redis.from_url(url)
    try:
        info = await redis.info("server")
    finally:
        await redis.aclose()
    name = "valkey" if "valkey_version" in info else "redis"
    return f"{name} {info.get('valkey_version', info['redis_version'])}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--only", action="append", choices=ROWS, help="run only this row (repeatable; no files)"
    )
    parser.add_argument(
        "--scale", action="store_true", help="run only the scale figures (no files)"
    )
    args = parser.parse_args(argv)
    sizes = Sizes(args.quick)
    full = not args.only and not args.scale
    wanted = set(args.only or ()) if not full else set(ROWS)
    with EmbeddedServer() as server:
        url = server.url
        target_url = url.rsplit("/", 1)[0] + "/1"
        rows, references = asyncio.run(default_loop_rows(url, target_url, sizes, wanted))
        if "uvloop" in wanted:
            rows += run_under_uvloop(url, sizes)
        if "cluster" in wanted:
            cluster, cluster_references = asyncio.run(cluster_rows(sizes))
            rows += cluster
            references += cluster_references
        figures = None
        if full or args.scale:
            figures = asyncio.run(
                scale.figures(
                    url,
                    target_url,
                    sizes.scaling,
                    sizes.replay_scale,
                    sizes.per_task,
                    sizes.concurrent_rounds,
                    sizes.scaling_repeats,
                    sizes.snapshot_models,
                    sizes.replay,
                )
            )
        server_name = asyncio.run(server_version(url))
    report(rows, references, figures)
    met = 0 if all(row.met for row in rows) else 1
    if not full or figures is None:
        return met  # a partial run writes no results
    results = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "server": server_name,
        },
        "quick": args.quick,
        "rows": [row_result(row) for row in rows],
        "references": [row_result(row) for row in references],
        "amembers_scale": figures["amembers"],
        "aiter_scale": figures["aiter"],
        "concurrent_aadd": figures["concurrent_aadd"],
        "replay_scale": figures["replay"],
        "snapshot_scale": figures["snapshot"],
        "replay_from_snapshot": figures["replay_from_snapshot"],
        "benchmark_peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_plot:
        plot(rows, references, PLOT)
    return met


if __name__ == "__main__":
    sys.exit(main())
