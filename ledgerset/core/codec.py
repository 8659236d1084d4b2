"""The member codec: how a set member becomes the bytes stored in Redis, and back.

A member is stored as its canonical JSON text: the exact bytes Python's ``json.dumps`` writes for
it (ASCII only, floats in Python's ``repr``; see ``ledgerset._member_json``), which is what rapyer
writes, so set keys are interchangeable with rapyer's. Canonical means one Python value has exactly
one stored form, so Redis's own set semantics agree with Python's:

- ``RedisSet[str]``   ``"python"``  -> ``b'"python"'``; ``"café"`` -> ``b'"caf\\u00e9"'``
- ``RedisSet[int]``   ``7``         -> ``b'7'`` (64-bit range; ``True`` is not an int here)
- ``RedisSet[float]`` ``1`` / ``1.0`` -> ``b'1.0'``; ``-0.0`` -> ``b'0.0'``; NaN and ±inf refused
- ``RedisSet[bool]``  ``True``      -> ``b'true'``
- ``RedisSet`` (any of the four): numbers that are equal in Python are one member, as in a
  Python set: a float with an integral value is stored as that int, and a bool as ``1``/``0``
  (``True``, ``1`` and ``1.0`` are one member, read back as ``1``). Use ``RedisSet[bool]`` to
  keep bools as bools.

Everything else (``None``, bytes, dict, list, ...) is refused with an ``InvalidMemberError`` naming
the model, field and value, before any I/O. Decoding a whole set is one ``orjson.loads`` call,
which reads escaped and raw UTF-8 strings alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from ledgerset import _member_json
from ledgerset.errors import InvalidMemberError

__all__ = ["MEMBER_TYPES", "Member", "MemberCodec"]

Member = str | int | float | bool
MEMBER_TYPES: tuple[type, ...] = (str, int, float, bool)

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


class MemberCodec:
    """Validates, encodes and decodes the members of one ``RedisSet`` field.

    ``member_type`` is ``str``, ``int``, ``float``, ``bool`` or ``None`` (any of the four).
    ``model`` and ``field`` only name the field in error messages.
    """

    __slots__ = ("_fast_type", "_normalize", "field", "member_type", "model")

    def __init__(self, member_type: type | None, *, model: str, field: str) -> None:
        if member_type is not None and member_type not in MEMBER_TYPES:
            raise TypeError(f"unsupported member type {member_type!r}")
        self.member_type = member_type
        self.model = model
        self.field = field
        self._normalize: Callable[[object], Member] = _NORMALIZERS[member_type]
        # Values of exactly this type are their own canonical form (floats are not: -0.0, ints).
        self._fast_type = member_type if member_type in (str, int, bool) else None

    @property
    def type_name(self) -> str:
        """``RedisSet[str]`` and so on, as a user would write the annotation."""
        inner = self.member_type.__name__ if self.member_type else "str | int | float | bool"
        return f"RedisSet[{inner}]"

    def normalize(self, value: object) -> Member:
        """Return the canonical Python value of ``value``, or raise ``InvalidMemberError``."""
        try:
            return self._normalize(value)
        except _Refused as refused:
            raise self._error(value, refused.reason) from None

    def pair(self, value: object) -> tuple[Member, bytes]:
        """Return ``value``'s canonical Python value and its stored form (canonical JSON)."""
        normal = self.normalize(value)
        try:
            return normal, _member_json.dumps(normal)
        except UnicodeEncodeError as exc:  # a lone surrogate in a str
            raise self._error(value, f"it cannot be encoded as UTF-8 JSON ({exc})") from None

    def pairs(self, values: Iterable[object]) -> tuple[list[Member], tuple[bytes, ...]]:
        """``pair`` for many values, without repeats; the first bad value raises."""
        if isinstance(values, (str, bytes, bytearray, Mapping)):
            raise self._error(
                values,
                "pass a list or set of members, e.g. aadd_many([value]), "
                "not a single str/bytes or a mapping",
            )
        values = values if isinstance(values, list) else list(values)
        fast = self._fast_type
        if fast is not None and set(map(type, values)) <= {fast}:
            # Already canonical (every member exactly str, int or bool): encode in bulk.
            encode: Callable[[list[Any]], list[bytes]] = (
                _member_json.dumps_strs if fast is str else _dumps_all
            )
            try:
                stored = dict(zip(encode(values), values, strict=True))
            except (orjson.JSONEncodeError, UnicodeEncodeError, TypeError):
                stored = {}  # an int beyond 64 bits or a lone surrogate: the slow path names it
            else:
                if fast is not int or all(_INT_MIN <= v <= _INT_MAX for v in stored.values()):
                    return list(stored.values()), tuple(stored)
        stored = {}
        pair = self.pair
        for value in values:
            normal, encoded = pair(value)
            stored[encoded] = normal
        return list(stored.values()), tuple(stored)

    def decode_many(self, raws: Iterable[bytes], *, key: str) -> set[Member]:
        """Decode stored members (one ``orjson.loads`` for all of them) into a Python set."""
        return set(self.decode_list(raws, key=key))

    def decode_list(self, raws: Iterable[bytes], *, key: str) -> list[Member]:
        """Decode stored members (one ``orjson.loads`` for all of them), in the order given.

        A member that is not one JSON value of a type the field holds raises
        ``InvalidMemberError`` naming ``key`` and the member's bytes.
        """
        raw_list = raws if isinstance(raws, list) else list(raws)
        if not raw_list:
            return []
        try:
            values: list[Any] = orjson.loads(_json_array(raw_list))
        except orjson.JSONDecodeError:
            values = []
        member_type = self.member_type
        types = _types_of(values, member_type)
        if len(values) != len(raw_list) or not types <= _DECODED_TYPES[member_type]:
            # Not JSON, one member several JSON values ("a","b") or part of one (a list split
            # across two), or of another type: find the first such member, and name it.
            raise self._corrupt(key, next(raw for raw in raw_list if not self._is_member(raw)))
        if member_type is float and int in types:
            values = [float(v) if type(v) is int else v for v in values]  # 1 is 1.0 here
        return values

    def decode(self, raw: bytes, *, key: str) -> Member:
        """Decode one stored member."""
        (value,) = self.decode_list([raw], key=key)
        return value

    def _is_member(self, raw: bytes) -> bool:
        """Whether ``raw`` alone is one JSON value of a type this field decodes."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False  # orjson refuses trailing data, so "a","b" is not one value
        return type(value) in _DECODED_TYPES[self.member_type]

    def _error(self, value: object, reason: str) -> InvalidMemberError:
        return InvalidMemberError(
            f"{self.model}.{self.field} is a {self.type_name}: cannot store {value!r} "
            f"({type(value).__name__}): {reason}",
            model=self.model,
            field=self.field,
            value=value,
        )

    def _corrupt(self, key: str, raw: bytes) -> InvalidMemberError:
        return InvalidMemberError(
            f"{self.model}.{self.field}: key {key!r} holds member {raw!r}, which is not a "
            f"canonical member of a {self.type_name}; another client wrote it. "
            f"Remove it with SREM or fix the field's type.",
            model=self.model,
            field=self.field,
            value=raw,
        )


def _dumps_all(values: list[object]) -> list[bytes]:
    # ints and bools: orjson writes exactly json.dumps's bytes (ints beyond 64 bits it refuses).
    return list(map(orjson.dumps, values))


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


#: The types ``orjson.loads`` gives for the members of each field type: a float set's member
#: another client wrote as an int (``1``) is read as the float it stands for.
_DECODED_TYPES: dict[type | None, frozenset[type]] = {
    str: frozenset((str,)),
    int: frozenset((int,)),
    float: frozenset((float, int)),
    bool: frozenset((bool,)),
    None: frozenset(MEMBER_TYPES),
}

#: What the members are joined with, inside ``[`` and ``]``, to be decoded in one call. The
#: newline keeps a member that opens a string from having it closed by the next member (a JSON
#: string cannot hold a raw newline): with a comma alone, ``"c`` and ``d"`` read as one member.
_SEPARATOR = b"\n,"

#: How many members one ``bytes.join`` call joins. It notes an 80-byte record per item before
#: it copies any, so 100,000 members at once are 8 MB of scratch written and read again, which
#: pushes the members themselves out of the cache; a chunk's scratch stays in it. (In the
#: benchmark's big read, joining took 1.9-3.8 ms in one call and 1.6-1.9 ms in chunks.)
_JOIN_CHUNK = 2048


def _json_array(raws: list[bytes]) -> bytes:
    """The JSON array of ``raws``, each one JSON value: ``[`` + them, separated, + ``]``."""
    if len(raws) <= _JOIN_CHUNK:
        return b"[" + _SEPARATOR.join(raws) + b"]"
    join = _SEPARATOR.join
    chunks = [join(raws[at : at + _JOIN_CHUNK]) for at in range(0, len(raws), _JOIN_CHUNK)]
    chunks[0] = b"[" + chunks[0]
    chunks[-1] += b"]"
    return join(chunks)


def _types_of(values: list[Any], member_type: type | None) -> set[type]:
    """The types of ``values``; for a str field only ``{str}``, or ``{object}`` if one is not."""
    if member_type is str:
        # str.join refuses anything but str, in C: a quarter of the cost of collecting types.
        try:
            "".join(values)
        except TypeError:
            return {object}
        return {str}
    return set(map(type, values))


def _str(value: object) -> str:
    if isinstance(value, str):
        return str.__str__(value)
    raise _Refused("members must be str")


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused("members must be int (not bool, float or str)")
    if not _INT_MIN <= value <= _INT_MAX:
        raise _Refused("ints must fit in 64 bits (JSON readers lose larger ones)")
    return int(value)


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused("members must be float or int")
    try:
        number = float(value)
    except OverflowError:
        raise _Refused("it is too large for a float") from None
    if not math.isfinite(number):
        raise _Refused("NaN and ±inf have no JSON form")
    return number if number != 0.0 else 0.0  # -0.0 and 0.0 are one member


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _Refused("members must be bool")


def _any(value: object) -> Member:
    if isinstance(value, bool):
        return int(value)  # True == 1 in a Python set, so one member here too
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, float):
        number = _float(value)
        if number.is_integer() and _INT_MIN <= number <= _INT_MAX:
            return int(number)  # 1.0 and 1 are one member, as in a Python set
        return number
    if isinstance(value, str):
        return _str(value)
    raise _Refused("members must be str, int, float or bool")


_NORMALIZERS: dict[type | None, Callable[[object], Member]] = {
    str: _str,
    int: _int,
    float: _float,
    bool: _bool,
    None: _any,
}
