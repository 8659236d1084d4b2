"""After a write of unknown outcome, ``asave()`` cannot undo it.

A TCP proxy between ledgerset's client and the suite's server lets the server run the next
``EVALSHA`` and then keeps its reply from the client: the call is cancelled, or it times out, or
its connection is cut. Each time the server did apply the write, and the caller cannot know it.
Shown against the server: the set's local copy is marked unknown, ``asave()`` (immediate or in a
transaction) raises ``UnknownMirrorError`` naming model, field and the fix and leaves the database
as it was (the removal stays), until ``amembers()`` or ``aload()`` reads the set again; then
``asave()`` works; the refusal is logged as ``command.refused`` (``mirror_unknown``). The same for
a cancelled ``apop`` (the caller never learns the member it removed) and for every set of a
cancelled transaction. A refusal, which is the server's answer, marks nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fault_proxy import DROP_AFTER, SWALLOW, FaultProxy
from pydantic import Field
from redis.asyncio import Redis
from structlog.testing import capture_logs

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    ModelNotFoundError,
    RedisSet,
    ServerUnavailableError,
    UnknownMirrorError,
)

SnapshotFn = Callable[[], Awaitable[Any]]
SOCKET_TIMEOUT_S = 1.0
BOUND_S = 10.0  # far above every timeout involved: reaching it means the call hung

pytestmark = pytest.mark.usefixtures("clean_structlog")



class UnkNote(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class UnkTally(AtomicRedisModel):
    numbers: RedisSet[int] = Field(default_factory=RedisSet)


@pytest.fixture
async def proxy(redis: Redis) -> AsyncIterator[FaultProxy]:
    """ledgerset's default client talks to the suite's server through a ``FaultProxy``."""
    options = redis.connection_pool.connection_kwargs
    fault = await FaultProxy(options.get("port", 6379)).start()
    client = Redis(host="127.0.0.1", port=fault.port, socket_timeout=SOCKET_TIMEOUT_S)
    await ledgerset.init(redis=client)
    try:
        yield fault
    finally:
        await ledgerset.init(redis=redis)
        await client.aclose()
        await fault.close()


def set_key(model: AtomicRedisModel, field: str) -> str:
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{field}"


async def interrupt(proxy: FaultProxy, how: str, call: Awaitable[object]) -> None:
    """Run ``call`` until the server has applied it, then interrupt it ``how``; it must raise."""
    task = asyncio.ensure_future(call)
    if how == "cancelled":
        proxy.fault = SWALLOW
        await asyncio.wait_for(proxy.fault_applied.wait(), BOUND_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return
    proxy.fault = SWALLOW if how == "timed out" else DROP_AFTER
    with pytest.raises(ServerUnavailableError):
        await asyncio.wait_for(task, BOUND_S)
    assert proxy.fault_applied.is_set()


async def check_asave_refused(
    model: AtomicRedisModel, field: str, command: str, snapshot: SnapshotFn
) -> None:
    """``asave()``, at once and in a transaction, is refused naming the set, changing nothing."""
    before = await snapshot()
    with capture_logs() as logs, pytest.raises(UnknownMirrorError) as caught:
        await model.asave()
    error = caught.value
    name = type(model).__name__
    assert [event for event in logs if event["event"] == "command.refused"] == [
        {
            "event": "command.refused",
            "log_level": "warning",
            "command": "model.save",
            "model": name,
            "pk": model.pk,
            "field": field,
            "key": set_key(model, field),
            "reason": "mirror_unknown",
        }
    ]
    assert (error.model, error.pk, error.field) == (name, model.pk, field)
    assert (error.key, error.command) == (set_key(model, field), command)
    message = str(error)
    assert f"{name}.{field}" in message and command in message
    assert "Nothing was written" in message
    assert f".{field}.amembers()" in message and ".aload()" in message
    with pytest.raises(UnknownMirrorError):
        async with ledgerset.transaction():
            await model.asave()
    assert await snapshot() == before


@pytest.mark.parametrize("how", ["cancelled", "timed out", "connection lost"])
async def test_asave_after_an_interrupted_aremove_cannot_undo_it(
    redis: Redis, proxy: FaultProxy, snapshot: SnapshotFn, how: str
) -> None:
    note = await UnkNote(tags={"a", "b"}).asave()
    key = set_key(note, "tags")

    await interrupt(proxy, how, note.tags.aremove("a"))

    assert await redis.smembers(key) == {b'"b"'}  # the server applied the removal
    assert note.tags == {"a", "b"}  # and the local copy never heard of it
    await check_asave_refused(note, "tags", "set.remove", snapshot)
    assert await redis.smembers(key) == {b'"b"'}  # the removal stays

    assert await note.tags.amembers() == {"b"}  # reading the set again clears the mark
    note.tags.add("c")
    await note.asave()
    assert await redis.smembers(key) == {b'"b"', b'"c"'}


async def test_a_cancelled_apop_leaves_the_mirror_unknown_until_aload(
    redis: Redis, proxy: FaultProxy, snapshot: SnapshotFn
) -> None:
    note = await UnkNote(tags={"a", "b", "c"}).asave()
    key = set_key(note, "tags")

    await interrupt(proxy, "cancelled", note.tags.apop())

    assert len(await redis.smembers(key)) == 2  # one member left the set; the caller never learns
    assert note.tags == {"a", "b", "c"}
    await check_asave_refused(note, "tags", "set.pop", snapshot)

    await note.aload()
    remaining = {member.decode().strip('"') for member in await redis.smembers(key)}
    assert note.tags == remaining
    await note.asave()
    assert {member.decode().strip('"') for member in await redis.smembers(key)} == remaining


async def test_a_cancelled_commit_marks_every_set_of_the_transaction(
    redis: Redis, proxy: FaultProxy, snapshot: SnapshotFn
) -> None:
    note = await UnkNote(tags={"a", "b"}).asave()
    tally = await UnkTally(numbers={1, 2}).asave()

    async def commit() -> None:
        async with ledgerset.transaction():
            note.tags.discard("a")  # sync, queued
            await tally.numbers.aremove(1)  # async, buffered

    await interrupt(proxy, "cancelled", commit())

    assert await redis.smembers(set_key(note, "tags")) == {b'"b"'}
    assert await redis.smembers(set_key(tally, "numbers")) == {b"2"}
    await check_asave_refused(note, "tags", "set.remove", snapshot)
    await check_asave_refused(tally, "numbers", "set.remove", snapshot)

    await note.tags.amembers()
    await note.asave()  # its mark is cleared; the other set's is not
    await check_asave_refused(tally, "numbers", "set.remove", snapshot)
    await tally.numbers.amembers()
    await tally.asave()
    assert await redis.smembers(set_key(note, "tags")) == {b'"b"'}
    assert await redis.smembers(set_key(tally, "numbers")) == {b"2"}


async def test_a_refused_write_is_a_known_outcome_and_marks_nothing(redis: Redis) -> None:
    note = UnkNote(tags={"a"})  # never saved: the server refuses a set write
    with pytest.raises(ModelNotFoundError):
        await note.tags.aremove("a")
    await note.asave()
    assert await redis.smembers(set_key(note, "tags")) == {b'"a"'}


async def test_an_interrupted_amove_leaves_both_mirrors_and_versions_unknown(
    redis: Redis, proxy: FaultProxy, snapshot: SnapshotFn
) -> None:
    """The move landed (the server ran it) but the caller cannot know: both sets' mirrors and
    both models' versions are unknown, so neither asave() nor asave(if_unchanged=True) can undo
    it, until the models are read again."""
    source = await UnkNote(tags={"a"}).asave()
    destination = await UnkNote().asave()
    await interrupt(proxy, "cancelled", source.tags.amove("a", destination.tags))
    assert await redis.smembers(set_key(destination, "tags")) == {b'"a"'}  # it was applied
    assert (source.version, destination.version) == (None, None)
    before = await snapshot()
    for model in (source, destination):
        with pytest.raises(UnknownMirrorError):
            await model.asave()
        with pytest.raises(ledgerset.ConflictError, match="does not know it"):
            await model.asave(if_unchanged=True)
    assert await snapshot() == before
    await source.aload()
    await destination.aload()
    assert (source.version, destination.version) == (2, 2)
    await destination.asave(if_unchanged=True)
    assert await destination.tags.amembers() == {"a"}
