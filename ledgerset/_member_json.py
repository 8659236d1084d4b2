"""The stored bytes of a set member: exactly what Python's ``json.dumps`` writes for it.

rapyer (and any Python program calling ``json.dumps`` with its defaults) stores a member as
``json.dumps(value)``: ASCII only (``ensure_ascii``: ``"café"`` -> ``"caf\\u00e9"``, U+007F and
U+2028 escaped too), floats in Python's ``repr`` (``1e-07``). A SET compares bytes, so a member
stored in any other form is a different member to Redis: ledgerset writes the same bytes, and set
keys written by either library are interchangeable.

orjson writes the same bytes, faster, for ints, bools and a list of printable ASCII strings
(``dumps_strs``). One string takes ``json``'s own encoder (``encode_basestring_ascii``, in C),
whether it differs from orjson's (non-ASCII, control characters) or not: orjson's output buffer
for a short value can cost more than the encoding (some microseconds each when many are kept,
as in a replay's batch). Both the member codec (``core``) and replayed records (``commands``)
encode through here, so a replayed member has the bytes of the original.
"""

from __future__ import annotations

from collections.abc import Iterable
from json.encoder import encode_basestring_ascii

import orjson

__all__ = ["dumps", "dumps_str", "dumps_strs"]


def dumps(value: str | int | float | bool) -> bytes:
    """``json.dumps(value).encode()`` for a member value (a finite float, a 64-bit int).

    A ``str`` holding a lone surrogate raises ``UnicodeEncodeError``: ``json.dumps`` would write
    it as an escape that orjson, and most JSON readers, refuse to read back.
    """
    if type(value) is str:
        return dumps_str(value)
    if type(value) is float:
        return float.__repr__(value).encode()  # what json.dumps writes; orjson writes 1e-7
    return orjson.dumps(value)


def dumps_str(value: str) -> bytes:
    """``json.dumps(value).encode()`` for one ``str``."""
    if not value.isascii():
        value.encode()  # a lone surrogate raises here, as orjson would
    return encode_basestring_ascii(value).encode()  # json.dumps's own encoder for a str


def dumps_strs(values: Iterable[str]) -> list[bytes]:
    """``dumps_str`` of each value; one check and one orjson pass when all are printable ASCII."""
    values = values if isinstance(values, list) else list(values)
    joined = "".join(values)
    if joined.isascii() and joined.isprintable():
        return list(map(orjson.dumps, values))
    return list(map(dumps_str, values))
