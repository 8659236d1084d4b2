"""Bad input gets a clear error and changes nothing.

Every case checks both halves: the error (its type, and that its message names the model, field,
key, value or command involved) and the server (a snapshot of the whole database taken before the
call equals the one taken after it). Covered: unsupported or out-of-range set members, a str passed
where a list of members is expected, bad members inside a transaction, unsupported set field
declarations, bad constructor values, bad ``aupdate`` calls, writes to models that are not in
Redis (never saved, deleted, expired), keys another client overwrote with another type, and keys
of another class.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Optional

import pydantic
import pytest
from pydantic import Field
from redis.asyncio import Redis
from redis.exceptions import ResponseError

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    InvalidKeyError,
    InvalidMemberError,
    ModelDefinitionError,
    ModelNotFoundError,
    RedisConfig,
    RedisSet,
    UpdateAtomicModelError,
    WrongTypeError,
)

SnapshotFn = Callable[[], Awaitable[Any]]


class BadDoc(AtomicRedisModel):
    title: str = "untitled"
    views: int = 0
    words: RedisSet[str] = Field(default_factory=RedisSet)
    scores: RedisSet[float] = Field(default_factory=RedisSet)
    anything: RedisSet = Field(default_factory=RedisSet)  # type: ignore[type-arg]
    counts: RedisSet[int] = Field(default_factory=RedisSet)
    flags: RedisSet[bool] = Field(default_factory=RedisSet)


class BadLeasedDoc(AtomicRedisModel):
    Meta = RedisConfig(ttl=3600)
    title: str = "untitled"
    words: RedisSet[str] = Field(default_factory=RedisSet)


class BadOfflineDoc(AtomicRedisModel):
    """Talks to a port where no server listens: any I/O would raise a connection error."""

    Meta = RedisConfig(redis=Redis.from_url("redis://127.0.0.1:1/0"))
    words: RedisSet[str] = Field(default_factory=RedisSet)


def set_key(model: AtomicRedisModel, field: str) -> str:
    """The spec's layout of a set field's key."""
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{field}"


@pytest.fixture
async def doc(redis: Redis) -> BadDoc:
    """A saved BadDoc whose every set holds one member, so every set key exists."""
    return await BadDoc(
        title="kept",
        views=3,
        words={"w"},
        scores={0.5},
        anything={"a", 1},
        counts={7},
        flags={True},
    ).asave()


# -- members of an unsupported type or value --------------------------------------------------

BAD_MEMBERS = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="-inf"),
    pytest.param(None, id="None"),
    pytest.param({"k": 1}, id="dict"),
    pytest.param([1, 2], id="list"),
    pytest.param(b"raw", id="bytes"),
    pytest.param((1, 2), id="tuple"),
    pytest.param(object(), id="object"),
]
GOOD_MEMBERS: dict[str, tuple[Any, Any]] = {
    "words": ("x", "y"),
    "scores": (1.5, 2.5),
    "anything": ("x", 2),
}
MEMBER_METHODS = ["aadd", "aadd_many", "aremove", "acontains"]


def assert_names_member(error: InvalidMemberError, field: str, value: object) -> None:
    text = str(error)
    assert f"BadDoc.{field}" in text
    assert repr(value) in text
    assert (error.model, error.field) == ("BadDoc", field)
    assert error.value is value


@pytest.mark.parametrize("value", BAD_MEMBERS)
@pytest.mark.parametrize("field", list(GOOD_MEMBERS))
@pytest.mark.parametrize("method", MEMBER_METHODS)
async def test_unsupported_member_is_refused_and_nothing_is_written(
    doc: BadDoc, snapshot: SnapshotFn, method: str, field: str, value: object
) -> None:
    redis_set = getattr(doc, field)
    mirror = set(redis_set)
    good, other_good = GOOD_MEMBERS[field]
    # aadd_many: the bad member sits between good ones; none of the batch may be written.
    argument = [good, value, other_good] if method == "aadd_many" else value
    before = await snapshot()
    with pytest.raises(InvalidMemberError) as err:
        await getattr(redis_set, method)(argument)
    assert_names_member(err.value, field, value)
    assert await snapshot() == before
    assert set(redis_set) == mirror


@pytest.mark.parametrize("method", MEMBER_METHODS)
async def test_unsupported_member_is_refused_before_any_io(
    redis: Redis, snapshot: SnapshotFn, method: str
) -> None:
    offline = BadOfflineDoc()
    argument = ["x", None] if method == "aadd_many" else None
    before = await snapshot()
    # Had the call reached the network, it would fail with a connection error instead.
    with pytest.raises(InvalidMemberError) as err:
        await getattr(offline.words, method)(argument)
    assert "BadOfflineDoc.words" in str(err.value)
    assert "None" in str(err.value)
    assert await snapshot() == before


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        pytest.param("counts", "1", "RedisSet[int]", id="int-refuses-str"),
        pytest.param("counts", 1.5, "RedisSet[int]", id="int-refuses-float"),
        pytest.param("counts", True, "RedisSet[int]", id="int-refuses-bool"),
        pytest.param("counts", 2**63, "RedisSet[int]", id="int-refuses-2**63"),
        pytest.param("counts", -(2**63) - 1, "RedisSet[int]", id="int-refuses-below-int64"),
        pytest.param("anything", 2**63, "RedisSet[str | int | float | bool]", id="any-2**63"),
        pytest.param("words", 1, "RedisSet[str]", id="str-refuses-int"),
        pytest.param("flags", 1, "RedisSet[bool]", id="bool-refuses-int"),
        pytest.param("scores", True, "RedisSet[float]", id="float-refuses-bool"),
    ],
)
async def test_member_of_the_wrong_type_is_refused(
    doc: BadDoc, snapshot: SnapshotFn, field: str, value: object, kind: str
) -> None:
    before = await snapshot()
    with pytest.raises(InvalidMemberError) as err:
        await getattr(doc, field).aadd(value)
    assert_names_member(err.value, field, value)
    assert kind in str(err.value)
    assert await snapshot() == before


async def test_float_set_takes_an_int_and_stores_it_as_a_float(doc: BadDoc, redis: Redis) -> None:
    await doc.scores.aadd(1)
    assert await redis.smembers(set_key(doc, "scores")) == {b"0.5", b"1.0"}
    assert await doc.scores.amembers() == {0.5, 1.0}


async def test_int_set_takes_the_ends_of_the_64_bit_range(doc: BadDoc, redis: Redis) -> None:
    await doc.counts.aadd_many([2**63 - 1, -(2**63)])
    assert await redis.smembers(set_key(doc, "counts")) == {
        b"7",
        b"9223372036854775807",
        b"-9223372036854775808",
    }


@pytest.mark.parametrize("field", ["words", "anything"])
@pytest.mark.parametrize("values", ["abc", b"ab", bytearray(b"ab"), {"k": 1}], ids=repr)
async def test_aadd_many_of_one_value_or_a_mapping_is_refused_with_a_hint(
    doc: BadDoc, snapshot: SnapshotFn, field: str, values: Any
) -> None:
    before = await snapshot()
    with pytest.raises(InvalidMemberError) as err:
        await getattr(doc, field).aadd_many(values)
    assert_names_member(err.value, field, values)
    assert "aadd_many([" in str(err.value)
    assert await snapshot() == before


# -- bad members inside a transaction ---------------------------------------------------------


def or_in_place(s: RedisSet[Any]) -> None:
    s |= {"ok", None}


def sub_in_place(s: RedisSet[Any]) -> None:
    s -= {"w", None}


def and_in_place(s: RedisSet[Any]) -> None:
    s &= {"w", None}


def xor_in_place(s: RedisSet[Any]) -> None:
    s ^= {"ok", None}


SYNC_MUTATIONS: dict[str, Callable[[RedisSet[Any]], object]] = {
    "add": lambda s: s.add(None),
    "update": lambda s: s.update(["ok", None]),
    "remove": lambda s: s.remove(None),
    "discard": lambda s: s.discard(None),
    "difference_update": lambda s: s.difference_update(["w", None]),
    "intersection_update": lambda s: s.intersection_update(["w", None]),
    "symmetric_difference_update": lambda s: s.symmetric_difference_update(["ok", None]),
    "|=": or_in_place,
    "-=": sub_in_place,
    "&=": and_in_place,
    "^=": xor_in_place,
}


@pytest.mark.parametrize("mutation", list(SYNC_MUTATIONS))
async def test_bad_member_in_a_transaction_raises_at_the_call_and_commits_nothing(
    doc: BadDoc, snapshot: SnapshotFn, mutation: str
) -> None:
    other = await BadDoc(words={"o"}).asave()
    before = await snapshot()
    reached_after_the_bad_call = False
    with pytest.raises(InvalidMemberError) as err:
        async with ledgerset.transaction() as tx:
            other.words.add("queued")
            SYNC_MUTATIONS[mutation](doc.words)
            reached_after_the_bad_call = True
    assert not reached_after_the_bad_call
    assert [command.name for command in tx.commands] == ["set.add"]  # only the healthy one
    assert "BadDoc.words" in str(err.value)
    assert "None" in str(err.value)
    assert await snapshot() == before
    assert set(other.words) == {"o"}
    assert set(doc.words) == {"w"}


# -- unsupported set fields: refused when the class is defined --------------------------------


async def test_a_set_of_dicts_fails_when_the_class_is_defined(snapshot: SnapshotFn) -> None:
    before = await snapshot()
    with pytest.raises(ModelDefinitionError) as err:

        class BadDictDoc(AtomicRedisModel):
            blobs: RedisSet[dict] = Field(default_factory=RedisSet)  # type: ignore[type-var,type-arg,arg-type]

    assert "BadDictDoc.blobs" in str(err.value)
    assert "dict" in str(err.value)
    assert (err.value.model, err.value.field) == ("BadDictDoc", "blobs")
    assert await snapshot() == before


async def test_a_set_of_datetimes_fails_when_the_class_is_defined(snapshot: SnapshotFn) -> None:
    before = await snapshot()
    with pytest.raises(ModelDefinitionError) as err:

        class BadDatetimeDoc(AtomicRedisModel):
            moments: set[datetime] = Field(default_factory=set)

    assert "BadDatetimeDoc.moments" in str(err.value)
    assert "datetime" in str(err.value)
    assert err.value.field == "moments"
    assert await snapshot() == before


async def test_an_optional_set_of_bytes_fails_when_the_class_is_defined(
    snapshot: SnapshotFn,
) -> None:
    before = await snapshot()
    with pytest.raises(ModelDefinitionError) as err:

        class BadBytesDoc(AtomicRedisModel):
            blobs: Optional[set[bytes]] = None  # noqa: UP045 - the spelling under test

    assert "BadBytesDoc.blobs" in str(err.value)
    assert "bytes" in str(err.value)
    assert err.value.field == "blobs"
    assert await snapshot() == before


# -- bad values given to the constructor ------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        pytest.param("words", {1}, "1", id="str-set-given-int"),
        pytest.param("counts", {"1"}, "'1'", id="int-set-given-str"),
        pytest.param("scores", [float("nan")], "nan", id="float-set-given-nan"),
        pytest.param("flags", [1], "1", id="bool-set-given-int"),
        pytest.param("words", "abc", "str", id="str-instead-of-a-set"),
    ],
)
async def test_constructing_with_a_bad_member_raises_validation_error(
    snapshot: SnapshotFn, field: str, value: object, shown: str
) -> None:
    before = await snapshot()
    with pytest.raises(pydantic.ValidationError) as err:
        BadDoc(**{field: value})
    text = str(err.value)
    assert field in text
    assert shown in text
    assert await snapshot() == before


# -- bad aupdate calls ------------------------------------------------------------------------


async def test_aupdate_of_a_set_field_is_refused_and_writes_nothing(
    doc: BadDoc, snapshot: SnapshotFn
) -> None:
    before = await snapshot()
    with pytest.raises(UpdateAtomicModelError) as err:
        await doc.aupdate(title="changed", words={"x"})
    assert "BadDoc" in str(err.value)
    assert "words" in str(err.value)
    assert err.value.field == "words"
    assert await snapshot() == before
    assert doc.title == "kept"
    assert set(doc.words) == {"w"}


@pytest.mark.parametrize("field", ["colour", "pk"])
async def test_aupdate_of_an_unknown_field_or_the_pk_is_refused(
    doc: BadDoc, snapshot: SnapshotFn, field: str
) -> None:
    pk = doc.pk
    before = await snapshot()
    with pytest.raises(UpdateAtomicModelError) as err:
        await doc.aupdate(title="changed", **{field: "red"})
    assert f"BadDoc.aupdate({field}=" in str(err.value)
    assert (err.value.model, err.value.field) == ("BadDoc", field)
    assert await snapshot() == before
    assert (doc.pk, doc.title) == (pk, "kept")


async def test_aupdate_with_a_value_of_the_wrong_type_writes_nothing(
    doc: BadDoc, snapshot: SnapshotFn
) -> None:
    before = await snapshot()
    with pytest.raises(pydantic.ValidationError) as err:
        await doc.aupdate(title="changed", views="many")
    assert "views" in str(err.value)
    assert "many" in str(err.value)
    assert await snapshot() == before
    assert (doc.title, doc.views) == ("kept", 3)


# -- writes to a model that is not in Redis ---------------------------------------------------


async def never_saved(redis: Redis) -> BadLeasedDoc:
    return BadLeasedDoc(words={"w"})


async def deleted(redis: Redis) -> BadLeasedDoc:
    model = await BadLeasedDoc(words={"w"}).asave()
    assert await model.adelete()
    return model


async def expired(redis: Redis) -> BadLeasedDoc:
    model = await BadLeasedDoc(words={"w"}).asave()
    # What expiry does, without waiting for it: the hash and its set (same TTL) are gone.
    assert await redis.delete(model.key, set_key(model, "words")) == 2
    return model


MISSING_STATES = [
    pytest.param(never_saved, id="never-saved"),
    pytest.param(deleted, id="deleted"),
    pytest.param(expired, id="expired"),
]


async def add_and_discard_in_a_transaction(model: BadLeasedDoc) -> None:
    async with model.apipeline():
        model.words.add("x")
        model.words.discard("w")


SET_MUTATIONS: dict[str, tuple[str, Callable[[BadLeasedDoc], Awaitable[object]]]] = {
    "aadd": ("set.add", lambda m: m.words.aadd("x")),
    "aadd_many": ("set.add", lambda m: m.words.aadd_many(["x", "y"])),
    "aremove": ("set.remove", lambda m: m.words.aremove("w")),
    "apop": ("set.pop", lambda m: m.words.apop()),
    "aclear": ("set.clear", lambda m: m.words.aclear()),
    "transaction": ("set.add", add_and_discard_in_a_transaction),
}


@pytest.mark.parametrize("mutation", list(SET_MUTATIONS))
@pytest.mark.parametrize("state", MISSING_STATES)
async def test_set_mutation_on_a_missing_model_is_refused_without_orphan_keys(
    redis: Redis,
    snapshot: SnapshotFn,
    state: Callable[[Redis], Awaitable[BadLeasedDoc]],
    mutation: str,
) -> None:
    model = await state(redis)
    command, mutate = SET_MUTATIONS[mutation]
    before = await snapshot()
    with pytest.raises(ModelNotFoundError) as err:
        await mutate(model)
    assert model.key in str(err.value)
    assert command in str(err.value)
    assert (err.value.key, err.value.command) == (model.key, command)
    assert await snapshot() == before
    assert not await redis.exists(set_key(model, "words"))


@pytest.mark.parametrize("state", MISSING_STATES)
async def test_aupdate_on_a_missing_model_is_refused_and_creates_nothing(
    redis: Redis, snapshot: SnapshotFn, state: Callable[[Redis], Awaitable[BadLeasedDoc]]
) -> None:
    model = await state(redis)
    before = await snapshot()
    with pytest.raises(ModelNotFoundError) as err:
        await model.aupdate(title="changed")
    assert model.key in str(err.value)
    assert "model.update" in str(err.value)
    assert (err.value.key, err.value.command) == (model.key, "model.update")
    assert await snapshot() == before
    assert model.title == "untitled"


# -- keys another client overwrote with another Redis type ------------------------------------


async def test_transaction_touching_an_overwritten_set_applies_nothing(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    healthy = await BadDoc(words={"h"}).asave()
    broken = await BadDoc(words={"b"}).asave()
    broken_key = set_key(broken, "words")
    await redis.set(broken_key, "x")
    before = await snapshot()
    with pytest.raises(WrongTypeError) as err:
        async with ledgerset.transaction():
            healthy.words.add("new")
            broken.words.add("new")
    assert broken_key in str(err.value)
    assert "set.add" in str(err.value)
    assert (err.value.key, err.value.command, err.value.actual) == (broken_key, "set.add", "string")
    assert await snapshot() == before
    assert await redis.smembers(set_key(healthy, "words")) == {b'"h"'}


async def test_aadd_to_an_overwritten_set_is_refused(
    doc: BadDoc, redis: Redis, snapshot: SnapshotFn
) -> None:
    key = set_key(doc, "words")
    await redis.set(key, "x")
    before = await snapshot()
    with pytest.raises(WrongTypeError) as err:
        await doc.words.aadd("new")
    assert key in str(err.value)
    assert "set.add" in str(err.value)
    assert await snapshot() == before


@pytest.mark.parametrize(
    ("command", "write"),
    [
        pytest.param("model.save", lambda m: m.asave(), id="asave"),
        pytest.param("model.update", lambda m: m.aupdate(title="changed"), id="aupdate"),
    ],
)
async def test_write_to_an_overwritten_model_hash_is_refused(
    doc: BadDoc,
    redis: Redis,
    snapshot: SnapshotFn,
    command: str,
    write: Callable[[BadDoc], Awaitable[object]],
) -> None:
    await redis.set(doc.key, "x")
    before = await snapshot()
    with pytest.raises(WrongTypeError) as err:
        await write(doc)
    assert doc.key in str(err.value)
    assert command in str(err.value)
    assert (err.value.key, err.value.command, err.value.actual) == (doc.key, command, "string")
    assert await snapshot() == before
    assert doc.title == "kept"


# -- keys of another class --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["Other:abc", "BadDoc:", "BadDocs:abc", "baddoc:abc"])
@pytest.mark.parametrize("method", ["aget", "aexists"])
async def test_key_of_another_class_is_refused(
    doc: BadDoc, snapshot: SnapshotFn, method: str, key: str
) -> None:
    before = await snapshot()
    with pytest.raises(InvalidKeyError) as err:
        await getattr(BadDoc, method)(key)
    assert repr(key) in str(err.value)
    assert "BadDoc" in str(err.value)
    assert (err.value.model, err.value.key) == ("BadDoc", key)
    assert await snapshot() == before


# -- reading keys another client overwrote; names that would share a key namespace ------------


@pytest.mark.parametrize("target", ["hash", "set"])
async def test_aget_of_an_overwritten_key_raises_wrong_type(
    redis: Redis, doc: BadDoc, snapshot: SnapshotFn, target: str
) -> None:
    key = doc.key if target == "hash" else set_key(doc, "words")
    await redis.delete(key)
    await redis.rpush(key, "a list now")
    before = await snapshot()

    with pytest.raises(ledgerset.WrongTypeError) as err:
        await BadDoc.aget(doc.key)

    assert (err.value.key, err.value.actual, err.value.command) == (key, "list", "model.get")
    assert await snapshot() == before


@pytest.mark.parametrize("name", ["ledgerset", "__rapyer_special__"])
def test_a_model_named_like_a_key_namespace_is_refused(name: str) -> None:
    with pytest.raises(ledgerset.ModelDefinitionError, match="rename the class"):
        type(name, (AtomicRedisModel,), {"__annotations__": {"title": str}, "title": "t"})


async def test_a_transaction_writing_to_an_overwritten_hash_applies_nothing(
    redis: Redis, doc: BadDoc, snapshot: SnapshotFn
) -> None:
    await redis.delete(doc.key)
    await redis.set(doc.key, "a string now")
    before = await snapshot()

    with pytest.raises(ledgerset.WrongTypeError) as err:
        async with doc.apipeline():
            doc.words.add("added first")  # checks only that the model exists...
            await doc.aupdate(title="then this")  # ...but the update needs a hash

    assert (err.value.key, err.value.command) == (doc.key, "model.update")
    assert await snapshot() == before


async def test_aclear_of_an_overwritten_set_key_is_refused(
    redis: Redis, doc: BadDoc, snapshot: SnapshotFn
) -> None:
    key = set_key(doc, "words")
    await redis.delete(key)
    await redis.set(key, "not a set")
    before = await snapshot()

    with pytest.raises(ledgerset.WrongTypeError) as err:
        await doc.words.aclear()

    assert (err.value.key, err.value.actual, err.value.command) == (key, "string", "set.clear")
    assert await snapshot() == before


async def test_a_server_out_of_memory_is_its_own_error_not_wrong_type(
    redis: Redis, doc: BadDoc, snapshot: SnapshotFn
) -> None:
    limit = (await redis.config_get("maxmemory"))["maxmemory"]
    policy = (await redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    before = await snapshot()
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)
    try:
        with pytest.raises(ResponseError, match="maxmemory"):
            await doc.words.aadd("no room")
    finally:
        await redis.config_set("maxmemory", limit)
        await redis.config_set("maxmemory-policy", policy)
    assert await snapshot() == before
