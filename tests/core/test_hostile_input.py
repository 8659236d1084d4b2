"""Hostile input is stored exactly, or refused with nothing written.

- members of 512 KiB (ASCII and multi-byte) round-trip exactly, immediately and in a transaction;
- 100,000 members in one ``aadd_many`` (and 3 x 30,000 in one transaction) are one EVALSHA: the
  server program chunks them under Lua's ``unpack`` limit;
- pks with ``:``, ``*``, ``{``, ``}``, spaces, newlines and unicode give exactly the documented
  keys, and a pattern-like pk (``*``) never matches or touches another model's keys;
- pks that look like another model's key (``x:tags`` next to ``x``) and two classes sharing a pk
  get disjoint keys, and writing one leaves the others byte-identical;
- an empty pk is refused before anything is written;
- a Hypothesis fuzz of member values for every member type keeps Python-set semantics: what
  ``aadd_many`` stored, ``amembers``/``asize``/``acontains`` give back exactly; a lone surrogate
  is refused with nothing written.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    InvalidKeyError,
    InvalidMemberError,
    ModelNotFoundError,
    RedisSet,
)

Snapshot = dict[bytes, tuple[str, Any, int]]
SnapshotFn = Callable[[], Awaitable[Snapshot]]

PREFIX = "__rapyer_special__"
BIG = 512 * 1024


class HostileDoc(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class HostileOther(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class HostileStrs(AtomicRedisModel):
    members: RedisSet[str] = Field(default_factory=RedisSet)


class HostileInts(AtomicRedisModel):
    members: RedisSet[int] = Field(default_factory=RedisSet)


class HostileFloats(AtomicRedisModel):
    members: RedisSet[float] = Field(default_factory=RedisSet)


class HostileBools(AtomicRedisModel):
    members: RedisSet[bool] = Field(default_factory=RedisSet)


class HostileAny(AtomicRedisModel):
    members: RedisSet = Field(default_factory=RedisSet)  # type: ignore[type-arg]


def stored(*members: object) -> set[bytes]:
    """The raw SET members ledgerset stores for ``members``: what ``json.dumps`` writes."""
    return {json.dumps(member).encode() for member in members}


def keys_of(model: AtomicRedisModel) -> set[bytes]:
    """The model's hash key and its tags set key, as the documented layout spells them."""
    name = type(model).__name__
    return {f"{name}:{model.pk}".encode(), f"{PREFIX}:{name}:{model.pk}:tags".encode()}


def only(state: Snapshot, keys: Iterable[bytes]) -> Snapshot:
    wanted = set(keys)
    return {key: value for key, value in state.items() if key in wanted}


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.fixture
async def doc(redis: Redis) -> HostileDoc:
    """A saved document; saving also loads the server program, so EVALSHA counts are exact."""
    return await HostileDoc(pk="doc").asave()


# -- big members and many members -----------------------------------------------------------------

BIG_MEMBERS = {
    "ascii": "x" * BIG,
    "multi_byte": ("ü€😀" * BIG)[:BIG],
}


@pytest.mark.parametrize("member", BIG_MEMBERS.values(), ids=BIG_MEMBERS.keys())
async def test_a_512_kib_member_round_trips_exactly(
    doc: HostileDoc, redis: Redis, member: str
) -> None:
    await doc.tags.aadd(member)
    assert await doc.tags.acontains(member) is True
    assert await doc.tags.acontains(member[:-1]) is False
    assert await doc.tags.amembers() == {member}
    assert await redis.smembers(f"{PREFIX}:HostileDoc:doc:tags") == stored(member)
    assert (await HostileDoc.aget(doc.key)).tags == {member}


@pytest.mark.parametrize("member", BIG_MEMBERS.values(), ids=BIG_MEMBERS.keys())
async def test_a_512_kib_member_round_trips_in_a_transaction(
    doc: HostileDoc, redis: Redis, member: str
) -> None:
    async with doc.apipeline():
        doc.tags.add(member)
        doc.tags.add(member + "!")
        doc.tags.discard(member + "!")
    assert await doc.tags.acontains(member) is True
    assert await doc.tags.amembers() == {member}
    assert await redis.smembers(f"{PREFIX}:HostileDoc:doc:tags") == stored(member)


async def test_100k_members_in_one_aadd_many_are_one_evalsha(doc: HostileDoc, redis: Redis) -> None:
    members = [f"member-{i}" for i in range(100_000)]
    before = await evalsha_calls(redis)
    await doc.tags.aadd_many(members)
    assert await evalsha_calls(redis) - before == 1
    assert await doc.tags.asize() == 100_000
    assert await doc.tags.amembers() == set(members)
    assert await redis.scard(f"{PREFIX}:HostileDoc:doc:tags") == 100_000


async def test_a_transaction_of_3_x_30k_members_is_one_evalsha(
    doc: HostileDoc, redis: Redis
) -> None:
    first, second, third = ([f"{part}-{i}" for i in range(30_000)] for part in "abc")
    before = await evalsha_calls(redis)
    async with doc.apipeline() as tx:
        await doc.tags.aadd_many(first)
        doc.tags.update(second)
        doc.tags |= set(third)
    assert await evalsha_calls(redis) - before == 1
    assert tx.results == [30_000, 30_000, 30_000]
    assert await doc.tags.asize() == 90_000
    assert await doc.tags.amembers() == {*first, *second, *third}


# -- hostile pks ----------------------------------------------------------------------------------

HOSTILE_PKS = [
    "a:b*{c} d\nü",
    "*",
    "?",
    "[a-z]",
    "{tag}",
    " ",
    ":",
    "tab\there\r\n",
    "😀\u200bé\u0301",
    "back\\slash",
]


@pytest.mark.parametrize("pk", HOSTILE_PKS)
async def test_a_hostile_pk_gives_exactly_the_documented_keys(redis: Redis, pk: str) -> None:
    model = HostileDoc(pk=pk, title=pk, tags={"a"})
    await model.asave()
    await model.tags.aadd("b")
    assert model.key == f"HostileDoc:{pk}"
    assert set(await redis.keys("*")) == keys_of(model)
    assert await redis.smembers(f"{PREFIX}:HostileDoc:{pk}:tags") == stored("a", "b")

    loaded = await HostileDoc.aget(model.key)
    assert (loaded.pk, loaded.title, loaded.tags) == (pk, pk, {"a", "b"})
    assert await HostileDoc.aexists(model.key) is True

    assert await model.adelete() is True
    assert await redis.keys("*") == []
    assert await HostileDoc.aexists(model.key) is False


async def test_a_star_pk_does_not_touch_other_models(redis: Redis, snapshot: SnapshotFn) -> None:
    await HostileDoc(pk="bystander", title="b", tags={"kept"}).asave()
    await HostileOther(pk="*", title="o", tags={"kept"}).asave()
    before = await snapshot()

    assert await HostileDoc.aexists("HostileDoc:*") is False
    with pytest.raises(ModelNotFoundError):
        await HostileDoc.aget("HostileDoc:*")
    star = await HostileDoc(pk="*", title="star", tags={"s"}).asave()
    await star.tags.aadd_many(["t", "u"])
    assert await star.tags.aremove("s") is True
    assert await star.tags.amembers() == {"t", "u"}
    await star.aupdate(title="star2")
    assert (await HostileDoc.aget("HostileDoc:*")).title == "star2"
    assert only(await snapshot(), before) == before
    await star.tags.aclear()
    assert await star.adelete() is True

    assert await snapshot() == before


async def test_a_pk_that_looks_like_a_set_key_gets_disjoint_keys(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    plain = await HostileDoc(pk="x", title="plain", tags={"p"}).asave()
    lookalike = await HostileDoc(pk="x:tags", title="lookalike", tags={"l"}).asave()
    assert keys_of(plain) == {b"HostileDoc:x", b"__rapyer_special__:HostileDoc:x:tags"}
    assert keys_of(lookalike) == {
        b"HostileDoc:x:tags",
        b"__rapyer_special__:HostileDoc:x:tags:tags",
    }
    assert set(await redis.keys("*")) == keys_of(plain) | keys_of(lookalike)

    for writer, other in ((plain, lookalike), (lookalike, plain)):
        untouched = only(await snapshot(), keys_of(other))
        await writer.tags.aadd_many(["new1", "new2"])
        await writer.aupdate(title="changed")
        async with writer.apipeline():
            writer.tags.clear()
            writer.tags.add("after")
        assert only(await snapshot(), keys_of(other)) == untouched
    assert (await HostileDoc.aget("HostileDoc:x")).tags == {"after"}
    assert (await HostileDoc.aget("HostileDoc:x:tags")).tags == {"after"}

    kept = only(await snapshot(), keys_of(lookalike))
    assert await plain.adelete() is True
    assert await snapshot() == kept


async def test_two_classes_never_share_a_key_for_the_same_pk(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    doc = await HostileDoc(pk="same", title="doc", tags={"d"}).asave()
    other = await HostileOther(pk="same", title="other", tags={"o"}).asave()
    assert keys_of(doc).isdisjoint(keys_of(other))
    untouched = only(await snapshot(), keys_of(other))

    await doc.tags.aadd("d2")
    await doc.aupdate(title="doc2")
    assert await doc.adelete() is True

    assert await snapshot() == untouched
    assert (await HostileOther.aget("HostileOther:same")).tags == {"o"}


async def test_an_empty_pk_is_refused_and_nothing_is_written(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    await HostileOther(pk="existing").asave()
    before = await snapshot()
    with pytest.raises(pydantic.ValidationError, match="pk"):
        HostileDoc(pk="", tags={"a"})
    with pytest.raises(InvalidKeyError, match="HostileDoc:"):
        await HostileDoc.aget("HostileDoc:")
    with pytest.raises(InvalidKeyError):
        await HostileDoc.aexists("HostileDoc:")
    assert await snapshot() == before


# -- fuzzing member values ------------------------------------------------------------------------

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

texts = st.one_of(
    st.text(st.characters(codec="utf-8")),
    st.just(""),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).map(lambda s: s * 500),
)
ints = st.integers(-(2**63), 2**63 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
bools = st.booleans()


@pytest.fixture
async def sets(redis: Redis) -> dict[type, RedisSet[Any]]:
    """One saved model per member type; the fuzz tests clear their set before each example."""
    models = {
        str: HostileStrs(pk="fuzz"),
        int: HostileInts(pk="fuzz"),
        float: HostileFloats(pk="fuzz"),
        bool: HostileBools(pk="fuzz"),
        object: HostileAny(pk="fuzz"),
    }
    for model in models.values():
        await model.asave()
    return {kind: model.members for kind, model in models.items()}  # type: ignore[attr-defined]


async def assert_round_trip(members: RedisSet[Any], values: list[Any], expected: set[Any]) -> None:
    """aadd_many(values) leaves exactly ``expected`` (a Python set of the normalized values)."""
    await members.aclear()
    await members.aadd_many(values)
    got = await members.amembers()
    assert got == expected
    assert {(type(v), v) for v in got} == {(type(v), v) for v in expected}
    assert await members.asize() == len(expected)
    for value in values:
        assert await members.acontains(value) is True, value


@FUZZ
@given(values=st.lists(texts, max_size=30))
async def test_fuzzed_strs_round_trip(sets: dict[type, RedisSet[Any]], values: list[str]) -> None:
    await assert_round_trip(sets[str], values, set(values))


@FUZZ
@given(values=st.lists(ints, max_size=30))
async def test_fuzzed_ints_round_trip(sets: dict[type, RedisSet[Any]], values: list[int]) -> None:
    await assert_round_trip(sets[int], values, set(values))


@FUZZ
@given(values=st.lists(st.one_of(floats, ints), max_size=30))
@example(values=[1, 1.0, -0.0, 0.0, 0, 5e-324, 1.7976931348623157e308, 0.1])
async def test_fuzzed_floats_round_trip(
    sets: dict[type, RedisSet[Any]], values: list[float | int]
) -> None:
    # A float set stores 1 as 1.0, and -0.0 == 0.0: Python's own set semantics.
    await assert_round_trip(sets[float], values, {float(v) for v in values})


@FUZZ
@given(values=st.lists(bools, max_size=4))
async def test_fuzzed_bools_round_trip(sets: dict[type, RedisSet[Any]], values: list[bool]) -> None:
    await assert_round_trip(sets[bool], values, set(values))


def normalize_any(value: object) -> object:
    """A bare set's canonical value: an integral float is that int (1.0 == 1, as in Python)."""
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value <= 2**63 - 1:
        return int(value)
    return value


@FUZZ
@given(values=st.lists(st.one_of(texts, ints, floats, bools), max_size=30))
@example(values=["1", 1, 1.0, 1.5, -0.0, 0.0, "true", "false", 2**63 - 1])
@example(values=[True, 1])
async def test_fuzzed_bare_set_members_round_trip(
    sets: dict[type, RedisSet[Any]], values: list[Any]
) -> None:
    expected = {normalize_any(v) for v in values}
    members = sets[object]
    await members.aclear()
    await members.aadd_many(values)
    assert await members.amembers() == expected
    assert await members.asize() == len(expected)
    for value in values:
        assert await members.acontains(value) is True, value


async def test_a_bare_set_keeps_true_and_1_one_member_as_python_does(
    sets: dict[type, RedisSet[Any]],
) -> None:
    # In Python True == 1 and False == 0 == 0.0: {True, 1, False, 0.0} has two members.
    values = [True, 1, False, 0.0]
    members = sets[object]
    await members.aadd_many(values)
    assert await members.asize() == len(set(values)) == 2
    await members.aclear()
    await members.aadd(True)
    assert await members.acontains(1) is (1 in {True}) is True


@pytest.mark.parametrize("lone", ["\ud800", "ok\udfffok"])
async def test_a_lone_surrogate_is_refused_and_nothing_is_written(
    sets: dict[type, RedisSet[Any]], snapshot: SnapshotFn, lone: str
) -> None:
    before = await snapshot()
    with pytest.raises(InvalidMemberError) as refused:
        await sets[str].aadd(lone)
    assert (refused.value.field, refused.value.value) == ("members", lone)
    with pytest.raises(InvalidMemberError):
        await sets[str].aadd_many(["fine", lone])
    with pytest.raises(InvalidMemberError):
        await sets[object].aadd_many([1, lone])
    with pytest.raises(InvalidMemberError):
        async with ledgerset.transaction():
            sets[str].add("fine")
            sets[str].add(lone)
    assert await snapshot() == before
