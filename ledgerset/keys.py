"""Every Redis key name ledgerset builds, in one place.

- a model's HASH:            ``{ClassName}:{pk}``
- a ``RedisSet`` field's SET: ``{prefix}:{ClassName}:{pk}:{field}``, prefix ``__rapyer_special__``
  by default (the specification's layout), configurable per model through ``RedisConfig``
- a ``RedisSet`` field of a nested model: the same, with the field path as the field,
  ``{prefix}:{ClassName}:{pk}:{outer field}.{inner field}`` (see ``field_path``)
- the library's own bookkeeping (replay checkpoints): ``ledgerset:...``

``unwritable`` tells whether a model, pk and field names are ones a ledgerset model could have
written, for a replay that must not let an untrusted journal reach any other key.

A ``KeyLayout`` is one database's layout. Journal entries name their target logically (model, pk,
field), and replay builds the physical keys through the *target's* layout, so it lives here, below
both the models (``core``) and the journal.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SPECIAL_PREFIX",
    "RESERVED_PREFIX",
    "KeyLayout",
    "checkpoint_key",
    "field_path",
    "pk_from_key",
    "unwritable",
]

DEFAULT_SPECIAL_PREFIX = "__rapyer_special__"

#: The library's own keys start with ``ledgerset:``; no model may be named so.
RESERVED_PREFIX = "ledgerset"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """How model and set keys are spelled in one database."""

    special_prefix: str = DEFAULT_SPECIAL_PREFIX

    def model_key(self, model: str, pk: str) -> str:
        """The key of the HASH that holds a model's scalar fields."""
        return f"{model}:{pk}"

    def set_key(self, model: str, pk: str, field: str) -> str:
        """The key of the SET that holds one ``RedisSet`` field's members."""
        return f"{self.special_prefix}:{model}:{pk}:{field}"


def field_path(outer: str, inner: str) -> str:
    """The field name of set field ``inner`` of the model held by field ``outer``: ``outer.inner``.

    A Python field name has no dot, so a path never collides with a field of the outer model;
    the model hash records the set under this name too, and the journal names it as the field.
    """
    return f"{outer}.{inner}"


def pk_from_key(model: str, key: str) -> str | None:
    """The pk in a model key of ``model``, or ``None`` when ``key`` is not one of its keys."""
    prefix = f"{model}:"
    if key.startswith(prefix) and len(key) > len(prefix):
        return key[len(prefix) :]
    return None


def checkpoint_key(stream: str, model: str | None = None) -> str:
    """Where a replay of ``stream`` (limited to ``model``, if given) records its progress."""
    return f"ledgerset:replay:{stream}" if model is None else f"ledgerset:replay:{stream}:{model}"


def unwritable(
    model: str, pk: str, fields: Iterable[str], layout: KeyLayout
) -> tuple[str, str] | None:
    """Why no ledgerset model could have written model ``model``, pk ``pk`` and these field
    names in ``layout`` -- ``(what is at fault: "model", "pk" or "field", why)`` -- or ``None``.

    A model is a Python class name that ledgerset accepts (not ``ledgerset``, not a set prefix),
    whose keys stay out of ``ledgerset:`` and the set prefix; a field is an identifier, or one
    nested level (``outer.inner``).
    """
    if not model.isidentifier() or keyword.iskeyword(model):
        return "model", f"{model!r} is not a Python class name"
    if model in (RESERVED_PREFIX, DEFAULT_SPECIAL_PREFIX, layout.special_prefix):
        return "model", f"{model!r} is a name ledgerset refuses for a model class"
    if not pk:
        return "pk", "the pk is empty"
    model_key = layout.model_key(model, pk)
    for prefix in (RESERVED_PREFIX, layout.special_prefix):
        if model_key.startswith(f"{prefix}:"):
            return "pk", f"model key {model_key!r} would be inside {prefix + ':'!r}"
    for field in fields:
        parts = field.split(".")
        if len(parts) > 2 or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
            return "field", f"{field!r} is not a field name (an identifier, or outer.inner)"
    return None
