"""ledgerset under uvloop: the application installs the loop; ledgerset runs on it, installs none.

The test is the application here: it runs a real journaled workload under ``uvloop.run`` and
checks the server's state and that the loop policy is the one it had before.
"""

from __future__ import annotations

import asyncio

import uvloop
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal


class UvArticle(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


def test_ledgerset_runs_on_the_uvloop_loop_the_application_installs(redis_url: str) -> None:
    policy = asyncio.get_event_loop_policy()
    many = [f"t{i}" for i in range(20_000)]  # a write too big to go out in one socket send

    async def application() -> tuple[str, set[bytes], set[str], int]:
        loop = type(asyncio.get_running_loop()).__module__
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            await ledgerset.init(redis=client, journal=StreamJournal())
            article = UvArticle(pk="uv")
            await article.asave()
            await article.tags.aadd("python")
            await article.tags.aadd_many(many)
            async with article.apipeline():
                article.tags.add("redis")
                article.tags.discard("t0")
            read = await article.tags.amembers()
            stored = await client.smembers(article.tags._require_binding().key)
            entries = int(await client.xlen("ledgerset:journal"))
            await client.flushdb()
        finally:
            await client.aclose()
        return loop, stored, read, entries

    loop, stored, read, entries = uvloop.run(application())

    assert loop.startswith("uvloop")
    expected = {"python", "redis", *many} - {"t0"}
    assert read == expected
    assert stored == {f'"{member}"'.encode() for member in expected}
    assert entries == 5  # save, add, add_many, and the transaction's two commands
    assert asyncio.get_event_loop_policy() is policy
    assert not isinstance(policy, uvloop.EventLoopPolicy)
