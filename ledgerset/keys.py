"""Every Redis key name ledgerset builds, in one place.

- a model's HASH:            ``{ClassName}:{pk}``
- a ``RedisSet`` field's SET: ``{prefix}:{ClassName}:{pk}:{field}``, prefix ``__rapyer_special__``
  by default (the specification's layout), configurable per model through ``RedisConfig``
- a ``RedisSet`` field of a nested model: the same, with the field path as the field,
  ``{prefix}:{ClassName}:{pk}:{outer field}.{inner field}`` (see ``field_path``)
- the library's own bookkeeping (replay checkpoints): ``ledgerset:...``; on a cluster, a
  journal stream per slot (``journal_stream``) and a replay checkpoint per slot
  (``slot_checkpoint_key``)
- a chained journal stream's head: ``{stream}:chain`` (``chain_head``), in the stream's slot

``unwritable`` tells whether a model, pk and field names are ones a ledgerset model could have
written, for a replay that must not let an untrusted journal reach any other key.

On a Redis/Valkey Cluster (``KeyLayout(cluster=True)``) a model and all of its sets live in one
slot, so the one atomic program that writes them is allowed to run: the set key braces the model
key, ``{prefix}:{{ClassName}:{pk}}:{field}``, which makes the model key its hash tag. A pk that
already carries a hash tag (``{acme}:home``) keeps the single-server spelling, since that tag
already puts the model and its sets together; a pk whose braces would break this is refused.
``key_slot`` is the cluster's slot of a key (CRC16 of its hash tag, per the cluster
specification).

A ``KeyLayout`` is one database's layout. Journal entries name their target logically (model, pk,
field), and replay builds the physical keys through the *target's* layout, so it lives here, below
both the models (``core``) and the journal.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import keyword
import string
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from ledgerset.errors import InvalidKeyError

__all__ = [
    "CLUSTER_SLOTS",
    "DEFAULT_SPECIAL_PREFIX",
    "RESERVED_PREFIX",
    "KeyLayout",
    "chain_head",
    "checkpoint_key",
    "field_path",
    "journal_stream",
    "key_slot",
    "pk_from_key",
    "slot_checkpoint_key",
    "slot_tag",
    "unwritable",
]

DEFAULT_SPECIAL_PREFIX = "__rapyer_special__"

#: The library's own keys start with ``ledgerset:``; no model may be named so.
RESERVED_PREFIX = "ledgerset"
#: The number of hash slots of a Redis/Valkey Cluster.
CLUSTER_SLOTS = 16384


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """How model and set keys are spelled in one database.

    ``special_prefix`` starts every set key. ``cluster=True`` is the layout for a Redis/Valkey
    Cluster, where each set key hashes to its model key's slot; ``False`` (the default) is the
    specification's single-server layout, byte-compatible with rapyer.
    """

    special_prefix: str = DEFAULT_SPECIAL_PREFIX
    cluster: bool = False

    def model_key(self, model: str, pk: str) -> str:
        """The key of the HASH that holds a model's scalar fields."""
        return f"{model}:{pk}"

    def set_key(self, model: str, pk: str, field: str) -> str:
        """The key of the SET that holds one ``RedisSet`` field's members.

        ``field`` is the field's name, or its path (``profile.badges``) for a set of a nested
        model. On a cluster, raises ``InvalidKeyError`` (naming model, pk and the fix) when the
        braces of the pk or of the prefix would put the set in another slot than the model.
        """
        spec_key = f"{self.special_prefix}:{model}:{pk}:{field}"
        if not self.cluster:
            return spec_key
        model_key = self.model_key(model, pk).encode()
        tag = _hashed_part(model_key)
        # A model key with a hash tag of its own already co-locates the spec's set key; one
        # without is hashed whole, so the set key makes the whole model key its tag.
        key = spec_key if tag != model_key else f"{self.special_prefix}:{{{model}:{pk}}}:{field}"
        if _hashed_part(key.encode()) != tag:
            raise InvalidKeyError.set_leaves_slot(
                model=model,
                pk=pk,
                field=field,
                key=key,
                prefix=self.special_prefix,
                model_slot=key_slot(model_key),
                set_slot=key_slot(key),
            )
        return key


@functools.lru_cache(maxsize=4096)
def key_slot(key: str | bytes) -> int:
    """The cluster hash slot of ``key`` (0 to 16383), as ``CLUSTER KEYSLOT`` computes it.

    CRC16 (XMODEM) of the key's hash tag, modulo 16384: the tag is what lies between the first
    ``{`` and the first ``}`` after it, when that is not empty; otherwise the whole key. A ``str``
    is hashed as its UTF-8 bytes, the bytes redis-py sends. Remembered for the last 4,096 keys:
    a cluster call asks it for every key of its program, and a model's keys come back.
    """
    data = key.encode() if isinstance(key, str) else key
    return binascii.crc_hqx(_hashed_part(data), 0) % CLUSTER_SLOTS


def _hashed_part(key: bytes) -> bytes:
    """The part of ``key`` a cluster hashes: its hash tag, or the whole key without one."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def slot_tag(slot: int) -> str:
    """The shortest hash tag that hashes to ``slot``: digits and ASCII letters, 1 to 3 of them,
    the first in (length, alphabetical) order. Fixed for good, since journal stream names use it."""
    if not 0 <= slot < CLUSTER_SLOTS:
        raise ValueError(f"a cluster slot is 0 to {CLUSTER_SLOTS - 1}, not {slot}")
    return _slot_tags()[slot]


def journal_stream(stream: str, slot: int) -> str:
    """The journal stream of ``slot`` on a cluster: ``{stream}:{{tag}}``, where ``tag`` hashes to
    ``slot`` (``slot_tag``), so an entry is appended in the same atomic program as the writes it
    records and moves with its slot when the cluster is resharded."""
    return f"{stream}:{{{slot_tag(slot)}}}"


@cache
def _slot_tags() -> tuple[str, ...]:
    # Built on first use (about 40 ms): 62**3 candidates reach every one of the 16384 slots.
    alphabet = (string.digits + string.ascii_lowercase + string.ascii_uppercase).encode()
    tags: list[str | None] = [None] * CLUSTER_SLOTS
    missing = CLUSTER_SLOTS
    for length in (1, 2, 3):
        for letters in itertools.product(alphabet, repeat=length):
            tag = bytes(letters)
            slot = binascii.crc_hqx(tag, 0) % CLUSTER_SLOTS
            if tags[slot] is None:
                tags[slot] = tag.decode()
                missing -= 1
    if missing:  # a property of CRC16, checked here rather than assumed
        raise RuntimeError(f"{missing} cluster slots have no tag of 1 to 3 letters")
    return tuple(t for t in tags if t is not None)


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


def chain_head(stream: str) -> str:
    """The chain head of the journal stream key ``stream`` (``StreamJournal(chain=True)``):
    ``{stream}:chain``, which keeps the stream's hash tag, so on a cluster it lives in the
    stream's slot and is written in the same atomic program as each entry."""
    return f"{stream}:chain"


def checkpoint_key(stream: str, model: str | None = None) -> str:
    """Where a replay of ``stream`` (limited to ``model``, if given) records its progress."""
    return f"ledgerset:replay:{stream}" if model is None else f"ledgerset:replay:{stream}:{model}"


def slot_checkpoint_key(stream: str, slot: int, model: str | None = None) -> str:
    """Where a replay of ``stream`` (limited to ``model``) into a cluster records its progress
    in ``slot``: ``ledgerset:replay:{<tag>}:<stream>[:<model>]``, the tag of ``slot`` first, so
    that the checkpoint is in the slot whose batches move it, whatever braces ``stream`` holds."""
    return checkpoint_key(stream, model).replace(
        "ledgerset:replay:", f"ledgerset:replay:{{{slot_tag(slot)}}}:", 1
    )


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
        if not _is_field_name(field):
            return "field", f"{field!r} is not a field name (an identifier, or outer.inner)"
    return None


@functools.lru_cache(maxsize=1024)
def _is_field_name(field: str) -> bool:
    """Whether ``field`` is an identifier, or ``outer.inner``: remembered, as a replay asks it
    of the same few names entry after entry."""
    parts = field.split(".")
    return len(parts) <= 2 and all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)
