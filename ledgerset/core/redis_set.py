"""``RedisSet``: a model field whose members live in their own Redis SET.

A ``RedisSet`` is a Python ``set`` (its *local mirror*) bound to one field of one model. The async
methods (``aadd``, ``amembers``, ...) go to Redis; reads never use the mirror. The sync mutators
(``add``, ``|=``, ...) queue commands while a transaction is open, and otherwise change only the
mirror, with Python's own semantics: the mirror is what ``asave()`` writes.

Every mutation is built as a command (``ledgerset.commands.catalog``) and handed to the
dispatcher, which runs it at once or buffers it into the open transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, NoReturn, TypedDict, TypeVar, cast

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ledgerset import _events
from ledgerset.commands import dispatcher, wire
from ledgerset.commands.catalog import (
    AddMembers,
    ClearSet,
    PopMember,
    RemoveMembers,
    RetainMembers,
    SetCommand,
    ToggleMembers,
)
from ledgerset.core.codec import Member, MemberCodec
from ledgerset.core.config import RedisConfig, default_journal, default_redis
from ledgerset.errors import (
    InvalidMemberError,
    LedgersetError,
    WrongTypeError,
    popped_foreign_member,
)

__all__ = ["RedisSet", "SetBinding", "validate_members"]

T = TypeVar("T", bound=Member)
R = TypeVar("R")


class _Target(TypedDict):
    model: str
    pk: str
    key: str
    field: str
    owner: str


@dataclass(frozen=True, slots=True)
class SetBinding:
    """Where a bound ``RedisSet`` lives: its model, field, keys, codec and connection."""

    model: str
    pk: str
    field: str
    key: str
    owner: str
    codec: MemberCodec
    config: RedisConfig | None

    @property
    def target(self) -> _Target:
        """The keyword arguments that address a set command to this set."""
        return {
            "model": self.model,
            "pk": self.pk,
            "key": self.key,
            "field": self.field,
            "owner": self.owner,
        }

    def redis(self) -> Redis:
        """The client of the set's model."""
        return default_redis(self.config, self.model)

    async def run(
        self, command: SetCommand[R], on_result: Callable[[R], None] | None = None
    ) -> R | None:
        """Hand ``command`` to the dispatcher, with this model's connection and journal."""
        journal = default_journal(self.config)
        return await dispatcher.execute(command, self.redis(), on_result, journal=journal)

    def defer(self, command: SetCommand[Any], on_result: Callable[[Any], None]) -> None:
        """Buffer ``command`` into the open transaction (for the sync mutators)."""
        journal = default_journal(self.config)
        dispatcher.defer(command, self.redis(), on_result, journal=journal)

    async def read(self, what: str, command: tuple[str | bytes, ...], keys: int = 1) -> Any:
        """Send a read (``command``: its name, then ``keys`` keys), with errors as ledgerset's."""
        try:
            return await wire.call(self.redis(), command, resend=True)
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            redis = self.redis()
            for key in command[1 : 1 + keys]:
                kind = await redis.type(key)
                actual = kind.decode() if isinstance(kind, bytes) else kind
                if actual not in ("set", "none"):
                    key = key.decode() if isinstance(key, bytes) else key
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
            raise
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            raise dispatcher.unavailable(self.redis(), what, exc, "Nothing was changed.") from exc

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


class RedisSet(set[T]):
    """A set field backed by a Redis SET; see the module docstring and ``docs/redis-set.md``."""

    __slots__ = ("_binding",)

    _binding: SetBinding | None

    def __init__(self, iterable: Iterable[T] = ()) -> None:
        super().__init__(iterable)
        self._binding = None

    # -- binding to a model -------------------------------------------------------------------

    def _bound_to(self, binding: SetBinding) -> RedisSet[T]:
        """This set bound to ``binding``, its members checked by the field's codec.

        A set already bound to another field is copied: one RedisSet belongs to one field.
        """
        normalize = binding.codec.normalize
        members = [normalize(member) for member in self]
        target: RedisSet[T] = self if self._binding in (None, binding) else RedisSet()
        target._mirror_replace(members)
        target._binding = binding
        return target

    def _require_binding(self) -> SetBinding:
        binding = self._binding
        if binding is None:
            raise LedgersetError(
                "this RedisSet is not a field of a model: assign it to one "
                "(e.g. article.tags = RedisSet()) before calling its async methods"
            )
        return binding

    # -- async: straight to Redis -------------------------------------------------------------

    async def aadd(self, value: T) -> None:
        """Add one member (``SADD``)."""
        binding = self._require_binding()
        normal, encoded = binding.encode("set.add", value)
        command = AddMembers(**binding.target, members=(encoded,))
        await binding.run(command, lambda _: self._mirror_add((normal,)))

    async def aadd_many(self, values: Iterable[T]) -> None:
        """Add many members in one command; nothing is sent if any of them is invalid."""
        binding = self._require_binding()
        normals, encoded = binding.encode_many("set.add", values)
        command = AddMembers(**binding.target, members=encoded)
        await binding.run(command, lambda _: self._mirror_add(normals))

    async def aremove(self, value: T) -> bool | None:
        """Remove one member; ``True`` if it was there (``None`` inside a transaction)."""
        binding = self._require_binding()
        normal, encoded = binding.encode("set.remove", value)
        command = RemoveMembers(**binding.target, members=(encoded,))
        removed = await binding.run(command, lambda _: set.discard(self, normal))
        return None if removed is None else removed > 0

    async def apop(self) -> T | None:
        """Remove and return a random member (``SPOP``), or ``None`` when the set is empty.

        Refused inside a transaction: its result could not be returned before the commit.
        """
        binding = self._require_binding()
        command = PopMember(**binding.target)
        raw = await binding.run(command)
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
        command = ClearSet(**binding.target)
        await binding.run(command, lambda _: set.clear(self))

    async def acontains(self, value: T) -> bool:
        """Whether ``value`` is a member, on the server (``SISMEMBER``)."""
        binding = self._require_binding()
        _, encoded = binding.encode("set.contains", value)
        found = await binding.read("set.contains", ("SISMEMBER", binding.key, encoded))
        return bool(found)

    async def amembers(self) -> set[T]:
        """Every member, decoded, as a Python ``set``; the local mirror is refreshed too."""
        binding = self._require_binding()
        raws = await binding.read("set.members", ("SMEMBERS", binding.key))
        members = binding.codec.decode_many(raws, key=binding.key)
        self._mirror_replace(members)
        return cast("set[T]", members)

    async def asize(self) -> int:
        """The number of members, on the server (``SCARD``)."""
        binding = self._require_binding()
        return int(await binding.read("set.size", ("SCARD", binding.key)))

    async def aunion(self, *others: RedisSet[T]) -> set[T]:
        """Members of this set or any of ``others``, computed by Redis (``SUNION``)."""
        return await self._algebra("sunion", others)

    async def aintersect(self, *others: RedisSet[T]) -> set[T]:
        """Members of this set and every one of ``others``, computed by Redis (``SINTER``)."""
        return await self._algebra("sinter", others)

    async def adifference(self, *others: RedisSet[T]) -> set[T]:
        """Members of this set in none of ``others``, computed by Redis (``SDIFF``)."""
        return await self._algebra("sdiff", others)

    async def _algebra(self, operation: str, others: tuple[RedisSet[T], ...]) -> set[T]:
        binding = self._require_binding()
        keys = [binding.key]
        codec = binding.codec
        for other in others:
            if not isinstance(other, RedisSet):
                raise TypeError(
                    f"{binding.model}.{binding.field}.a{operation[1:]}() takes RedisSet fields "
                    f"of saved models, got {type(other).__name__}"
                )
            other_binding = other._require_binding()
            keys.append(other_binding.key)
            if other_binding.codec.member_type is not codec.member_type:
                codec = MemberCodec(None, model=binding.model, field=binding.field)
        raws = await binding.read(f"set.{operation[1:]}", (operation.upper(), *keys), len(keys))
        return codec.decode_many(raws, key=binding.key)  # type: ignore[return-value]

    # -- sync: queued in a transaction, else the local mirror -----------------------------------

    def add(self, value: T) -> None:
        """Add a member: queued as ``set.add`` in a transaction, else to the local mirror."""
        self._mutate(AddMembers, (value,), lambda members: set.update(self, members))

    def update(self, *iterables: Iterable[T]) -> None:
        """Add every member of every iterable."""
        values = [value for iterable in iterables for value in iterable]
        self._mutate(AddMembers, values, lambda members: set.update(self, members))

    def remove(self, value: T) -> None:
        """Remove a member; ``KeyError`` if missing, except in a transaction (acts as discard)."""
        if not self._queue(
            RemoveMembers, (value,), lambda members: set.difference_update(self, members)
        ):
            set.remove(self, self._normalize(value))

    def discard(self, value: object) -> None:
        """Remove a member if present."""
        self._mutate(RemoveMembers, (value,), lambda members: set.difference_update(self, members))

    def clear(self) -> None:
        """Remove every member."""
        self._mutate(ClearSet, None, lambda _: set.clear(self))

    def difference_update(self, *others: Iterable[Any]) -> None:
        """Remove every member of every iterable."""
        values = [value for other in others for value in other]
        self._mutate(RemoveMembers, values, lambda members: set.difference_update(self, members))

    def intersection_update(self, *others: Iterable[Any]) -> None:
        """Keep only members in every iterable (the server's members, in a transaction)."""
        if not others:
            return
        keep = set(others[0]).intersection(*others[1:])
        self._mutate(RetainMembers, keep, self._mirror_retain, from_server=True)

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        """Remove members present in ``other``, add the others (against the server's members)."""
        values = set(other)
        self._mutate(ToggleMembers, values, self._mirror_toggle, from_server=True)

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

    def _mirror_retain(self, members: Iterable[Any]) -> None:
        set.intersection_update(self, members)

    def _mirror_toggle(self, members: Iterable[Any]) -> None:
        set.symmetric_difference_update(self, members)

    def _mirror_replace(self, members: Iterable[Any]) -> None:
        set.clear(self)
        set.update(self, members)

    def _normalize(self, value: object) -> Any:
        binding = self._binding
        return value if binding is None else binding.codec.normalize(value)

    def _queue(
        self,
        command_type: type[SetCommand[Any]],
        values: Iterable[Any] | None,
        apply: Callable[[set[Any]], None],
        *,
        from_server: bool = False,
    ) -> bool:
        """Queue the command into the open transaction; ``False`` when there is none.

        On commit the mirror follows: ``apply`` the same change to it, or (``from_server``) take
        the members the server computed, which a stale mirror could not.
        """
        binding = self._binding
        if binding is None or dispatcher.current_transaction() is None:
            return False
        if values is None:
            command: SetCommand[Any] = command_type(**binding.target)
            normals: set[Any] = set()
        else:
            normal_list, encoded = binding.encode_many(command_type.name, values)
            normals = set(normal_list)
            command = command_type(**binding.target, members=encoded)  # type: ignore[call-arg]
        if from_server:
            decode = binding.codec.decode_many
            callback: Callable[[Any], None] = lambda members: self._mirror_replace(  # noqa: E731
                decode(members, key=binding.key)
            )
        else:
            callback = lambda _: apply(normals)  # noqa: E731
        binding.defer(command, callback)
        return True

    def _mutate(
        self,
        command_type: type[SetCommand[Any]],
        values: Iterable[Any] | None,
        apply: Callable[[set[Any]], None],
        *,
        from_server: bool = False,
    ) -> None:
        if not self._queue(command_type, values, apply, from_server=from_server):
            apply(set() if values is None else {self._normalize(value) for value in values})

    # -- pydantic -----------------------------------------------------------------------------

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Accept any collection of members; the model checks them against the field's type."""
        del source, handler
        return core_schema.no_info_plain_validator_function(
            validate_members,
            serialization=core_schema.plain_serializer_function_ser_schema(
                set, return_schema=core_schema.set_schema()
            ),
        )


def validate_members(value: Any) -> RedisSet[Any]:
    """``value`` as a (not yet bound) ``RedisSet``: any set, frozenset, list or tuple is taken."""
    if isinstance(value, RedisSet):
        return value
    if isinstance(value, (str, bytes, bytearray, dict)) or not isinstance(value, Iterable):
        raise ValueError(
            f"a RedisSet field takes a set, list or tuple of members, got {type(value).__name__}"
        )
    return RedisSet(value)
