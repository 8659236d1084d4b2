"""The hash chain on a cluster, and the journal functions that run on one server for now.

On a cluster each slot has its own journal stream, so each has its own chain: the head is
``keys.chain_head`` of the slot stream, which keeps its hash tag and so lives in its slot, on the
primary that appends the entries, in the same program. ``snapshot``, ``trim``, ``check_chain``
and a replay from a snapshot do not route to a cluster's slot streams yet: given a
``RedisCluster`` they refuse (``RetentionError``, reason ``cluster``), reading and writing
nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

import ledgerset
from ledgerset import AtomicRedisModel, RedisConfig, StreamJournal, journal
from ledgerset.embedded import EmbeddedCluster
from ledgerset.errors import RetentionError
from ledgerset.journal import check_chain, verify
from ledgerset.keys import chain_head, journal_stream, key_slot
from ledgerset.types import RedisSet

STREAM = "clchain"
CHAINED = StreamJournal(STREAM, chain=True)


class ClChained(AtomicRedisModel):
    Meta = RedisConfig(journal=CHAINED)
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    done: RedisSet[str] = Field(default_factory=RedisSet)


def node_client(embedded: EmbeddedCluster, slot: int) -> Redis:
    owner = embedded.owner(slot)
    return Redis(host=owner.host, port=owner.port)


async def test_each_slot_stream_has_its_own_chain_in_its_own_slot(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    await ledgerset.init(redis=redis)
    pks = ["a1", "b2", "c3"]
    for pk in pks:
        doc = await ClChained(pk=pk, tags={"x", "y"}).asave()  # the general path
        await doc.tags.aadd("z")  # the add's fast path
        assert await doc.tags.amove("x", doc.done)  # the move's fast path
        async with doc.apipeline():  # two entries in one program
            await doc.tags.aadd("w")
            await doc.aupdate(title="renamed")
    for pk in pks:
        slot = key_slot(f"ClChained:{pk}")
        stream = journal_stream(STREAM, slot)
        head = chain_head(stream)
        assert key_slot(head) == slot == key_slot(stream)
        owner = node_client(embedded_cluster, slot)
        try:
            entries = await owner.xrange(stream)
            assert [fields[b"n"] for _, fields in entries] == [b"1", b"2", b"3", b"4", b"5"]
            assert (await owner.hgetall(head))[b"id"] == entries[-1][0]
            report = await check_chain(owner, journal=StreamJournal(stream, chain=True))
            assert report.ok, report.message
            assert report.entries == 5
        finally:
            await owner.aclose()


@pytest.mark.parametrize(
    ("function", "call"),
    [
        ("snapshot", lambda redis: journal.snapshot(redis, CHAINED)),
        ("trim", lambda redis: journal.trim(redis, CHAINED)),
        ("check_chain", lambda redis: journal.check_chain(redis, CHAINED)),
    ],
)
async def test_snapshot_trim_and_check_chain_refuse_a_cluster(
    redis: RedisCluster, function: str, call: Callable[[Any], Awaitable[object]]
) -> None:
    await ledgerset.init(redis=redis)
    await ClChained(pk="a1", tags={"x"}).asave()
    before = await redis.xlen(journal_stream(STREAM, key_slot("ClChained:a1")))

    with pytest.raises(RetentionError) as refused:
        await call(redis)

    assert refused.value.reason == "cluster"
    assert f"{function}() of journal {STREAM!r}" in str(refused.value)
    assert "runs on one server for now" in str(refused.value)
    assert await redis.xlen(journal_stream(STREAM, key_slot("ClChained:a1"))) == before


async def test_a_replay_from_a_snapshot_of_a_cluster_is_refused(
    redis: RedisCluster, target: Redis
) -> None:
    await ledgerset.init(redis=redis)
    await ClChained(pk="a1", tags={"x"}).asave()

    with pytest.raises(RetentionError) as refused:
        await journal.replay(redis, target, STREAM, from_snapshot=True)

    assert refused.value.reason == "cluster"
    assert "replay(from_snapshot=True)" in str(refused.value)
    assert await target.dbsize() == 0


class ClSnapped(AtomicRedisModel):
    Meta = RedisConfig(journal=StreamJournal("clsnap"))
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def test_a_trimmed_journal_of_one_server_replays_from_its_snapshot_into_a_cluster(
    redis: RedisCluster, target: Redis
) -> None:
    source = target  # database 1 of the run's single server: where this journal is written
    await ledgerset.init(redis=source)
    docs = [await ClSnapped(pk=pk, tags={"a"}).asave() for pk in ["a1", "b2", "c3", "d4"]]
    for doc in docs:
        await doc.tags.aadd("b")
    await docs[0].adelete()
    taken = await journal.snapshot(source, "clsnap")
    await docs[1].tags.aremove("a")
    await docs[2].aupdate(title="after")
    await ClSnapped(pk="e5").asave()
    trimmed = await journal.trim(source, "clsnap")
    assert trimmed.removed > 0

    report = await journal.replay(source, redis, "clsnap")

    assert report.from_snapshot == taken.id
    assert await verify.compare(source, redis, {"ClSnapped"}) == []
    again = await journal.replay(source, redis, "clsnap")  # a rerun applies nothing new
    assert again.resumed_after is not None and again.applied == 0
    assert await verify.compare(source, redis, {"ClSnapped"}) == []
