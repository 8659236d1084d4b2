"""``AtomicRedisModel``: a Pydantic model stored in Redis.

Storage: the scalar fields live in a HASH at ``{ClassName}:{pk}``, one JSON value per field; each
``RedisSet`` field lives in its own SET (see ``keys.py``), and the hash records whether that field
holds a set or ``None``. Every write (``asave``, ``aupdate``, ``adelete``) is a command run by the
dispatcher; reads (``aget``, ``aexists``) go straight to Redis.

Fields are stored by their Python names, whatever their Pydantic aliases, so aliases never change
what is stored. A field that holds another model (an ``AtomicRedisModel`` or a plain ``BaseModel``)
is stored as JSON in the hash, except that model's ``RedisSet`` fields: each gets a key of its own,
named by the field path (``inner.tags``), written, deleted and expired with the outer model.

When the class is defined, ``set[T]`` annotations become ``RedisSet[T]``, and what cannot be stored
fails right there, naming the field: an unsupported member type (``RedisSet[dict]``), a set inside a
list or dict or two levels down, a field that would hide an attribute of the model (``key``), a
``Meta`` that is not a ``RedisConfig``.

Schema changes: a set field recorded in the hash but gone from the class has its key deleted by
the next ``asave``/``adelete`` (in the same atomic write, journaled), and a field the hash does not
record yet (added to the class later) loads as its default.
"""

from __future__ import annotations

import sys
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic_core import InitErrorDetails, ValidationError
from redis.exceptions import ResponseError

from ledgerset._server_errors import translate
from ledgerset.commands import dispatcher, routing
from ledgerset.commands.catalog import Command, DeleteModel, SaveModel, SetContents, UpdateModel
from ledgerset.commands.program import VERSION_FIELD
from ledgerset.core.codec import MEMBER_TYPES, MemberCodec
from ledgerset.core.config import RedisConfig, default_journal, default_redis
from ledgerset.core.redis_set import RedisSet, SeenVersion, SetBinding, validate_members
from ledgerset.errors import (
    ConflictError,
    InvalidKeyError,
    InvalidMemberError,
    ModelDefinitionError,
    ModelNotFoundError,
    UpdateAtomicModelError,
    WrongTypeError,
)
from ledgerset.keys import KeyLayout, field_path, pk_from_key

__all__ = ["AtomicRedisModel"]

R = TypeVar("R")
_DEFAULT_CONFIG = RedisConfig()
_SET_MARKER = b"true"  # the hash's value for a set field that holds a set (else JSON null)
_NONE_MARKER = b"null"


@dataclass(frozen=True, slots=True)
class _SetField:
    codec: MemberCodec
    optional: bool


@dataclass(frozen=True, slots=True)
class _NestedField:
    """A field holding a model with ``RedisSet`` fields, which live in keys of the outer model."""

    model: type[BaseModel]
    optional: bool
    #: The nested model's set fields, by its field names; their codecs name the field path.
    sets: dict[str, _SetField]


def _new_pk() -> str:
    return uuid.uuid4().hex


class AtomicRedisModel(BaseModel):
    """A Pydantic model whose instances live in Redis; ``RedisSet`` fields are Redis SETs.

    Give a model its own settings with ``Meta = RedisConfig(ttl=..., redis=...)``.
    """

    model_config = ConfigDict(ignored_types=(RedisConfig,))

    pk: str = Field(default_factory=_new_pk, frozen=True, min_length=1)

    Meta: ClassVar[RedisConfig | None] = None
    __ledgerset_sets__: ClassVar[dict[str, _SetField]] = {}
    __ledgerset_nested__: ClassVar[dict[str, _NestedField]] = {}
    #: Every set field, nested ones by their path (``inner.tags``): what the hash records.
    __ledgerset_paths__: ClassVar[dict[str, _SetField]] = {}

    #: When this model is nested in another: (that model's class, its pk, this field's name), so
    #: a set assigned here is bound to the outer model's key for it.
    _ledgerset_outer: tuple[type[AtomicRedisModel], str, str] | None = PrivateAttr(default=None)
    #: The version of the stored model this instance last read or wrote, shared with its sets.
    _ledgerset_seen: SeenVersion = PrivateAttr(default_factory=SeenVersion)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Runs before Pydantic collects the fields, so set[T] can still become RedisSet[T].
        super().__init_subclass__(**kwargs)
        # The class's own dict, not inspect.get_annotations (a copy): Pydantic reads this one.
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        resolved = {name: _resolve(cls, annotation) for name, annotation in annotations.items()}
        fields = [name for name, annotation in resolved.items() if not _is_class_var(annotation)]
        taken = _taken_names(cls)
        for name in fields:
            if name in taken:
                raise ModelDefinitionError.name_taken(cls.__name__, name, taken[name])
        meta = cls.__dict__.get("Meta")
        if meta is not None and not isinstance(meta, RedisConfig):
            raise ModelDefinitionError.bad_meta(cls.__name__, meta)
        reserved = {"ledgerset", (cls.Meta or _DEFAULT_CONFIG).special_prefix}
        if cls.__name__ in reserved:
            raise ModelDefinitionError(
                f"a model cannot be named {cls.__name__!r}: its keys would share a namespace "
                f"with {'ledgerset bookkeeping' if cls.__name__ == 'ledgerset' else 'set keys'}; "
                f"rename the class",
                model=cls.__name__,
                field="",
            )
        sets = dict(cls.__ledgerset_sets__)
        for name in fields:
            special = _set_annotation(resolved[name])
            if special is None:
                sets.pop(name, None)
                continue
            member_type, optional = special
            _check_member_type(cls.__name__, name, member_type)
            redis_set = RedisSet if member_type is None else RedisSet[member_type]  # type: ignore[valid-type]
            annotations[name] = redis_set | None if optional else redis_set
            codec = MemberCodec(member_type, model=cls.__name__, field=name)
            sets[name] = _SetField(codec, optional)
        cls.__ledgerset_sets__ = sets

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        nested: dict[str, _NestedField] = {}
        for name, info in cls.model_fields.items():
            if name in cls.__ledgerset_sets__:
                continue
            if _set_annotation(info.annotation):
                raise ModelDefinitionError(
                    f"{cls.__name__}.{name}: its set annotation could not be resolved when the "
                    f"class was defined, so it would not be a RedisSet; define the names it uses "
                    f"before the class",
                    model=cls.__name__,
                    field=name,
                )
            inner, optional = _model_annotation(info.annotation)
            if inner is not None:
                inner_sets = _nested_sets(cls.__name__, name, inner)
                if inner_sets:
                    nested[name] = _NestedField(inner, optional, inner_sets)
            elif _holds_sets(info.annotation, frozenset()):
                raise ModelDefinitionError.set_not_storable(
                    cls.__name__,
                    name,
                    "it holds RedisSet fields inside a list, dict, tuple or union, where they "
                    "have no field name of their own",
                )
        cls.__ledgerset_nested__ = nested
        paths = dict(cls.__ledgerset_sets__)
        for name, spec in nested.items():
            for inner_name, inner_spec in spec.sets.items():
                paths[field_path(name, inner_name)] = inner_spec
        cls.__ledgerset_paths__ = paths

    def model_post_init(self, context: Any, /) -> None:
        """Bind every set field to this model (a plain ``set`` becomes a ``RedisSet``)."""
        try:
            for name in self.__ledgerset_sets__:
                value = self.__dict__[name]
                if value is not None:
                    self.__dict__[name] = self._bind(name, value)
            for name in self.__ledgerset_nested__:
                inner = self.__dict__[name]
                if isinstance(inner, BaseModel):
                    self.__dict__[name] = self._nest(name, inner)
        except InvalidMemberError as exc:
            # A ValidationError whose loc names the field, as Pydantic's own errors do.
            details: InitErrorDetails = {
                "type": "value_error",
                "loc": tuple(exc.field.split(".")),
                "input": exc.value,
                "ctx": {"error": exc},
            }
            raise ValidationError.from_exception_data(type(self).__name__, [details]) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__ledgerset_sets__:
            if value is None and not self.__ledgerset_sets__[name].optional:
                raise ValueError(
                    f"{type(self).__name__}.{name} is not Optional: assign a set, not None"
                )
            if value is not None:
                value = self._bind(name, value)
        if name not in self.__ledgerset_nested__:
            super().__setattr__(name, value)
            return
        previous = self.__dict__.get(name)
        super().__setattr__(name, value)
        inner = self.__dict__[name]  # as validate_assignment left it, if the model has it
        if isinstance(inner, BaseModel):
            try:
                self.__dict__[name] = self._nest(name, inner)
            except InvalidMemberError:
                self.__dict__[name] = previous  # a refused assignment changes nothing
                raise

    def _bind(self, name: str, value: Any) -> RedisSet[Any]:
        outer = self._ledgerset_outer
        if outer is None:
            binding = type(self)._set_binding(self.pk, name, self._ledgerset_seen)
        else:
            outer_cls, outer_pk, outer_field = outer
            binding = outer_cls._set_binding(outer_pk, field_path(outer_field, name))
        return validate_members(value)._bound_to(binding)

    def _nest(self, name: str, inner: BaseModel) -> BaseModel:
        """``inner`` as the model held by field ``name``: its sets bound to this model's keys.

        A model whose sets belong to another model's field is copied first, as a set is: one
        set, one key. Its own sets (or unbound ones) move with it.
        """
        cls = type(self)
        spec = cls.__ledgerset_nested__[name]
        seen = self._ledgerset_seen
        bindings = {
            sub: cls._set_binding(self.pk, field_path(name, sub), seen) for sub in spec.sets
        }
        own = inner.key if isinstance(inner, AtomicRedisModel) else None
        elsewhere = any(
            isinstance(value, RedisSet)
            and value._binding is not None
            and value._binding != bindings[sub]
            and value._binding.owner != own
            for sub, value in ((sub, inner.__dict__[sub]) for sub in spec.sets)
        )
        if elsewhere:
            inner = inner.model_copy()  # its sets are copied as they are bound, below
        for sub, binding in bindings.items():
            value = inner.__dict__[sub]
            if value is None:
                continue
            if isinstance(value, RedisSet) and value._binding == binding:
                value._binding = binding  # bound already; its writes bump this model's version
                continue
            inner.__dict__[sub] = validate_members(value)._bound_to(binding, move=not elsewhere)
        if isinstance(inner, AtomicRedisModel):
            inner._ledgerset_outer = (cls, self.pk, name)
        return inner

    def _set_of(self, path: str) -> tuple[bool, RedisSet[Any] | None]:
        """``(whether the set field at path exists, its set or None)``: a nested model may not."""
        outer, _, name = path.rpartition(".")
        holder = self if not outer else self.__dict__[outer]
        if not isinstance(holder, BaseModel):
            return False, None
        value: RedisSet[Any] | None = holder.__dict__[name]
        return True, value

    # -- identity ------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The Redis key of this model's hash: ``{ClassName}:{pk}``."""
        return type(self)._layout().model_key(type(self).__name__, self.pk)

    @property
    def version(self) -> int | None:
        """The version of the stored model this instance last read or wrote (read-only).

        Every write of the model bumps it by one on the server (``asave``, ``aupdate``, and each
        write to one of its sets, even one that changes no member); this instance's own writes
        bump its copy too. ``0``: this instance has not seen the model stored; ``None``: unknown,
        after a write of unknown outcome. ``asave(if_unchanged=True)`` writes only over it.
        """
        return self._ledgerset_seen.version

    def _expected_version(self, command: str, if_unchanged: bool) -> int | None:
        """The version an ``if_unchanged`` write requires; ``ConflictError`` before any I/O
        when this instance does not know it."""
        if not if_unchanged:
            return None
        version = self._ledgerset_seen.version
        if version is None:
            raise ConflictError.version_unknown(command, type(self).__name__, self.pk, self.key)
        return version

    def _wrote(self, version: int) -> None:
        self._ledgerset_seen.version = version

    @classmethod
    def _pk_of(cls, key: str) -> str:
        pk = pk_from_key(cls.__name__, key)
        if pk is None:
            raise InvalidKeyError(
                f"{key!r} is not a {cls.__name__} key: {cls.__name__} keys look like "
                f"'{cls.__name__}:<pk>' (see model.key)",
                model=cls.__name__,
                key=key,
            )
        return pk

    @classmethod
    def _layout(cls) -> KeyLayout:
        return (cls.Meta or _DEFAULT_CONFIG).layout

    @classmethod
    def _set_key(cls, pk: str, path: str) -> str:
        return cls._layout().set_key(cls.__name__, pk, path)

    @classmethod
    def _set_binding(cls, pk: str, path: str, seen: SeenVersion | None = None) -> SetBinding:
        return SetBinding(
            model=cls.__name__,
            pk=pk,
            field=path,
            key=cls._set_key(pk, path),
            owner=cls._layout().model_key(cls.__name__, pk),
            codec=cls.__ledgerset_paths__[path].codec,
            config=cls.Meta,
            seen=seen,
        )

    # -- writes: commands ----------------------------------------------------------------------

    async def asave(self, *, if_unchanged: bool = False) -> Self:
        """Write the whole model: scalar fields, every set's local members, and the TTL.

        Set fields that the stored model records but the class no longer has lose their keys in
        the same write. Inside a transaction the save is buffered and applied on commit. Refused
        with ``UnknownMirrorError``, writing nothing, while a set's local members are unknown (a
        write to it was interrupted); read the set again first. With ``if_unchanged=True`` it
        writes only if the stored model is still at ``self.version`` (checked in the same atomic
        program; in a transaction, against the version before the transaction), else raises
        ``ConflictError`` and writes nothing: another writer's change, to a field or to a set's
        members, is never overwritten unseen.
        """
        cls = type(self)
        if_version = self._expected_version(SaveModel.name, if_unchanged)
        for name in cls.__ledgerset_nested__:  # a set assigned inside a plain nested model
            inner = self.__dict__[name]
            if isinstance(inner, BaseModel):
                self.__dict__[name] = self._nest(name, inner)
        data = self.model_dump(mode="json", by_alias=False, exclude=cls._stored_apart())
        fields = [(name, orjson.dumps(value)) for name, value in data.items()]
        contents = []
        for path, spec in cls.__ledgerset_paths__.items():
            exists, value = self._set_of(path)
            key = cls._set_key(self.pk, path)
            if value is None:
                if exists:  # no marker when its nested model is None: nothing to record
                    fields.append((path, _NONE_MARKER))
                contents.append(SetContents(field=path, key=key, members=None))
            else:
                value._require_known()  # a write of unknown outcome: saving could undo it
                fields.append((path, _SET_MARKER))
                contents.append(
                    SetContents(field=path, key=key, members=spec.codec.pairs(value)[1])
                )
        for path in await cls._removed_sets(self.key, SaveModel.name):
            contents.append(SetContents(field=path, key=cls._set_key(self.pk, path), members=None))
        command = SaveModel(
            model=cls.__name__,
            pk=self.pk,
            key=self.key,
            fields=tuple(fields),
            sets=tuple(contents),
            ttl_ms=cls.Meta.ttl_ms if cls.Meta is not None else None,
            if_version=if_version,
            on_version=self._wrote,
        )
        await self._run(command)
        return self

    @classmethod
    def _stored_apart(cls) -> dict[str, Any]:
        """``model_dump``'s ``exclude``: every set field, nested ones too (they have keys)."""
        exclude: dict[str, Any] = dict.fromkeys(cls.__ledgerset_sets__, True)
        for name, spec in cls.__ledgerset_nested__.items():
            exclude[name] = dict.fromkeys(spec.sets, True)
        return exclude

    @classmethod
    async def _removed_sets(cls, key: str, what: str) -> list[str]:
        """The set fields the hash at ``key`` records that this class no longer has, with a key.

        The hash names every field it was saved with, set fields too (as ``true`` or ``null``).
        A name the class lacks whose set key exists is a removed set field; one whose key does
        not (a removed scalar, or an empty set) has nothing to clean up. One ``HKEYS``, then,
        only when the hash has fields the class lacks, one pipeline of ``EXISTS``.
        """
        redis = cls._redis_of()
        pk = cls._pk_of(key)
        known = cls.model_fields.keys() | cls.__ledgerset_paths__.keys() | {VERSION_FIELD}
        try:
            async with translate(what, redis, command=("HKEYS", key)):
                stored = await routing.call(redis, ("HKEYS", key), keys=(key,), resend=True)
                unknown = [name for name in map(_field_name, stored) if name and name not in known]
                if not unknown:
                    return []
                async with redis.pipeline(transaction=False) as pipe:
                    for name in unknown:
                        pipe.exists(cls._set_key(pk, name))
                    exists = await pipe.execute()
        except ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                return []  # not a hash: the write itself refuses it, naming the key
            raise
        return [name for name, found in zip(unknown, exists, strict=True) if found]

    async def aupdate(self, *, if_unchanged: bool = False, **fields: Any) -> None:
        """Set some scalar fields, in Redis (one ``HSET``) and here; the model must exist.

        ``RedisSet`` fields cannot be passed: use their own methods. ``if_unchanged=True``: as
        for ``asave``, only over ``self.version``, else ``ConflictError``.
        """
        cls = type(self)
        for name in fields:
            if name in self.__ledgerset_sets__:
                raise UpdateAtomicModelError(
                    f"{cls.__name__}.aupdate({name}=...): {name} is a RedisSet field, which keeps "
                    f"its own Redis key and cannot be passed to aupdate(); use its methods, e.g. "
                    f"await model.{name}.aadd(value). Nothing was written.",
                    model=cls.__name__,
                    field=name,
                )
            if name in cls.__ledgerset_nested__:
                inner_sets = ", ".join(
                    field_path(name, sub) for sub in cls.__ledgerset_nested__[name].sets
                )
                raise UpdateAtomicModelError(
                    f"{cls.__name__}.aupdate({name}=...): {name} holds RedisSet fields "
                    f"({inner_sets}), which keep their own Redis keys and cannot be passed to "
                    f"aupdate(); assign the field and asave(), or use the sets' methods, e.g. "
                    f"await model.{name}.{next(iter(cls.__ledgerset_nested__[name].sets))}"
                    f".aadd(value). Nothing was written.",
                    model=cls.__name__,
                    field=name,
                )
            if name not in cls.model_fields or name == "pk":
                reason = (
                    "the pk names the model's key and cannot change"
                    if name == "pk"
                    else (f"{cls.__name__} has no such field")
                )
                raise UpdateAtomicModelError(
                    f"{cls.__name__}.aupdate({name}=...): {reason}. Nothing was written.",
                    model=cls.__name__,
                    field=name,
                )
        if not fields:
            return
        if_version = self._expected_version(UpdateModel.name, if_unchanged)
        staged = self.model_copy()
        for name, value in fields.items():
            self.__pydantic_validator__.validate_assignment(staged, name, value)
        data = staged.model_dump(mode="json", by_alias=False, include=set(fields))
        command = UpdateModel(
            model=cls.__name__,
            pk=self.pk,
            key=self.key,
            fields=tuple((name, orjson.dumps(value)) for name, value in data.items()),
            if_version=if_version,
            on_version=self._wrote,
        )
        validated = {name: staged.__dict__[name] for name in fields}
        await self._run(command, lambda _: self.__dict__.update(validated))

    async def adelete(self) -> bool | None:
        """Delete the model's hash and all its set keys; ``True`` if the model existed.

        The keys of set fields the stored model records but the class no longer has go too.

        Returns ``None`` inside a transaction, where the delete is applied on commit.
        """
        cls = type(self)
        paths = [*cls.__ledgerset_paths__, *await cls._removed_sets(self.key, DeleteModel.name)]
        command = DeleteModel(
            model=cls.__name__,
            pk=self.pk,
            key=self.key,
            sets=tuple((path, cls._set_key(self.pk, path)) for path in paths),
        )
        # The version goes with the hash: a model saved again starts over.
        return await self._run(command, lambda _: self._wrote(0))

    def apipeline(self) -> dispatcher.transaction:
        """Open a transaction: writes in the block are sent together, all-or-nothing, on exit.

        ``async with article.apipeline() as tx:``; ``tx.commands`` lists what is buffered.
        """
        return dispatcher.transaction()

    # -- reads ---------------------------------------------------------------------------------

    @classmethod
    async def aget(cls, key: str) -> Self:
        """Load the model stored at ``key`` (as ``model.key`` gives it), with its sets' members.

        A field the stored model does not record (added to the class since) takes its default.
        Raises ``ModelNotFoundError`` when there is none.
        """
        pk = cls._pk_of(key)
        paths = cls.__ledgerset_paths__
        set_keys = {path: cls._set_key(pk, path) for path in paths}
        redis = cls._redis_of()

        async def wrong_type(exc: ResponseError) -> None:
            expected = {key: "hash", **{set_key: "set" for set_key in set_keys.values()}}
            for checked, kind in expected.items():
                actual = _text(await redis.type(checked))
                if actual not in (kind, "none"):
                    raise WrongTypeError(
                        f"{cls.__name__}.aget({key!r}): key {checked!r} holds a Redis {actual}, "
                        f"not a {kind}; another client overwrote it. Delete or rename that key.",
                        key=checked,
                        actual=actual,
                        command="model.get",
                        model=cls.__name__,
                        pk=pk,
                        field=None if checked == key else checked.rsplit(":", 1)[-1],
                    ) from exc

        translated = translate("model.get", redis, command=("HGETALL", key), wrong_type=wrong_type)
        async with translated:
            replies = await routing.transaction_read(
                redis, key, [("HGETALL", key), *(("SMEMBERS", set_keys[path]) for path in paths)]
            )
        stored: dict[bytes, bytes] = replies[0]
        if not stored:
            raise ModelNotFoundError(
                f"{cls.__name__} {key!r} is not in Redis (never saved, deleted or expired)",
                model=cls.__name__,
                key=key,
            )
        fields = cls.model_fields
        data: dict[str, Any] = {}
        for field, raw in stored.items():
            name = _field_name(field)
            if name not in fields or name in paths:  # a removed field; a set's marker, below
                continue
            try:
                data[name] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ModelNotFoundError(
                    f"{cls.__name__} {key!r}: hash field {name!r} holds {raw!r}, which is not "
                    f"JSON; another client wrote it",
                    model=cls.__name__,
                    key=key,
                ) from None
        for (path, spec), members in zip(paths.items(), replies[1:], strict=True):
            outer, _, name = path.rpartition(".")
            if outer:
                holder = data.get(outer)
                if not isinstance(holder, dict):  # its nested model is None, or not recorded
                    continue
                info = cls.__ledgerset_nested__[outer].model.model_fields[name]
                earlier = holder.get(name)
            else:
                holder, info = data, fields[name]
                earlier = _json_or_none(stored.get(path.encode()))
            marker = stored.get(path.encode())
            if members:  # members exist: a set, even if assigned after the last save
                holder[name] = spec.codec.decode_many(members, key=set_keys[path])
            elif marker in (_SET_MARKER, _NONE_MARKER):  # Redis keeps no empty SET: the marker
                holder[name] = set() if marker == _SET_MARKER else None  # tells empty from None
            elif isinstance(earlier, list):  # saved when the field was a list or plain set
                holder[name] = earlier
            elif info.is_required():  # saved before the field existed: as if just created
                holder[name] = None if spec.optional else set()
            else:
                holder.pop(name, None)  # saved before the field existed: its default
        data["pk"] = pk
        # By field name, as stored: the fields' aliases are for the application's own I/O.
        loaded = cls.model_validate(data, by_alias=False, by_name=True)
        loaded._ledgerset_seen.version = _stored_version(stored.get(VERSION_FIELD.encode()))
        return loaded

    async def aload(self) -> Self:
        """Refresh this instance from Redis (scalar fields and set members)."""
        fresh = await type(self).aget(self.key)
        self.__dict__.update(fresh.__dict__)
        self._ledgerset_seen = fresh._ledgerset_seen  # the one fresh's sets bump
        return self

    @classmethod
    async def aexists(cls, key: str) -> bool:
        """Whether a model is stored at ``key``."""
        cls._pk_of(key)
        redis = cls._redis_of()
        async with translate("model.exists", redis, command=("EXISTS", key)):
            return bool(await redis.exists(key))

    # -- connection ----------------------------------------------------------------------------

    @classmethod
    def _redis_of(cls) -> Any:
        return default_redis(cls.Meta, cls.__name__)

    async def _run(
        self, command: Command[R], on_result: Callable[[R], None] | None = None
    ) -> R | None:
        cls = type(self)
        redis = cls._redis_of()
        journal = default_journal(cls.Meta)
        return await dispatcher.execute(
            command, redis, on_result, journal=journal, on_unknown=self._outcome_unknown
        )

    def _outcome_unknown(self, command: Command[Any]) -> None:
        """A write of unknown outcome: so is the version (``if_unchanged`` asks for a reload)."""
        self._ledgerset_seen.forget()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stored_version(raw: bytes | None) -> int:
    """A hash's version field as a number (``0`` if it has none, or holds no whole number)."""
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def _json_or_none(raw: bytes | None) -> Any:
    try:
        return None if raw is None else orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _field_name(raw: bytes) -> str:
    """A hash field's name; ``""`` for one that is not UTF-8, which ledgerset never writes."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return ""


def _resolve(cls: type, annotation: Any) -> Any:
    """Evaluate a string annotation (``from __future__ import annotations``) where possible."""
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(cls.__module__)
    namespace = dict(vars(module)) if module is not None else {}
    try:
        return eval(annotation, namespace, dict(vars(cls)))
    except Exception:
        return annotation  # Pydantic resolves it later, or reports it as it always does


def _set_annotation(annotation: Any, *, plain_set: bool = True) -> tuple[Any, bool] | None:
    """``(member type or None, optional)`` if ``annotation`` declares a set field.

    ``plain_set``: whether ``set[T]`` counts (it does in a model, not in a plain ``BaseModel``).
    """
    if annotation is RedisSet or (plain_set and annotation is set):
        return None, False
    origin = get_origin(annotation)
    if origin is RedisSet or (plain_set and origin is set):
        args = get_args(annotation)
        return (args[0] if args else None), False
    present, optional = _without_none(annotation)
    if optional:
        inner = _set_annotation(present, plain_set=plain_set)
        if inner is not None:
            return inner[0], True
    return None


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``Optional[X]`` / ``X | None``, else ``(annotation, False)``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        present = [arg for arg in args if arg is not type(None)]
        if len(present) == 1 and len(args) == 2:
            return present[0], True
    return annotation, False


def _check_member_type(model: str, field: str, member_type: Any) -> None:
    if member_type is not None and member_type not in MEMBER_TYPES:
        shown = getattr(member_type, "__name__", repr(member_type))
        raise ModelDefinitionError(
            f"{model}.{field}: a set of {shown} cannot be stored; members must be "
            f"str, int, float or bool (e.g. RedisSet[str], or a bare RedisSet for any of "
            f"the four)",
            model=model,
            field=field,
        )


def _is_class_var(annotation: Any) -> bool:
    if isinstance(annotation, str):  # unresolved: judge by its text, as Pydantic does
        return annotation.split("[", 1)[0].split(".")[-1] == "ClassVar"
    return annotation is ClassVar or get_origin(annotation) is ClassVar


def _taken_names(cls: type) -> dict[str, str]:
    """Public names the model's bases use that are not fields, each with the base that uses it.

    A field of that name would hide it (``model.key`` would be the field): ``pk`` is a field.
    """
    taken: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if base is object:
            continue
        fields = base.__dict__.get("__pydantic_fields__", {})
        for name in vars(base):
            if not name.startswith("_") and name not in fields:
                taken[name] = base.__name__
    return taken


def _model_annotation(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """``(the model class, optional)`` if ``annotation`` is a model or an Optional model."""
    present, optional = _without_none(annotation)
    if isinstance(present, type) and issubclass(present, BaseModel):
        return present, optional
    return None, False


def _nested_sets(model: str, name: str, inner: type[BaseModel]) -> dict[str, _SetField]:
    """The ``RedisSet`` fields of ``inner``, held by field ``name``; deeper ones are refused."""
    sets: dict[str, _SetField] = {}
    for sub, info in inner.model_fields.items():
        path = field_path(name, sub)
        special = _set_annotation(info.annotation, plain_set=False)
        if special is not None:
            member_type, optional = special
            _check_member_type(model, path, member_type)
            codec = MemberCodec(member_type, model=model, field=path)
            sets[sub] = _SetField(codec, optional)
        elif _holds_sets(info.annotation, frozenset()):
            raise ModelDefinitionError.set_not_storable(
                model,
                path,
                "it holds RedisSet fields two levels down (or inside a list, dict, tuple or "
                "union), and only one level of nesting is supported",
            )
    return sets


def _holds_sets(annotation: Any, seen: frozenset[type]) -> bool:
    """Whether a ``RedisSet`` appears anywhere in ``annotation``, models' fields included."""
    if annotation is RedisSet or get_origin(annotation) is RedisSet:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:  # a model that refers to itself
            return False
        seen = seen | {annotation}
        return any(_holds_sets(info.annotation, seen) for info in annotation.model_fields.values())
    return any(_holds_sets(arg, seen) for arg in get_args(annotation))
