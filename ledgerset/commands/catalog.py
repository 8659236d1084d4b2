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
``MoveMember``            ``set.move``        SMOVE one member to a set of any model -> moved
``StoreMembers``          ``set.store``       replace the set with set algebra's result -> size
``SaveModel``             ``model.save``      replace the hash and every set, set the TTL
``UpdateModel``           ``model.update``    HSET some scalar fields of an existing model
``DeleteModel``           ``model.delete``    DEL the hash and its sets            -> existed
========================  ==================  ====================================================

Every set command is refused (nothing written) when its model's hash does not exist (``set.move``:
either model's). Every command but ``model.delete`` bumps the version of each model it writes
(``bumps``: a ``BUMP`` op per model key, appended by ``Program.add``), which ``model.save`` and
``model.update`` check with ``if_version`` (``asave(if_unchanged=True)``) and record in their
entries (``records_version``).

A record too long for one journal entry is written as several entries of one transaction when
the command ``splits``: ``set.add``, ``set.remove`` and ``set.toggle`` (of distinct members, whose
parts compose), each part the same command with some of the members; ``set.store``, whose later
parts add to what the first one stored (``"continued": true``).

A command becomes a journal record with ``record_args()`` (its arguments as JSON) and comes back
with ``from_record(args, target)``; the record names its target logically (model, pk, field), and
``RecordTarget`` rebuilds the physical keys through the reading database's ``KeyLayout``.
``set.pop`` is recorded as its effect, ``{"member": ...}``, and replays as the removal of that
member (a member another client wrote that is not a JSON string, number or boolean:
``{"member": null, "member_hex": <its bytes in hex>}``). ``addresses`` lists every key a command
touches with the model that owns it, and ``summary(args)`` is a record's args for the audit tool.

Adding a command:

1. here, a subclass of ``Command`` (or ``SetCommand``/``MembersCommand``) with a ``name`` and
   every abstract method (``mypy --strict`` names a missing one); defining it registers it in
   ``REGISTRY``, which is how its journal entries read back, and its row in the table above;
2. its op in ``program.py``'s ``OPS`` and ``program.lua`` (unless it reuses one);
3. the public method that builds it (``core/redis_set.py`` or ``core/model.py``); if it writes
   fields of a model's hash, replay's ``_field_names`` (which checks every hash field a journal
   entry names before it is written; every set it touches, of any model, is checked through
   its ``addresses``);
4. its journal name and args in ``docs/journal.md``, the method in ``docs/redis-set.md``;
5. its example in ``tests/commands/test_every_command.py`` (that test fails without one:
   journal, replay, summary and docs are checked there for every registered command), and the
   method's own tests.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, TypeVar

import orjson

from ledgerset import _member_json
from ledgerset.commands.program import MAX_TTL_MS, OPS, Program
from ledgerset.keys import KeyLayout

__all__ = [
    "REGISTRY",
    "AddMembers",
    "Address",
    "ClearSet",
    "Command",
    "DeleteModel",
    "MembersCommand",
    "MoveMember",
    "PopMember",
    "RecordTarget",
    "RemoveMembers",
    "RetainMembers",
    "SaveModel",
    "SetCommand",
    "SetContents",
    "StoreMembers",
    "ToggleMembers",
    "UpdateModel",
]


R = TypeVar("R")
S = TypeVar("S", bound="SetCommand[Any]")
M = TypeVar("M", bound="Command[Any]")


@dataclass(frozen=True, slots=True)
class RecordTarget:
    """What a journal record names, and how the reading database spells its keys."""

    model: str
    pk: str
    field: str | None
    layout: KeyLayout
    #: The record's wall-clock time (ms): a save's TTL becomes an absolute expiry from it.
    ts: int

    @property
    def model_key(self) -> str:
        return self.layout.model_key(self.model, self.pk)

    def set_key(self, field: str) -> str:
        return self.layout.set_key(self.model, self.pk, field)


@dataclass(frozen=True, slots=True)
class Address:
    """One key a command touches: the model that owns it, the set field it holds (``None``
    for the model's own hash), the key, and the owner model's key."""

    model: str
    pk: str
    field: str | None
    key: str
    owner: str


#: Every command a journal may hold, by ``(name, version)``: each concrete ``Command`` subclass
#: adds itself when it is defined.
REGISTRY: dict[tuple[str, int], type[Command[Any]]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(ABC, Generic[R]):
    """A write to one model: its journal ``name``/``version`` and how it runs on the server.

    A subclass that defines every abstract method registers itself in ``REGISTRY`` under its
    ``(name, version)``; abstract intermediates (``SetCommand``, ``MembersCommand``) do not.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    #: False for commands whose result the caller needs at once (``set.pop``).
    deferrable: ClassVar[bool] = True
    #: True for the model writes whose entry records the version they wrote (see ``bumps``).
    records_version: ClassVar[bool] = False

    model: str
    pk: str
    key: str
    #: The set field the command writes; ``None`` for a whole-model command.
    field: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Named, not bare: `dataclass(slots=True)` rebuilds the class, so `super()`'s cell is stale.
        super(Command, cls).__init_subclass__(**kwargs)
        if _is_abstract(cls):
            return
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"command {cls.__qualname__} has no journal name: give it `name`")
        registered = REGISTRY.get((name, cls.version))
        # ``dataclass(slots=True)`` builds the class a second time (same module, name and
        # bases; not the same ``__qualname__`` for a local class): the second one replaces the
        # first. Another class with the same name and version would make records ambiguous.
        if registered is not None and _identity(registered) != _identity(cls):
            raise TypeError(
                f"command {cls.__qualname__}: {name!r} version {cls.version} is already "
                f"{registered.__qualname__}'s; give it another name or bump its version"
            )
        REGISTRY[(name, cls.version)] = cls

    @property
    @abstractmethod
    def addresses(self) -> tuple[Address, ...]:
        """Every key this command touches, each with the model that owns it."""

    @abstractmethod
    def compile(self, program: Program) -> None:
        """Append this command's operations to ``program``."""

    @property
    def bumps(self) -> tuple[str, ...]:
        """The model keys whose version this command bumps, once each: every model it writes."""
        return _owners(self)

    @abstractmethod
    def result(self, replies: list[object]) -> R:
        """Turn the replies of this command's operations into its caller's return value."""

    @abstractmethod
    def record_args(self) -> bytes | None:
        """The command's arguments as a JSON object, for its journal entry.

        ``None`` when they are its effect, which only the server knows (``set.pop``).
        """

    @classmethod
    @abstractmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any] | None:
        """The command a journal record describes (``None``: it had no effect to replay)."""

    @classmethod
    @abstractmethod
    def summary(cls, args: dict[str, Any]) -> str:
        """A record's ``args`` for people (the audit tool's args column), never empty.

        ``args`` comes from a journal that is not trusted: a shape the command never writes is
        shown as well as it can be, never an error.
        """

    @classmethod
    def _for_model(cls: type[M], target: RecordTarget, **fields: Any) -> M:
        """This whole-model command addressed to ``target``'s model key."""
        return cls(model=target.model, pk=target.pk, key=target.model_key, **fields)

    def _model_address(self) -> Address:
        return Address(self.model, self.pk, None, self.key, self.key)


def _owners(command: Command[Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(address.owner for address in command.addresses))


def _identity(cls: type) -> tuple[str, str, tuple[type, ...]]:
    return cls.__module__, cls.__name__, cls.__bases__


def _is_abstract(cls: type) -> bool:
    # ABCMeta sets ``__abstractmethods__`` only after ``__init_subclass__`` has run: look at
    # the methods themselves.
    return any(
        getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in dir(cls)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SetCommand(Command[R]):
    """A write to one ``RedisSet`` field. ``key`` is the set's key, ``owner`` its model's key."""

    field: str
    owner: str

    @property
    def addresses(self) -> tuple[Address, ...]:
        return (Address(self.model, self.pk, self.field, self.key, self.owner),)

    @property
    def bumps(self) -> tuple[str, ...]:
        return (self.owner,)  # on every set write: not through addresses

    @classmethod
    def _for_set(cls: type[S], target: RecordTarget, **fields: Any) -> S:
        """This set command addressed to ``target``'s set field (a ``ValueError`` if the record
        names none: a journal is not trusted, and an assert would vanish under ``python -O``)."""
        if target.field is None:
            raise ValueError(f"a {cls.name} record names no set field")
        return cls(
            model=target.model,
            pk=target.pk,
            key=target.set_key(target.field),
            field=target.field,
            owner=target.model_key,
            **fields,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MembersCommand(SetCommand[R]):
    """A set command with members (already encoded), recorded as ``{"members": [...]}``."""

    #: The command's operation in the server program (see ``program.lua``).
    code: ClassVar[bytes]
    #: Whether the command's record may be journaled as several entries of one transaction, each
    #: with some of its (distinct) members: true when those, applied in order, do what it does.
    splits: ClassVar[bool] = True
    members: tuple[bytes, ...]
    #: A later part of a split record (``"continued": true``): the first part bumped the
    #: model's version for the whole write, so replaying the parts bumps it once, as the write did.
    continued: bool = False

    def compile(self, program: Program) -> None:
        program.op(self.code, (self.key, self.owner), self.members)

    @property
    def bumps(self) -> tuple[str, ...]:
        return () if self.continued else (self.owner,)

    def part(self, members: tuple[bytes, ...], *, first: bool) -> MembersCommand[R]:
        """The command whose record is one part of this one's, with ``members`` (``first``: the
        first part); only called when it ``splits``."""
        return replace(self, members=members, continued=not first)

    def record_args(self) -> bytes:
        # Members are canonical JSON already: joined, not encoded again.
        joined = b'{"members":[' + b",".join(self.members)
        return joined + (b'],"continued":true}' if self.continued else b"]}")

    @classmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any]:
        members = tuple(map(_member_json.dumps, args["members"]))
        return cls._for_set(target, members=members, continued=args.get("continued") is True)

    @classmethod
    def summary(cls, args: dict[str, Any]) -> str:
        members = args.get("members")
        if not isinstance(members, list):
            return _shown(args)
        return " ".join(_shown(member) for member in members) or "(no members)"


@dataclass(frozen=True, slots=True, kw_only=True)
class AddMembers(MembersCommand[int]):
    """Add members (``aadd``, ``aadd_many``, ``add``, ``update``, ``|=``)."""

    name: ClassVar[str] = "set.add"
    code: ClassVar[bytes] = OPS["ADD"]

    def result(self, replies: list[object]) -> int:
        return _count(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveMembers(MembersCommand[int]):
    """Remove members (``aremove``, ``remove``/``discard`` in a transaction, ``-=``)."""

    name: ClassVar[str] = "set.remove"
    code: ClassVar[bytes] = OPS["REMOVE"]

    def result(self, replies: list[object]) -> int:
        return _count(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class PopMember(SetCommand[bytes | None]):
    """Remove and return one random member (``apop``)."""

    name: ClassVar[str] = "set.pop"
    deferrable: ClassVar[bool] = False

    def compile(self, program: Program) -> None:
        program.op(OPS["POP"], (self.key, self.owner))

    def result(self, replies: list[object]) -> bytes | None:
        reply = replies[0]
        return reply if isinstance(reply, bytes) else None

    def record_args(self) -> None:
        # The server writes {"member": <the member that left>} into the entry; a member that is
        # not a JSON string, number or boolean as {"member": null, "member_hex": <its bytes>}.
        return None

    @classmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any] | None:
        member = args["member"]
        if member is not None:
            return RemoveMembers._for_set(target, members=(_member_json.dumps(member),))
        raw = args.get("member_hex")
        if raw is None:  # the set was empty: nothing happened
            return None
        return RemoveMembers._for_set(target, members=(bytes.fromhex(raw),))

    @classmethod
    def summary(cls, args: dict[str, Any]) -> str:
        if "member" not in args:
            return _shown(args)
        return "(empty)" if args["member"] is None else _shown(args["member"])


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearSet(SetCommand[int]):
    """Remove every member (``aclear``, ``clear`` in a transaction)."""

    name: ClassVar[str] = "set.clear"

    def compile(self, program: Program) -> None:
        program.op(OPS["CLEAR"], (self.key, self.owner))

    def result(self, replies: list[object]) -> int:
        return _count(replies[0])

    def record_args(self) -> bytes:
        return b"{}"

    @classmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any]:
        return cls._for_set(target)

    @classmethod
    def summary(cls, args: dict[str, Any]) -> str:
        return "(every member)" if not args else _shown(args)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetainMembers(MembersCommand[tuple[bytes, ...]]):
    """Keep only the given members, against the server's members (``&=``)."""

    name: ClassVar[str] = "set.retain"
    code: ClassVar[bytes] = OPS["RETAIN"]
    #: Each part would remove the members the other parts keep.
    splits: ClassVar[bool] = False

    def result(self, replies: list[object]) -> tuple[bytes, ...]:
        return _members(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class ToggleMembers(MembersCommand[tuple[bytes, ...]]):
    """Remove the given members that are present, add the others (``^=``)."""

    name: ClassVar[str] = "set.toggle"
    code: ClassVar[bytes] = OPS["TOGGLE"]

    def result(self, replies: list[object]) -> tuple[bytes, ...]:
        return _members(replies[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveMember(SetCommand[bool]):
    """Move one member from this set to another set field, of this model or another (``amove``).

    The destination is named by its own model, pk and field (``to_*``); its entry names the
    source as its target and the destination in its args, ``{"member": m, "to": {"model": ...,
    "pk": ..., "field": ...}}``, so replay spells both keys through the reading layout.
    """

    name: ClassVar[str] = "set.move"
    member: bytes
    to_model: str
    to_pk: str
    to_field: str
    to_key: str
    to_owner: str

    @property
    def addresses(self) -> tuple[Address, ...]:
        return (
            Address(self.model, self.pk, self.field, self.key, self.owner),
            Address(self.to_model, self.to_pk, self.to_field, self.to_key, self.to_owner),
        )

    def compile(self, program: Program) -> None:
        program.op(OPS["MOVE"], (self.key, self.owner, self.to_key, self.to_owner), (self.member,))

    @property
    def bumps(self) -> tuple[str, ...]:
        return (self.owner,) if self.to_owner == self.owner else (self.owner, self.to_owner)

    def result(self, replies: list[object]) -> bool:
        return _count(replies[0]) == 1

    def record_args(self) -> bytes:
        to = orjson.dumps({"model": self.to_model, "pk": self.to_pk, "field": self.to_field})
        return b'{"member":' + self.member + b',"to":' + to + b"}"

    @classmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any]:
        to = args["to"]
        model, pk, field = (_text_arg(to, name) for name in ("model", "pk", "field"))
        return cls._for_set(
            target,
            member=_member_json.dumps(args["member"]),
            to_model=model,
            to_pk=pk,
            to_field=field,
            to_key=target.layout.set_key(model, pk, field),
            to_owner=target.layout.model_key(model, pk),
        )

    @classmethod
    def summary(cls, args: dict[str, Any]) -> str:
        to = args.get("to")
        if "member" not in args or not isinstance(to, dict):
            return _shown(args)
        where = f"{to.get('model')}:{to.get('pk')}.{to.get('field')}"
        return f"{_shown(args['member'])} -> {where}"


#: The Redis command of each kind of ``set.store``.
STORE_ALGEBRA = {"union": "SUNION", "intersection": "SINTER", "difference": "SDIFF"}


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreMembers(MembersCommand[int]):
    """Replace the set's members with set algebra of other sets (``astore_union``, ...).

    ``members`` are what the client read of the algebra (``STORE_ALGEBRA[algebra]``) over the
    ``sources`` keys; the program writes them only if the sources give exactly those members
    when it runs (else ``conflict``), so the store is atomic and its journal entry is its effect:
    ``{"members": [...], "algebra": "union", "sources": ["Model:pk.field", ...]}``. Replayed,
    it has no sources (``algebra`` ``""``): a plain replace, whatever the sources hold there.
    """

    name: ClassVar[str] = "set.store"
    code: ClassVar[bytes] = OPS["STORE"]
    algebra: str = ""
    #: The keys of the sources, and how the journal names them (``Model:pk.field``).
    sources: tuple[str, ...] = ()
    source_names: tuple[str, ...] = ()

    def compile(self, program: Program) -> None:
        if self.continued:
            program.op(OPS["ADD"], (self.key, self.owner), self.members)
            return
        algebra = STORE_ALGEBRA[self.algebra] if self.sources else ""
        program.op(self.code, (self.key, self.owner, *self.sources), (algebra, *self.members))

    def result(self, replies: list[object]) -> int:
        return _count(replies[0])

    def record_args(self) -> bytes:
        if self.continued:
            return b'{"members":[' + b",".join(self.members) + b'],"continued":true}'
        about = orjson.dumps({"algebra": self.algebra, "sources": list(self.source_names)})
        return b'{"members":[' + b",".join(self.members) + b"]," + about[1:]

    @classmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any]:
        members = tuple(map(_member_json.dumps, args["members"]))
        if args.get("continued") is True:  # adds to what the first part stored
            return AddMembers._for_set(target, members=members, continued=True)
        return cls._for_set(target, members=members)

    @classmethod
    def summary(cls, args: dict[str, Any]) -> str:
        members, sources = args.get("members"), args.get("sources")
        if not isinstance(members, list):
            return _shown(args)
        if args.get("continued") is True:
            return f"(continued) +{len(members)} members"
        named = ", ".join(map(str, sources)) if isinstance(sources, list) else "?"
        return f"{args.get('algebra') or 'store'}({named}) = {{{len(members)} members}}"


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
    records_version: ClassVar[bool] = True
    fields: tuple[tuple[str, bytes], ...]
    sets: tuple[SetContents, ...]
    #: Time to live from the save, in ms; ``expire_at_ms`` instead gives an absolute expiry.
    ttl_ms: int | None = None
    expire_at_ms: int | None = None
    #: Write only if the model's version is this one (``if_unchanged=True``), else ``conflict``.
    if_version: int | None = None
    #: Told the version the save wrote, once applied (the model instance keeps it).
    on_version: Callable[[int], None] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    #: A snapshot's model restored by replay (``journal.snapshot.restored``): its fields hold
    #: the version recorded (``VERSION_FIELD``), which it writes as it is, bumping none.
    restores_version: bool = False

    @property
    def addresses(self) -> tuple[Address, ...]:
        sets = (Address(self.model, self.pk, c.field, c.key, self.key) for c in self.sets)
        return (self._model_address(), *sets)

    @property
    def bumps(self) -> tuple[str, ...]:
        # Its own model's, the owner of every key it writes (``_owners``, without building
        # ``addresses``: this runs on every save compiled, a replay's too).
        return () if self.restores_version else (self.key,)

    def compile(self, program: Program) -> None:
        # The expiry as two arguments, from now and absolute (0: none); the program checks both.
        _expect_version(program, self.key, self.if_version)
        args: list[bytes | str | int] = [self.ttl_ms or 0, self.expire_at_ms or 0]
        for name, value in self.fields:
            args.append(name)
            args.append(value)
        program.op(OPS["REPLACE_HASH"], (self.key,), args)
        for contents in self.sets:
            if contents.members is None:
                program.op(OPS["DELETE"], (contents.key,))
            else:
                program.op(OPS["REPLACE_SET"], (contents.key, self.key), contents.members)

    def result(self, replies: list[object]) -> None:
        # Its ops: the version check (if any), the hash, one per set, then its BUMP.
        _tell_version(self.on_version, replies, self.if_version, 1 + len(self.sets))
        return None

    def record_args(self) -> bytes:
        return orjson.dumps(
            {
                **_version_args(self.if_version),
                "fields": {name: orjson.Fragment(value) for name, value in self.fields},
                "sets": {
                    contents.field: None
                    if contents.members is None
                    else [orjson.Fragment(member) for member in contents.members]
                    for contents in self.sets
                },
                "ttl_ms": self.ttl_ms,
            }
        )

    @classmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any]:
        ttl_ms = args["ttl_ms"]
        if ttl_ms is not None and (type(ttl_ms) is not int or not 0 < ttl_ms <= MAX_TTL_MS):
            # Refused here, before the batch is sent: the program would refuse it anyway.
            raise ValueError(f"ttl_ms {ttl_ms!r} is not a whole number of ms in 1..{MAX_TTL_MS}")
        return cls._for_model(
            target,
            fields=_encoded_fields(args["fields"]),
            sets=tuple(
                SetContents(
                    field=field,
                    key=target.set_key(field),
                    members=None if members is None else tuple(map(_member_json.dumps, members)),
                )
                for field, members in args["sets"].items()
            ),
            expire_at_ms=None if ttl_ms is None else target.ts + ttl_ms,
        )

    @classmethod
    def summary(cls, args: dict[str, Any]) -> str:
        sets = args.get("sets")
        sets = sets if isinstance(sets, dict) else {}
        parts = _field_parts(args.get("fields"), skip=sets)
        for field, members in sets.items():
            count = f"{{{len(members)} members}}" if isinstance(members, list) else _shown(members)
            parts.append(f"{field}=" + ("None" if members is None else count))
        ttl = args.get("ttl_ms")
        if isinstance(ttl, int | float) and ttl:
            parts.append(f"ttl={ttl / 1000:g}s")
        return ", ".join(_version_parts(args) + parts) or "(no fields)"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateModel(Command[None]):
    """Set some scalar fields of a model that exists (``aupdate``)."""

    name: ClassVar[str] = "model.update"
    records_version: ClassVar[bool] = True
    fields: tuple[tuple[str, bytes], ...]
    #: As ``SaveModel``'s.
    if_version: int | None = None
    on_version: Callable[[int], None] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    @property
    def addresses(self) -> tuple[Address, ...]:
        return (self._model_address(),)

    def compile(self, program: Program) -> None:
        _expect_version(program, self.key, self.if_version)
        args: list[bytes | str | int] = []
        for name, value in self.fields:
            args.append(name)
            args.append(value)
        program.op(OPS["UPDATE_HASH"], (self.key,), args)

    def result(self, replies: list[object]) -> None:
        _tell_version(self.on_version, replies, self.if_version, 1)  # the version check, HSET
        return None

    def record_args(self) -> bytes:
        return orjson.dumps(
            {
                **_version_args(self.if_version),
                "fields": {name: orjson.Fragment(value) for name, value in self.fields},
            }
        )

    @classmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any]:
        return cls._for_model(
            target,
            fields=_encoded_fields(args["fields"]),
        )

    @classmethod
    def summary(cls, args: dict[str, Any]) -> str:
        parts = _version_parts(args) + _field_parts(args.get("fields"), skip={})
        return ", ".join(parts) or "(no fields)"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteModel(Command[bool]):
    """Delete a model's hash and every one of its set keys (``adelete``)."""

    name: ClassVar[str] = "model.delete"
    #: ``(field, key)`` of every set field.
    sets: tuple[tuple[str, str], ...]

    @property
    def addresses(self) -> tuple[Address, ...]:
        sets = (Address(self.model, self.pk, field, key, self.key) for field, key in self.sets)
        return (self._model_address(), *sets)

    @property
    def bumps(self) -> tuple[str, ...]:
        return ()  # the version goes with the hash; a model saved again starts at 1

    def compile(self, program: Program) -> None:
        program.op(OPS["DELETE"], (self.key,))
        for _, key in self.sets:
            program.op(OPS["DELETE"], (key,))

    def result(self, replies: list[object]) -> bool:
        return bool(replies[0])

    def record_args(self) -> bytes:
        return orjson.dumps({"sets": [field for field, _ in self.sets]})

    @classmethod
    def from_record(cls, args: dict[str, Any], target: RecordTarget) -> Command[Any]:
        return cls._for_model(
            target,
            sets=tuple((field, target.set_key(field)) for field in args["sets"]),
        )

    @classmethod
    def summary(cls, args: dict[str, Any]) -> str:
        sets = args.get("sets")
        if not isinstance(sets, list):
            return _shown(args)
        return "the model" + (f" and sets {', '.join(map(str, sets))}" if sets else "")


def _expect_version(program: Program, key: str, version: int | None) -> None:
    if version is not None:
        program.op(OPS["EXPECT_VERSION"], (key,), (version,))


def _tell_version(
    on_version: Callable[[int], None] | None,
    replies: list[object],
    if_version: int | None,
    writes: int,
) -> None:
    """Tell ``on_version`` the version a model write left: the reply of its ``BUMP``, after its
    version check (if any) and its ``writes`` ops (the replies may go on: a journal entry's)."""
    if on_version is not None:
        on_version(_count(replies[writes + (0 if if_version is None else 1)]))


def _version_args(if_version: int | None) -> dict[str, Any]:
    """A model write's args start with ``"version": null``, which the program replaces with the
    version it writes; ``if_version`` is the one an ``if_unchanged`` write required."""
    if if_version is None:
        return {"version": None}
    return {"version": None, "if_version": if_version}


def _version_parts(args: dict[str, Any]) -> list[str]:
    version = args.get("version")
    parts = [f"v{version}"] if isinstance(version, int) and not isinstance(version, bool) else []
    if "if_version" in args:
        parts.append(f"if v{_shown(args['if_version'])}")
    return parts


def _shown(value: object) -> str:
    """``value`` as compact JSON, for a summary (anything JSON cannot hold as its ``str``)."""
    return orjson.dumps(value, default=str).decode()


def _field_parts(fields: object, skip: dict[str, Any]) -> list[str]:
    """``name=value`` of each scalar field a record writes (not the pk, not the sets)."""
    if not isinstance(fields, dict):
        return []
    return [
        f"{name}={_shown(value)}"
        for name, value in fields.items()
        if name != "pk" and name not in skip
    ]


def _text_arg(args: dict[str, Any], name: str) -> str:
    """``args[name]``, which must be a non-empty string (a name a record gives)."""
    value = args[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} {value!r} is not a non-empty string")
    return value


def _encoded_fields(fields: dict[str, Any]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, orjson.dumps(value)) for name, value in fields.items())


def _count(reply: object) -> int:
    if not isinstance(reply, int):
        raise TypeError(f"the server program replied {reply!r} where a count was expected")
    return reply


def _members(reply: object) -> tuple[bytes, ...]:
    if not isinstance(reply, list):
        raise TypeError(f"the server program replied {reply!r} where members were expected")
    return tuple(reply)
