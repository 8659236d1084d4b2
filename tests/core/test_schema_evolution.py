"""A model class changes while its records stay in Redis: set fields added, removed, renamed.

An added set field loads as its default (an empty set, or ``None`` for an Optional set) from a
record saved before it existed. A removed set field's key is deleted by the next ``asave`` or
``adelete``, in the same atomic write, and the journal entry of that write says so (so replay
deletes it too). A renamed field is both: the new name starts from its default, the old key goes.
The two versions of a class share its name, as they would across two deploys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal
from ledgerset.journal import replay

STREAM = "ledgerset:journal"


def set_key(model: str, pk: str, field: str) -> str:
    return f"__rapyer_special__:{model}:{pk}:{field}"


@pytest.fixture
async def journaled(redis: Redis) -> AsyncIterator[Redis]:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    yield redis


async def last_entry(redis: Redis) -> dict[str, Any]:
    ((_, fields),) = await redis.xrevrange(STREAM, count=1)
    entry: dict[str, Any] = {key.decode(): value.decode() for key, value in fields.items()}
    entry["args"] = orjson.loads(entry["args"])
    return entry


# -- the versions ---------------------------------------------------------------------------------


def evolving(*, with_sets: bool) -> type[AtomicRedisModel]:
    if not with_sets:

        class Evolving(AtomicRedisModel):
            title: str = "untitled"

        return Evolving

    class Evolving(AtomicRedisModel):  # type: ignore[no-redef]
        title: str = "untitled"
        tags: RedisSet[str] = Field(default_factory=RedisSet)
        maybe: RedisSet[int] | None = None
        preset: RedisSet[str] | None = Field(default_factory=lambda: RedisSet({"x"}))
        required: RedisSet[str]

    return Evolving


class Profile(BaseModel):
    bio: str = ""
    badges: RedisSet[str] = Field(default_factory=RedisSet)


def account(*, with_profile: bool) -> type[AtomicRedisModel]:
    if with_profile:

        class Account(AtomicRedisModel):
            name: str = ""
            profile: Profile = Field(default_factory=Profile)

        return Account

    class Account(AtomicRedisModel):  # type: ignore[no-redef]
        name: str = ""

    return Account


def tagged(*fields: str) -> type[AtomicRedisModel]:
    """``Tagged`` with the set fields named ``fields`` (and a scalar that comes and goes)."""
    annotations: dict[str, Any] = {name: RedisSet[str] for name in fields}
    namespace: dict[str, Any] = {
        "__annotations__": {"title": str, **annotations},
        "title": "untitled",
        **{name: Field(default_factory=RedisSet) for name in fields},
    }
    if "legacy" in fields:
        namespace["__annotations__"]["count"] = int
        namespace["count"] = 3
        namespace["__annotations__"]["flag"] = bool | None
        namespace["flag"] = None
    return type("Tagged", (AtomicRedisModel,), namespace)


# -- a set field added ----------------------------------------------------------------------------


async def test_a_set_field_added_since_the_save_loads_as_its_default(redis: Redis) -> None:
    old = evolving(with_sets=False)(title="first")
    await old.asave()
    Evolving = evolving(with_sets=True)

    loaded: Any = await Evolving.aget(old.key)

    assert loaded.title == "first"
    assert isinstance(loaded.tags, RedisSet) and loaded.tags == set()
    assert loaded.maybe is None
    assert loaded.preset == {"x"}
    assert isinstance(loaded.required, RedisSet) and loaded.required == set()
    await loaded.tags.aadd("works")
    assert await loaded.tags.amembers() == {"works"}


async def test_the_next_save_records_the_added_field(redis: Redis) -> None:
    old = evolving(with_sets=False)(title="first")
    await old.asave()
    Evolving = evolving(with_sets=True)

    loaded: Any = await Evolving.aget(old.key)
    await loaded.asave()

    assert await redis.hget(old.key, "tags") == b"true"
    assert await redis.hget(old.key, "maybe") == b"null"
    assert await redis.smembers(set_key("Evolving", old.pk, "preset")) == {b'"x"'}
    again: Any = await Evolving.aget(old.key)
    assert (again.tags, again.maybe, again.preset) == (set(), None, {"x"})


async def test_a_nested_model_added_since_the_save_loads_as_its_default(redis: Redis) -> None:
    old = account(with_profile=False)(name="ada")
    await old.asave()

    loaded: Any = await account(with_profile=True).aget(old.key)

    assert loaded.profile == Profile()
    await loaded.asave()
    await loaded.profile.badges.aadd("early")
    assert await redis.smembers(set_key("Account", old.pk, "profile.badges")) == {b'"early"'}


async def test_a_list_field_that_becomes_a_set_field_keeps_its_values(redis: Redis) -> None:
    class Listed(AtomicRedisModel):
        tags: list[str] = Field(default_factory=list)

    old = Listed(tags=["a", "b", "a"])
    await old.asave()
    assert await redis.hget(old.key, "tags") == b'["a","b","a"]'

    class Listed(AtomicRedisModel):  # type: ignore[no-redef]
        tags: RedisSet[str] = Field(default_factory=RedisSet)

    loaded = await Listed.aget(old.key)
    assert loaded.tags == {"a", "b"}
    await loaded.asave()
    assert await redis.hget(old.key, "tags") == b"true"
    assert await redis.smembers(set_key("Listed", old.pk, "tags")) == {b'"a"', b'"b"'}


async def test_a_nested_set_saved_inline_loads_and_moves_to_its_key(redis: Redis) -> None:
    Account = account(with_profile=True)
    # As a save wrote it before nested sets had keys of their own: inline in the JSON.
    await redis.hset(
        "Account:old",
        mapping={"pk": '"old"', "name": '""', "profile": ('{"bio":"b","badges":["x"]}')},
    )

    loaded: Any = await Account.aget("Account:old")
    assert (loaded.profile.bio, loaded.profile.badges) == ("b", {"x"})
    await loaded.asave()

    assert await redis.hget("Account:old", "profile") == b'{"bio":"b"}'
    assert await redis.smembers(set_key("Account", "old", "profile.badges")) == {b'"x"'}


# -- a set field removed --------------------------------------------------------------------------


async def test_asave_deletes_the_key_of_a_removed_set_field(journaled: Redis) -> None:
    redis = journaled
    old: Any = tagged("tags", "legacy")(tags={"a"}, legacy={"old"}, flag=True)
    await old.asave()
    legacy_key = set_key("Tagged", old.pk, "legacy")
    assert await redis.smembers(legacy_key) == {b'"old"'}

    new: Any = await tagged("tags").aget(old.key)
    await new.asave()

    assert await redis.exists(legacy_key) == 0
    assert await redis.hgetall(old.key) == {
        b"pk": f'"{old.pk}"'.encode(),
        b"title": b'"untitled"',
        b"tags": b"true",
        b"_version": b"2",  # saved twice
    }
    assert await redis.smembers(set_key("Tagged", old.pk, "tags")) == {b'"a"'}
    entry = await last_entry(redis)
    assert (entry["cmd"], entry["of"]) == ("model.save", "1")  # one write: save and cleanup
    assert entry["args"]["sets"] == {"tags": ["a"], "legacy": None}  # not the scalars


async def test_adelete_deletes_the_key_of_a_removed_set_field(journaled: Redis) -> None:
    redis = journaled
    old: Any = tagged("tags", "legacy")(legacy={"old"})
    await old.asave()

    assert await tagged("tags")(pk=old.pk).adelete() is True

    assert await redis.keys("*") == [STREAM.encode()]
    entry = await last_entry(redis)
    assert (entry["cmd"], entry["args"]) == ("model.delete", {"sets": ["tags", "legacy"]})


async def test_a_removed_field_recorded_as_none_is_cleaned_up_too(redis: Redis) -> None:
    class Worker(AtomicRedisModel):
        duties: RedisSet[str] | None = None

    worker = Worker()
    await worker.asave()  # the hash records duties as null
    await redis.sadd(set_key("Worker", worker.pk, "duties"), '"assigned later"')

    class Worker(AtomicRedisModel):  # type: ignore[no-redef]
        name: str = ""

    await Worker(pk=worker.pk).asave()

    assert await redis.exists(set_key("Worker", worker.pk, "duties")) == 0


async def test_a_removed_nested_set_field_is_cleaned_up(redis: Redis) -> None:
    Account = account(with_profile=True)
    old: Any = Account(profile=Profile(badges={"b"}))
    await old.asave()

    await account(with_profile=False)(pk=old.pk).asave()

    assert await redis.keys("*") == [old.key.encode()]


async def test_replay_of_the_cleanup_gives_the_same_data(journaled: Redis, redis_url: str) -> None:
    redis = journaled
    old: Any = tagged("tags", "legacy")(tags={"a"}, legacy={"old"})
    await old.asave()
    await (await tagged("tags").aget(old.key)).asave()

    target = Redis.from_url(redis_url.replace("/0", "/1"))
    try:
        await target.flushdb()
        await replay(redis, target)
        expected = {key for key in await redis.keys("*") if not key.startswith(b"ledgerset:")}
        assert expected == {old.key.encode(), set_key("Tagged", old.pk, "tags").encode()}
        replayed = {key for key in await target.keys("*") if not key.startswith(b"ledgerset:")}
        assert replayed == expected
        assert await target.hgetall(old.key) == await redis.hgetall(old.key)
    finally:
        await target.flushdb()
        await target.aclose()


# -- a set field renamed --------------------------------------------------------------------------


async def test_a_renamed_set_field_starts_empty_and_the_old_key_goes(redis: Redis) -> None:
    old: Any = tagged("labels")(labels={"a", "b"})
    await old.asave()
    labels_key = set_key("Tagged", old.pk, "labels")

    renamed: Any = await tagged("tags").aget(old.key)
    assert renamed.tags == set()
    assert await redis.smembers(labels_key) == {b'"a"', b'"b"'}  # until the next save

    renamed.tags.add("c")  # what the application puts in the new field is what is saved
    await renamed.asave()

    assert await redis.exists(labels_key) == 0
    assert await redis.smembers(set_key("Tagged", old.pk, "tags")) == {b'"c"'}
    assert await redis.hget(old.key, "labels") is None
