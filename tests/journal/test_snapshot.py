"""Snapshots and trims: a journal snapshotted under concurrent writers and trimmed still rebuilds
exactly the data a replay of its whole history rebuilds, and its chain still checks.

Shown through the raw stream (the snapshot's entries, writers' entries between them), replay into
empty databases compared key by key with the live data (``verify.compare``, what ``ledgerset
verify`` does) and with each other, ``check_chain``, and trim's refusals, each leaving the
database as it was.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import Snapshot

from ledgerset import (
    AtomicRedisModel,
    ModelNotFoundError,
    RedisConfig,
    RedisSet,
    StreamJournal,
    journal,
)
from ledgerset.errors import RetentionError
from ledgerset.journal import check_chain, replay, trim
from ledgerset.journal.verify import compare

STREAM = "snapped"
CHAINED = StreamJournal(STREAM, chain=True)
PLAIN = StreamJournal("plain")


class SnDoc(AtomicRedisModel):
    Meta = RedisConfig(journal=CHAINED)
    title: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    nums: RedisSet[int] | None = None


class SnTimed(AtomicRedisModel):
    Meta = RedisConfig(journal=CHAINED, ttl=3600)
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class SnPlain(AtomicRedisModel):
    Meta = RedisConfig(journal=PLAIN)
    tags: RedisSet[str] = Field(default_factory=RedisSet)


@pytest.fixture
async def third(redis_url: str) -> AsyncIterator[Redis]:
    """Database 2 of the same server, empty: a second replay target."""
    client = Redis.from_url(redis_url.replace("/0", "/2"))
    await client.flushdb()
    yield client
    await client.aclose()


async def writer(seed: int, operations: int) -> None:
    """Random writes on 30 shared models: saves, set writes, updates, deletes, transactions."""
    rng = random.Random(seed)
    mine: dict[str, SnDoc | SnTimed] = {}
    for _ in range(operations):
        pk = f"p{rng.randrange(30)}"
        doc = mine.get(pk)
        if doc is None:
            doc = mine[pk] = (SnTimed if pk.endswith("7") else SnDoc)(pk=pk)
            await doc.asave()
            continue
        choice = rng.randrange(10)
        try:
            if choice < 3:
                await doc.tags.aadd(f"t{rng.randrange(12)}")
            elif choice == 3:
                await doc.tags.aadd_many([f"t{rng.randrange(12)}" for _ in range(3)])
            elif choice == 4:
                await doc.tags.aremove(f"t{rng.randrange(12)}")
            elif choice == 5:
                await doc.tags.apop()
            elif choice == 6 and isinstance(doc, SnDoc):
                await doc.aupdate(title=f"title {rng.randrange(100)}")
            elif choice == 7:
                await doc.adelete()
                del mine[pk]
            elif choice == 8 and isinstance(doc, SnDoc):
                async with doc.apipeline():
                    await doc.tags.aadd("in-txn")
                    await doc.aupdate(title="txn")
            else:
                if isinstance(doc, SnDoc):
                    doc.nums = None if rng.random() < 0.5 else RedisSet([rng.randrange(5)])
                await doc.asave()
        except (ModelNotFoundError, KeyError):
            del mine[pk]  # another writer deleted it: refused, journaled nothing


async def snapshot_under(redis: Redis, writers: list[Awaitable[None]], batch: int) -> str:
    """Take a snapshot while ``writers`` write; its id, once they and it are done."""
    *_, report = await asyncio.gather(*writers, journal.snapshot(redis, CHAINED, batch=batch))
    assert isinstance(report, journal.SnapshotReport)
    return report.id


async def entries(redis: Redis) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(raw_id.decode(), fields) for raw_id, fields in await redis.xrange(STREAM)]


async def test_a_snapshotted_trimmed_journal_rebuilds_what_the_full_history_does(
    redis: Redis, target: Redis, third: Redis
) -> None:
    for seed in range(3):  # some history before the first snapshot
        await writer(seed, 40)
    first = await snapshot_under(redis, [writer(10 + seed, 120) for seed in range(3)], batch=2)
    second = await snapshot_under(redis, [writer(20 + seed, 120) for seed in range(3)], batch=2)
    await asyncio.gather(*(writer(30 + seed, 60) for seed in range(3)))

    stream = await entries(redis)
    ids = [entry_id for entry_id, _ in stream]
    ends = [i for i, (_, f) in enumerate(stream) if f[b"cmd"] == b"snapshot.end"]
    inside = [f[b"cmd"] for _, f in stream[ids.index(second) : ends[-1]]]
    # Writers wrote while the snapshot was taken: their entries sit among its model entries.
    assert {b"snapshot.model", b"set.add"} <= set(inside)
    models = {b"SnDoc", b"SnTimed"}
    assert {f[b"model"] for _, f in stream if f[b"cmd"] == b"snapshot.model"} == models

    # The whole history, replayed from its first entry, is the live data.
    full = await replay(redis, target, STREAM, from_snapshot=False)
    assert full.from_snapshot is None
    assert await compare(redis, target, {"SnDoc", "SnTimed"}) == []

    # From the latest snapshot, on purpose, with every entry still there: the same.
    from_latest = await replay(redis, third, STREAM, from_snapshot=True)
    assert from_latest.from_snapshot == second
    assert await compare(redis, third, {"SnDoc", "SnTimed"}) == []
    await third.flushdb()

    # Trimmed before the first, then before the latest: what is left still checks and rebuilds.
    cut = await trim(redis, CHAINED, before=first)
    assert cut.removed == ids.index(first) and cut.cut_id == ids[ids.index(first) - 1]
    assert (await check_chain(redis, CHAINED)).ok
    latest = await trim(redis, CHAINED)
    assert latest.before == second and latest.removed == ids.index(second) - ids.index(first)
    left = await entries(redis)
    assert left[0][0] == second
    recorded = orjson.loads(left[-1][1][b"args"])
    cut_before_second = dict(stream)[ids[ids.index(second) - 1]]
    assert recorded == {
        "before": second,
        "cut_id": ids[ids.index(second) - 1],
        "cut_hash": cut_before_second[b"hash"].decode(),
        "cut_n": cut_before_second[b"n"].decode(),
    }
    assert [f[b"cmd"] for _, f in left[-2:]] == [b"journal.trim", b"journal.trim"]
    assert left[-3][1][b"cmd"] != b"journal.trim"
    chain = await check_chain(redis, CHAINED)
    assert chain.ok and chain.first_n == ids.index(second) + 1, chain.message
    assert "after a trim at" in chain.message

    rebuilt = await replay(redis, third, STREAM)  # entries are gone: it starts at the snapshot
    assert rebuilt.from_snapshot == second
    assert await compare(redis, third, {"SnDoc", "SnTimed"}) == []
    assert await compare(target, third, {"SnDoc", "SnTimed"}) == []  # as the full replay did


async def test_a_model_deleted_and_one_created_during_a_snapshot_replay_right(
    redis: Redis, target: Redis
) -> None:
    kept, gone = await SnPlain(pk="kept").asave(), await SnPlain(pk="gone").asave()
    await kept.tags.aadd("a")
    await gone.tags.aadd("b")
    report = await journal.snapshot(redis, PLAIN)
    assert report.models == {"SnPlain": 2}
    await gone.adelete()
    await SnPlain(pk="new").asave()
    await kept.tags.aadd("c")
    await trim(redis, PLAIN)
    rebuilt = await replay(redis, target, "plain")
    assert rebuilt.from_snapshot == report.id
    assert await compare(redis, target, {"SnPlain"}) == []
    assert await target.smembers("__rapyer_special__:SnPlain:kept:tags") == {b'"a"', b'"c"'}


async def test_trim_refuses_where_it_would_lose_data_and_changes_nothing(
    redis: Redis, snapshot: Callable[[], Awaitable[Snapshot]]
) -> None:
    doc = await SnPlain(pk="one").asave()
    before = await snapshot()
    with pytest.raises(RetentionError) as none:
        await trim(redis, PLAIN)
    assert none.value.reason == "no_snapshot"
    assert str(none.value).startswith("refusing to trim journal 'plain': it holds no complete")
    assert await snapshot() == before

    first = await ledgerset_snapshot(redis)
    await doc.tags.aadd("x")
    latest = await ledgerset_snapshot(redis)
    await doc.tags.aadd("y")
    raw = await redis.xrange("plain")
    stream = [raw_id.decode() for raw_id, _ in raw]
    first_end = next(i.decode() for i, f in raw if f[b"cmd"] == b"snapshot.end")
    inside, after = stream[stream.index(first) + 1], stream[-1]
    state = await snapshot()
    for where, reason, says in [
        (inside, "inside_snapshot", f"that is inside snapshot {first} (to {first_end})"),
        (after, "past_latest", f"that is after the latest complete snapshot, {latest}"),
        (stream[0], "not_a_snapshot", "that is not the id of a complete snapshot"),
    ]:
        with pytest.raises(RetentionError) as refused:
            await trim(redis, PLAIN, before=where)
        assert refused.value.reason == reason and refused.value.before == where
        assert f"before {where}: {says}. Trim before a complete snapshot, by its id " in str(
            refused.value
        )
        assert f"({first}, {latest})" in str(refused.value)
        assert await snapshot() == state


async def ledgerset_snapshot(redis: Redis) -> str:
    return (await journal.snapshot(redis, PLAIN)).id


async def test_replay_from_a_snapshot_without_one_is_refused(redis: Redis, target: Redis) -> None:
    await SnPlain(pk="one").asave()
    with pytest.raises(RetentionError) as refused:
        await replay(redis, target, "plain", from_snapshot=True)
    assert refused.value.reason == "no_snapshot"
    assert await target.dbsize() == 0
