"""Every RedisSet method and every model method: return values and the server state they leave.

Server state is read with the raw ``redis`` client (keys, types, stored member bytes, hash fields,
TTLs). "Computed on the server" is proved by changing a set through a second instance loaded with
``aget``, so that the first instance's local mirror is stale.
"""

from __future__ import annotations

import copy
import operator
import pickle
import re
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import all_keys, spec_set_key

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    ModelNotFoundError,
    RedisConfig,
    TransactionError,
    UpdateAtomicModelError,
)
from ledgerset.types import RedisSet

pytestmark = pytest.mark.also_on_cluster

TakeSnapshot = Callable[[], Awaitable[dict[bytes, Any]]]


class MethodsArticle(AtomicRedisModel):
    title: str = "untitled"
    count: int = 0
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    extra: RedisSet[str] | None = None


class MethodsStrs(AtomicRedisModel):
    values: RedisSet[str] = Field(default_factory=RedisSet)


class MethodsInts(AtomicRedisModel):
    values: RedisSet[int] = Field(default_factory=RedisSet)


class MethodsFloats(AtomicRedisModel):
    values: RedisSet[float] = Field(default_factory=RedisSet)


class MethodsBools(AtomicRedisModel):
    values: RedisSet[bool] = Field(default_factory=RedisSet)


class MethodsExpiring(AtomicRedisModel):
    Meta = RedisConfig(ttl=100)

    tags: RedisSet[str] = Field(default_factory=RedisSet)


def tags_key(model: AtomicRedisModel, field: str = "tags") -> str:
    return spec_set_key(model, field)


def stored(*members: str) -> set[bytes]:
    """The bytes Redis holds for these str members."""
    return {f'"{member}"'.encode() for member in members}


async def saved(*members: str) -> MethodsArticle:
    article = MethodsArticle(title="Hello", tags=set(members))
    await article.asave()
    return article


async def server_tags(redis: Redis, model: AtomicRedisModel) -> set[bytes]:
    return await redis.smembers(tags_key(model))


# -- async methods: return values and server state -------------------------------------------------


async def test_aadd_returns_none_and_adds_on_the_server(redis: Redis) -> None:
    article = await saved()

    assert await article.tags.aadd("python") is None
    assert await server_tags(redis, article) == stored("python")


async def test_aadd_of_a_present_member_changes_nothing(redis: Redis) -> None:
    article = await saved("python")

    assert await article.tags.aadd("python") is None
    assert await server_tags(redis, article) == stored("python")


async def test_aadd_many_returns_none_and_adds_every_member(redis: Redis) -> None:
    article = await saved("a")

    assert await article.tags.aadd_many(["b", "c", "b"]) is None
    assert await server_tags(redis, article) == stored("a", "b", "c")


async def test_aremove_of_a_present_member_returns_true(redis: Redis) -> None:
    article = await saved("a", "b")

    assert await article.tags.aremove("a") is True
    assert await server_tags(redis, article) == stored("b")


async def test_aremove_of_a_missing_member_returns_false(redis: Redis) -> None:
    article = await saved("a", "b")

    assert await article.tags.aremove("z") is False
    assert await server_tags(redis, article) == stored("a", "b")


async def test_apop_returns_a_member_and_removes_it_on_the_server(redis: Redis) -> None:
    article = await saved("a", "b", "c")

    popped = await article.tags.apop()

    assert popped in {"a", "b", "c"}
    assert await server_tags(redis, article) == stored("a", "b", "c") - stored(popped)


async def test_apop_of_the_last_member_then_returns_none(redis: Redis) -> None:
    article = await saved("only")

    assert await article.tags.apop() == "only"
    assert await redis.exists(tags_key(article)) == 0
    assert await article.tags.apop() is None


async def test_aclear_removes_the_set_key_and_keeps_the_model(redis: Redis) -> None:
    article = await saved("a", "b")

    assert await article.tags.aclear() is None
    assert await redis.exists(tags_key(article)) == 0
    assert await MethodsArticle.aexists(article.key) is True
    assert await article.tags.asize() == 0


async def test_acontains_asks_the_server(redis: Redis) -> None:
    article = await saved("a")
    other = await MethodsArticle.aget(article.key)
    await other.tags.aadd("new")
    await other.tags.aremove("a")

    assert "a" in article.tags  # the first instance's mirror is stale
    assert await article.tags.acontains("new") is True
    assert await article.tags.acontains("a") is False


async def test_amembers_returns_the_servers_members(redis: Redis) -> None:
    article = await saved("a", "b")
    other = await MethodsArticle.aget(article.key)
    await other.tags.aadd("new")
    await other.tags.aremove("a")

    members = await article.tags.amembers()

    assert members == {"b", "new"}
    assert isinstance(members, set)


async def test_amembers_of_an_empty_set_is_empty(redis: Redis) -> None:
    article = await saved()

    assert await article.tags.amembers() == set()


@pytest.mark.parametrize("size", [2048, 2049, 4097])
async def test_amembers_of_a_set_decoded_in_chunks_is_every_member(redis: Redis, size: int) -> None:
    members = {f"member-{i}" for i in range(size)}
    article = await saved(*members)

    assert await article.tags.amembers() == members
    assert article.tags == members


async def test_amembers_returns_a_set_of_the_callers_own(redis: Redis) -> None:
    article = await saved("a", "b")

    members = await article.tags.amembers()
    members.add("mine")
    members.discard("a")

    assert type(members) is set
    assert article.tags == {"a", "b"}  # the mirror did not change with it
    await article.asave()
    assert await server_tags(redis, article) == stored("a", "b")


async def test_a_copy_of_a_model_after_amembers_holds_its_members_once(redis: Redis) -> None:
    article = await saved(*(f"member-{i}" for i in range(1000)))
    size_before_reading = len(pickle.dumps(article))

    await article.tags.amembers()

    assert len(pickle.dumps(article)) == size_before_reading
    copied = pickle.loads(pickle.dumps(article))
    assert copied.tags == article.tags and copied.tags.special_key == article.tags.special_key
    assert copy.deepcopy(article).tags == article.tags


@pytest.mark.parametrize("clear", ["aclear", "clear"])
async def test_clearing_the_mirror_after_amembers_frees_what_it_read(
    redis: Redis, clear: str
) -> None:
    article = await saved(*(f"member-{i}" for i in range(20_000)))
    tracemalloc.start()
    try:
        await article.tags.amembers()
        held_by_the_mirror = tracemalloc.get_traced_memory()[0]  # what the read made: ~3 MB
        if clear == "aclear":
            await article.tags.aclear()
        else:
            article.tags.clear()
        left = tracemalloc.get_traced_memory()[0]
        assert left < held_by_the_mirror / 10
    finally:
        tracemalloc.stop()


async def test_asize_counts_on_the_server(redis: Redis) -> None:
    article = await saved("a")
    other = await MethodsArticle.aget(article.key)
    await other.tags.aadd_many(["b", "c"])

    assert await article.tags.asize() == 3


# -- set algebra: variadic, computed on the server -------------------------------------------------


async def three_sets() -> tuple[MethodsArticle, MethodsArticle, MethodsArticle]:
    return await saved("a", "b", "c"), await saved("b", "c", "d"), await saved("c", "e")


async def test_aunion_of_several_sets_uses_the_servers_members(redis: Redis) -> None:
    a, b, c = await three_sets()
    await (await MethodsArticle.aget(b.key)).tags.aadd("zeta")

    assert await a.tags.aunion(b.tags, c.tags) == {"a", "b", "c", "d", "e", "zeta"}


async def test_aintersect_of_several_sets_uses_the_servers_members(redis: Redis) -> None:
    a, b, c = await three_sets()
    assert await a.tags.aintersect(b.tags, c.tags) == {"c"}
    await (await MethodsArticle.aget(c.key)).tags.aremove("c")

    assert await a.tags.aintersect(b.tags, c.tags) == set()


async def test_adifference_of_several_sets_uses_the_servers_members(redis: Redis) -> None:
    a, b, c = await three_sets()
    assert await a.tags.adifference(b.tags, c.tags) == {"a"}
    await (await MethodsArticle.aget(c.key)).tags.aadd("a")

    assert await a.tags.adifference(b.tags, c.tags) == set()


async def test_set_algebra_with_no_operands_is_the_set_itself(redis: Redis) -> None:
    a, _, _ = await three_sets()

    assert await a.tags.aunion() == {"a", "b", "c"}
    assert await a.tags.aintersect() == {"a", "b", "c"}
    assert await a.tags.adifference() == {"a", "b", "c"}


# -- sync mutators ---------------------------------------------------------------------------------

Mutation = Callable[[Any], object]

MUTATIONS: dict[str, Mutation] = {
    "add": lambda s: s.add("d"),
    "update": lambda s: s.update(["d"], ("e",)),
    "remove": lambda s: s.remove("a"),
    "discard_present": lambda s: s.discard("a"),
    "discard_missing": lambda s: s.discard("z"),
    "clear": lambda s: s.clear(),
    "difference_update": lambda s: s.difference_update(["a"], ["b"]),
    "intersection_update": lambda s: s.intersection_update(["a", "b", "z"]),
    "intersection_update_many": lambda s: s.intersection_update(["a", "b"], ["b", "c"]),
    "symmetric_difference_update": lambda s: s.symmetric_difference_update(["a", "z"]),
    "ior": lambda s: operator.ior(s, {"d"}),
    "iand": lambda s: operator.iand(s, {"a", "z"}),
    "isub": lambda s: operator.isub(s, {"a"}),
    "ixor": lambda s: operator.ixor(s, {"a", "z"}),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
async def test_sync_mutator_outside_a_transaction_changes_only_the_mirror(
    redis: Redis, snapshot: TakeSnapshot, name: str
) -> None:
    article = await saved("a", "b", "c")
    before = await snapshot()
    expected = {"a", "b", "c"}
    MUTATIONS[name](expected)

    MUTATIONS[name](article.tags)

    assert set(article.tags) == expected
    assert await snapshot() == before


async def test_sync_remove_outside_a_transaction_raises_key_error(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    article = await saved("a")
    before = await snapshot()

    with pytest.raises(KeyError):
        article.tags.remove("z")
    assert set(article.tags) == {"a"}
    assert await snapshot() == before


IN_TRANSACTION = [
    ("add", "set.add", {"a", "b", "c", "d"}),
    ("update", "set.add", {"a", "b", "c", "d", "e"}),
    ("remove", "set.remove", {"b", "c"}),
    ("discard_present", "set.remove", {"b", "c"}),
    ("discard_missing", "set.remove", {"a", "b", "c"}),
    ("clear", "set.clear", set()),
    ("difference_update", "set.remove", {"c"}),
    ("intersection_update", "set.retain", {"a", "b"}),
    ("intersection_update_many", "set.retain", {"b"}),
    ("symmetric_difference_update", "set.toggle", {"b", "c", "z"}),
    ("ior", "set.add", {"a", "b", "c", "d"}),
    ("iand", "set.retain", {"a"}),
    ("isub", "set.remove", {"b", "c"}),
    ("ixor", "set.toggle", {"b", "c", "z"}),
]


@pytest.mark.parametrize(("name", "command", "after"), IN_TRANSACTION)
async def test_sync_mutator_in_a_transaction_is_queued_then_applied(
    redis: Redis, snapshot: TakeSnapshot, name: str, command: str, after: set[str]
) -> None:
    article = await saved("a", "b", "c")
    before = await snapshot()

    async with article.apipeline() as tx:
        MUTATIONS[name](article.tags)
        assert [queued.name for queued in tx.commands] == [command]
        assert await snapshot() == before

    assert await server_tags(redis, article) == stored(*after)


async def test_remove_of_a_missing_member_in_a_transaction_does_not_raise(redis: Redis) -> None:
    article = await saved("a")

    async with article.apipeline() as tx:
        article.tags.remove("z")

    assert [queued.name for queued in tx.commands] == ["set.remove"]
    assert await server_tags(redis, article) == stored("a")


async def test_augmented_assignment_on_the_field_in_a_transaction(redis: Redis) -> None:
    article = await saved("a", "b", "c")

    async with article.apipeline() as tx:
        article.tags |= {"d"}
        article.tags -= {"a"}
        article.tags &= {"b", "d"}
        article.tags ^= {"b", "e"}

    names = [queued.name for queued in tx.commands]
    assert names == ["set.add", "set.remove", "set.retain", "set.toggle"]
    assert await server_tags(redis, article) == stored("d", "e")


async def test_an_exception_in_the_block_sends_nothing(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    article = await saved("a")
    before = await snapshot()

    with pytest.raises(RuntimeError, match="boom"):
        async with article.apipeline():
            article.tags.add("b")
            await article.tags.aadd("c")
            await article.aupdate(title="changed")
            raise RuntimeError("boom")

    assert await snapshot() == before


# -- async methods inside a transaction ------------------------------------------------------------

ASYNC_MUTATIONS: dict[str, Callable[[RedisSet[str]], Awaitable[object]]] = {
    "aadd": lambda s: s.aadd("d"),
    "aadd_many": lambda s: s.aadd_many(["d", "e"]),
    "aremove": lambda s: s.aremove("a"),
    "aremove_missing": lambda s: s.aremove("z"),
    "aclear": lambda s: s.aclear(),
}
ASYNC_AFTER = {
    "aadd": {"a", "b", "d"},
    "aadd_many": {"a", "b", "d", "e"},
    "aremove": {"b"},
    "aremove_missing": {"a", "b"},
    "aclear": set(),
}


@pytest.mark.parametrize("name", list(ASYNC_MUTATIONS))
async def test_async_mutator_in_a_transaction_returns_none_and_applies_on_commit(
    redis: Redis, snapshot: TakeSnapshot, name: str
) -> None:
    article = await saved("a", "b")
    before = await snapshot()

    async with article.apipeline():
        assert await ASYNC_MUTATIONS[name](article.tags) is None
        assert await snapshot() == before

    assert await server_tags(redis, article) == stored(*ASYNC_AFTER[name])


async def test_reads_in_a_transaction_see_the_state_before_the_commit(redis: Redis) -> None:
    article = await saved("a", "b")

    async with article.apipeline():
        await article.tags.aadd("c")
        article.tags.discard("a")
        assert await article.tags.acontains("c") is False
        assert await article.tags.acontains("a") is True
        assert await article.tags.asize() == 2
        assert await article.tags.amembers() == {"a", "b"}

    assert await article.tags.amembers() == {"b", "c"}


async def test_apop_in_a_transaction_raises_and_nothing_is_sent(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    article = await saved("a", "b")
    before = await snapshot()

    with pytest.raises(TransactionError, match=r"set\.pop"):
        async with article.apipeline():
            article.tags.add("c")
            await article.tags.apop()

    assert await snapshot() == before


async def test_nested_transaction_joins_the_outer_one(redis: Redis, snapshot: TakeSnapshot) -> None:
    article = await saved("a")
    before = await snapshot()

    async with ledgerset.transaction() as outer:
        article.tags.add("b")
        async with ledgerset.transaction() as inner:
            article.tags.add("c")
        assert inner is outer
        assert await snapshot() == before
        assert [queued.name for queued in outer.commands] == ["set.add", "set.add"]

    assert outer.results == [1, 1]
    assert await server_tags(redis, article) == stored("a", "b", "c")


async def test_apipeline_inside_a_transaction_joins_it(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    article = await saved("a")
    before = await snapshot()

    async with ledgerset.transaction() as outer:
        async with article.apipeline() as inner:
            article.tags.add("b")
        assert inner is outer
        assert await snapshot() == before

    assert await server_tags(redis, article) == stored("a", "b")


# -- a stale mirror: &=, ^= and friends use the server's members -----------------------------------

STALE: dict[str, tuple[Mutation, set[str]]] = {
    "iand": (lambda s: operator.iand(s, {"a", "c"}), {"a", "c"}),
    "intersection_update": (lambda s: s.intersection_update(["a", "c"]), {"a", "c"}),
    "ixor": (lambda s: operator.ixor(s, {"c", "d"}), {"a", "b", "d"}),
    "symmetric_difference_update": (
        lambda s: s.symmetric_difference_update(["c", "d"]),
        {"a", "b", "d"},
    ),
}


@pytest.mark.parametrize("name", list(STALE))
async def test_server_side_mutator_uses_the_servers_members(redis: Redis, name: str) -> None:
    article = await saved("a", "b")
    other = await MethodsArticle.aget(article.key)
    await other.tags.aadd("c")  # behind the first instance's back: its mirror is {"a", "b"}
    mutation, after = STALE[name]

    async with article.apipeline():
        mutation(article.tags)

    assert await server_tags(redis, article) == stored(*after)
    assert set(article.tags) == after  # the mirror took the members the server computed


# -- member encoding -------------------------------------------------------------------------------

ENCODINGS = [
    (MethodsStrs, "python", b'"python"', "python"),
    (MethodsStrs, "été", b'"\\u00e9t\\u00e9"', "été"),  # json.dumps's ensure_ascii
    (MethodsInts, 7, b"7", 7),
    (MethodsInts, -3, b"-3", -3),
    (MethodsFloats, 1, b"1.0", 1.0),
    (MethodsFloats, 1.5, b"1.5", 1.5),
    (MethodsFloats, -0.0, b"0.0", 0.0),
    (MethodsBools, True, b"true", True),
    (MethodsBools, False, b"false", False),
]


@pytest.mark.parametrize(("model", "value", "raw", "decoded"), ENCODINGS)
async def test_member_is_stored_as_canonical_json(
    redis: Redis, model: type[AtomicRedisModel], value: Any, raw: bytes, decoded: Any
) -> None:
    instance = model()
    await instance.asave()

    await instance.values.aadd(value)  # type: ignore[attr-defined]

    assert await redis.smembers(tags_key(instance, "values")) == {raw}
    members = await instance.values.amembers()  # type: ignore[attr-defined]
    assert members == {decoded}
    assert [type(member) for member in members] == [type(decoded)]


async def test_float_set_stores_equal_numbers_once(redis: Redis) -> None:
    numbers = MethodsFloats()
    await numbers.asave()

    await numbers.values.aadd_many([1, 1.0, 0.0, -0.0])

    assert await redis.smembers(tags_key(numbers, "values")) == {b"1.0", b"0.0"}


# -- model methods ---------------------------------------------------------------------------------


async def test_default_pk_is_uuid_hex_and_key_is_class_name_and_pk(redis: Redis) -> None:
    article = MethodsArticle()

    assert re.fullmatch(r"[0-9a-f]{32}", article.pk)
    assert article.key == f"MethodsArticle:{article.pk}"
    assert MethodsArticle(pk="p1").key == "MethodsArticle:p1"


async def test_asave_writes_a_hash_with_one_json_value_per_field(redis: Redis) -> None:
    article = MethodsArticle(pk="p1", title="Hello", count=3, tags={"a"})

    assert await article.asave() is article

    assert await redis.type("MethodsArticle:p1") == b"hash"
    assert await redis.hgetall("MethodsArticle:p1") == {
        b"pk": b'"p1"',
        b"title": b'"Hello"',
        b"count": b"3",
        b"tags": b"true",
        b"extra": b"null",
        b"_version": b"1",
    }
    assert await redis.smembers(tags_key(article)) == stored("a")
    assert await redis.exists(tags_key(article, "extra")) == 0


async def test_asave_marks_a_present_optional_set_true(redis: Redis) -> None:
    article = MethodsArticle(pk="p1", extra={"x"})
    await article.asave()

    assert await redis.hget("MethodsArticle:p1", "extra") == b"true"
    assert await redis.smembers(tags_key(article, "extra")) == stored("x")


async def test_asave_replaces_the_servers_set_with_the_mirror(redis: Redis) -> None:
    article = await saved("a", "b")
    article.tags.discard("a")
    article.tags.add("c")

    await article.asave()

    assert await server_tags(redis, article) == stored("b", "c")


async def test_aget_round_trips_fields_and_sets(redis: Redis) -> None:
    article = MethodsArticle(title="Hello", count=3, tags={"a", "b"}, extra={"x"})
    await article.asave()

    loaded = await MethodsArticle.aget(article.key)

    assert loaded.pk == article.pk
    assert (loaded.title, loaded.count) == ("Hello", 3)
    assert isinstance(loaded.tags, RedisSet)
    assert loaded.tags == {"a", "b"}
    assert loaded.extra == {"x"}


async def test_aget_gives_an_empty_set_and_a_none_set_back(redis: Redis) -> None:
    article = MethodsArticle()
    await article.asave()

    loaded = await MethodsArticle.aget(article.key)

    assert isinstance(loaded.tags, RedisSet)
    assert loaded.tags == set()
    assert loaded.extra is None


async def test_aget_of_a_missing_key_raises_model_not_found(redis: Redis) -> None:
    with pytest.raises(ModelNotFoundError, match="MethodsArticle:nope"):
        await MethodsArticle.aget("MethodsArticle:nope")


async def test_aexists(redis: Redis) -> None:
    article = await saved()

    assert await MethodsArticle.aexists(article.key) is True
    assert await MethodsArticle.aexists("MethodsArticle:nope") is False


async def test_adelete_removes_the_hash_and_every_set_key(redis: Redis) -> None:
    article = MethodsArticle(tags={"a"}, extra={"x"})
    await article.asave()

    assert await article.adelete() is True

    assert await all_keys(redis) == []
    assert await MethodsArticle.aexists(article.key) is False


async def test_adelete_of_a_missing_model_returns_false(redis: Redis) -> None:
    article = await saved("a")
    await article.adelete()

    assert await article.adelete() is False


async def test_aload_refreshes_fields_and_sets(redis: Redis) -> None:
    article = await saved("a")
    other = await MethodsArticle.aget(article.key)
    await other.aupdate(title="changed")
    await other.tags.aadd("b")

    assert await article.aload() is article

    assert article.title == "changed"
    assert article.tags == {"a", "b"}


async def test_aupdate_sets_only_the_given_fields(redis: Redis) -> None:
    article = MethodsArticle(title="Hello", count=1, tags={"a"})
    await article.asave()
    other = await MethodsArticle.aget(article.key)
    await other.aupdate(count=5)

    assert await article.aupdate(title="changed") is None

    assert article.title == "changed"
    assert await redis.hget(article.key, "title") == b'"changed"'
    assert await redis.hget(article.key, "count") == b"5"
    assert await server_tags(redis, article) == stored("a")


async def test_aupdate_of_a_set_field_raises_and_writes_nothing(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    article = await saved("a")
    before = await snapshot()

    with pytest.raises(UpdateAtomicModelError, match="tags"):
        await article.aupdate(title="changed", tags={"x"})

    assert await snapshot() == before
    assert article.title == "Hello"


async def test_assigning_a_plain_set_binds_it_at_once(redis: Redis) -> None:
    article = await saved()

    article.tags = {"a"}
    await article.tags.aadd("b")

    assert isinstance(article.tags, RedisSet)
    assert await server_tags(redis, article) == stored("b")  # assignment alone writes nothing
    await article.asave()
    assert await server_tags(redis, article) == stored("a", "b")


async def test_assigning_an_empty_redis_set_binds_it_at_once(redis: Redis) -> None:
    article = await saved("a")

    article.tags = RedisSet()
    await article.tags.aadd("b")

    assert await server_tags(redis, article) == stored("a", "b")


# -- TTL -------------------------------------------------------------------------------------------


async def test_ttl_is_set_on_the_model_and_set_keys(redis: Redis) -> None:
    model = MethodsExpiring(tags={"a"})
    await model.asave()

    assert 0 < await redis.pttl(model.key) <= 100_000
    assert 0 < await redis.pttl(tags_key(model)) <= 100_000


async def test_set_created_after_the_save_gets_the_parents_remaining_ttl(redis: Redis) -> None:
    model = MethodsExpiring()
    await model.asave()
    assert await redis.exists(tags_key(model)) == 0
    await redis.pexpire(model.key, 50_000)

    await model.tags.aadd("a")

    assert 0 < await redis.pttl(tags_key(model)) <= 50_000


async def test_model_without_ttl_has_no_ttl_on_its_keys(redis: Redis) -> None:
    article = await saved("a")
    await article.tags.aadd("b")

    assert await redis.pttl(article.key) == -1
    assert await redis.pttl(tags_key(article)) == -1


# -- found in review ------------------------------------------------------------------------------


class MethodsWorker(AtomicRedisModel):
    name: str = "default"
    tags: RedisSet[str] | None = None


async def test_optional_set_assigned_after_the_save_is_read_back(redis: Redis) -> None:
    worker = MethodsWorker()
    await worker.asave()
    worker.tags = RedisSet()
    await worker.tags.aadd("ready")

    loaded = await MethodsWorker.aget(worker.key)

    assert loaded.tags == {"ready"}


async def test_reads_of_an_overwritten_set_key_raise_wrong_type(redis: Redis) -> None:
    article = await saved("a")
    other = await saved("b")
    await redis.set(tags_key(other), "not a set")

    for read in (
        lambda: other.tags.amembers(),
        lambda: other.tags.asize(),
        lambda: other.tags.acontains("b"),
        lambda: article.tags.aunion(other.tags),
    ):
        with pytest.raises(ledgerset.WrongTypeError) as caught:
            await read()
        assert caught.value.key == tags_key(other)
        assert caught.value.actual == "string"


async def test_adelete_inside_a_transaction_returns_none_and_deletes_on_commit(
    redis: Redis,
) -> None:
    article = await saved("a")
    async with article.apipeline():
        assert await article.adelete() is None
        assert await redis.exists(article.key) == 1
    assert await redis.exists(article.key, tags_key(article)) == 0


@pytest.mark.parametrize(
    "foreign", [b"not json", b'"a","b"', b"7"], ids=["not-json", "two-values", "wrong-type"]
)
async def test_a_member_written_by_another_client_is_named_when_read(
    redis: Redis, foreign: bytes
) -> None:
    article = await saved("a")
    await redis.sadd(tags_key(article), foreign)

    with pytest.raises(ledgerset.InvalidMemberError) as caught:
        await article.tags.amembers()

    assert caught.value.value == foreign
    assert tags_key(article) in str(caught.value) and "MethodsArticle.tags" in str(caught.value)


@pytest.mark.parametrize(
    "foreign",
    [
        [b'"a","b"', b'"c', b'd"'],  # two values, then one string split across two members
        [b'"a","b"', b"[1", b"2]"],  # two values, then one list split across two members
    ],
    ids=["split-string", "split-list"],
)
@pytest.mark.parametrize("good", [0, 5000], ids=["alone", "among-5000"])
async def test_members_that_are_one_value_only_when_joined_are_named_when_read(
    redis: Redis, foreign: list[bytes], good: int
) -> None:
    # As many JSON values as members, if they were read joined: each member is still checked.
    article = await saved(*(f"good-{i}" for i in range(good)))
    for member in foreign:  # in this order: a small set keeps it (Valkey, Redis 7.2+)
        await redis.sadd(tags_key(article), member)
    mirror = set(article.tags)

    for read in (article.tags.amembers, lambda: article.tags.aunion()):
        with pytest.raises(ledgerset.InvalidMemberError) as caught:
            await read()
        assert caught.value.value in foreign
        assert tags_key(article) in str(caught.value)
    assert article.tags == mirror  # the mirror did not take any of it
