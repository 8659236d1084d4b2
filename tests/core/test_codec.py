"""Members are stored as the exact bytes Python's ``json.dumps`` writes: rapyer's bytes.

- a Hypothesis fuzz of every member type (``str``, ``int``, ``float``, ``bool``, a bare set):
  what ``aadd`` and ``aadd_many`` store is ``json.dumps`` of the value the set holds;
- members written by another client with ``json.dumps`` (non-ASCII, U+007F, U+2028, ``1e-07``)
  are found by ``acontains``, removed by ``aremove``, and not added a second time by ``aadd``;
- members written by an older client in raw UTF-8 (orjson's form) are still read;
- a float set reads an int another client wrote as the float it stands for, and names a bool;
- a bare ``RedisSet`` keeps ``True``, ``1`` and ``1.0`` as one member, stored as ``json.dumps(1)``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import Field
from redis.asyncio import Redis

from ledgerset import AtomicRedisModel, InvalidMemberError, RedisSet


class CodecStrs(AtomicRedisModel):
    members: RedisSet[str] = Field(default_factory=RedisSet)


class CodecInts(AtomicRedisModel):
    members: RedisSet[int] = Field(default_factory=RedisSet)


class CodecFloats(AtomicRedisModel):
    members: RedisSet[float] = Field(default_factory=RedisSet)


class CodecBools(AtomicRedisModel):
    members: RedisSet[bool] = Field(default_factory=RedisSet)


class CodecAny(AtomicRedisModel):
    members: RedisSet = Field(default_factory=RedisSet)  # type: ignore[type-arg]


MODELS: dict[str, type[AtomicRedisModel]] = {
    "str": CodecStrs,
    "int": CodecInts,
    "float": CodecFloats,
    "bool": CodecBools,
    "any": CodecAny,
}

#: What another client (rapyer, or any Python program) writes with json.dumps, and ledgerset did
#: not match before: ensure_ascii escapes, and Python's float repr.
FOREIGN_STRS = ["café", "\x7f", "\u2028", "😀", "tab\there", "plain"]
FOREIGN_FLOATS = [1e-07, 1e16, 2.5e-05, 0.1]


def key_of(model: AtomicRedisModel) -> str:
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:members"


def json_bytes(*values: object) -> set[bytes]:
    return {json.dumps(value).encode() for value in values}


async def saved(kind: str) -> Any:
    model = MODELS[kind](pk="codec")
    await model.asave()
    return model


# -- ledgerset's bytes are json.dumps's bytes -----------------------------------------------------

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
texts = st.text(st.characters(codec="utf-8"), max_size=20)
ints = st.integers(-(2**63), 2**63 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)


def held(kind: str, value: Any) -> Any:
    """The value a set of ``kind`` holds for ``value`` (its documented canonical form)."""
    if kind == "float":
        return float(value) + 0.0  # 1 -> 1.0; -0.0 -> 0.0
    if kind == "any":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
            return int(value)
        return value + 0.0 if isinstance(value, float) else value
    return value


async def assert_stored_as_json_dumps(redis: Redis, kind: str, values: list[Any]) -> None:
    model = await saved(kind)
    expected = {json.dumps(held(kind, value)).encode() for value in values}
    await model.members.aadd_many(values)
    assert await redis.smembers(key_of(model)) == expected
    await model.members.aclear()
    for value in values:
        await model.members.aadd(value)
    assert await redis.smembers(key_of(model)) == expected


@FUZZ
@given(values=st.lists(texts, max_size=20))
@example(values=[*FOREIGN_STRS, "\x00", "\x1f", '"\\', "\ufeff", "\U0010ffff"])
@example(values=["café", "plain"])  # one non-ASCII member among ASCII ones
async def test_str_members_are_stored_as_json_dumps_writes_them(
    redis: Redis, values: list[str]
) -> None:
    await assert_stored_as_json_dumps(redis, "str", values)


@FUZZ
@given(values=st.lists(ints, max_size=20))
@example(values=[0, -1, 2**63 - 1, -(2**63)])
async def test_int_members_are_stored_as_json_dumps_writes_them(
    redis: Redis, values: list[int]
) -> None:
    await assert_stored_as_json_dumps(redis, "int", values)


@FUZZ
@given(values=st.lists(st.one_of(floats, ints), max_size=20))
@example(values=[*FOREIGN_FLOATS, 1e22, 5e-324, 1.7976931348623157e308, 1e-05, 1e15, 1, -0.0])
async def test_float_members_are_stored_as_json_dumps_writes_them(
    redis: Redis, values: list[float]
) -> None:
    await assert_stored_as_json_dumps(redis, "float", values)


@FUZZ
@given(values=st.lists(st.booleans(), max_size=3))
async def test_bool_members_are_stored_as_json_dumps_writes_them(
    redis: Redis, values: list[bool]
) -> None:
    await assert_stored_as_json_dumps(redis, "bool", values)


@FUZZ
@given(values=st.lists(st.one_of(texts, ints, floats, st.booleans()), max_size=20))
@example(values=["café", 1e-07, 1.0, True, "1", "\u2028"])
async def test_bare_set_members_are_stored_as_json_dumps_writes_them(
    redis: Redis, values: list[Any]
) -> None:
    await assert_stored_as_json_dumps(redis, "any", values)


# -- members another client wrote with json.dumps -------------------------------------------------


async def test_str_members_written_by_json_dumps_are_found_removed_and_not_duplicated(
    redis: Redis,
) -> None:
    model = await saved("str")
    await redis.sadd(key_of(model), *json_bytes(*FOREIGN_STRS))

    for value in FOREIGN_STRS:
        assert await model.members.acontains(value) is True, value
    await model.members.aadd_many(FOREIGN_STRS)
    for value in FOREIGN_STRS:
        await model.members.aadd(value)
    assert await redis.smembers(key_of(model)) == json_bytes(*FOREIGN_STRS)
    assert await model.members.asize() == len(FOREIGN_STRS)
    assert await model.members.amembers() == set(FOREIGN_STRS)

    for value in FOREIGN_STRS:
        assert await model.members.aremove(value) is True, value
    assert await redis.exists(key_of(model)) == 0


async def test_float_members_written_by_json_dumps_are_found_removed_and_not_duplicated(
    redis: Redis,
) -> None:
    model = await saved("float")
    await redis.sadd(key_of(model), *json_bytes(*FOREIGN_FLOATS))

    for value in FOREIGN_FLOATS:
        assert await model.members.acontains(value) is True, value
    await model.members.aadd_many(FOREIGN_FLOATS)
    assert await redis.smembers(key_of(model)) == json_bytes(*FOREIGN_FLOATS)
    assert await model.members.asize() == len(FOREIGN_FLOATS)
    assert await model.members.amembers() == set(FOREIGN_FLOATS)

    for value in FOREIGN_FLOATS:
        assert await model.members.aremove(value) is True, value
    assert await redis.exists(key_of(model)) == 0


async def test_an_int_another_client_wrote_in_a_float_set_reads_as_its_float(
    redis: Redis,
) -> None:
    model = await saved("float")
    await redis.sadd(key_of(model), b"7", b"2.5")

    members = await model.members.amembers()

    assert members == {7.0, 2.5} and {type(member) for member in members} == {float}
    assert [type(member) for member in [m async for m in model.members.aiter()]] == [float] * 2
    await redis.sadd(key_of(model), b"true")  # a bool is not a float, written as anything
    with pytest.raises(InvalidMemberError) as caught:
        await model.members.amembers()
    assert caught.value.value == b"true"


async def test_a_bare_set_matches_members_written_by_json_dumps(redis: Redis) -> None:
    model = await saved("any")
    foreign = ["café", "\u2028", 1e-07, 7]
    await redis.sadd(key_of(model), *json_bytes(*foreign))
    for value in foreign:
        assert await model.members.acontains(value) is True, value
    await model.members.aadd_many(foreign)
    assert await model.members.asize() == len(foreign)
    assert await model.members.amembers() == set(foreign)


async def test_members_in_raw_utf8_are_still_read(redis: Redis) -> None:
    # What ledgerset wrote before it followed json.dumps: decoding accepts both forms.
    model = await saved("str")
    await redis.sadd(key_of(model), '"naïve"'.encode(), b'"\\u00e9t\\u00e9"')
    assert await model.members.amembers() == {"naïve", "été"}


async def test_a_bare_set_keeps_true_1_and_1_0_as_one_member(redis: Redis) -> None:
    model = await saved("any")
    await model.members.aadd_many([True, 1, 1.0])
    await model.members.aadd(True)
    await model.members.aadd(1.0)
    assert await redis.smembers(key_of(model)) == json_bytes(1) == {b"1"}
    assert await model.members.asize() == len(set([True, 1, 1.0])) == 1
    assert await model.members.acontains(True) is True
    assert await model.members.amembers() == {1}
