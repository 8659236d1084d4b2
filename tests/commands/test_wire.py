"""How ledgerset borrows connections from the application's redis-py pool.

Back-to-back calls reuse the connection the previous call used, without going back to the pool
(that round trip to the pool is a measurable part of a small command's cost); the connection goes
back to the pool as soon as the event loop turns with no call in flight, so an application that
shares a small ``BlockingConnectionPool`` with ledgerset never waits for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.exceptions import ResponseError

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet
from ledgerset.commands import wire


class WireNote(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class CountingPool(ConnectionPool):
    """A real pool that counts how often a connection is taken from it."""

    taken = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.taken += 1
        return await super().get_connection(*args, **kwargs)


async def test_back_to_back_calls_take_a_connection_from_the_pool_once(
    redis: Redis, redis_url: str
) -> None:
    pool = CountingPool.from_url(redis_url)
    client = Redis(connection_pool=pool)
    await ledgerset.init(redis=client)
    note = WireNote()
    await note.asave()
    pool.taken = 0

    for number in range(100):
        await note.tags.aadd(f"tag-{number}")
    assert await note.tags.asize() == 100

    assert pool.taken <= 1  # none if the connection asave() used was still parked, else one
    await client.aclose()


async def test_the_connection_goes_back_to_a_blocking_pool_at_the_next_loop_turn(
    redis: Redis, redis_url: str
) -> None:
    # One connection in all, and a caller who would wait 1 s for it, then fail.
    client = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=1,
                                                                   timeout=1))  # fmt: skip
    await ledgerset.init(redis=client)
    note = WireNote()
    await note.asave()

    await note.tags.aadd("first")
    assert await client.sadd("plain", "redis-py's own call") == 1  # waits for the loop to turn

    async def ledgerset_calls() -> None:
        for number in range(100):
            await note.tags.aadd(f"tag-{number}")

    async def plain_calls() -> None:
        for _ in range(100):
            await client.incr("counter")

    await asyncio.gather(ledgerset_calls(), plain_calls())
    assert await redis.scard(note.tags._require_binding().key) == 101
    assert await redis.get("counter") == b"100"
    await client.aclose()


async def test_a_connection_that_read_an_error_reply_serves_the_next_call(
    redis: Redis, redis_url: str
) -> None:
    pool = CountingPool.from_url(redis_url)
    client = Redis(connection_pool=pool)
    await client.set("text", "not a set")
    pool.taken = 0

    connection_id = await wire.call(client, ("CLIENT", "ID"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await wire.call(client, ("SADD", "text", "member"))
    assert await wire.call(client, ("SADD", "set", "member")) == 1
    assert await wire.call(client, ("SMEMBERS", "set")) == [b"member"]

    # Back to back, on the one connection: not discarded after the error, nor reconnected.
    assert await wire.call(client, ("CLIENT", "ID")) == connection_id
    assert pool.taken == 1
    await client.aclose()


def test_pack_writes_every_argument_kind_as_a_bulk_string() -> None:
    long = b"x" * 300  # beyond the preformatted headers
    assert wire.pack(["SET", b"k\r\n", 42, True, long]) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n42\r\n$1\r\n1\r\n$300\r\n" + long + b"\r\n"
    )
