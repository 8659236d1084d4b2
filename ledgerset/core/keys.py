"""Every Redis key name ledgerset builds, in one place.

- a model's HASH:            ``{ClassName}:{pk}``
- a ``RedisSet`` field's SET: ``{prefix}:{ClassName}:{pk}:{field}``, prefix ``__rapyer_special__``
  by default (the specification's layout), configurable per model through ``RedisConfig``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SPECIAL_PREFIX", "model_key", "pk_from_key", "set_key"]

DEFAULT_SPECIAL_PREFIX = "__rapyer_special__"


def model_key(model: str, pk: str) -> str:
    """The key of the HASH that holds a model's scalar fields."""
    return f"{model}:{pk}"


def set_key(model: str, pk: str, field: str, prefix: str = DEFAULT_SPECIAL_PREFIX) -> str:
    """The key of the SET that holds one ``RedisSet`` field's members."""
    return f"{prefix}:{model}:{pk}:{field}"


def pk_from_key(model: str, key: str) -> str | None:
    """The pk in a model key of ``model``, or ``None`` when ``key`` is not one of its keys."""
    prefix = f"{model}:"
    if key.startswith(prefix) and len(key) > len(prefix):
        return key[len(prefix) :]
    return None
