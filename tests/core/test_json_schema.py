"""A model with ``RedisSet`` fields describes itself to Pydantic's JSON Schema (and so OpenAPI).

A set field is an array of unique items of its member type (any of the four for a bare
``RedisSet``), Optional or nested; a validation error on a set field names it in ``loc``.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from ledgerset import AtomicRedisModel, RedisSet


class Inner(BaseModel):
    badges: RedisSet[int] = Field(default_factory=RedisSet)


class Described(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    scores: set[float] = Field(default_factory=set)
    anything: RedisSet = Field(default_factory=RedisSet)  # type: ignore[type-arg]
    flags: RedisSet[bool] | None = None
    inner: Inner = Field(default_factory=Inner)


def array_of(*types: str) -> dict[str, Any]:
    items = {"type": types[0]} if len(types) == 1 else {"anyOf": [{"type": t} for t in types]}
    return {"type": "array", "uniqueItems": True, "items": items}


@pytest.mark.parametrize("mode", ["validation", "serialization"])
def test_a_set_field_is_an_array_of_unique_members(mode: Any) -> None:
    schema = Described.model_json_schema(mode=mode)
    properties = schema["properties"]

    def shape(name: str) -> dict[str, Any]:
        return {k: v for k, v in properties[name].items() if k not in ("title", "default")}

    assert shape("tags") == array_of("string")
    assert shape("scores") == array_of("number")
    assert shape("anything") == array_of("string", "integer", "number", "boolean")
    assert shape("flags") == {"anyOf": [array_of("boolean"), {"type": "null"}]}
    inner = schema["$defs"]["Inner"]["properties"]["badges"]
    assert {k: v for k, v in inner.items() if k != "title"} == array_of("integer")


def test_a_member_of_the_wrong_type_names_the_field_in_loc() -> None:
    with pytest.raises(ValidationError) as err:
        Described(tags={"ok", 1})  # type: ignore[arg-type]

    (error,) = err.value.errors()
    assert error["loc"] == ("tags",)
    assert "Described.tags is a RedisSet[str]: cannot store 1" in error["msg"]


def test_a_nested_set_member_of_the_wrong_type_names_the_path_in_loc() -> None:
    with pytest.raises(ValidationError) as err:
        Described(inner={"badges": ["x"]})  # type: ignore[arg-type]

    assert [error["loc"] for error in err.value.errors()] == [("inner", "badges")]


def test_a_collection_of_the_wrong_kind_names_the_field_in_loc() -> None:
    with pytest.raises(ValidationError) as err:
        Described(scores="1.5")  # type: ignore[arg-type]

    assert [error["loc"] for error in err.value.errors()] == [("scores",)]
