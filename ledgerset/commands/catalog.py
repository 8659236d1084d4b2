"""Everything that can happen to data ledgerset owns: one frozen dataclass per kind of write.

A command holds its target (``model``, ``pk``, and the physical keys) and already-encoded members,
so it is a complete, immutable record of the write: the dispatcher runs it now or later, and the
journal can record it. ``name`` is its stable journal name, ``version`` its schema version.

========================  ==================  ====================================================
command                   name                does
========================  ==================  ====================================================
``AddMembers``            ``set.add``         SADD members                         -> added count
``RemoveMembers``         ``set.remove``      SREM members                         -> removed count
``PopMember``             ``set.pop``         SPOP one member (never deferred)     -> member | None
``ClearSet``              ``set.clear``       DEL the set                          -> 1 if non-empty
``RetainMembers``         ``set.retain``      keep only the given members          -> members after
``ToggleMembers``         ``set.toggle``      symmetric difference, on the server  -> members after
``SaveModel``             ``model.save``      replace the hash and every set, set the TTL
``UpdateModel``           ``model.update``    HSET some scalar fields of an existing model
``DeleteModel``           ``model.delete``    DEL the hash and its sets            -> existed
========================  ==================  ====================================================

Every set command is refused (nothing written) when its model's hash does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from ledgerset.commands.program import Program

__all__ = [
    "AddMembers",
    "ClearSet",
    "Command",
    "DeleteModel",
    "PopMember",
    "RemoveMembers",
    "RetainMembers",
    "SaveModel",
    "SetCommand",
    "SetContents",
    "ToggleMembers",
    "UpdateModel",
]


R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Generic[R]):
    """A write to one model: its journal ``name``/``version`` and how it runs on the server."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    #: False for commands whose result the caller needs at once (``set.pop``).
    deferrable: ClassVar[bool] = True

    model: str
    pk: str
    key: str
    #: The set field the command writes; ``None`` for a whole-model command.
    field: str | None = None

    def compile(self, program: Program) -> None:
        """Append this command's operations to ``program``."""
        raise NotImplementedError

    def result(self, replies: list[object]) -> R:
        """Turn the replies of this command's operations into its caller's return value."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class SetCommand(Command[R]):
    """A write to one ``RedisSet`` field. ``key`` is the set's key, ``owner`` its model's key."""

    field: str
    owner: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddMembers(SetCommand[int]):
    """Add members (``aadd``, ``aadd_many``, ``add``, ``update``, ``|=``)."""

    name: ClassVar[str] = "set.add"
    members: tuple[bytes, ...]

    def compile(self, program: Program) -> None:
        program.op(b"A", self.key, self.owner, self.members)

    def result(self, replies: list[object]) -> int:
        return _count(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveMembers(SetCommand[int]):
    """Remove members (``aremove``, ``remove``/``discard`` in a transaction, ``-=``)."""

    name: ClassVar[str] = "set.remove"
    members: tuple[bytes, ...]

    def compile(self, program: Program) -> None:
        program.op(b"R", self.key, self.owner, self.members)

    def result(self, replies: list[object]) -> int:
        return _count(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class PopMember(SetCommand[bytes | None]):
    """Remove and return one random member (``apop``)."""

    name: ClassVar[str] = "set.pop"
    deferrable: ClassVar[bool] = False

    def compile(self, program: Program) -> None:
        program.op(b"P", self.key, self.owner)

    def result(self, replies: list[object]) -> bytes | None:
        reply = replies[0]
        return reply if isinstance(reply, bytes) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearSet(SetCommand[int]):
    """Remove every member (``aclear``, ``clear`` in a transaction)."""

    name: ClassVar[str] = "set.clear"

    def compile(self, program: Program) -> None:
        program.op(b"C", self.key, self.owner)

    def result(self, replies: list[object]) -> int:
        return _count(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class RetainMembers(SetCommand[tuple[bytes, ...]]):
    """Keep only the given members, against the server's members (``&=``)."""

    name: ClassVar[str] = "set.retain"
    members: tuple[bytes, ...]

    def compile(self, program: Program) -> None:
        program.op(b"T", self.key, self.owner, self.members)

    def result(self, replies: list[object]) -> tuple[bytes, ...]:
        return _members(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class ToggleMembers(SetCommand[tuple[bytes, ...]]):
    """Remove the given members that are present, add the others (``^=``)."""

    name: ClassVar[str] = "set.toggle"
    members: tuple[bytes, ...]

    def compile(self, program: Program) -> None:
        program.op(b"X", self.key, self.owner, self.members)

    def result(self, replies: list[object]) -> tuple[bytes, ...]:
        return _members(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class SetContents:
    """One set field as ``model.save`` writes it: its members, or ``None`` for no set."""

    field: str
    key: str
    members: tuple[bytes, ...] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveModel(Command[None]):
    """Write a whole model: its hash (JSON per field), every set field, and its TTL."""

    name: ClassVar[str] = "model.save"
    fields: tuple[tuple[str, bytes], ...]
    sets: tuple[SetContents, ...]
    ttl_ms: int | None

    def compile(self, program: Program) -> None:
        args: list[bytes | str | int] = [self.ttl_ms or 0]
        for name, value in self.fields:
            args.append(name)
            args.append(value)
        program.op(b"S", self.key, None, args)
        for contents in self.sets:
            if contents.members is None:
                program.op(b"D", contents.key, None)
            else:
                program.op(b"Z", contents.key, self.key, contents.members)

    def result(self, replies: list[object]) -> None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateModel(Command[None]):
    """Set some scalar fields of a model that exists (``aupdate``)."""

    name: ClassVar[str] = "model.update"
    fields: tuple[tuple[str, bytes], ...]

    def compile(self, program: Program) -> None:
        args: list[bytes | str | int] = []
        for name, value in self.fields:
            args.append(name)
            args.append(value)
        program.op(b"U", self.key, None, args)

    def result(self, replies: list[object]) -> None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteModel(Command[bool]):
    """Delete a model's hash and every one of its set keys (``adelete``)."""

    name: ClassVar[str] = "model.delete"
    set_keys: tuple[str, ...]

    def compile(self, program: Program) -> None:
        program.op(b"D", self.key, None)
        for key in self.set_keys:
            program.op(b"D", key, None)

    def result(self, replies: list[object]) -> bool:
        return bool(replies[0])


def _count(reply: object) -> int:
    if not isinstance(reply, int):
        raise TypeError(f"the server program replied {reply!r} where a count was expected")
    return reply


def _members(reply: object) -> tuple[bytes, ...]:
    if not isinstance(reply, list):
        raise TypeError(f"the server program replied {reply!r} where members were expected")
    return tuple(reply)
