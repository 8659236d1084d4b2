"""The set writes of issue 13: ``amove`` (``SMOVE``) and ``astore_union`` / ``astore_intersection``
/ ``astore_difference`` (``S*STORE``), against a real server.

Each is checked immediate and in a transaction, journaled (one entry per write, replayed into a
second database that ``compare`` finds identical) and not, with both mirrors following, and each
bad input refused with the whole database unchanged (``snapshot``). Refusals before any I/O use
a model whose client points at a port where nothing listens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    ConflictError,
    InvalidArgumentError,
    InvalidMemberError,
    LedgersetError,
    ModelNotFoundError,
    RedisConfig,
    StreamJournal,
    TransactionError,
    WrongTypeError,
)
from ledgerset.core.redis_set import SetBinding
from ledgerset.journal import replay
from ledgerset.journal.reader import read_entries
from ledgerset.journal.verify import compare
from ledgerset.types import RedisSet

TakeSnapshot = Callable[[], Awaitable[dict[bytes, Any]]]


class WritesArticle(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    drafts: RedisSet[str] = Field(default_factory=RedisSet)


class WritesPool(AtomicRedisModel):
    Meta = RedisConfig(ttl=3600)
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class WritesNumbers(AtomicRedisModel):
    values: RedisSet[int] = Field(default_factory=RedisSet)


class WritesOffline(AtomicRedisModel):
    """Talks to a port where no server listens: any I/O would raise a connection error."""

    Meta = RedisConfig(redis=Redis.from_url("redis://127.0.0.1:1/0"))
    tags: RedisSet[str] = Field(default_factory=RedisSet)


MODELS = {"WritesArticle", "WritesPool", "WritesNumbers"}


async def members_of(redis: Redis, redis_set: RedisSet[Any]) -> set[bytes]:
    return set(await redis.smembers(redis_set.special_key))


async def assert_replays_identically(redis: Redis, target: Redis) -> None:
    await replay(redis, target)
    assert await compare(redis, target, MODELS) == []


# -- amove ------------------------------------------------------------------------------------


async def test_amove_moves_a_member_between_two_models_and_both_mirrors_follow(
    redis: Redis,
) -> None:
    article = await WritesArticle(tags={"a", "b"}).asave()
    pool = await WritesPool(tags={"z"}).asave()

    assert await article.tags.amove("a", pool.tags) is True
    assert await members_of(redis, article.tags) == {b'"b"'}
    assert await members_of(redis, pool.tags) == {b'"a"', b'"z"'}
    assert article.tags == {"b"} and pool.tags == {"a", "z"}

    assert await article.tags.amove("absent", pool.tags) is False
    assert await members_of(redis, pool.tags) == {b'"a"', b'"z"'}


async def test_amove_uses_the_servers_members_not_the_mirror(redis: Redis) -> None:
    article = await WritesArticle(tags={"a"}).asave()
    other = await WritesArticle.aget(article.key)
    await other.tags.aadd("new")

    assert await article.tags.amove("new", article.drafts) is True  # unknown to the mirror
    assert await members_of(redis, article.drafts) == {b'"new"'}
    assert await members_of(redis, article.tags) == {b'"a"'}


async def test_amove_gives_the_destination_its_owners_expiry(redis: Redis) -> None:
    article = await WritesArticle(tags={"a"}).asave()
    pool = await WritesPool().asave()  # nothing in its set yet: no key, no expiry

    await article.tags.amove("a", pool.tags)
    assert await redis.pexpiretime(pool.tags.special_key) == await redis.pexpiretime(pool.key)
    assert await redis.pttl(article.tags.special_key) == -2  # emptied: gone


async def test_amove_is_one_journal_entry_naming_both_sets_and_replays(
    redis: Redis, target: Redis
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    article = await WritesArticle(tags={"a", "b"}).asave()
    pool = await WritesPool().asave()
    await article.tags.amove("a", pool.tags)

    entries = [entry async for entry in read_entries(redis)]
    assert [entry.cmd for entry in entries] == ["model.save", "model.save", "set.move"]
    move = entries[-1]
    assert (move.model, move.pk, move.field, move.key) == (
        "WritesArticle", article.pk, "tags", article.tags.special_key
    )  # fmt: skip
    assert move.args == {
        "member": "a",
        "to": {"model": "WritesPool", "pk": pool.pk, "field": "tags"},
    }
    await assert_replays_identically(redis, target)
    assert await target.smembers(pool.tags.special_key) == {b'"a"'}


async def test_amove_in_a_transaction_is_buffered_and_applied_on_commit(
    redis: Redis, target: Redis
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    article = await WritesArticle(tags={"a", "b"}).asave()
    pool = await WritesPool().asave()
    async with ledgerset.transaction() as tx:
        assert await article.tags.amove("a", pool.tags) is None
        article.tags.add("c")
        assert await members_of(redis, pool.tags) == set()  # not yet
    assert tx.results == [True, 1]
    assert await members_of(redis, pool.tags) == {b'"a"'}
    assert article.tags == {"b", "c"} and pool.tags == {"a"}
    await assert_replays_identically(redis, target)


async def test_amove_to_a_model_not_in_redis_names_it_and_writes_nothing(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    article = await WritesArticle(tags={"a"}).asave()
    never_saved = WritesPool()
    before = await snapshot()
    with pytest.raises(ModelNotFoundError) as caught:
        await article.tags.amove("a", never_saved.tags)
    error = caught.value
    assert (error.model, error.pk, error.field, error.key) == (
        "WritesPool", never_saved.pk, "tags", never_saved.key
    )  # fmt: skip
    assert error.command == "set.move"
    assert never_saved.key in str(error)
    assert await snapshot() == before

    gone = await WritesArticle(tags={"x"}).asave()
    await WritesArticle(pk=gone.pk).adelete()
    pool = await WritesPool().asave()
    before = await snapshot()
    with pytest.raises(ModelNotFoundError) as caught:
        await gone.tags.amove("x", pool.tags)
    assert (caught.value.model, caught.value.key) == ("WritesArticle", gone.key)
    assert await snapshot() == before


async def test_amove_refuses_bad_destinations_before_any_io(redis: Redis) -> None:
    offline = WritesOffline(tags={"a"})
    with pytest.raises(InvalidArgumentError) as caught:
        await offline.tags.amove("a", {"plain"})  # type: ignore[arg-type]
    assert caught.value.command == "set.move"
    with pytest.raises(LedgersetError, match="not a field of a model"):
        await offline.tags.amove("a", RedisSet())
    with pytest.raises(InvalidMemberError) as wrong_type:
        await offline.tags.amove("a", WritesNumbers().values)  # type: ignore[arg-type]
    assert "RedisSet[str]" in str(wrong_type.value) or "str" in str(wrong_type.value)
    assert wrong_type.value.command == "set.move"
    with pytest.raises(InvalidArgumentError, match="another Redis client"):
        await offline.tags.amove("a", WritesArticle().tags)
    with pytest.raises(InvalidMemberError):
        await offline.tags.amove(1, WritesOffline().tags)  # type: ignore[arg-type]


# -- astore_union / astore_intersection / astore_difference ---------------------------------------


async def test_the_stores_replace_the_destination_with_the_servers_algebra(redis: Redis) -> None:
    a = await WritesArticle(tags={"a", "b", "c"}).asave()
    b = await WritesPool(tags={"c", "d"}).asave()
    dest = await WritesArticle(tags={"old"}).asave()
    behind = await WritesArticle.aget(a.key)
    await behind.tags.aadd("e")  # a's mirror does not know it: the server's members count

    assert await dest.tags.astore_union(a.tags, b.tags) == 5
    assert await members_of(redis, dest.tags) == {b'"a"', b'"b"', b'"c"', b'"d"', b'"e"'}
    assert dest.tags == {"a", "b", "c", "d", "e"}  # the mirror follows
    assert await dest.tags.astore_intersection(a.tags, b.tags) == 1
    assert await dest.tags.amembers() == {"c"}
    assert await dest.tags.astore_difference(a.tags, b.tags) == 3
    assert dest.tags == {"a", "b", "e"}
    assert await dest.tags.astore_difference(a.tags) == 4  # first alone: a copy of it
    # The destination among its own sources: the algebra of its members before the store.
    assert await dest.tags.astore_intersection(dest.tags, b.tags) == 1
    assert await dest.tags.amembers() == {"c"}
    # An empty result leaves no key, as Redis keeps no empty set.
    assert await dest.tags.astore_intersection(dest.tags, WritesPool().tags) == 0
    assert not await redis.exists(dest.tags.special_key)
    assert dest.tags == set()


async def test_a_store_gives_the_destination_its_owners_expiry(redis: Redis) -> None:
    source = await WritesArticle(tags={"a"}).asave()
    dest = await WritesPool().asave()
    await dest.tags.astore_union(source.tags)
    assert await redis.pexpiretime(dest.tags.special_key) == await redis.pexpiretime(dest.key)


async def test_a_store_is_journaled_as_its_effect_and_replays_without_its_sources(
    redis: Redis, target: Redis
) -> None:
    # The sources are never journaled: replay must still give the stored members.
    a = await WritesArticle(tags={"a", "b"}).asave()
    b = await WritesPool(tags={"b", "c"}).asave()
    await ledgerset.init(redis=redis, journal=StreamJournal())
    dest = await WritesArticle().asave()
    await dest.tags.astore_union(a.tags, b.tags)

    entries = [entry async for entry in read_entries(redis)]
    assert [entry.cmd for entry in entries] == ["model.save", "set.store"]
    store = entries[-1]
    assert (store.model, store.pk, store.field) == ("WritesArticle", dest.pk, "tags")
    assert sorted(store.args["members"]) == ["a", "b", "c"]
    assert store.args["algebra"] == "union"
    assert store.args["sources"] == [f"WritesArticle:{a.pk}.tags", f"WritesPool:{b.pk}.tags"]

    await replay(redis, target)
    assert await target.smembers(dest.tags.special_key) == {b'"a"', b'"b"', b'"c"'}
    assert not await target.exists(a.tags.special_key)  # the sources are not there


async def test_a_large_store_is_journaled_in_parts_of_one_transaction_and_replays(
    redis: Redis, target: Redis
) -> None:
    source = await WritesArticle().asave()
    await source.tags.aadd_many(f"member-{i:06d}-{'x' * 40}" for i in range(30_000))
    await ledgerset.init(redis=redis, journal=StreamJournal())
    dest = await WritesArticle(tags={"gone"}).asave()
    assert await dest.tags.astore_union(source.tags) == 30_000

    entries = [entry async for entry in read_entries(redis)]
    parts = entries[1:]
    assert len(parts) > 1 and {entry.cmd for entry in parts} == {"set.store"}
    assert len({entry.txn for entry in parts}) == 1
    assert [entry.args.get("continued", False) for entry in parts] == [False] + [True] * (
        len(parts) - 1
    )
    assert sum(len(entry.args["members"]) for entry in parts) == 30_000
    await replay(redis, target)
    assert await target.smembers(dest.tags.special_key) == await redis.smembers(
        dest.tags.special_key
    )


async def test_a_store_in_a_transaction_is_buffered_and_applied_on_commit(
    redis: Redis, target: Redis
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    a = await WritesArticle(tags={"a", "b"}).asave()
    dest = await WritesPool(tags={"old"}).asave()
    async with ledgerset.transaction() as tx:
        assert await dest.tags.astore_union(a.tags) is None
        dest.tags.add("extra")  # after the store: lands on its result
        assert await members_of(redis, dest.tags) == {b'"old"'}
    assert tx.results == [2, 1]
    assert await dest.tags.amembers() == {"a", "b", "extra"}
    await assert_replays_identically(redis, target)


async def test_a_store_after_a_write_of_its_source_in_the_transaction_is_refused(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    a = await WritesArticle(tags={"a"}).asave()
    dest = await WritesPool().asave()
    before = await snapshot()
    with pytest.raises(TransactionError) as caught:
        async with ledgerset.transaction():
            a.tags.add("new")
            await dest.tags.astore_union(a.tags)
    assert f"WritesArticle:{a.pk}.tags" in str(caught.value)
    assert caught.value.command == "set.store"
    assert await snapshot() == before


async def test_a_source_changed_by_another_client_before_the_commit_aborts_the_transaction(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    a = await WritesArticle(tags={"a"}).asave()
    dest = await WritesPool().asave()
    with pytest.raises(ConflictError) as caught:
        async with ledgerset.transaction():
            dest.tags.add("x")
            await dest.tags.astore_union(a.tags)
            await redis.sadd(a.tags.special_key, '"sneaked in"')  # another client
            before = await snapshot()
    assert caught.value.command == "set.store" and caught.value.reason == "conflict"
    assert "nothing was written" in str(caught.value)
    assert await snapshot() == before


async def test_a_store_reads_again_when_a_source_changes_between_its_read_and_write(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client writes a source right after each of the store's first reads (a real
    write, on the real server, made from the read's return path): the first write is refused
    by the server, and the store reads again and stores the algebra of the new state."""
    a = await WritesArticle(tags={"a"}).asave()
    dest = await WritesPool().asave()
    read = SetBinding.read
    reads = 0

    async def read_then_another_client_writes(self: SetBinding, *args: Any, **kw: Any) -> Any:
        nonlocal reads
        result = await read(self, *args, **kw)
        reads += 1
        if reads == 1:
            await redis.sadd(a.tags.special_key, '"late"')
        return result

    monkeypatch.setattr(SetBinding, "read", read_then_another_client_writes)
    assert await dest.tags.astore_union(a.tags) == 2
    assert reads == 2
    assert await members_of(redis, dest.tags) == {b'"a"', b'"late"'}
    assert dest.tags == {"a", "late"}


async def test_a_store_gives_up_with_conflict_error_when_its_sources_keep_changing(
    redis: Redis, monkeypatch: pytest.MonkeyPatch, snapshot: TakeSnapshot
) -> None:
    a = await WritesArticle(tags={"a"}).asave()
    dest = await WritesPool(tags={"kept"}).asave()
    read = SetBinding.read
    reads = 0

    async def read_then_another_client_writes(self: SetBinding, *args: Any, **kw: Any) -> Any:
        nonlocal reads
        result = await read(self, *args, **kw)
        reads += 1
        await redis.sadd(a.tags.special_key, f'"late-{reads}"')
        return result

    monkeypatch.setattr(SetBinding, "read", read_then_another_client_writes)
    with pytest.raises(ConflictError) as caught:
        await dest.tags.astore_union(a.tags)
    before = await snapshot()
    assert reads == 5
    assert caught.value.command == "set.store"
    assert await members_of(redis, dest.tags) == {b'"kept"'}
    assert await snapshot() == before


async def test_the_stores_refuse_bad_sources_before_any_io(redis: Redis) -> None:
    offline = WritesOffline(tags={"a"})
    for store in (offline.tags.astore_union, offline.tags.astore_intersection):
        with pytest.raises(InvalidArgumentError) as caught:
            await store()
        assert caught.value.command == "set.store" and "at least one source" in str(caught.value)
        with pytest.raises(InvalidArgumentError):
            await store({"plain"})  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="another Redis client"):
            await store(WritesArticle().tags)
    with pytest.raises(LedgersetError, match="not a field of a model"):
        await offline.tags.astore_difference(RedisSet())
    with pytest.raises(InvalidArgumentError, match="stored in different forms"):
        await WritesArticle().tags.astore_union(WritesNumbers().values)  # type: ignore[arg-type]


async def test_a_store_into_a_model_not_in_redis_writes_nothing(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    a = await WritesArticle(tags={"a"}).asave()
    never_saved = WritesPool()
    before = await snapshot()
    with pytest.raises(ModelNotFoundError) as caught:
        await never_saved.tags.astore_union(a.tags)
    assert (caught.value.command, caught.value.key) == ("set.store", never_saved.key)
    assert await snapshot() == before


@pytest.mark.parametrize("journaled", [False, True], ids=["unjournaled", "journaled"])
@pytest.mark.parametrize("overwritten", ["source", "destination"])
async def test_amove_with_a_set_key_of_another_type_is_refused_naming_it(
    redis: Redis, snapshot: TakeSnapshot, journaled: bool, overwritten: str
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal() if journaled else None)
    article = await WritesArticle(tags={"a"}).asave()
    pool = await WritesPool(tags={"z"}).asave()
    bad = article.tags if overwritten == "source" else pool.tags
    await redis.delete(bad.special_key)
    await redis.set(bad.special_key, "not a set")
    before = await snapshot()
    with pytest.raises(WrongTypeError) as caught:
        await article.tags.amove("a", pool.tags)
    assert (caught.value.key, caught.value.actual, caught.value.command) == (
        bad.special_key, "string", "set.move"
    )  # fmt: skip
    assert await snapshot() == before
    assert (article.version, pool.version) == (1, 1)  # nothing applied: nothing bumped
