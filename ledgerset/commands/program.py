"""A server program: commands compiled into one call of ``program.lua``.

Each command appends its primitive operations (``OPS``: the same codes as the ``OP_`` locals in
``program.lua``) with ``Program.op``; the dispatcher then sends ``keys`` and ``argv`` in one
``EVALSHA`` and hands each command the replies of its own operations.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final

from ledgerset.commands.wire import Arg

if TYPE_CHECKING:
    from ledgerset.commands.catalog import Command, SetCommand

__all__ = ["MAX_TTL_MS", "OPS", "SOURCE", "VERSION_FIELD", "Program", "Refusal"]

SOURCE: str = files("ledgerset.commands").joinpath("program.lua").read_text(encoding="utf-8")

#: The program's operations by name (see ``program.lua``): one byte each in its header.
OPS: Final[dict[str, bytes]] = {
    "ADD": b"A",
    "REMOVE": b"R",
    "ADD_EACH": b"a",
    "REMOVE_EACH": b"r",
    "POP": b"P",
    "CLEAR": b"C",
    "RETAIN": b"T",
    "TOGGLE": b"X",
    "MOVE": b"M",
    "STORE": b"W",
    "REPLACE_SET": b"Z",
    "REPLACE_HASH": b"S",
    "UPDATE_HASH": b"U",
    "DELETE": b"D",
    "JOURNAL": b"J",
    "CHECKPOINT": b"K",
    "EXPECT_TYPE": b"E",
    "BUMP": b"V",
    "EXPECT_VERSION": b"G",
    "SNAPSHOT": b"N",
    "TRIM": b"Y",
}

#: The hash field that holds a model's version (see ``program.lua``'s BUMP): no model field can
#: have this name, as Pydantic field names cannot start with an underscore.
VERSION_FIELD: Final = "_version"

#: The longest expiry the program accepts, in ms from now (about 142,000 years): it checks
#: expiries as Lua numbers, exact to 2**53, and an absolute time (entry time + TTL) must fit too.
MAX_TTL_MS: Final = 2**52

#: One operation in the header: code, number of keys, argument count, each key's index; by
#: number of keys (one ``pack`` per operation: this runs on every command).
_OPS_BY_KEYS = {count: struct.Struct(">cBI" + "H" * count) for count in range(1, 5)}


def _check_source() -> None:
    """Fail at import if ``program.lua``'s ``OP_`` codes or TTL bound differ from this module's:
    the two sides must never disagree about what a code means."""
    lua_ops = dict(re.findall(r"^local OP_(\w+) = '(\w)'$", SOURCE, re.M))
    if len(set(OPS.values())) != len(OPS):
        raise RuntimeError(f"program.OPS gives two operations the same code: {OPS}")
    if lua_ops != {name: code.decode() for name, code in OPS.items()}:
        raise RuntimeError(f"program.lua's OP_ codes {lua_ops} differ from program.OPS")
    bound = re.search(r"local MAX_TTL_MS = (\d+)", SOURCE)
    if bound is None or int(bound.group(1)) != MAX_TTL_MS:
        raise RuntimeError("program.lua's MAX_TTL_MS differs from program.MAX_TTL_MS")
    if f"local VERSION_FIELD = '{VERSION_FIELD}'" not in SOURCE:
        raise RuntimeError("program.lua's VERSION_FIELD differs from program.VERSION_FIELD")


_check_source()


class Program:
    """The keys and arguments of one run of ``program.lua``, and which operations are whose."""

    __slots__ = ("_header", "_key_index", "_values", "journaled", "keys", "nops", "parts", "spans")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._key_index: dict[str, int] = {}
        self._header: list[bytes] = []
        self._values: list[Arg] = []
        self.nops = 0
        self.spans: list[tuple[Command[Any], int, int]] = []
        #: span index -> its command's place in the list its run's ``*_EACH`` op replies
        self.parts: dict[int, int] = {}
        #: op index of a journal entry -> the command it records
        self.journaled: dict[int, Command[Any]] = {}

    @property
    def argv(self) -> list[Arg]:
        """``ARGV``: the header (code, keys, argument count per operation), the values."""
        return [b"".join(self._header), *self._values]

    def add(self, command: Command[Any]) -> None:
        """Compile ``command`` into this program, then bump the version of each model it writes
        (``Command.bumps``; recorded in its journal entry when ``records_version``)."""
        start = self.nops
        command.compile(self)
        recorded: tuple[Arg, ...] = ("1",) if command.records_version else ()
        for model_key in command.bumps:
            self.op(OPS["BUMP"], (model_key,), recorded)
        self.spans.append((command, start, self.nops))

    def add_run(
        self, run: Sequence[SetCommand[Any]], code: bytes, args: Sequence[Arg], *, each: bool
    ) -> None:
        """Compile ``run``, commands on one set that do together what they do in order, as one
        operation ``code`` on it with ``args``, then one bump of its model by the number of
        them that bump it. ``each``: the operation replies with a list, each command's reply a
        place in it (``ADD_EACH``); else one reply for the run (a replay's batch needs none)."""
        first, start = run[0], self.nops
        self.op(code, (first.key, first.owner), args)
        bumps = sum(len(command.bumps) for command in run)
        if bumps:
            self.op(OPS["BUMP"], (first.owner,), ["0", bumps])
        for place, command in enumerate(run):  # a refusal names the first: the first span
            if each:
                self.parts[len(self.spans)] = place
            self.spans.append((command, start, self.nops))

    def replies_of(self, replies: list[object]) -> Iterator[tuple[Command[Any], list[object]]]:
        """Each command (in order) with the replies of its own operations."""
        parts = self.parts
        for index, (command, start, end) in enumerate(self.spans):
            place = parts.get(index) if parts else None
            if place is None:
                yield command, replies[start:end]
            else:
                yield command, [replies[start][place]]  # type: ignore[index]

    def op(self, code: bytes, keys: Sequence[str], args: Sequence[Arg] = ()) -> int:
        """Append one operation (a code of ``OPS``) on ``keys`` (a set operation: its set key,
        then its model's key); returns its index."""
        count = len(keys)
        layout = _OPS_BY_KEYS.get(count) or struct.Struct(">cBI" + "H" * count)
        if count == 2:  # a set operation, the usual case: no list, no loop
            indices: Sequence[int] = (self._index(keys[0]), self._index(keys[1]))
        elif count == 1:
            indices = (self._index(keys[0]),)
        else:
            indices = [self._index(key) for key in keys]
        self._header.append(layout.pack(code, count, len(args), *indices))
        self._values.extend(args)
        self.nops += 1
        return self.nops - 1

    def _index(self, key: str) -> int:
        index = self._key_index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._key_index[key] = len(self.keys)
        return index

    def refusal(self, reply: list[object]) -> Refusal:
        """Interpret the ``{0, reason, op, key, detail}`` reply of a refused program."""
        _, reason, op_number, key, detail = reply
        op_index = int(op_number) - 1  # type: ignore[call-overload]
        # A journal entry's refusal is its command's; None: a replay's checkpoint.
        command = next(
            (cmd for cmd, start, end in self.spans if start <= op_index < end),
            self.journaled.get(op_index),
        )
        return Refusal(
            command=command, reason=_decoded(reason), key=_decoded(key), detail=_decoded(detail)
        )


class Refusal:
    """Why the server refused a program: which command, which key, what reason.

    ``detail`` depends on ``reason``: the type found (``wrong_type``), the command the caller
    may not run (``no_permission``; ``user`` is then the caller's ACL user), the value refused
    (``expiry_out_of_range``), the checkpoint's value (``checkpoint_moved``).
    """

    __slots__ = ("command", "detail", "key", "reason", "user")

    def __init__(self, *, command: Command[Any] | None, reason: str, key: str, detail: str) -> None:
        self.command = command
        self.reason = reason
        self.key = key
        self.detail = detail
        self.user: str | None = None


def _decoded(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
