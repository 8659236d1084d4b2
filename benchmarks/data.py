"""The model every benchmark writes and reads, and the data the benchmarks fill it with.

Shared by the rows (``run.py``), the floor (``floor.py``), the scale figures (``scale.py``) and
the child processes those measure in (``probe.py``), so that every figure is about the same
model, the same members and the same journal.
"""

from __future__ import annotations

import orjson
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal

__all__ = [
    "BenchArticle",
    "encoded",
    "filled",
    "fresh_model",
    "journal_of",
    "journal_of_pipelined",
    "members",
    "models_of",
]


class BenchArticle(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def fresh_model(redis: Redis, pk: str | None = None) -> BenchArticle:
    """An empty database holding one saved, empty ``BenchArticle`` (with ``pk`` if given)."""
    await redis.flushdb()
    model = BenchArticle() if pk is None else BenchArticle(pk=pk)
    await model.asave()
    return model


def members(count: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def encoded(values: list[str]) -> list[bytes]:
    """``values`` as ledgerset stores them (JSON), for the raw redis-py side of a row."""
    return [orjson.dumps(value) for value in values]


async def filled(redis: Redis, count: int) -> BenchArticle:
    """A fresh model whose set holds ``count`` members."""
    await ledgerset.init(redis=redis)
    model = await fresh_model(redis)
    values = members(count)
    for start in range(0, count, 50_000):
        await model.tags.aadd_many(values[start : start + 50_000])
    return model


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


async def models_of(redis: Redis, count: int, per_model: int = 5) -> None:
    """``count`` saved ``BenchArticle``s of ``per_model`` tags each, fast: one real save's keys
    copied with pipelined ``HSET``/``SADD`` (no journal entries)."""
    await redis.flushdb()
    await ledgerset.init(redis=redis)
    model = BenchArticle(pk="template", tags=RedisSet(members(per_model)))
    await model.asave()
    stored = await redis.hgetall(model.key)
    tags = encoded(members(per_model))
    await redis.flushdb()
    for start in range(0, count, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for number in range(start, min(start + 5000, count)):
                pk = f"p{number}"
                pipe.hset(f"BenchArticle:{pk}", mapping={**stored, b"pk": orjson.dumps(pk)})
                pipe.sadd(f"__rapyer_special__:BenchArticle:{pk}:tags", *tags)
            await pipe.execute()


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
