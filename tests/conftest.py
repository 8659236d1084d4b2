"""Fixtures: a real server for the whole run, a clean database and a fresh ``init`` per test.

The server is a private one started by ``ledgerset.embedded`` unless ``LEDGERSET_TEST_URL`` names
an existing server; the suite FLUSHES that database before each test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

import ledgerset
from ledgerset.embedded import EmbeddedServer

Snapshot = dict[bytes, tuple[str, Any, int]]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("LEDGERSET_TEST_URL")
    if url:
        yield url
        return
    with EmbeddedServer() as server:
        yield server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    await ledgerset.init(redis=client)
    yield client
    await client.aclose()


async def take_snapshot(redis: Redis) -> Snapshot:
    """Every key of the database: its type, its whole value, and whether it has a TTL."""
    state: Snapshot = {}
    for key in sorted(await redis.keys("*")):
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


@pytest.fixture
def snapshot(redis: Redis) -> Callable[[], Awaitable[Snapshot]]:
    """``await snapshot()``: the whole database, to compare before and after a refused write."""
    return lambda: take_snapshot(redis)
