"""``RedisSet.special_key``: the Redis key of a bound set, read-only, as rapyer names it; and the
set algebra's errors name the methods that exist."""

from __future__ import annotations

import re

import pytest
from pydantic import Field
from redis.asyncio import Redis

from ledgerset import AtomicRedisModel, LedgersetError, RedisConfig, RedisSet


class KeyedArticle(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class PrefixedArticle(AtomicRedisModel):
    Meta = RedisConfig(special_prefix="sets")
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def test_special_key_is_the_key_the_members_are_stored_at(redis: Redis) -> None:
    article = KeyedArticle(pk="a1")
    await article.asave()
    await article.tags.aadd("x")

    assert article.tags.special_key == "__rapyer_special__:KeyedArticle:a1:tags"
    assert await redis.smembers(article.tags.special_key) == {b'"x"'}
    assert PrefixedArticle(pk="p1").tags.special_key == "sets:PrefixedArticle:p1:tags"


def test_special_key_is_read_only() -> None:
    article = KeyedArticle(pk="a1")

    with pytest.raises(AttributeError):
        article.tags.special_key = "elsewhere"  # type: ignore[misc]

    assert article.tags.special_key == "__rapyer_special__:KeyedArticle:a1:tags"


def test_an_unbound_set_has_no_special_key() -> None:
    with pytest.raises(LedgersetError, match="not a field of a model"):
        _ = RedisSet().special_key


@pytest.mark.parametrize("method", ["aunion", "aintersect", "adifference"])
async def test_set_algebra_errors_name_a_method_that_exists(method: str, redis: Redis) -> None:
    article = KeyedArticle()

    with pytest.raises(TypeError) as err:
        await getattr(article.tags, method)({"plain"})

    named = re.findall(r"\.(\w+)\(\)", str(err.value))
    assert named == [method]
    assert callable(getattr(RedisSet, named[0]))
