"""The benchmark script runs end to end at tiny sizes, so it cannot rot (no timing is asserted);
and its floor sends ledgerset's own bytes, doing ledgerset's own work."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

import ledgerset
from benchmarks.data import BenchArticle, encoded
from benchmarks.floor import MinimalClient, capture_requests
from ledgerset.commands.program import SOURCE

ROOT = Path(__file__).resolve().parent.parent

#: Issue 16's table: every row and its bar, in the order the script reports them.
BARS = {
    "immediate vs floor": "<= 1.80",
    "immediate call": "<= 0.70",
    "journaled call": "<= 1.00",
    "chained journaled call": "<= 1.15",
    "transaction": "<= 0.80",
    "amove": "<= 1.20",
    "big read": "<= 1.40",
    "big read vs by hand": "<= 0.70",
    "replay": ">= 0.80",
    "logging off": "<= 1.02",
    "immediate vs floor (uvloop)": "<= 1.80",
    "immediate call (uvloop)": "<= 0.70",
    "cluster immediate call": "<= 1.00",
    "cluster journaled call": "<= 1.30",
}


def test_benchmarks_run_quick(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-plot", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: a bar missed, which tiny sizes may do
    results = json.loads(output.read_text())
    assert {row["name"]: row["bar"] for row in results["rows"]} == BARS
    assert [row["name"] for row in results["rows"]] == list(BARS)
    assert all(math.isfinite(row["median"]) and row["median"] > 0 for row in results["rows"])
    assert all(row["low"] <= row["median"] <= row["high"] for row in results["rows"])
    assert [row["name"] for row in results["references"]] == [
        "floor vs redis-py",
        "journaled floor vs redis-py",
        "minimal SADD vs redis-py",
        "decoding by hand",
        "cluster floor vs RedisCluster",
    ]
    assert results["references"][0]["bar"] is None
    assert results["replay_scale"]["entries"] == 500
    assert results["replay_scale"]["peak_rss_mib"] > 0
    assert results["snapshot_scale"]["models"] == 500
    assert results["snapshot_scale"]["peak_rss_mib"] > 0
    from_snapshot = results["replay_from_snapshot"]
    assert from_snapshot["from_snapshot"]["entries"] < from_snapshot["from_full_history"]["entries"]
    amembers = results["amembers_scale"]
    assert set(amembers) == {"1,000", "2,000"}
    for size, figure in amembers.items():
        assert figure["members"] == int(size.replace(",", ""))
        assert figure["ms"] > 0 and figure["ms_first_read"] > 0
        assert figure["peak_rss_mib"] >= figure["rss_before_mib"] > 0
    walked = results["aiter_scale"]
    assert set(walked) == {"1,000", "2,000"}
    assert all(figure["peak_rss_mib"] >= figure["rss_before_mib"] > 0 for figure in walked.values())
    concurrent = results["concurrent_aadd"]
    assert (concurrent["tasks"], concurrent["calls"]) == (64, 64 * 5)
    assert concurrent["ledgerset_calls_per_s"] > 0 and concurrent["raw_calls_per_s"] > 0


async def test_the_floor_sends_ledgersets_own_bytes_and_does_its_work(
    redis: Redis, redis_url: str
) -> None:
    values = ["a", "b", "c"]
    requests = await capture_requests(redis_url, "floor", values)
    await ledgerset.init(redis=redis)
    assert len(requests) == 3
    assert all(request.startswith(b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n") for request in requests)
    sha = (await redis.script_load(SOURCE)).encode()
    assert all(sha in request for request in requests)

    model = BenchArticle(pk="floor")
    await redis.flushdb()
    await model.asave()
    key = model.tags._require_binding().key
    kwargs = redis.connection_pool.connection_kwargs
    client = await MinimalClient.connect(kwargs["host"], kwargs["port"])
    try:
        replies = [await client.call(request) for request in requests]
    finally:
        await client.aclose()
    assert all(reply[0] == 1 for reply in replies)
    assert await redis.smembers(key) == set(encoded(values))
