"""Every code example of SPEC-redis-set.md runs as written and gives the results the spec states.

The examples are copied verbatim except for the imports (``ledgerset`` for ``rapyer``) and the class
names, which carry a ``Spec`` prefix because the Redis keys are built from them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Optional

import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import all_keys, spec_set_key

from ledgerset import AtomicRedisModel, InvalidMemberError, RedisConfig, UpdateAtomicModelError
from ledgerset.types import RedisSet

pytestmark = pytest.mark.also_on_cluster

TakeSnapshot = Callable[[], Awaitable[dict[bytes, Any]]]


class SpecArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class SpecPlainArticle(AtomicRedisModel):
    tags: set[str] = Field(default_factory=set)  # becomes RedisSet[str]


class SpecNumbers(AtomicRedisModel):
    values: RedisSet[int] = Field(default_factory=RedisSet)


class SpecFlags(AtomicRedisModel):
    bits: RedisSet[bool] = Field(default_factory=RedisSet)


class SpecWorker(AtomicRedisModel):
    name: str = "default"
    tags: Optional[RedisSet[str]] = None  # noqa: UP045 (the spec's spelling)


class SpecExpiringArticle(AtomicRedisModel):
    Meta = RedisConfig(ttl=100)

    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


def set_key(model: AtomicRedisModel, field: str) -> str:
    return spec_set_key(model, field)


# -- Basic Usage ------------------------------------------------------------------------------


async def test_basic_usage_adds_idempotently_and_reads_from_redis(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()

    await article.tags.aadd("python")
    await article.tags.aadd("redis")
    await article.tags.aadd("python")  # idempotent — set still has 2 members

    assert await article.tags.acontains("python") is True
    assert await article.tags.asize() == 2
    assert await article.tags.amembers() == {"python", "redis"}
    assert await redis.smembers(set_key(article, "tags")) == {b'"python"', b'"redis"'}


async def test_acontains_is_false_for_a_member_never_added(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()
    await article.tags.aadd("python")

    assert await article.tags.acontains("rust") is False


# -- Plain set[...] annotations -----------------------------------------------------------------


async def test_plain_set_annotation_becomes_redis_set(redis: Redis) -> None:
    article = SpecPlainArticle()

    assert isinstance(article.tags, RedisSet)
    assert SpecPlainArticle.model_fields["tags"].annotation == RedisSet[str]


async def test_plain_set_field_is_stored_in_a_redis_set(redis: Redis) -> None:
    article = SpecPlainArticle()
    await article.asave()
    await article.tags.aadd("python")

    assert await redis.type(set_key(article, "tags")) == b"set"
    assert await redis.smembers(set_key(article, "tags")) == {b'"python"'}


async def test_plain_set_of_str_refuses_other_member_types(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    article = SpecPlainArticle()
    await article.asave()
    before = await snapshot()

    with pytest.raises(InvalidMemberError, match=r"SpecPlainArticle\.tags"):
        await article.tags.aadd(1)  # type: ignore[arg-type]
    assert await snapshot() == before


# -- Generic Type Support -----------------------------------------------------------------------


async def test_int_set_stores_and_returns_ints(redis: Redis) -> None:
    numbers = SpecNumbers()
    await numbers.asave()
    await numbers.values.aadd_many([1, 2, 3])

    members = await numbers.values.amembers()
    assert members == {1, 2, 3}
    assert {type(member) for member in members} == {int}
    assert await redis.smembers(set_key(numbers, "values")) == {b"1", b"2", b"3"}


async def test_bool_set_stores_and_returns_bools(redis: Redis) -> None:
    flags = SpecFlags()
    await flags.asave()
    await flags.bits.aadd(True)
    await flags.bits.aadd(False)
    await flags.bits.aadd(True)

    members = await flags.bits.amembers()
    assert members == {True, False}
    assert {type(member) for member in members} == {bool}
    assert await redis.smembers(set_key(flags, "bits")) == {b"true", b"false"}


async def test_int_set_refuses_a_str_member(redis: Redis, snapshot: TakeSnapshot) -> None:
    numbers = SpecNumbers()
    await numbers.asave()
    before = await snapshot()

    with pytest.raises(InvalidMemberError, match=r"SpecNumbers\.values"):
        await numbers.values.aadd("1")  # type: ignore[arg-type]
    assert await snapshot() == before


# -- Set Algebra Across Models ------------------------------------------------------------------


async def saved_pair() -> tuple[SpecArticle, SpecArticle]:
    a = SpecArticle(title="A")
    b = SpecArticle(title="B")
    await a.asave()
    await b.asave()
    await a.tags.aadd_many(["alpha", "beta", "gamma"])
    await b.tags.aadd_many(["gamma", "delta"])
    return a, b


async def test_aunion_across_models(redis: Redis) -> None:
    a, b = await saved_pair()

    assert await a.tags.aunion(b.tags) == {"alpha", "beta", "gamma", "delta"}


async def test_aintersect_across_models(redis: Redis) -> None:
    a, b = await saved_pair()

    assert await a.tags.aintersect(b.tags) == {"gamma"}


async def test_adifference_across_models(redis: Redis) -> None:
    a, b = await saved_pair()

    assert await a.tags.adifference(b.tags) == {"alpha", "beta"}


async def test_set_algebra_takes_any_number_of_operands(redis: Redis) -> None:
    a, b = await saved_pair()
    c = SpecArticle(title="C")
    await c.asave()
    await c.tags.aadd_many(["gamma", "alpha", "epsilon"])

    assert await a.tags.aunion(b.tags, c.tags) == {"alpha", "beta", "gamma", "delta", "epsilon"}
    assert await a.tags.aintersect(b.tags, c.tags) == {"gamma"}
    assert await a.tags.adifference(b.tags, c.tags) == {"beta"}


# -- Pipeline (Sync) Operations -----------------------------------------------------------------


async def test_pipeline_example_applies_every_mutator(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()
    await article.tags.aadd("legacy")

    async with article.apipeline():
        article.tags.add("python")
        article.tags.update(["redis", "asyncio"])
        article.tags.discard("legacy")
        article.tags |= {"backend"}

    assert await article.tags.amembers() == {"python", "redis", "asyncio", "backend"}
    assert await redis.smembers(set_key(article, "tags")) == {
        b'"python"',
        b'"redis"',
        b'"asyncio"',
        b'"backend"',
    }


async def test_pipeline_sends_nothing_before_the_block_exits(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()
    before = await snapshot()

    async with article.apipeline():
        article.tags.add("python")
        article.tags.update(["redis", "asyncio"])
        article.tags.discard("legacy")
        article.tags |= {"backend"}
        assert await snapshot() == before

    assert await article.tags.asize() == 4


# -- No sync pop() ------------------------------------------------------------------------------


async def test_sync_pop_is_refused_and_points_to_apop(redis: Redis, snapshot: TakeSnapshot) -> None:
    article = SpecArticle(title="Hello Redis", tags={"python"})
    await article.asave()
    before = await snapshot()

    with pytest.raises(TypeError, match="apop"):
        article.tags.pop()
    assert article.tags == {"python"}
    assert await snapshot() == before


async def test_apop_is_the_atomic_pick(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()
    await article.tags.aadd("python")

    assert await article.tags.apop() == "python"
    assert await article.tags.asize() == 0


# -- remove inside a pipeline does not raise ----------------------------------------------------


async def test_remove_outside_a_pipeline_raises_key_error(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()

    with pytest.raises(KeyError):
        article.tags.remove("missing")


async def test_remove_inside_a_pipeline_acts_like_discard(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()
    await article.tags.aadd_many(["python", "redis"])

    async with article.apipeline() as tx:
        article.tags.remove("missing")
        article.tags.remove("python")

    assert [command.name for command in tx.commands] == ["set.remove", "set.remove"]
    assert await article.tags.amembers() == {"redis"}


# -- Optional Fields ----------------------------------------------------------------------------


async def test_optional_field_is_none_until_assigned(redis: Redis) -> None:
    worker = SpecWorker()
    await worker.asave()

    assert worker.tags is None
    assert (await SpecWorker.aget(worker.key)).tags is None


async def test_optional_field_works_once_assigned(redis: Redis) -> None:
    worker = SpecWorker()
    await worker.asave()

    worker.tags = RedisSet()
    await worker.tags.aadd("ready")

    assert await worker.tags.amembers() == {"ready"}
    assert await redis.smembers(set_key(worker, "tags")) == {b'"ready"'}


# -- How It Works -------------------------------------------------------------------------------


async def test_set_lives_at_the_special_key(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()
    await article.tags.aadd("python")

    special = set_key(article, "tags")
    assert await redis.type(special) == b"set"
    assert set(await all_keys(redis)) == {article.key.encode(), special.encode()}


async def test_asave_and_adelete_handle_the_set_key(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis", tags={"python"})
    await article.asave()
    assert await redis.smembers(set_key(article, "tags")) == {b'"python"'}

    assert await article.adelete() is True
    assert await all_keys(redis) == []


async def test_ttl_is_inherited_by_the_set_key(redis: Redis) -> None:
    article = SpecExpiringArticle(title="Hello Redis", tags={"python"})
    await article.asave()

    assert 0 < await redis.pttl(article.key) <= 100_000
    assert 0 < await redis.pttl(set_key(article, "tags")) <= 100_000


# -- Cannot use aupdate() with special fields ---------------------------------------------------


async def test_aupdate_with_a_special_field_raises(redis: Redis, snapshot: TakeSnapshot) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()
    before = await snapshot()

    # ❌ This raises UpdateAtomicModelError
    with pytest.raises(UpdateAtomicModelError, match="tags"):
        await article.aupdate(tags={"x"})
    assert await snapshot() == before


async def test_field_methods_work_after_the_refused_aupdate(redis: Redis) -> None:
    article = SpecArticle(title="Hello Redis")
    await article.asave()
    with pytest.raises(UpdateAtomicModelError):
        await article.aupdate(tags={"x"})

    # ✅ Use the field's methods directly
    await article.tags.aadd("x")

    assert await article.tags.amembers() == {"x"}
    assert await redis.smembers(set_key(article, "tags")) == {b'"x"'}
