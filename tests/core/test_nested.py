"""One level of nesting: a field holding a model (plain ``BaseModel`` or ``AtomicRedisModel``)
whose ``RedisSet`` fields live in keys of the outer model, named by the field path.

Covered: the keys and the hash as stored; the nested sets' async methods; ``aget``/``aload``
returning them loaded; TTL and ``adelete`` with the outer model; an Optional nested model; a
nested model assigned, replaced, or shared between two outer models; sync mutators in a
transaction; ``aupdate`` refusing a nested field; and a journal replay reproducing all of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    LedgersetError,
    RedisConfig,
    RedisSet,
    StreamJournal,
    UpdateAtomicModelError,
)
from ledgerset.journal import replay

SnapshotFn = Callable[[], Awaitable[Any]]


class Profile(BaseModel):
    bio: str = ""
    badges: RedisSet[str] = Field(default_factory=RedisSet)
    scores: RedisSet[int] | None = None


class Address(AtomicRedisModel):
    city: str = ""
    zones: set[int] = Field(default_factory=set)  # a model's set[int]: a RedisSet[int]


class Member(AtomicRedisModel):
    name: str = ""
    profile: Profile = Field(default_factory=Profile)
    address: Address | None = None


class LeasedMember(AtomicRedisModel):
    Meta = RedisConfig(ttl=60)
    profile: Profile = Field(default_factory=Profile)


def key_of(model: AtomicRedisModel, path: str) -> str:
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{path}"


async def test_a_nested_set_is_stored_in_its_own_key_named_by_the_field_path(
    redis: Redis,
) -> None:
    member = Member(
        pk="m1",
        name="Ada",
        profile=Profile(bio="hi", badges={"early"}),
        address=Address(pk="a1", city="Paris", zones={1, 2}),
    )
    await member.asave()

    assert await redis.hgetall("Member:m1") == {
        b"pk": b'"m1"',
        b"name": b'"Ada"',
        b"profile": b'{"bio":"hi"}',  # its sets are stored apart
        b"address": b'{"pk":"a1","city":"Paris"}',
        b"profile.badges": b"true",
        b"profile.scores": b"null",
        b"address.zones": b"true",
        b"_version": b"1",
    }
    assert await redis.smembers("__rapyer_special__:Member:m1:profile.badges") == {b'"early"'}
    assert await redis.smembers("__rapyer_special__:Member:m1:address.zones") == {b"1", b"2"}
    assert sorted(await redis.keys("*")) == [
        b"Member:m1",
        b"__rapyer_special__:Member:m1:address.zones",
        b"__rapyer_special__:Member:m1:profile.badges",
    ]
    assert member.profile.badges.special_key == key_of(member, "profile.badges")
    assert member.address is not None
    assert member.address.zones.special_key == key_of(member, "address.zones")


async def test_the_async_methods_of_a_nested_set_write_its_key(redis: Redis) -> None:
    member = Member(address=Address())
    await member.asave()

    await member.profile.badges.aadd_many(["a", "b"])
    assert member.address is not None
    await member.address.zones.aadd(7)
    assert await member.profile.badges.aremove("a") is True

    assert await redis.smembers(key_of(member, "profile.badges")) == {b'"b"'}
    assert await redis.smembers(key_of(member, "address.zones")) == {b"7"}
    assert await member.profile.badges.amembers() == {"b"}
    assert await member.address.zones.asize() == 1
    assert member.profile.badges == {"b"}


async def test_aget_and_aload_return_the_nested_sets_loaded(redis: Redis) -> None:
    member = Member(address=Address(city="Oslo"))
    await member.asave()
    await member.profile.badges.aadd("server-side")
    assert member.address is not None
    await member.address.zones.aadd(3)

    loaded = await Member.aget(member.key)
    assert loaded.profile.badges == {"server-side"}
    assert loaded.address is not None
    assert (loaded.address.city, loaded.address.zones) == ("Oslo", {3})
    await loaded.profile.badges.aadd("from the copy")  # a loaded copy is bound too
    assert await redis.smembers(key_of(member, "profile.badges")) == {
        b'"server-side"',
        b'"from the copy"',
    }

    await member.aload()
    assert member.profile.badges == {"server-side", "from the copy"}


async def test_asave_writes_the_nested_mirror_and_adelete_deletes_the_nested_keys(
    redis: Redis,
) -> None:
    member = Member(address=Address(zones={1}))
    await member.asave()
    member.profile.badges.add("local")
    await member.asave()
    assert await redis.smembers(key_of(member, "profile.badges")) == {b'"local"'}

    assert await member.adelete() is True

    assert await redis.keys("*") == []


async def test_nested_sets_take_the_outer_models_ttl(redis: Redis) -> None:
    member = LeasedMember(profile=Profile(badges={"a"}))
    await member.asave()
    assert 0 < await redis.pttl(key_of(member, "profile.badges")) <= 60_000

    await member.profile.badges.aclear()
    await member.profile.badges.aadd("b")  # a new key: it takes the model's remaining TTL

    assert 0 < await redis.pttl(key_of(member, "profile.badges")) <= 60_000


async def test_an_optional_nested_model_that_is_none_has_no_keys(redis: Redis) -> None:
    member = Member()
    await member.asave()
    assert await redis.hget(member.key, "address") == b"null"
    assert await redis.hget(member.key, "address.zones") is None
    assert (await Member.aget(member.key)).address is None

    member.address = Address(zones={5})  # assigned: bound to this model's key at once
    await member.asave()
    assert member.address is not None
    await member.address.zones.aadd(6)
    assert await redis.smembers(key_of(member, "address.zones")) == {b"5", b"6"}

    member.address = None
    await member.asave()
    assert await redis.exists(key_of(member, "address.zones")) == 0
    assert (await Member.aget(member.key)).address is None


async def test_a_nested_set_assigned_later_is_bound_to_the_outer_key(redis: Redis) -> None:
    member = Member(address=Address())
    await member.asave()

    assert member.address is not None
    member.address.zones = {9}  # type: ignore[assignment]
    member.profile.scores = RedisSet({1})  # a plain model: bound by the next save
    with pytest.raises(LedgersetError, match="bound by the outer model's next"):
        await member.profile.scores.aadd(2)
    await member.asave()
    await member.address.zones.aadd(10)
    await member.profile.scores.aadd(2)

    assert await redis.smembers(key_of(member, "address.zones")) == {b"9", b"10"}
    assert await redis.smembers(key_of(member, "profile.scores")) == {b"1", b"2"}
    assert sorted(await redis.keys("__rapyer_special__:Address:*")) == []


def test_a_refused_assignment_of_a_nested_model_changes_nothing() -> None:
    member = Member(profile=Profile(badges={"kept"}))
    before = member.profile

    with pytest.raises(ledgerset.InvalidMemberError) as err:
        member.profile = Profile(badges={1})  # type: ignore[arg-type]

    assert (err.value.model, err.value.field) == ("Member", "profile.badges")
    assert member.profile is before and member.profile.badges == {"kept"}


async def test_a_nested_model_given_to_a_second_outer_model_is_copied(redis: Redis) -> None:
    first = Member(profile=Profile(badges={"shared"}))
    second = Member(profile=first.profile)
    await first.asave()
    await second.asave()

    await second.profile.badges.aadd("second only")

    assert first.profile.badges.special_key == key_of(first, "profile.badges")
    assert second.profile.badges.special_key == key_of(second, "profile.badges")
    assert await redis.smembers(key_of(first, "profile.badges")) == {b'"shared"'}
    assert await first.profile.badges.amembers() == {"shared"}


async def test_sync_mutators_of_a_nested_set_queue_in_a_transaction(redis: Redis) -> None:
    member = Member()
    await member.asave()

    async with member.apipeline() as tx:
        member.profile.badges.add("queued")
        member.profile.badges |= {"also"}
        assert [command.field for command in tx.commands] == ["profile.badges"] * 2

    assert await redis.smembers(key_of(member, "profile.badges")) == {b'"queued"', b'"also"'}


async def test_aupdate_of_a_field_holding_sets_is_refused(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    member = Member(profile=Profile(badges={"a"}))
    await member.asave()
    before = await snapshot()

    with pytest.raises(UpdateAtomicModelError) as err:
        await member.aupdate(profile=Profile(bio="new"))

    assert (err.value.model, err.value.field) == ("Member", "profile")
    assert "profile.badges" in str(err.value) and "asave()" in str(err.value)
    assert await snapshot() == before


async def test_a_nested_set_member_error_names_the_field_path(redis: Redis) -> None:
    with pytest.raises(ledgerset.ModelNotFoundError):
        await Member().profile.badges.aadd("x")  # addressed to the outer model, never saved
    with pytest.raises(Exception) as err:
        Member(profile={"badges": [1]})  # type: ignore[arg-type]
    assert err.value.errors()[0]["loc"] == ("profile", "badges")  # type: ignore[attr-defined]
    assert "Member.profile.badges" in str(err.value)


async def test_a_journal_replay_reproduces_nested_sets(redis: Redis, redis_url: str) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    member = Member(profile=Profile(badges={"a"}), address=Address(zones={1}))
    await member.asave()
    await member.profile.badges.aadd("b")
    assert member.address is not None
    await member.address.zones.aremove(1)
    async with member.apipeline():
        member.profile.badges.discard("a")
        member.address.zones.add(2)
    gone = Member(profile=Profile(badges={"gone"}))
    await gone.asave()
    await gone.adelete()
    entries = [fields for _, fields in await redis.xrange("ledgerset:journal")]
    assert {entry[b"field"] for entry in entries if entry[b"cmd"].startswith(b"set.")} == {
        b"profile.badges",
        b"address.zones",
    }
    assert orjson.loads(entries[0][b"args"])["sets"]["profile.badges"] == ["a"]

    target = Redis.from_url(redis_url.replace("/0", "/1"))
    try:
        await target.flushdb()
        report = await replay(redis, target)
        assert report.applied == len(entries)
        source_keys = {key for key in await redis.keys("*") if not key.startswith(b"ledgerset:")}
        target_keys = {key for key in await target.keys("*") if not key.startswith(b"ledgerset:")}
        assert (
            source_keys
            == target_keys
            == {
                member.key.encode(),
                key_of(member, "profile.badges").encode(),
                key_of(member, "address.zones").encode(),
            }
        )
        assert await target.hgetall(member.key) == await redis.hgetall(member.key)
        assert await target.smembers(key_of(member, "profile.badges")) == {b'"b"'}
        assert await target.smembers(key_of(member, "address.zones")) == {b"2"}
    finally:
        await target.flushdb()
        await target.aclose()
