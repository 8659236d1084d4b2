"""The dispatcher sends each command, or a whole transaction, as one atomic server program.

Shown against the server's own counters and state: one ``EVALSHA`` per immediate command and per
transaction (whatever its size, across models), transparent recovery after ``SCRIPT FLUSH``,
ordering inside a transaction (a save makes the model exist for a later add; a delete makes a
later add refuse the whole transaction), frozen command objects, large member lists in one
command, and the refusals a user can meet (two Redis clients in one transaction, an unreachable
server) with the server left unchanged.
"""

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    ModelNotFoundError,
    RedisConfig,
    RedisSet,
    ServerUnavailableError,
    StreamJournal,
    TransactionError,
)
from tests.support import journal_entries

SnapshotFn = Callable[[], Awaitable[Any]]


class DispNote(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class DispCounter(AtomicRedisModel):
    numbers: RedisSet[int] = Field(default_factory=RedisSet)


def set_key(model: AtomicRedisModel, field: str) -> str:
    """The spec's layout of a set field's key."""
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{field}"


async def evalsha_calls(redis: Redis) -> int:
    """How many EVALSHA calls the server has run so far."""
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_aadd_recovers_after_the_script_cache_is_flushed(redis: Redis) -> None:
    note = await DispNote(tags={"a"}).asave()
    await redis.script_flush()
    await note.tags.aadd("b")
    assert await redis.smembers(set_key(note, "tags")) == {b'"a"', b'"b"'}


async def test_transaction_recovers_after_the_script_cache_is_flushed(redis: Redis) -> None:
    note = await DispNote(tags={"a"}).asave()
    await redis.script_flush()
    async with note.apipeline():
        note.tags.add("b")
        note.tags.discard("a")
        await note.aupdate(title="flushed")
    assert await redis.smembers(set_key(note, "tags")) == {b'"b"'}
    assert await redis.hget(note.key, "title") == b'"flushed"'


async def test_an_immediate_aadd_costs_exactly_one_evalsha(redis: Redis) -> None:
    note = await DispNote().asave()  # also loads the script, so no NOSCRIPT retry below
    before = await evalsha_calls(redis)
    await note.tags.aadd("one")
    assert await evalsha_calls(redis) == before + 1
    assert await redis.smembers(set_key(note, "tags")) == {b'"one"'}


async def test_a_transaction_across_two_models_costs_exactly_one_evalsha(redis: Redis) -> None:
    note = await DispNote(tags={"old"}).asave()
    counter = await DispCounter(numbers={1}).asave()
    before = await evalsha_calls(redis)
    async with ledgerset.transaction() as tx:
        note.tags.add("new")
        counter.numbers.update([2, 3])
        await note.tags.aremove("old")
        await counter.numbers.aadd_many([4, 5])
        await note.aupdate(title="both")
    assert await evalsha_calls(redis) == before + 1
    assert len(tx.commands) == 5
    assert tx.results == [1, 2, True, 2, None]
    assert await redis.smembers(set_key(note, "tags")) == {b'"new"'}
    assert await redis.smembers(set_key(counter, "numbers")) == {b"1", b"2", b"3", b"4", b"5"}
    assert await redis.hget(note.key, "title") == b'"both"'


async def test_save_then_add_in_one_transaction_works_on_a_new_model(redis: Redis) -> None:
    note = DispNote(title="fresh", tags={"saved"})
    async with ledgerset.transaction():
        await note.asave()
        await note.tags.aadd("added")
    assert await redis.hget(note.key, "title") == b'"fresh"'
    assert await redis.smembers(set_key(note, "tags")) == {b'"saved"', b'"added"'}
    assert await note.tags.amembers() == {"saved", "added"}


async def test_delete_then_add_in_one_transaction_is_refused_entirely(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    note = await DispNote(tags={"kept"}).asave()
    before = await snapshot()
    with pytest.raises(ModelNotFoundError) as err:
        async with ledgerset.transaction():
            await note.adelete()
            await note.tags.aadd("late")
    assert (err.value.key, err.value.command) == (note.key, "set.add")
    assert note.key in str(err.value)
    assert "set.add" in str(err.value)
    assert await snapshot() == before
    assert await DispNote.aexists(note.key)
    assert set(note.tags) == {"kept"}


async def test_a_run_of_adds_and_removes_to_one_set_gives_each_command_its_own_count(
    redis: Redis,
) -> None:
    # A transaction's consecutive adds (removes) to one set run as one operation: each command
    # still gets its own count, the model's version one bump per command, and its own entry.
    note = await DispNote(tags={"a"}).asave()
    other = await DispNote().asave()
    version = int(await redis.hget(note.key, "_version") or 0)
    await ledgerset.init(redis=redis, journal=StreamJournal())
    before = await evalsha_calls(redis)
    async with ledgerset.transaction() as tx:
        note.tags.add("a")  # there already
        note.tags.add("b")
        note.tags.update(["b", "c", "c"])  # only c is new
        await note.tags.aadd("b")  # added two commands ago
        other.tags.add("b")  # another set: the run ends
        note.tags.add("d")
        note.tags.discard("a")
        note.tags.discard("a")  # removed by the command before
        note.tags.discard("zz")
    assert await evalsha_calls(redis) == before + 1
    assert tx.results == [0, 1, 1, 0, 1, 1, 1, 0, 0]
    assert await redis.smembers(set_key(note, "tags")) == {b'"b"', b'"c"', b'"d"'}
    assert await redis.smembers(set_key(other, "tags")) == {b'"b"'}
    assert set(note.tags) == {"b", "c", "d"}
    assert int(await redis.hget(note.key, "_version") or 0) == version + 8
    entries = await journal_entries(redis)
    assert [(entry.cmd, entry.pk, entry.args["members"]) for entry in entries] == [
        ("set.add", note.pk, ["a"]),
        ("set.add", note.pk, ["b"]),
        ("set.add", note.pk, ["b", "c"]),  # (a command holds distinct members)
        ("set.add", note.pk, ["b"]),
        ("set.add", other.pk, ["b"]),
        ("set.add", note.pk, ["d"]),
        ("set.remove", note.pk, ["a"]),
        ("set.remove", note.pk, ["a"]),
        ("set.remove", note.pk, ["zz"]),
    ]
    # The version the instance saw followed: a conditional save goes through.
    await note.asave(if_unchanged=True)


async def test_a_refused_run_of_adds_names_its_first_command_and_applies_nothing(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    note = await DispNote(tags={"kept"}).asave()
    await redis.delete(note.key)  # another client deletes the model's hash
    before = await snapshot()
    with pytest.raises(ModelNotFoundError) as err:
        async with ledgerset.transaction():
            note.tags.add("x")
            note.tags.add("y")
            note.tags.discard("kept")
    assert (err.value.key, err.value.command) == (note.key, "set.add")
    assert "transaction of 3 commands: none of them was applied" in str(err.value)
    assert await snapshot() == before
    assert set(note.tags) == {"kept"}


async def test_transaction_lists_frozen_commands_then_their_results(redis: Redis) -> None:
    note = await DispNote(tags={"x"}).asave()
    async with note.apipeline() as tx:
        note.tags.add("a")
        await note.tags.aadd_many(["b", "c"])
        note.tags.discard("x")
        commands = tx.commands
        assert [(c.name, c.members) for c in commands] == [  # type: ignore[attr-defined]
            ("set.add", (b'"a"',)),
            ("set.add", (b'"b"', b'"c"')),
            ("set.remove", (b'"x"',)),
        ]
        assert {(c.key, c.field) for c in commands} == {(set_key(note, "tags"), "tags")}
        with pytest.raises(dataclasses.FrozenInstanceError):
            commands[0].members = (b'"z"',)  # type: ignore[attr-defined]
        assert tx.results is None
        assert await redis.smembers(set_key(note, "tags")) == {b'"x"'}  # nothing sent yet
    assert tx.results == [1, 2, 1]
    assert await redis.smembers(set_key(note, "tags")) == {b'"a"', b'"b"', b'"c"'}


async def test_transaction_over_two_redis_clients_is_refused(
    redis: Redis, redis_url: str, snapshot: SnapshotFn
) -> None:
    second = Redis.from_url(redis_url)
    try:

        class DispElsewhere(AtomicRedisModel):
            Meta = RedisConfig(redis=second)
            tags: RedisSet[str] = Field(default_factory=RedisSet)

        note = await DispNote(tags={"n"}).asave()
        elsewhere = await DispElsewhere(tags={"e"}).asave()
        before = await snapshot()
        with pytest.raises(TransactionError) as err:
            async with ledgerset.transaction():
                note.tags.add("one")
                elsewhere.tags.add("two")
        assert "set.add" in str(err.value)
        assert set_key(elsewhere, "tags") in str(err.value)
        assert await snapshot() == before
    finally:
        await second.aclose()


async def test_aadd_many_of_20000_members_is_one_command(redis: Redis) -> None:
    note = await DispNote().asave()
    members = [f"member-{i}" for i in range(20_000)]
    before = await evalsha_calls(redis)
    await note.tags.aadd_many(members)
    assert await evalsha_calls(redis) == before + 1
    assert await note.tags.asize() == 20_000
    assert await note.tags.amembers() == set(members)


async def test_init_with_an_unreachable_server_names_it_and_keeps_the_old_connection(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    note = await DispNote().asave()
    before = await snapshot()
    try:
        with pytest.raises(ServerUnavailableError) as err:
            await ledgerset.init(redis="redis://127.0.0.1:1/0")
        assert "127.0.0.1:1" in str(err.value)
        assert err.value.address == "127.0.0.1:1"
        assert await snapshot() == before
        # The refused init replaced nothing: models still use the working connection.
        await note.tags.aadd("still-here")
        assert await redis.smembers(set_key(note, "tags")) == {b'"still-here"'}
    finally:
        await ledgerset.init(redis=redis)


async def test_a_failed_nested_block_discards_only_its_own_commands(redis: Redis) -> None:
    note = DispNote()
    await note.asave()

    async with ledgerset.transaction() as tx:
        note.tags.add("outer")
        try:
            async with ledgerset.transaction():
                note.tags.add("inner")
                raise RuntimeError("inner block fails")
        except RuntimeError:
            pass
        note.tags.add("after")
        assert [command.members for command in tx.commands] == [(b'"outer"',), (b'"after"',)]

    assert await redis.smembers(set_key(note, "tags")) == {b'"outer"', b'"after"'}
