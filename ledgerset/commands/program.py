"""A server program: commands compiled into one call of ``program.lua``.

Each command appends its primitive operations (see the codes in ``program.lua``) with
``Program.op``; the dispatcher then sends ``keys`` and ``argv`` in one ``EVALSHA`` and hands each
command the replies of its own operations.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledgerset.commands.catalog import Command

__all__ = ["SOURCE", "Arg", "Program", "Refusal"]

SOURCE: str = files("ledgerset.commands").joinpath("program.lua").read_text(encoding="utf-8")

Arg = bytes | str | int

#: One operation in the header: code, key index, owner key index (0: none), argument count.
_OP = struct.Struct(">cHHI")


class Program:
    """The keys and arguments of one run of ``program.lua``, and which operations are whose."""

    __slots__ = ("_header", "_key_index", "_values", "journaled", "keys", "nops", "spans")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._key_index: dict[str, int] = {}
        self._header: list[bytes] = []
        self._values: list[Arg] = []
        self.nops = 0
        self.spans: list[tuple[Command[Any], int, int]] = []
        #: op index of a journal entry -> the command it records
        self.journaled: dict[int, Command[Any]] = {}

    @property
    def argv(self) -> list[Arg]:
        """``ARGV``: the header (code, key, owner, argument count per operation), the values."""
        return [b"".join(self._header), *self._values]

    def add(self, command: Command[Any]) -> None:
        """Compile ``command`` into this program."""
        start = self.nops
        command.compile(self)
        self.spans.append((command, start, self.nops))

    def op(self, code: bytes, key: str, owner: str | None, args: Sequence[Arg] = ()) -> int:
        """Append one primitive operation on ``key`` (a set op names its model's key as owner);
        returns its index."""
        owner_index = self._index(owner) if owner is not None else 0
        self._header.append(_OP.pack(code, self._index(key), owner_index, len(args)))
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
        """Interpret the ``{0, reason, op, key, type}`` reply of a refused program."""
        _, reason, op_number, key, actual = reply
        op_index = int(op_number) - 1  # type: ignore[call-overload]
        # A journal entry's refusal is its command's; None: a replay's checkpoint.
        command = next(
            (cmd for cmd, start, end in self.spans if start <= op_index < end),
            self.journaled.get(op_index),
        )
        return Refusal(
            command=command,
            reason=_text(reason),
            key=_text(key),
            actual=_text(actual),
        )


class Refusal:
    """Why the server refused a program: which command, which key, what reason."""

    __slots__ = ("actual", "command", "key", "reason")

    def __init__(self, *, command: Command[Any] | None, reason: str, key: str, actual: str) -> None:
        self.command = command
        self.reason = reason
        self.key = key
        self.actual = actual


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
