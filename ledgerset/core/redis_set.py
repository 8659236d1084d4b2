"""``RedisSet``: a model field whose members live in their own Redis SET.

A ``RedisSet`` is a Python ``set`` (its *local mirror*) bound to one field of one model. The async
methods (``aadd``, ``amembers``, ...) go to Redis; reads never use the mirror. The sync mutators
(``add``, ``|=``, ...) queue commands while a transaction is open, and otherwise change only the
mirror, with Python's own semantics: the mirror is what ``asave()`` writes.

Every mutation is built as a command (``ledgerset.commands.catalog``) and handed to the
dispatcher, which runs it at once or buffers it into the open transaction.

When a write's outcome cannot be known (cancelled, timed out, connection lost), the mirror is
marked unknown, and ``asave()`` refuses to write it until ``amembers()`` (or the model's
``aload()``) has read the set again: the write may have been applied, and saving a mirror that
still holds what it removed would undo it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, NoReturn, TypedDict, TypeVar, cast, get_args, overload

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema
from redis.exceptions import ResponseError

from ledgerset import _events
from ledgerset._server_errors import server_address, translate
from ledgerset.commands import dispatcher, routing, wire
from ledgerset.commands.catalog import (
    STORE_ALGEBRA,
    AddMembers,
    ClearSet,
    Command,
    MoveMember,
    PopMember,
    RemoveMembers,
    RetainMembers,
    SetCommand,
    StoreMembers,
    ToggleMembers,
)
from ledgerset.core.codec import Member, MemberCodec
from ledgerset.core.config import RedisConfig, default_journal, default_redis
from ledgerset.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidMemberError,
    LedgersetError,
    TransactionError,
    UnknownMirrorError,
    UnsupportedCommandError,
    WrongTypeError,
    popped_foreign_member,
)

__all__ = ["RedisSet", "SeenVersion", "SetBinding", "validate_members"]

T = TypeVar("T", bound=Member)
R = TypeVar("R")
C = TypeVar("C", bound="SetCommand[Any]")


class _SetCommandFields(TypedDict):
    """The fields every ``SetCommand`` takes to name its set: what ``SetBinding.target`` gives."""

    model: str
    pk: str
    key: str
    field: str
    owner: str


class SeenVersion:
    """The version of a stored model that one instance last read or wrote, shared by the
    instance and its sets: ``0`` for a model it never saw stored, ``None`` once a write of
    unknown outcome (interrupted) left it unknown.

    The server bumps a model's version once per command that writes it (``program.lua``'s
    ``BUMP``); each command of this instance that is applied bumps this copy once too, so the
    two stay equal exactly as long as no other writer wrote the model.
    """

    __slots__ = ("version",)

    def __init__(self, version: int | None = 0) -> None:
        self.version = version

    def bump(self) -> None:
        """One command of this instance was applied: the version it left is one more."""
        if self.version is not None:
            self.version += 1

    def forget(self) -> None:
        """A write whose outcome cannot be known: so is the version."""
        self.version = None

    def __eq__(self, other: object) -> bool:
        # Two instances of one stored model compare equal (Pydantic compares private attributes).
        return isinstance(other, SeenVersion) and other.version == self.version

    __hash__ = None  # type: ignore[assignment]  # mutable


@dataclass(frozen=True, slots=True)
class SetBinding:
    """Where a bound ``RedisSet`` lives: its model, field, keys, codec and connection, and the
    version its model instance saw (``seen``; ``None`` when no instance keeps one)."""

    model: str
    pk: str
    field: str
    key: str
    owner: str
    codec: MemberCodec
    config: RedisConfig | None
    seen: SeenVersion | None = dataclasses.field(default=None, compare=False)

    @property
    def target(self) -> _SetCommandFields:
        """The keyword arguments that address a set command to this set."""
        return {
            "model": self.model,
            "pk": self.pk,
            "key": self.key,
            "field": self.field,
            "owner": self.owner,
        }

    def command(self, command_type: type[C], members: tuple[bytes, ...] | None = None) -> C:
        """A ``command_type`` addressed to this set, with ``members`` (a ``MembersCommand``)."""
        if members is None:
            return command_type(
                model=self.model, pk=self.pk, key=self.key, field=self.field, owner=self.owner
            )
        return command_type(
            model=self.model,
            pk=self.pk,
            key=self.key,
            field=self.field,
            owner=self.owner,
            members=members,  # type: ignore[call-arg]
        )

    def redis(self, *, swept: bool = True) -> routing.Client:
        """The client of the set's model (``swept``: see ``default_redis``)."""
        return default_redis(self.config, self.model, swept=swept)

    async def run(
        self,
        command: SetCommand[R],
        on_result: Callable[[R], None] | None,
        on_unknown: dispatcher.OnUnknown,
    ) -> R | None:
        """Hand ``command`` to the dispatcher, with this model's connection and journal."""
        journal = default_journal(self.config)
        applied = self._versioned(command, on_result)
        return await dispatcher.execute(
            command, self.redis(swept=False), applied, journal=journal, on_unknown=on_unknown
        )

    def defer(
        self,
        tx: dispatcher.Transaction,
        command: SetCommand[Any],
        on_result: Callable[[Any], None],
        on_unknown: dispatcher.OnUnknown,
    ) -> None:
        """Buffer ``command`` into ``tx``, this task's open transaction (for the sync mutators,
        which found it with ``dispatcher.transaction_for``); ``on_result`` keeps ``seen`` in
        step itself (``_Queued``)."""
        tx.buffer(
            command,
            self.redis(swept=False),
            on_result,
            default_journal(self.config),
            on_unknown=on_unknown,
        )

    def _versioned(
        self, command: SetCommand[R], on_result: Callable[[R], None] | None
    ) -> Callable[[R], None]:
        """``on_result``, keeping ``seen`` in step with the server's version: bumped once when
        the command is applied (a pop: only if it removed a member, as the server does). (A
        write of unknown outcome forgets it: ``RedisSet._outcome_unknown``.)"""
        seen = self.seen
        if seen is None:  # no instance keeps a version (a set of a nested model's own)
            return on_result or _ignored

        def applied(result: R) -> None:
            if on_result is not None:
                on_result(result)
            if result is not None or not isinstance(command, PopMember):
                seen.bump()

        return applied

    async def read(
        self,
        what: str,
        command: tuple[wire.Arg, ...],
        keys: int = 1,
        *,
        first_key: int = 1,
        needs: str | None = None,
    ) -> Any:
        """Send a read, with errors as ledgerset's.

        ``command`` is the command's name and arguments; its ``keys`` keys start at index
        ``first_key`` (a key holding another type is named by ``WrongTypeError``). ``needs`` is
        the Redis command whose absence an unknown-command error means (default: the command
        itself; for a script, the command the script calls).
        """
        redis = self.redis()

        async def wrong_type(exc: ResponseError) -> None:
            await self._wrong_type(what, command[first_key : first_key + keys], exc)

        try:
            async with translate(what, redis, command=command, wrong_type=wrong_type):
                keyed = command[first_key : first_key + keys]
                return await routing.call(redis, command, keys=keyed, resend=True)
        except ResponseError as exc:
            missing = _missing_command(str(exc), needs or str(command[0]))
            if missing is not None:
                raise UnsupportedCommandError(
                    command=what,
                    model=self.model,
                    field=self.field,
                    redis_command=missing,
                    since=_SINCE.get(missing, "a later version"),
                    address=server_address(redis),
                ) from exc
            raise

    async def _wrong_type(self, what: str, keys: tuple[wire.Arg, ...], exc: ResponseError) -> None:
        """Raise ``WrongTypeError`` for the first of ``keys`` that is not a set (if one is)."""
        redis = self.redis()
        for key in keys:
            kind = await redis.type(key if isinstance(key, (str, bytes)) else str(key))
            actual = kind.decode() if isinstance(kind, bytes) else kind
            if actual not in ("set", "none"):
                key = key.decode() if isinstance(key, bytes) else str(key)
                raise WrongTypeError(
                    f"{what} on {self.model}.{self.field}: key {key!r} holds a Redis "
                    f"{actual}, not a set; another client overwrote it. Delete or rename "
                    f"that key.",
                    key=key,
                    actual=actual,
                    command=what,
                    model=self.model,
                    pk=self.pk,
                    field=self.field,
                ) from exc

    def encode(self, command: str, value: object) -> tuple[Member, bytes]:
        """``codec.pair(value)``; a refused member is logged as ``command.refused``."""
        try:
            return self.codec.pair(value)
        except InvalidMemberError as exc:
            raise self._refused(command, exc) from None

    def encode_many(
        self, command: str, values: Iterable[object]
    ) -> tuple[list[Member], tuple[bytes, ...]]:
        """``codec.pairs(values)``; a refused member is logged as ``command.refused``."""
        try:
            return self.codec.pairs(values)
        except InvalidMemberError as exc:
            raise self._refused(command, exc) from None

    def _refused(self, command: str, exc: InvalidMemberError) -> InvalidMemberError:
        exc.command = command
        if _events.enabled(_events.WARNING):
            _events.emit(
                _events.WARNING,
                "command.refused",
                command=command,
                model=self.model,
                pk=self.pk,
                field=self.field,
                key=self.key,
                reason=exc.reason,
            )
        return exc


def _ignored(result: object) -> None:
    """An ``on_result`` with nothing to do."""


#: The Redis version that added each command a read may need, for the error on an older server.
_SINCE = {"SMISMEMBER": "6.2", "SINTERCARD": "7.0", "EVAL_RO": "7.0"}

#: "unknown command 'SINTERCARD', with args ..." (the server's reply to a command it lacks).
_UNKNOWN_COMMAND = re.compile(r"unknown command '([^']*)'", re.IGNORECASE)


def _missing_command(message: str, needs: str) -> str | None:
    """The command an unknown-command error reply says the server lacks, else ``None``.

    A script that calls a command the server lacks is told "Unknown (Redis) command called from
    script", without the name: that is ``needs``, the command the script calls.
    """
    named = _UNKNOWN_COMMAND.search(message)
    if named is not None:
        return named.group(1).upper()
    lowered = message.lower()
    if lowered.startswith("unknown") and "command called from script" in lowered:
        return needs
    return None


#: ``KEYS[1]`` is a subset of ``KEYS[2]``: their intersection is as large as ``KEYS[1]``.
#: A script, so both counts are of one moment, read in one round trip (``EVAL_RO``: no writes).
_IS_SUBSET = """
local size = redis.call('SCARD', KEYS[1])
if size == 0 then return 1 end
if redis.call('SINTERCARD', 2, KEYS[1], KEYS[2], 'LIMIT', size) == size then return 1 end
return 0
"""

#: How many times a store reads its sources and tries to write the result before it gives up
#: with ``ConflictError`` (each try fails only if a source changed between its read and write).
_STORE_ATTEMPTS = 5

#: The largest count (``count``, ``k``, ``limit``) Redis takes: a signed 64-bit integer.
_COUNT_MAX = 2**63 - 1


#: A sync mutator's change to a mirror: ``apply(mirror, members)`` (``set.update``, ...).
_Apply = Callable[[set[Any], Any], None]


class _Queued:
    """What a command queued by a sync mutator does once its transaction commits: the mirror
    follows (``apply(mirror, normals)``; ``normals`` ``None``: ``apply(mirror, the command's
    result)``), and the version its model instance saw (``seen``) goes one up.

    One object per command rather than a closure per step: a transaction of a thousand adds
    keeps a thousand of them until it commits, and every object it keeps costs the collector.
    """

    __slots__ = ("apply", "mirror", "normals", "seen")

    def __init__(
        self,
        mirror: RedisSet[Any],
        apply: _Apply,
        normals: set[Any] | None,
        seen: SeenVersion | None,
    ) -> None:
        self.mirror = mirror
        self.apply = apply
        self.normals = normals
        self.seen = seen

    def __call__(self, result: Any) -> None:
        self.apply(self.mirror, result if self.normals is None else self.normals)
        if self.seen is not None:
            self.seen.bump()


def _cleared(mirror: set[Any], _members: set[Any]) -> None:
    cast("RedisSet[Any]", mirror)._mirror_clear()


def _refreshed(mirror: set[Any], members: list[bytes]) -> None:
    """The mirror becomes the members the server computed (raw, as a command's result)."""
    redis_set = cast("RedisSet[Any]", mirror)
    binding = redis_set._require_binding()
    redis_set._mirror_refresh(binding.codec.decode_list(members, key=binding.key))


class RedisSet(set[T]):
    """A set field backed by a Redis SET; see the module docstring and ``docs/redis-set.md``."""

    __slots__ = ("_binding", "_last_read", "_unknown_after")

    _binding: SetBinding | None
    #: The write whose outcome is unknown since the mirror was last read (``None``: known).
    _unknown_after: str | None
    #: The members of the read that last refreshed the mirror, in the order they were decoded;
    #: only held, never read (see ``_mirror_refresh``). ``None`` once the mirror is replaced.
    _last_read: list[Any] | None

    def __init__(self, iterable: Iterable[T] = ()) -> None:
        super().__init__(iterable)
        self._binding = None
        self._unknown_after = None
        self._last_read = None

    def __getstate__(self) -> object:
        """What a copy or a pickle takes: the binding and the unknown mark, not ``_last_read``
        (it holds this process's objects alive; it is no part of the set's state)."""
        return None, {"_binding": self._binding, "_unknown_after": self._unknown_after}

    # -- binding to a model -------------------------------------------------------------------

    def _bound_to(self, binding: SetBinding, *, move: bool = False) -> RedisSet[T]:
        """This set bound to ``binding``, its members checked by the field's codec.

        A set already bound to another field is copied: one RedisSet belongs to one field. With
        ``move``, it is rebound itself instead: its model is moving under another one (nesting).
        """
        normalize = binding.codec.normalize
        members = [normalize(member) for member in self]
        target: RedisSet[T] = self if move or self._binding in (None, binding) else RedisSet()
        target._mirror_replace(members)
        target._binding = binding
        return target

    def _require_known(self) -> None:
        """Raise ``UnknownMirrorError`` if a write of unknown outcome left the mirror unknown.

        ``asave()`` asks before writing the mirror; the refusal is logged as ``command.refused``.
        """
        binding = self._binding
        if binding is None or self._unknown_after is None:
            return
        error = UnknownMirrorError(
            model=binding.model,
            pk=binding.pk,
            field=binding.field,
            key=binding.key,
            command=self._unknown_after,
        )
        if _events.enabled(_events.WARNING):
            _events.emit(
                _events.WARNING,
                "command.refused",
                command="model.save",
                model=binding.model,
                pk=binding.pk,
                field=binding.field,
                key=binding.key,
                reason=error.reason,
            )
        raise error

    def _outcome_unknown(self, command: Command[Any]) -> None:
        """The dispatcher could not learn whether ``command`` was applied: distrust the mirror,
        and the version its model instance saw."""
        self._unknown_after = command.name
        binding = self._binding
        if binding is not None and binding.seen is not None:
            binding.seen.forget()

    @property
    def special_key(self) -> str:
        """The Redis key of this set's SET, as rapyer names it (read-only).

        The set must be a field of a model: an unbound ``RedisSet`` has no key yet.
        """
        return self._require_binding().key

    def _require_binding(self) -> SetBinding:
        binding = self._binding
        if binding is None:
            raise LedgersetError(
                "this RedisSet is not a field of a model: assign it to one "
                "(e.g. article.tags = RedisSet()) before calling its async methods; a set "
                "assigned inside a plain nested BaseModel is bound by the outer model's next "
                "asave(), or when the nested model is assigned to it again"
            )
        return binding

    # -- async: straight to Redis -------------------------------------------------------------

    async def aadd(self, value: T) -> None:
        """Add one member (``SADD``)."""
        binding = self._require_binding()
        normal, encoded = binding.encode("set.add", value)
        command = binding.command(AddMembers, (encoded,))
        await binding.run(command, lambda _: self._mirror_add((normal,)), self._outcome_unknown)

    async def aadd_many(self, values: Iterable[T]) -> None:
        """Add many members in one command; nothing is sent if any of them is invalid."""
        binding = self._require_binding()
        normals, encoded = binding.encode_many("set.add", values)
        command = binding.command(AddMembers, encoded)
        await binding.run(command, lambda _: self._mirror_add(normals), self._outcome_unknown)

    async def aremove(self, value: T) -> bool | None:
        """Remove one member; ``True`` if it was there (``None`` inside a transaction)."""
        binding = self._require_binding()
        normal, encoded = binding.encode("set.remove", value)
        command = binding.command(RemoveMembers, (encoded,))
        removed = await binding.run(
            command, lambda _: set.discard(self, normal), self._outcome_unknown
        )
        return None if removed is None else removed > 0

    async def apop(self) -> T | None:
        """Remove and return a random member (``SPOP``), or ``None`` when the set is empty.

        Refused inside a transaction: its result could not be returned before the commit. If
        the call is interrupted (cancelled, timed out), a member may have been removed that the
        caller never learns of, and the mirror is marked unknown.
        """
        binding = self._require_binding()
        command = binding.command(PopMember)
        raw = await binding.run(command, None, self._outcome_unknown)
        if raw is None:
            return None
        try:
            member: T = binding.codec.decode(raw, key=binding.key)  # type: ignore[assignment]
        except InvalidMemberError:
            # The pop already happened: say what was removed, not that Redis is unchanged.
            raise popped_foreign_member(binding.model, binding.field, binding.key, raw) from None
        set.discard(self, member)
        return member

    async def aclear(self) -> None:
        """Remove every member (the set's key is deleted)."""
        binding = self._require_binding()
        command = binding.command(ClearSet)
        await binding.run(command, lambda _: self._mirror_clear(), self._outcome_unknown)

    async def amove(self, value: T, destination: RedisSet[T]) -> bool | None:
        """Move ``value`` from this set to ``destination`` (``SMOVE``); ``True`` if it moved.

        ``False`` when ``value`` is not a member here (nothing changes). ``destination`` is
        another ``RedisSet`` field, of this model or another, with the same member type and the
        same Redis client, checked before any I/O; both models must exist, else
        ``ModelNotFoundError`` naming the missing one. Both local mirrors follow. One command,
        one journal entry naming both sets; ``None`` inside a transaction.
        """
        binding = self._require_binding()
        what = "set.move"
        if not isinstance(destination, RedisSet):
            raise InvalidArgumentError.not_a_set(
                binding.model, binding.field, what, "amove", destination
            )
        to = destination._require_binding()
        if to.codec.member_type is not binding.codec.member_type:
            raise InvalidMemberError.other_member_type(
                binding.model, binding.field, f"{to.model}.{to.field}", value,
                (binding.codec.type_name, to.codec.type_name),
            )  # fmt: skip
        (to,) = self._operands("amove", what, (destination,), same_type=True)
        normal, encoded = binding.encode(what, value)
        command = MoveMember(
            **binding.target,
            member=encoded,
            to_model=to.model,
            to_pk=to.pk,
            to_field=to.field,
            to_key=to.key,
            to_owner=to.owner,
        )

        # The server bumps each model once: the destination's instance, if it is another
        # one, follows here (this set's binding bumps its own).
        other_seen = to.seen if to.seen is not binding.seen else None

        def moved(done: bool) -> None:
            if done:
                set.discard(self, normal)
                set.add(cast("set[Any]", destination), normal)
            if other_seen is not None:
                other_seen.bump()

        def unknown(command: Command[Any]) -> None:
            self._outcome_unknown(command)
            destination._outcome_unknown(command)
            if other_seen is not None:
                other_seen.forget()

        return await binding.run(command, moved, unknown)

    async def acontains(self, value: T) -> bool:
        """Whether ``value`` is a member, on the server (``SISMEMBER``)."""
        binding = self._require_binding()
        _, encoded = binding.encode("set.contains", value)
        found = await binding.read("set.contains", ("SISMEMBER", binding.key, encoded))
        return bool(found)

    async def amembers(self) -> set[T]:
        """Every member, decoded, as a Python ``set``; the local mirror is refreshed (and known)."""
        binding = self._require_binding()
        raws = await binding.read("set.members", ("SMEMBERS", binding.key))
        self._mirror_refresh(binding.codec.decode_list(raws, key=binding.key))
        self._unknown_after = None
        return set(self)  # a copy of the mirror's table (no hashing): the caller's to change

    async def asize(self) -> int:
        """The number of members, on the server (``SCARD``)."""
        binding = self._require_binding()
        return int(await binding.read("set.size", ("SCARD", binding.key)))

    async def aunion(self, *others: RedisSet[T]) -> set[T]:
        """Members of this set or any of ``others``, computed by Redis (``SUNION``)."""
        return await self._algebra("aunion", "SUNION", "set.union", others)

    async def aintersect(self, *others: RedisSet[T]) -> set[T]:
        """Members of this set and every one of ``others``, computed by Redis (``SINTER``)."""
        return await self._algebra("aintersect", "SINTER", "set.inter", others)

    async def adifference(self, *others: RedisSet[T]) -> set[T]:
        """Members of this set in none of ``others``, computed by Redis (``SDIFF``)."""
        return await self._algebra("adifference", "SDIFF", "set.diff", others)

    async def _algebra(
        self, method: str, redis_command: str, what: str, others: tuple[RedisSet[T], ...]
    ) -> set[T]:
        binding = self._require_binding()
        operands = self._operands(method, what, others, same_type=False)
        codec = binding.codec
        if any(other.codec.member_type is not codec.member_type for other in operands):
            codec = MemberCodec(None, model=binding.model, field=binding.field)
        keys = [binding.key, *(other.key for other in operands)]
        raws = await binding.read(what, (redis_command, *keys), len(keys))
        return codec.decode_many(raws, key=binding.key)  # type: ignore[return-value]

    async def astore_union(self, *sources: RedisSet[T]) -> int | None:
        """Replace this set's members with the members of any of ``sources`` (``SUNIONSTORE``);
        the new size. See ``_store``."""
        return await self._store("astore_union", "union", sources)

    async def astore_intersection(self, *sources: RedisSet[T]) -> int | None:
        """Replace this set's members with the members common to all ``sources``
        (``SINTERSTORE``); the new size. See ``_store``."""
        return await self._store("astore_intersection", "intersection", sources)

    async def astore_difference(self, first: RedisSet[T], *others: RedisSet[T]) -> int | None:
        """Replace this set's members with the members of ``first`` in none of ``others``
        (``SDIFFSTORE``); the new size. See ``_store``."""
        return await self._store("astore_difference", "difference", (first, *others))

    async def _store(
        self, method: str, algebra: str, sources: tuple[RedisSet[T], ...]
    ) -> int | None:
        """Store set algebra of ``sources`` (fields of the same member type on the same client,
        this set among them if wanted) as this set's members, atomically.

        The result is read first, then written by one program that writes it only if the
        sources still give exactly it (else it reads again, up to ``_STORE_ATTEMPTS`` times,
        then ``ConflictError``); so the write is the algebra of one moment, and its journal
        entry is its effect. Inside a transaction it is buffered (``None``): the result is of
        the state before the commit, and a source changed by then, by another client, aborts
        the transaction with ``ConflictError``; a source this transaction writes before it is
        refused at the call (``TransactionError``), as its result could not include that write.
        """
        binding = self._require_binding()
        what = StoreMembers.name
        if not sources:
            raise InvalidArgumentError.no_sources(binding.model, binding.field, what, method)
        operands = self._operands(method, what, sources, same_type=True)
        keys = tuple(operand.key for operand in operands)
        names = tuple(f"{o.model}:{o.pk}.{o.field}" for o in operands)
        tx = dispatcher.transaction_for(what, binding.key)
        if tx is not None:
            written = {address.key for command in tx.commands for address in command.addresses}
            changed = [name for key, name in zip(keys, names, strict=True) if key in written]
            if changed:
                raise TransactionError(
                    f"{binding.model}.{binding.field}.{method}(): this transaction writes "
                    f"{', '.join(changed)} before it, and a store's result is of the state "
                    f"before the commit, so it would not include that write. Nothing was "
                    f"buffered: store in a transaction of its own after this one.",
                    command=what,
                    key=binding.key,
                )
        for attempt in range(1, _STORE_ATTEMPTS + 1):
            raws = await binding.read(what, (STORE_ALGEBRA[algebra], *keys), len(keys))
            members = binding.codec.decode_list(raws, key=" or ".join(keys))
            command = StoreMembers(
                **binding.target,
                members=tuple(raws),
                algebra=algebra,
                sources=keys,
                source_names=names,
            )

            def stored(_: int, members: list[Any] = members) -> None:
                self._mirror_refresh(members)
                self._unknown_after = None

            try:
                return await binding.run(command, stored, self._outcome_unknown)
            except ConflictError:
                if attempt == _STORE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _operands(
        self, method: str, what: str, others: Iterable[object], *, same_type: bool
    ) -> list[SetBinding]:
        """The bindings of ``others``, each checked before any I/O.

        Each must be a ``RedisSet`` field of a model on this set's Redis client (one command
        reads one server) and, with ``same_type``, of this set's member type: a count or a
        comparison of sets whose equal values are stored as different bytes would be wrong.
        """
        binding = self._require_binding()
        redis = binding.redis()
        bindings: list[SetBinding] = []
        for other in others:
            if not isinstance(other, RedisSet):
                raise InvalidArgumentError.not_a_set(
                    binding.model, binding.field, what, method, other
                )
            other_binding = other._require_binding()
            operand = f"{other_binding.model}.{other_binding.field}"
            if other_binding.redis() is not redis:
                raise InvalidArgumentError.other_client(
                    binding.model, binding.field, what, method, operand, other
                )
            if same_type and other_binding.codec.member_type is not binding.codec.member_type:
                types = (binding.codec.type_name, other_binding.codec.type_name)
                raise InvalidArgumentError.other_member_type(
                    binding.model, binding.field, what, method, operand, types, other
                )
            bindings.append(other_binding)
        return bindings

    # -- async reads added by issue 13 (reads: they run at once, also inside a transaction) ---

    def __aiter__(self) -> AsyncIterator[T]:
        """``async for member in model.tags``: ``aiter()`` with its default page size."""
        return self.aiter()

    def aiter(self, count: int = 1000) -> AsyncIterator[T]:
        """Every member, decoded, read from the server in pages of about ``count`` (``SSCAN``).

        Memory is bounded by the page, not by the set. ``SSCAN`` guarantees that a member present
        for the whole iteration is yielded; one added or removed meanwhile may be yielded or
        not, and a member may be yielded twice if the set changes during the iteration. The
        arguments are checked at the call, before any I/O.
        """
        binding = self._require_binding()
        _check_count(binding, "set.scan", "aiter", "count", count, minimum=1)
        return self._scan(binding, count)

    async def _scan(self, binding: SetBinding, count: int) -> AsyncIterator[T]:
        decode = binding.codec.decode_many
        cursor: bytes = b"0"
        while True:
            cursor, raws = await binding.read(
                "set.scan", ("SSCAN", binding.key, cursor, "COUNT", count)
            )
            for member in decode(raws, key=binding.key):
                yield cast("T", member)
            if cursor == b"0":
                return

    @overload
    async def arandom(self) -> T | None: ...

    @overload
    async def arandom(self, k: int) -> list[T]: ...

    async def arandom(self, k: int | None = None) -> T | list[T] | None:
        """A random member (``None`` if the set is empty), or a list of ``k`` (``SRANDMEMBER``).

        With ``k >= 0``: up to ``k`` distinct members (all of them if the set has fewer). With
        ``k < 0``: exactly ``-k`` members, picked independently, so one may repeat (an empty set
        gives ``[]``). Nothing is removed.
        """
        binding = self._require_binding()
        if k is None:
            raw = await binding.read("set.random", ("SRANDMEMBER", binding.key))
            return None if raw is None else cast("T", binding.codec.decode(raw, key=binding.key))
        _check_count(binding, "set.random", "arandom", "k", k, minimum=-_COUNT_MAX)
        raws = await binding.read("set.random", ("SRANDMEMBER", binding.key, k))
        return cast("list[T]", binding.codec.decode_list(raws, key=binding.key))

    async def acontains_many(self, values: Iterable[T]) -> list[bool]:
        """Whether each of ``values`` is a member, in the order given (``SMISMEMBER``).

        Every value is checked by the field's codec first: if one is invalid, nothing is sent.
        """
        binding = self._require_binding()
        batch = values if isinstance(values, (list, str, bytes, bytearray, Mapping)) else [*values]
        normals, encoded = binding.encode_many("set.contains_many", batch)
        if not encoded:
            return []
        replies = await binding.read("set.contains_many", ("SMISMEMBER", binding.key, *encoded))
        # encode_many drops repeats; equal values have one canonical form, so look each one up.
        found = dict(zip(normals, map(bool, replies), strict=True))
        normalize = binding.codec.normalize
        return [found[normalize(value)] for value in cast("list[object]", batch)]

    async def aintersect_size(self, *others: RedisSet[T], limit: int = 0) -> int:
        """How many members this set shares with all of ``others``, counted by the server.

        ``SINTERCARD`` (Redis 7.0): no member is sent back. With ``limit > 0`` the server stops
        counting at ``limit``. With no ``others``, the set's own size.
        """
        binding = self._require_binding()
        what = "set.intersect_size"
        operands = self._operands("aintersect_size", what, others, same_type=True)
        _check_count(binding, what, "aintersect_size", "limit", limit, minimum=0)
        keys = [binding.key, *(other.key for other in operands)]
        command: tuple[wire.Arg, ...] = ("SINTERCARD", len(keys), *keys, "LIMIT", limit)
        return int(await binding.read(what, command, len(keys), first_key=2))

    async def aissubset(self, other: RedisSet[T]) -> bool:
        """Whether every member of this set is in ``other``, computed on the server."""
        return await self._subset("aissubset", "set.issubset", self, other)

    async def aissuperset(self, other: RedisSet[T]) -> bool:
        """Whether every member of ``other`` is in this set, computed on the server."""
        return await self._subset("aissuperset", "set.issuperset", other, self)

    async def aisdisjoint(self, other: RedisSet[T]) -> bool:
        """Whether this set and ``other`` have no member in common, computed on the server."""
        binding = self._require_binding()
        what = "set.isdisjoint"
        (operand,) = self._operands("aisdisjoint", what, (other,), same_type=True)
        # The server stops at the first common member.
        command = ("SINTERCARD", 2, binding.key, operand.key, "LIMIT", 1)
        return int(await binding.read(what, command, 2, first_key=2)) == 0

    async def _subset(
        self, method: str, what: str, smaller: RedisSet[T], larger: RedisSet[T]
    ) -> bool:
        """Whether ``smaller`` is a subset of ``larger`` (one of them is ``self``)."""
        binding = self._require_binding()
        other = larger if smaller is self else smaller
        self._operands(method, what, (other,), same_type=True)
        keys = (smaller._require_binding().key, larger._require_binding().key)
        if not routing.same_slot(binding.redis(), keys):
            # Two reads (routing.py computes the count from per-slot reads), so not one moment.
            size = int(await binding.read(what, ("SCARD", keys[0])))
            shared = ("SINTERCARD", 2, *keys, "LIMIT", size)
            return size == 0 or int(await binding.read(what, shared, 2, first_key=2)) == size
        command: tuple[wire.Arg, ...] = ("EVAL_RO", _IS_SUBSET, 2, *keys)
        found = await binding.read(what, command, 2, first_key=3, needs="SINTERCARD")
        return bool(found)

    # -- sync: queued in a transaction, else the local mirror -----------------------------------

    def add(self, value: T) -> None:
        """Add a member: queued as ``set.add`` in a transaction, else to the local mirror."""
        self._mutate(AddMembers, (value,), set.update)

    def update(self, *iterables: Iterable[T]) -> None:
        """Add every member of every iterable."""
        values = [value for iterable in iterables for value in iterable]
        self._mutate(AddMembers, values, set.update)

    def remove(self, value: T) -> None:
        """Remove a member; ``KeyError`` if missing, except in a transaction (acts as discard)."""
        if not self._queue(RemoveMembers, (value,), set.difference_update):
            set.remove(self, self._normalize(value))

    def discard(self, value: object) -> None:
        """Remove a member if present."""
        self._mutate(RemoveMembers, (value,), set.difference_update)

    def clear(self) -> None:
        """Remove every member."""
        self._mutate(ClearSet, None, _cleared)

    def difference_update(self, *others: Iterable[Any]) -> None:
        """Remove every member of every iterable."""
        values = [value for other in others for value in other]
        self._mutate(RemoveMembers, values, set.difference_update)

    def intersection_update(self, *others: Iterable[Any]) -> None:
        """Keep only members in every iterable (the server's members, in a transaction)."""
        if not others:
            return
        keep = set(others[0]).intersection(*others[1:])
        self._mutate(RetainMembers, keep, set.intersection_update, from_server=True)

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        """Remove members present in ``other``, add the others (against the server's members)."""
        values = set(other)
        self._mutate(ToggleMembers, values, set.symmetric_difference_update, from_server=True)

    def __ior__(self, other: AbstractSet[Any]) -> RedisSet[T]:  # type: ignore[override,misc]
        if not isinstance(other, AbstractSet):
            return NotImplemented
        self.update(other)
        return self

    def __iand__(self, other: AbstractSet[Any]) -> RedisSet[T]:  # type: ignore[misc]
        if not isinstance(other, AbstractSet):
            return NotImplemented
        self.intersection_update(other)
        return self

    def __isub__(self, other: AbstractSet[Any]) -> RedisSet[T]:  # type: ignore[misc]
        if not isinstance(other, AbstractSet):
            return NotImplemented
        self.difference_update(other)
        return self

    def __ixor__(self, other: AbstractSet[Any]) -> RedisSet[T]:  # type: ignore[override,misc]
        if not isinstance(other, AbstractSet):
            return NotImplemented
        self.symmetric_difference_update(other)
        return self

    def pop(self) -> NoReturn:
        """Not supported: a random pick must happen on the server. Use ``await s.apop()``."""
        raise TypeError(
            "RedisSet has no sync pop(): use await s.apop() for an atomic Redis-side pick"
        )

    def _mirror_add(self, members: Iterable[Any]) -> None:
        set.update(self, members)

    def _mirror_replace(self, members: Iterable[Any]) -> None:
        set.clear(self)
        set.update(self, members)
        self._last_read = None  # after the clear: see _mirror_refresh

    def _mirror_clear(self) -> None:
        set.clear(self)
        self._last_read = None  # after the clear: see _mirror_refresh

    def _mirror_refresh(self, values: list[Any]) -> None:
        """Make the mirror the members a read decoded (``values``, in the order decoded).

        ``values`` is kept (``_last_read``) until the mirror is next refreshed, replaced or
        cleared, so that the members it replaces, unless the caller still holds them, are freed
        in the order they were decoded, after the mirror lets go of them. Freed in the set's hash
        order instead, they leave the allocator's free lists shuffled, and the next read's
        members are laid out all over the heap: on 100,000 members, decoding and refreshing
        took about 18 ms of CPU that way and 12 ms this way (min of 40 reads). Members the
        mirror loses otherwise (a discard, a pop) stay alive with the list until then: never
        more than the last read held.
        """
        set.clear(self)
        set.update(self, values)
        self._last_read = values

    def _normalize(self, value: object) -> Any:
        binding = self._binding
        return value if binding is None else binding.codec.normalize(value)

    def _queue(
        self,
        command_type: type[SetCommand[Any]],
        values: Iterable[Any] | None,
        apply: _Apply,
        *,
        from_server: bool = False,
    ) -> bool:
        """Queue the command into the open transaction; ``False`` when there is none.

        On commit the mirror follows: ``apply(mirror, members)`` makes the same change to it, or
        (``from_server``) it takes the members the server computed, which a stale mirror could
        not.
        """
        binding = self._binding
        if binding is None:
            return False
        tx = dispatcher.transaction_for(command_type.name, binding.key)
        if tx is None:
            return False
        if values is None:
            command: SetCommand[Any] = binding.command(command_type)
            normals: set[Any] = set()
        elif type(values) is tuple and len(values) == 1:  # add(), discard(): a transaction's usual
            normal, member = binding.encode(command_type.name, values[0])
            normals = {normal}
            command = binding.command(command_type, (member,))
        else:
            normal_list, encoded = binding.encode_many(command_type.name, values)
            normals = set(normal_list)
            command = binding.command(command_type, encoded)
        if from_server:
            queued = _Queued(self, _refreshed, None, binding.seen)
        else:
            queued = _Queued(self, apply, normals, binding.seen)
        binding.defer(tx, command, queued, self._outcome_unknown)
        return True

    def _mutate(
        self,
        command_type: type[SetCommand[Any]],
        values: Iterable[Any] | None,
        apply: _Apply,
        *,
        from_server: bool = False,
    ) -> None:
        if not self._queue(command_type, values, apply, from_server=from_server):
            apply(self, set() if values is None else {self._normalize(value) for value in values})

    # -- pydantic -----------------------------------------------------------------------------

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Accept any collection of members; the model checks them against the field's type.

        For JSON Schema (and so OpenAPI) the field is an array of unique members of its type.
        """
        del handler
        args = get_args(source)
        if args and args[0] in _MEMBER_SCHEMAS:
            item = _MEMBER_SCHEMAS[args[0]]()
        else:  # a bare RedisSet: any of the four
            choices: list[core_schema.CoreSchema | tuple[core_schema.CoreSchema, str]] = [
                schema() for schema in _MEMBER_SCHEMAS.values()
            ]
            item = core_schema.union_schema(choices)
        members = core_schema.set_schema(item)
        return core_schema.no_info_plain_validator_function(
            validate_members,
            json_schema_input_schema=members,
            serialization=core_schema.plain_serializer_function_ser_schema(
                set, return_schema=members
            ),
        )


def _check_count(
    binding: SetBinding, what: str, method: str, argument: str, value: object, *, minimum: int
) -> None:
    """Refuse a count that is not an ``int`` (``bool`` is not one here) in ``minimum..2**63-1``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _COUNT_MAX:
        allowed = f">= {minimum}" if minimum > -_COUNT_MAX else "that fits in 64 bits"
        raise InvalidArgumentError.bad_count(
            binding.model, binding.field, what, method, argument, value, allowed
        )


#: The Pydantic schema of each member type, for the field's JSON Schema.
_MEMBER_SCHEMAS: dict[Any, Callable[[], core_schema.CoreSchema]] = {
    str: core_schema.str_schema,
    int: core_schema.int_schema,
    float: core_schema.float_schema,
    bool: core_schema.bool_schema,
}


def validate_members(value: Any) -> RedisSet[Any]:
    """``value`` as a (not yet bound) ``RedisSet``: any set, frozenset, list or tuple is taken."""
    if isinstance(value, RedisSet):
        return value
    if isinstance(value, (str, bytes, bytearray, dict)) or not isinstance(value, Iterable):
        raise ValueError(
            f"a RedisSet field takes a set, list or tuple of members, got {type(value).__name__}"
        )
    return RedisSet(value)
