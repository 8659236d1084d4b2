"""A transaction belongs to the task that opened it.

asyncio copies the context, and with it the open transaction, into every task started inside a
transaction block. Shown against the server and the journal: while the block is open, a write
from such a task (async or sync, in a task or a thread, through ``asyncio.gather`` too) raises
``TransactionError`` naming the command and key, is neither buffered nor sent, and leaves the
mirror alone, while the block commits its own commands; once the block has closed, the same
calls run at once, as they would outside any transaction (applied, journaled under a ``txn`` of
their own, with their real results), and nothing joins the committed transaction. A
``transaction()`` block in such a task is a transaction of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal, TransactionError

SnapshotFn = Callable[[], Awaitable[Any]]
JOURNAL = "ledgerset:journal"


class TxnNote(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


def set_key(model: AtomicRedisModel, field: str) -> str:
    """The spec's layout of a set field's key."""
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{field}"


#: A write of each kind, as another task would make it: the command it is, and the call.
WRITES: dict[str, tuple[str, Callable[[TxnNote], Awaitable[object]]]] = {
    "aadd": ("set.add", lambda note: note.tags.aadd("x")),
    "aadd_many": ("set.add", lambda note: note.tags.aadd_many(["x", "y"])),
    "aremove": ("set.remove", lambda note: note.tags.aremove("a")),
    "aclear": ("set.clear", lambda note: note.tags.aclear()),
    "apop": ("set.pop", lambda note: note.tags.apop()),
    "aupdate": ("model.update", lambda note: note.aupdate(title="other task")),
    "asave": ("model.save", lambda note: note.asave()),
    "adelete": ("model.delete", lambda note: note.adelete()),
}


def check_refused(error: TransactionError, command: str, key: str) -> None:
    assert (error.command, error.key) == (command, key)
    assert command in str(error) and key in str(error)
    assert "another task" in str(error)
    assert "neither buffered nor sent" in str(error)


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_write_from_another_task_during_the_block_is_refused(
    redis: Redis, snapshot: SnapshotFn, write: str
) -> None:
    note = await TxnNote(tags={"a", "b"}).asave()
    command, call = WRITES[write]
    key = note.key if command.startswith("model.") else set_key(note, "tags")
    before = await snapshot()

    async with ledgerset.transaction() as tx:
        note.tags.add("owner")
        with pytest.raises(TransactionError) as caught:
            await asyncio.create_task(call(note))  # type: ignore[arg-type]
        check_refused(caught.value, command, key)
        assert [buffered.name for buffered in tx.commands] == ["set.add"]  # not buffered
        assert await snapshot() == before  # and not run at once either
        assert note.tags == {"a", "b"}

    # The block, which caught the error, committed its own command and nothing else.
    assert tx.results == [1]
    assert await redis.smembers(set_key(note, "tags")) == {b'"a"', b'"b"', b'"owner"'}
    assert await redis.hget(note.key, "title") == b'"untitled"'


async def test_asyncio_gather_in_the_block_is_refused_not_run_outside_it(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    note = await TxnNote(tags={"a"}).asave()
    other = await TxnNote(tags={"a"}).asave()
    before = await snapshot()

    with pytest.raises(TransactionError):
        async with ledgerset.transaction():
            # gather runs each coroutine in a task of its own: neither is this task's command.
            await asyncio.gather(note.tags.aadd("x"), other.tags.aadd("y"))

    assert await snapshot() == before


async def test_sync_mutators_from_another_task_or_thread_during_the_block_are_refused(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    note = await TxnNote(tags={"a", "b"}).asave()
    key = set_key(note, "tags")
    before = await snapshot()

    async def add_in_a_task() -> None:
        note.tags.add("x")

    async def discard_in_a_task() -> None:
        note.tags.discard("a")

    async with ledgerset.transaction() as tx:
        with pytest.raises(TransactionError) as added:
            await asyncio.create_task(add_in_a_task())
        check_refused(added.value, "set.add", key)
        with pytest.raises(TransactionError) as discarded:
            await asyncio.create_task(discard_in_a_task())
        check_refused(discarded.value, "set.remove", key)
        # asyncio.to_thread copies the context too; a thread is not the task that opened it.
        with pytest.raises(TransactionError) as threaded:
            await asyncio.to_thread(note.tags.discard, "b")
        check_refused(threaded.value, "set.remove", key)
        assert tx.commands == ()
        assert note.tags == {"a", "b"}  # the mirror did not change either

    assert tx.results == []
    assert await snapshot() == before


async def test_a_task_started_in_the_block_runs_its_writes_at_once_after_the_commit(
    redis: Redis,
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    note = await TxnNote(tags={"a", "b", "c"}).asave()
    key = set_key(note, "tags")
    block_closed = asyncio.Event()

    async def later() -> tuple[object, object, object]:
        await block_closed.wait()
        added = await note.tags.aadd("late")
        removed = await note.tags.aremove("a")
        popped = await note.tags.apop()
        note.tags.add("local")  # outside a transaction: the mirror only, as always
        note.tags.discard("b")
        return added, removed, popped

    async with ledgerset.transaction() as tx:
        task = asyncio.create_task(later())
        note.tags.add("in the block")
    block_closed.set()
    added, removed, popped = await asyncio.wait_for(task, 10)

    assert (added, removed) == (None, True)  # aremove's real result, not a buffered None
    assert popped in {"b", "c", "in the block", "late"}
    assert len(tx.commands) == 1  # nothing joined the committed transaction
    expected = {"b", "c", "in the block", "late"} - {popped}
    members = await redis.smembers(key)
    assert members == {f'"{member}"'.encode() for member in expected}
    assert note.tags == (expected | {"local"}) - {"b"}

    # Each late write was applied on its own: journaled, each under a txn of its own.
    entries = [fields for _, fields in await redis.xrange(JOURNAL)]
    assert entries[1][b"txn"] == tx.id.encode()  # the block's one command
    late = [fields for fields in entries if fields[b"cmd"] != b"model.save"][1:]
    assert [fields[b"cmd"] for fields in late] == [b"set.add", b"set.remove", b"set.pop"]
    assert len({fields[b"txn"] for fields in late}) == 3


async def test_a_transaction_block_in_a_task_started_in_the_block_is_its_own(
    redis: Redis,
) -> None:
    note = await TxnNote(tags={"a"}).asave()
    key = set_key(note, "tags")

    async def own_transaction() -> ledgerset.Transaction:
        async with ledgerset.transaction() as own:
            note.tags.add("child")
        return own

    async with ledgerset.transaction() as tx:
        note.tags.add("parent")
        own = await asyncio.create_task(own_transaction())
        assert own is not tx
        assert own.results == [1]
        # The child's transaction committed on its own exit, while the parent's block is open.
        assert await redis.smembers(key) == {b'"a"', b'"child"'}
        assert [command.members for command in tx.commands] == [(b'"parent"',)]

    assert await redis.smembers(key) == {b'"a"', b'"child"', b'"parent"'}
