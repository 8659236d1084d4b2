"""Optimistic concurrency: the model version, ``asave``/``aupdate(if_unchanged=True)`` and
``ConflictError``, against a real server.

The version lives in the model's hash (``_version``); every write bumps it, a set write too, so a
save over another writer's change -- to a field or to a set's members -- is refused, atomically
and writing nothing (``snapshot``). Two processes race ``asave(if_unchanged=True)`` on one model
for hundreds of rounds (``version_racer.py``): exactly one wins each round, and the journal holds
exactly the winners.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, ConflictError, RedisConfig, StreamJournal
from ledgerset.commands.catalog import SaveModel, UpdateModel
from ledgerset.journal import replay
from ledgerset.journal.reader import read_entries
from ledgerset.journal.verify import compare
from ledgerset.types import RedisSet

TakeSnapshot = Callable[[], Awaitable[dict[bytes, Any]]]
RACER = Path(__file__).with_name("version_racer.py")
ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 300


class VerDoc(AtomicRedisModel):
    title: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    drafts: RedisSet[str] = Field(default_factory=RedisSet)


class VerTimed(AtomicRedisModel):
    Meta = RedisConfig(ttl=3600)
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def stored_version(redis: Redis, doc: AtomicRedisModel) -> bytes | None:
    value: bytes | None = await redis.hget(doc.key, "_version")
    return value


async def test_every_write_bumps_the_version_and_the_instance_keeps_in_step(
    redis: Redis,
) -> None:
    doc = VerDoc(title="a")
    assert doc.version == 0  # never seen stored
    await doc.asave()
    assert (doc.version, await stored_version(redis, doc)) == (1, b"1")
    await doc.aupdate(title="b")
    await doc.tags.aadd("x")
    await doc.tags.aadd("x")  # changes no member, still a write
    await doc.tags.amove("x", doc.drafts)
    assert await doc.drafts.aremove("x") is True
    assert await doc.tags.apop() is None  # an empty set's pop writes nothing
    async with doc.apipeline():
        doc.tags.add("y")
        await doc.aupdate(title="c")
    assert (doc.version, await stored_version(redis, doc)) == (8, b"8")
    loaded = await VerDoc.aget(doc.key)
    assert loaded.version == 8 and loaded == doc
    assert "_version" not in loaded.model_dump()  # never a field
    assert await doc.adelete() is True
    assert doc.version == 0
    await doc.asave()
    assert doc.version == 1  # saved again: it starts over


async def test_a_save_over_another_writers_field_change_is_refused(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    doc = await VerDoc(title="first").asave()
    other = await VerDoc.aget(doc.key)
    await other.aupdate(title="theirs")
    doc.title = "mine"
    before = await snapshot()
    with pytest.raises(ConflictError) as caught:
        await doc.asave(if_unchanged=True)
    error = caught.value
    assert (error.command, error.model, error.pk, error.key) == (
        "model.save", "VerDoc", doc.pk, doc.key
    )  # fmt: skip
    assert (error.expected, error.actual, error.reason) == (1, 2, "conflict")
    assert "aload()" in str(error) and "nothing was written" in str(error)
    assert await snapshot() == before

    await doc.aload()
    doc.title = "mine"
    await doc.asave(if_unchanged=True)
    assert (await VerDoc.aget(doc.key)).title == "mine"


async def test_a_save_over_a_member_another_writer_added_is_refused(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    doc = await VerDoc(tags={"a"}).asave()
    other = await VerDoc.aget(doc.key)
    await other.tags.aadd("theirs")  # a set write bumps the model's version too
    before = await snapshot()
    with pytest.raises(ConflictError):
        await doc.asave(if_unchanged=True)  # its mirror lacks "theirs": it would drop it
    assert await snapshot() == before
    assert await doc.tags.amembers() == {"a", "theirs"}


async def test_an_update_if_unchanged_is_refused_after_another_write(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    doc = await VerDoc(title="t").asave()
    await (await VerDoc.aget(doc.key)).tags.aadd("x")
    before = await snapshot()
    with pytest.raises(ConflictError) as caught:
        await doc.aupdate(title="new", if_unchanged=True)
    assert caught.value.command == "model.update"
    assert doc.title == "t"  # the instance is unchanged too
    assert await snapshot() == before
    await doc.aload()
    await doc.aupdate(title="new", if_unchanged=True)
    assert doc.version == 3


async def test_if_unchanged_on_a_new_instance_creates_only_a_model_not_yet_stored(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    await VerDoc(pk="taken", title="first").asave(if_unchanged=True)
    before = await snapshot()
    with pytest.raises(ConflictError) as caught:
        await VerDoc(pk="taken", title="second").asave(if_unchanged=True)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert await snapshot() == before


async def test_a_conflict_in_a_transaction_aborts_all_of_it(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    doc = await VerDoc(title="t").asave()
    bystander = await VerDoc(title="b").asave()
    await (await VerDoc.aget(doc.key)).aupdate(title="theirs")
    before = await snapshot()
    with pytest.raises(ConflictError) as caught:
        async with ledgerset.transaction():
            bystander.tags.add("would land")
            await doc.tags.aadd("mine")  # this transaction's own write: not a conflict
            await doc.asave(if_unchanged=True)
    assert "none of them was applied" in str(caught.value)
    assert await snapshot() == before


async def test_own_writes_in_a_transaction_before_the_check_are_not_a_conflict(
    redis: Redis,
) -> None:
    doc = await VerDoc(title="t").asave()
    async with ledgerset.transaction():
        await doc.tags.aadd("mine")
        doc.title = "new"
        await doc.asave(if_unchanged=True)  # checked against the version before it
    assert doc.version == 3
    assert (await VerDoc.aget(doc.key)).version == 3


async def test_after_a_write_of_unknown_outcome_if_unchanged_asks_for_a_reload(
    redis: Redis,
) -> None:
    doc = await VerDoc().asave()
    doc.tags._binding.seen.forget()  # type: ignore[union-attr]  # what an interrupted write does
    assert doc.version is None
    with pytest.raises(ConflictError, match="does not know it"):
        await doc.asave(if_unchanged=True)
    await doc.aload()
    assert doc.version == 1


async def test_versions_are_journaled_and_replayed_identically(
    redis: Redis, target: Redis
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    doc = await VerDoc(title="a").asave()
    await doc.tags.aadd_many([f"m{i:06d}-{'x' * 40}" for i in range(30_000)])  # split in parts
    await doc.aupdate(title="b", if_unchanged=True)
    timed = await VerTimed(tags={"t"}).asave()
    await timed.tags.amove("t", doc.drafts)

    entries = [entry async for entry in read_entries(redis)]
    saves = [entry for entry in entries if entry.cmd.startswith("model.")]
    assert [(entry.cmd, entry.args["version"]) for entry in saves] == [
        ("model.save", 1),
        ("model.update", 3),
        ("model.save", 1),
    ]
    assert saves[1].args["if_version"] == 2
    assert UpdateModel.summary(saves[1].args).startswith("v3, if v2, ")
    assert SaveModel.summary(saves[0].args).startswith("v1, ")

    await replay(redis, target)
    assert await compare(redis, target, {"VerDoc", "VerTimed"}) == []
    assert await target.hget(doc.key, "_version") == b"4" == await stored_version(redis, doc)


class VerCounts(AtomicRedisModel):
    title: str = ""
    numbers: RedisSet[int] = Field(default_factory=RedisSet)


async def test_a_transaction_journals_each_model_write_with_the_version_it_made(
    redis: Redis,
) -> None:
    # The member 1 is stored as the bytes `1`, the same as the flag that tells a bump to
    # record its version: the bump of the set write before it must not read it as its own.
    await ledgerset.init(redis=redis, journal=StreamJournal())
    counts = await VerCounts().asave()
    async with ledgerset.transaction():
        counts.numbers.add(5)
        counts.numbers.add(1)
        await counts.aupdate(title="after")
    entries = [entry async for entry in read_entries(redis)]
    assert [(entry.cmd, entry.args.get("version")) for entry in entries] == [
        ("model.save", 1),
        ("set.add", None),
        ("set.add", None),
        ("model.update", 4),
    ]
    assert await stored_version(redis, counts) == b"4"


async def test_two_processes_racing_if_unchanged_saves_win_one_round_each(
    redis: Redis, redis_url: str
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    doc = await VerDoc(pk="race", title="start").asave()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # The racer defines the model as RaceDoc: the same hash, under that class's name.
    key = "RaceDoc:race"
    await redis.rename(doc.key, key)
    await redis.delete("ledgerset:journal")
    pipe = asyncio.subprocess.PIPE
    racers = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, str(RACER), redis_url, key, name, other, str(ROUNDS)),
            stdout=pipe,
            stderr=pipe,
            env=env,
        )
        for name, other in (("a", "b"), ("b", "a"))
    ]
    outputs = await asyncio.wait_for(
        asyncio.gather(*(racer.communicate() for racer in racers)), timeout=240
    )
    for racer, (_, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err.decode()
    won: dict[str, set[int]] = {}
    for name, (out, _) in zip("ab", outputs, strict=True):
        lines = out.decode().split()
        assert lines[-1] == "done"
        results = list(zip(lines[:-1:2], map(int, lines[1:-1:2]), strict=True))
        assert [round_ for _, round_ in results] == list(range(ROUNDS))
        won[name] = {round_ for outcome, round_ in results if outcome == "won"}
    assert won["a"].isdisjoint(won["b"])  # never both
    assert won["a"] | won["b"] == set(range(ROUNDS))  # never neither
    assert won["a"] and won["b"], "the race never went both ways"

    winners = sorted(f"{name}-{round_}" for name, rounds in won.items() for round_ in rounds)
    entries = [entry async for entry in read_entries(redis)]
    assert [entry.cmd for entry in entries] == ["model.save"] * ROUNDS
    journaled = [entry.args["fields"]["title"] for entry in entries]
    assert journaled == sorted(winners, key=lambda title: int(title.split("-")[1]))
    assert [entry.args["version"] for entry in entries] == list(range(2, ROUNDS + 2))
    assert await redis.smembers(f"__rapyer_special__:{key}:tags") == {
        f'"{title}"'.encode() for title in winners
    }
