"""What a model class may declare, checked when the class is defined.

Refused with ``ModelDefinitionError`` naming the model and the field: a field that would hide a
name the model itself uses (``key``, ``Meta``, its methods, Pydantic's), a ``Meta`` that is not a
``RedisConfig``, and a ``RedisSet`` that cannot have a key of its own (inside a list, dict, tuple
or union; two levels of nesting down; of an unsupported member type in a nested model). Allowed:
``pk`` redefined, ``Meta`` as a ``ClassVar``, a plain ``set[...]`` in a plain nested model (stored
as JSON), a nested model without sets. Redis is never touched by a refused class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from ledgerset import AtomicRedisModel, ModelDefinitionError, RedisConfig, RedisSet

SnapshotFn = Callable[[], Awaitable[Any]]


class WithSets(BaseModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class WithPlainSet(BaseModel):
    words: set[str] = Field(default_factory=set)


class Middle(BaseModel):
    deep: WithSets = Field(default_factory=WithSets)


class Base(AtomicRedisModel):
    title: str = ""

    def describe(self) -> str:
        return self.title


def define(name: str, annotations: dict[str, Any], **namespace: Any) -> type[AtomicRedisModel]:
    return type(name, (AtomicRedisModel,), {"__annotations__": annotations, **namespace})


# -- names the model uses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "owner"),
    [
        ("key", "AtomicRedisModel"),
        ("Meta", "AtomicRedisModel"),
        ("asave", "AtomicRedisModel"),
        ("aget", "AtomicRedisModel"),
        ("apipeline", "AtomicRedisModel"),
        ("model_dump", "BaseModel"),
        ("copy", "BaseModel"),
    ],
)
async def test_a_field_named_like_the_models_own_attributes_is_refused(
    field: str, owner: str, redis: Redis, snapshot: SnapshotFn
) -> None:
    before = await snapshot()

    with pytest.raises(ModelDefinitionError) as err:
        define("Shadowing", {field: str}, **{field: "x"})

    assert (err.value.model, err.value.field) == ("Shadowing", field)
    assert f"Shadowing.{field}" in str(err.value) and owner in str(err.value)
    assert "rename the field" in str(err.value)
    assert await snapshot() == before


def test_a_field_hiding_a_method_of_a_base_model_is_refused() -> None:
    with pytest.raises(ModelDefinitionError) as err:

        class Child(Base):
            describe: str = ""  # type: ignore[assignment]

    assert (err.value.model, err.value.field) == ("Child", "describe")
    assert "Base uses" in str(err.value)


def test_pk_and_a_classvar_meta_are_allowed() -> None:
    class OwnPk(AtomicRedisModel):
        Meta: ClassVar[RedisConfig] = RedisConfig(ttl=5)
        pk: str = Field(default="fixed", frozen=True)

    assert OwnPk().pk == "fixed"
    assert OwnPk.Meta is not None and OwnPk.Meta.ttl == 5


def test_a_plain_class_meta_is_refused() -> None:
    with pytest.raises(ModelDefinitionError) as err:

        class Djangoish(AtomicRedisModel):
            class Meta:
                ttl = 60

    assert (err.value.model, err.value.field) == ("Djangoish", "Meta")
    assert "Meta = RedisConfig(ttl=60)" in str(err.value)
    assert "class Meta" in str(err.value)


def test_a_meta_of_another_type_is_refused() -> None:
    with pytest.raises(ModelDefinitionError, match=r"Odd\.Meta is a dict, not a RedisConfig"):
        define("Odd", {}, Meta={"ttl": 60})


# -- sets that cannot have a key of their own ------------------------------------------------------


@pytest.mark.parametrize(
    "annotation",
    [
        list[WithSets],
        dict[str, WithSets],
        tuple[WithSets, ...],
        list[RedisSet[str]],
        dict[str, RedisSet[int]],
        list[WithSets] | None,
        WithSets | int,
    ],
    ids=["list", "dict", "tuple", "list-of-sets", "dict-of-sets", "optional-list", "union"],
)
async def test_a_set_inside_a_collection_or_union_is_refused(
    annotation: Any, redis: Redis, snapshot: SnapshotFn
) -> None:
    before = await snapshot()

    with pytest.raises(ModelDefinitionError) as err:
        define("Collected", {"items": annotation}, items=None)

    assert (err.value.model, err.value.field) == ("Collected", "items")
    assert "Collected.items" in str(err.value) and "one level of nesting" in str(err.value)
    assert await snapshot() == before


def test_a_set_two_levels_down_is_refused_naming_the_path() -> None:
    with pytest.raises(ModelDefinitionError) as err:

        class TooDeep(AtomicRedisModel):
            middle: Middle = Field(default_factory=Middle)

    assert (err.value.model, err.value.field) == ("TooDeep", "middle.deep")
    assert "two levels down" in str(err.value)


def test_a_list_of_sets_inside_a_nested_model_is_refused() -> None:
    class Holder(BaseModel):
        groups: list[RedisSet[str]] = Field(default_factory=list)

    with pytest.raises(ModelDefinitionError) as err:

        class Outer(AtomicRedisModel):
            holder: Holder = Field(default_factory=Holder)

    assert (err.value.model, err.value.field) == ("Outer", "holder.groups")


def test_a_nested_set_of_an_unsupported_type_is_refused_naming_the_path() -> None:
    class Bad(BaseModel):
        things: RedisSet[dict] = Field(default_factory=RedisSet)  # type: ignore[type-var]

    with pytest.raises(ModelDefinitionError) as err:

        class Outer(AtomicRedisModel):
            bad: Bad = Field(default_factory=Bad)

    assert (err.value.model, err.value.field) == ("Outer", "bad.things")
    assert "Outer.bad.things: a set of dict cannot be stored" in str(err.value)


async def test_a_plain_set_in_a_plain_nested_model_stays_json(redis: Redis) -> None:
    class Notes(AtomicRedisModel):
        plain: WithPlainSet = Field(default_factory=WithPlainSet)
        many: list[WithPlainSet] = Field(default_factory=list)

    notes = Notes(plain=WithPlainSet(words={"a"}), many=[WithPlainSet(words={"b"})])
    await notes.asave()

    assert await redis.hget(notes.key, "plain") == b'{"words":["a"]}'
    assert await redis.keys("__rapyer_special__:*") == []
    loaded = await Notes.aget(notes.key)
    assert (loaded.plain.words, loaded.many[0].words) == ({"a"}, {"b"})
    assert type(loaded.plain.words) is set
