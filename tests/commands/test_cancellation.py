"""Cancelling a task in a ledgerset call ends it with ``CancelledError``, at whatever point.

On Python 3.11, redis-py's own send path (``asyncio.wait_for`` around each write) returns a
finished write's result to a task that was cancelled meanwhile, so the cancellation is lost and
the task runs on. ledgerset's calls go through its wire, which has no such step. Each test runs a
call that never ends by itself, cancels it after 0, 1, 2, ... turns of the event loop, thousands
of times, and requires every cancellation to end the task (within a bound) and every later call
on the same client to get its own reply.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field
from redis.asyncio import Connection, Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal
from ledgerset.commands import wire
from ledgerset.journal import replay
from ledgerset.journal.reader import PAGE, read_entries

#: How long a cancelled task may take to end: far more than a page or a batch.
BOUND_S = 5.0
#: Cancellation points: 0 to TURNS - 1 turns of the loop after the call started.
TURNS = 40


async def cancel_everywhere(
    client: Redis, forever: Callable[[], Awaitable[None]], trials: int
) -> None:
    """Cancel ``forever()`` after 0, 1, 2... loop turns: it must end, ``client`` stay in step."""
    for trial in range(trials):
        task = asyncio.ensure_future(forever())
        for _ in range(trial % TURNS):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=BOUND_S)
        assert done, f"trial {trial}: cancelled after {trial % TURNS} turns, the task ran on"
        assert task.cancelled(), f"trial {trial}: ended with {task.exception()!r}"
        token = b"trial-%d" % trial
        assert await wire.call(client, ("ECHO", token)) == token
        assert await client.echo(token) == token
    assert len(client.connection_pool._in_use_connections) == 0
    # A replay cancelled in the body of its `async for` leaves the reader generator suspended;
    # the loop closes such generators when they are collected. Let that happen in this test.
    gc.collect()
    await asyncio.sleep(0)  # one turn: the loop creates the closing tasks it was handed
    finalizing = asyncio.all_tasks() - {asyncio.current_task()}
    if finalizing:
        await asyncio.wait(finalizing, timeout=BOUND_S)


async def fill_journal(redis: Redis, entries: int) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    note = CancelNote()
    await note.asave()
    await note.tags.aadd_many([f"tag-{number}" for number in range(entries)])
    for number in range(entries):
        await note.tags.aadd(f"one-{number}")


class CancelNote(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def test_cancelling_read_entries_ends_the_task_at_every_point(redis: Redis) -> None:
    await fill_journal(redis, PAGE + PAGE // 2)  # two pages and a bit: the next page in flight

    async def read_forever() -> None:
        while True:
            async for _ in read_entries(redis):
                pass

    await cancel_everywhere(redis, read_forever, 800)


async def test_cancelling_a_replay_ends_the_task_at_every_point(
    redis: Redis, redis_url: str
) -> None:
    await fill_journal(redis, 300)
    target = Redis.from_url(redis_url.rsplit("/", 1)[0] + "/9")

    async def replay_forever() -> None:
        while True:
            await wire.call(target, ("FLUSHDB",))  # an empty target: a whole replay each time
            await replay(redis, target)

    try:
        await cancel_everywhere(target, replay_forever, 400)
    finally:
        await target.flushdb()
        await target.aclose()


async def test_cancelling_set_calls_ends_the_task_at_every_point(redis: Redis) -> None:
    await cancel_set_calls(redis, 1200)


class OwnSendConnection(Connection):
    """A connection class with its own ``send_packed_command``: the wire's fallback path."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        await super().send_packed_command(command, check_health)


async def test_cancelling_set_calls_on_the_fallback_path_ends_the_task_at_every_point(
    redis_url: str,
) -> None:
    client = Redis.from_url(redis_url, connection_class=OwnSendConnection)
    try:
        await cancel_set_calls(client, 600)
    finally:
        await client.aclose()


async def cancel_set_calls(redis: Redis, trials: int) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    note = CancelNote()
    await note.asave()

    async def call_forever() -> None:
        number = 0
        while True:
            await note.tags.aadd(f"tag-{number}")
            await note.tags.amembers()
            await note.tags.asize()
            number += 1

    await cancel_everywhere(redis, call_forever, trials)
    # Whatever was cancelled, the server's set and what ledgerset reads agree.
    assert await note.tags.asize() == await redis.scard(note.tags._require_binding().key)
    assert await note.tags.acontains("tag-0") is True
