"""Pydantic aliases round-trip exactly: storage is by field name, whatever the aliases say.

Covered: ``alias`` on a scalar and on a set field, ``validation_alias`` (a name, ``AliasChoices``,
``AliasPath``), ``serialization_alias`` with ``serialize_by_alias=True``, ``populate_by_name``, an
``alias_generator``, and a nested model with aliases. Each case checks the hash as stored, what
``aget``/``aload`` return, and that ``aget`` followed by ``asave`` leaves Redis as it was.
"""

from __future__ import annotations

from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from redis.asyncio import Redis

from ledgerset import AtomicRedisModel, RedisSet


def set_key(model: AtomicRedisModel, field: str) -> str:
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{field}"


class AliasedArticle(AtomicRedisModel):
    title: str = Field("", alias="Title")
    tags: RedisSet[str] = Field(default_factory=RedisSet, alias="labels")


class ValidationAliased(AtomicRedisModel):
    title: str = Field("", validation_alias="heading")
    subtitle: str = Field("", validation_alias=AliasChoices("sub", "strapline"))
    author: str = Field("", validation_alias=AliasPath("meta", 0))
    tags: RedisSet[str] = Field(default_factory=RedisSet, validation_alias="labels")


class SerializationAliased(AtomicRedisModel):
    model_config = ConfigDict(serialize_by_alias=True, populate_by_name=True)
    title: str = Field("", serialization_alias="Heading")
    views: int = Field(0, alias="viewCount")
    tags: RedisSet[str] = Field(default_factory=RedisSet, serialization_alias="Labels")


class Generated(AtomicRedisModel):
    model_config = ConfigDict(alias_generator=to_camel)
    page_title: str = ""
    search_tags: RedisSet[str] = Field(default_factory=RedisSet)


class AliasedInner(BaseModel):
    display_name: str = Field("", alias="displayName")
    tags: RedisSet[str] = Field(default_factory=RedisSet, alias="Tags")


class AliasedOuter(AtomicRedisModel):
    inner: AliasedInner = Field(default_factory=AliasedInner, alias="Inner")


async def test_alias_on_a_scalar_and_a_set_field_round_trips(redis: Redis) -> None:
    article = AliasedArticle(Title="Hello", labels={"a", "b"})
    await article.asave()

    assert await redis.hgetall(article.key) == {
        b"pk": f'"{article.pk}"'.encode(),
        b"title": b'"Hello"',
        b"tags": b"true",
        b"_version": b"1",  # the model's version (asave(if_unchanged=True)), never a field
    }
    assert await redis.smembers(set_key(article, "tags")) == {b'"a"', b'"b"'}
    loaded = await AliasedArticle.aget(article.key)
    assert (loaded.title, loaded.tags) == ("Hello", {"a", "b"})
    assert await loaded.tags.acontains("a")


async def test_aget_then_asave_keeps_aliased_values(redis: Redis) -> None:
    article = AliasedArticle(Title="Kept", labels={"x"})
    await article.asave()
    stored = (await redis.hgetall(article.key), await redis.smembers(set_key(article, "tags")))

    await (await AliasedArticle.aget(article.key)).asave()

    # Every write bumps the version, and nothing else changes.
    assert stored[0].pop(b"_version") == b"1"
    again = (await redis.hgetall(article.key), await redis.smembers(set_key(article, "tags")))
    assert again[0].pop(b"_version") == b"2"
    assert again == stored


async def test_aload_with_aliases_reads_the_stored_values(redis: Redis) -> None:
    article = AliasedArticle(Title="Stored", labels={"s"})
    await article.asave()
    await redis.hset(article.key, "title", '"changed"')

    await article.aload()

    assert (article.title, article.tags) == ("changed", {"s"})


async def test_validation_aliases_round_trip(redis: Redis) -> None:
    model = ValidationAliased(heading="H", strapline="S", meta=["Ada"], labels={"t"})  # type: ignore[call-arg]
    assert (model.title, model.subtitle, model.author) == ("H", "S", "Ada")
    await model.asave()

    assert await redis.hget(model.key, "title") == b'"H"'
    loaded = await ValidationAliased.aget(model.key)
    assert (loaded.title, loaded.subtitle, loaded.author, loaded.tags) == ("H", "S", "Ada", {"t"})


async def test_serialization_aliases_do_not_change_what_is_stored(redis: Redis) -> None:
    model = SerializationAliased(title="T", viewCount=3, tags={"u"})
    assert model.model_dump(exclude={"pk"}) == {"Heading": "T", "viewCount": 3, "Labels": {"u"}}
    await model.asave()

    assert await redis.hgetall(model.key) == {
        b"pk": f'"{model.pk}"'.encode(),
        b"title": b'"T"',
        b"views": b"3",
        b"tags": b"true",
        b"_version": b"1",
    }
    loaded = await SerializationAliased.aget(model.key)
    assert (loaded.title, loaded.views, loaded.tags) == ("T", 3, {"u"})


async def test_aupdate_of_an_aliased_field_stores_it_by_name(redis: Redis) -> None:
    model = SerializationAliased(title="before")
    await model.asave()

    await model.aupdate(title="after", views=9)

    assert await redis.hget(model.key, "title") == b'"after"'
    assert await redis.hget(model.key, "views") == b"9"
    assert await redis.hget(model.key, "Heading") is None
    loaded = await SerializationAliased.aget(model.key)
    assert (loaded.title, loaded.views) == ("after", 9)


async def test_an_alias_generator_round_trips(redis: Redis) -> None:
    model = Generated(pageTitle="Home", searchTags={"intro"})
    await model.asave()

    assert await redis.hget(model.key, "page_title") == b'"Home"'
    assert await redis.smembers(set_key(model, "search_tags")) == {b'"intro"'}
    loaded = await Generated.aget(model.key)
    assert (loaded.page_title, loaded.search_tags) == ("Home", {"intro"})


async def test_a_nested_model_with_aliases_round_trips(redis: Redis) -> None:
    outer = AliasedOuter(Inner=AliasedInner(displayName="Ada", Tags={"x"}))
    await outer.asave()

    assert await redis.hget(outer.key, "inner") == b'{"display_name":"Ada"}'
    loaded = await AliasedOuter.aget(outer.key)
    assert (loaded.inner.display_name, loaded.inner.tags) == ("Ada", {"x"})
