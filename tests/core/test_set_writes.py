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
    InvalidArgumentError,
    InvalidMemberError,
    LedgersetError,
    ModelNotFoundError,
    RedisConfig,
    StreamJournal,
)
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
