"""``AtomicRedisModel``: a Pydantic model stored in Redis.

Storage: the scalar fields live in a HASH at ``{ClassName}:{pk}``, one JSON value per field; each
``RedisSet`` field lives in its own SET (see ``keys.py``), and the hash records whether that field
holds a set or ``None``. Every write (``asave``, ``aupdate``, ``adelete``) is a command run by the
dispatcher; reads (``aget``, ``aexists``) go straight to Redis.

``set[T]`` annotations become ``RedisSet[T]`` when the class is defined, and an unsupported member
type (``RedisSet[dict]``, ``set[datetime]``) fails right there, naming the field.
"""

from __future__ import annotations

import sys
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ledgerset.commands import dispatcher
from ledgerset.commands.catalog import Command, DeleteModel, SaveModel, SetContents, UpdateModel
from ledgerset.core.codec import MEMBER_TYPES, MemberCodec
from ledgerset.core.config import RedisConfig, default_journal, default_redis
from ledgerset.core.redis_set import RedisSet, SetBinding, validate_members
from ledgerset.errors import (
    InvalidKeyError,
    ModelDefinitionError,
    ModelNotFoundError,
    UpdateAtomicModelError,
    WrongTypeError,
)
from ledgerset.keys import KeyLayout, pk_from_key

__all__ = ["AtomicRedisModel"]

R = TypeVar("R")
_DEFAULT_CONFIG = RedisConfig()
_SET_MARKER = b"true"  # the hash's value for a set field that holds a set (else JSON null)


@dataclass(frozen=True, slots=True)
class _SetField:
    codec: MemberCodec
    optional: bool


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Runs before Pydantic collects the fields, so set[T] can still become RedisSet[T].
        super().__init_subclass__(**kwargs)
        reserved = {"ledgerset", (cls.Meta or _DEFAULT_CONFIG).special_prefix}
        if cls.__name__ in reserved:
            raise ModelDefinitionError(
                f"a model cannot be named {cls.__name__!r}: its keys would share a namespace "
                f"with {'ledgerset bookkeeping' if cls.__name__ == 'ledgerset' else 'set keys'}; "
                f"rename the class",
                model=cls.__name__,
                field="",
            )
        # The class's own dict, not inspect.get_annotations (a copy): Pydantic reads this one.
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        sets = dict(cls.__ledgerset_sets__)
        for name, annotation in list(annotations.items()):
            resolved = _resolve(cls, annotation)
            special = _set_annotation(resolved)
            if special is None:
                sets.pop(name, None)
                continue
            member_type, optional = special
            if member_type is not None and member_type not in MEMBER_TYPES:
                shown = getattr(member_type, "__name__", repr(member_type))
                raise ModelDefinitionError(
                    f"{cls.__name__}.{name}: a set of {shown} cannot be stored; members must be "
                    f"str, int, float or bool (e.g. RedisSet[str], or a bare RedisSet for any of "
                    f"the four)",
                    model=cls.__name__,
                    field=name,
                )
            redis_set = RedisSet if member_type is None else RedisSet[member_type]  # type: ignore[valid-type]
            annotations[name] = redis_set | None if optional else redis_set
            codec = MemberCodec(member_type, model=cls.__name__, field=name)
            sets[name] = _SetField(codec, optional)
        cls.__ledgerset_sets__ = sets

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, info in cls.model_fields.items():
            if name not in cls.__ledgerset_sets__ and _set_annotation(info.annotation):
                raise ModelDefinitionError(
                    f"{cls.__name__}.{name}: its set annotation could not be resolved when the "
                    f"class was defined, so it would not be a RedisSet; define the names it uses "
                    f"before the class",
                    model=cls.__name__,
                    field=name,
                )

    def model_post_init(self, context: Any, /) -> None:
        """Bind every set field to this model (a plain ``set`` becomes a ``RedisSet``)."""
        for name in self.__ledgerset_sets__:
            value = self.__dict__[name]
            if value is not None:
                self.__dict__[name] = self._bind(name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__ledgerset_sets__:
            if value is None and not self.__ledgerset_sets__[name].optional:
                raise ValueError(
                    f"{type(self).__name__}.{name} is not Optional: assign a set, not None"
                )
            if value is not None:
                value = self._bind(name, value)
        super().__setattr__(name, value)

    def _bind(self, name: str, value: Any) -> RedisSet[Any]:
        cls = type(self)
        binding = SetBinding(
            model=cls.__name__,
            pk=self.pk,
            field=name,
            key=cls._set_key(self.pk, name),
            owner=self.key,
            codec=self.__ledgerset_sets__[name].codec,
            config=cls.Meta,
        )
        return validate_members(value)._bound_to(binding)

    # -- identity ------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The Redis key of this model's hash: ``{ClassName}:{pk}``."""
        return type(self)._layout().model_key(type(self).__name__, self.pk)

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
    def _set_key(cls, pk: str, name: str) -> str:
        return cls._layout().set_key(cls.__name__, pk, name)

    # -- writes: commands ----------------------------------------------------------------------

    async def asave(self) -> Self:
        """Write the whole model: scalar fields, every set's local members, and the TTL.

        Inside a transaction the save is buffered and applied on commit.
        """
        cls = type(self)
        sets = self.__ledgerset_sets__
        data = self.model_dump(mode="json", exclude=set(sets))
        fields = [(name, orjson.dumps(value)) for name, value in data.items()]
        contents = []
        for name, spec in sets.items():
            value: RedisSet[Any] | None = self.__dict__[name]
            key = cls._set_key(self.pk, name)
            if value is None:
                fields.append((name, b"null"))
                contents.append(SetContents(field=name, key=key, members=None))
            else:
                fields.append((name, _SET_MARKER))
                contents.append(
                    SetContents(field=name, key=key, members=spec.codec.pairs(value)[1])
                )
        command = SaveModel(
            model=cls.__name__,
            pk=self.pk,
            key=self.key,
            fields=tuple(fields),
            sets=tuple(contents),
            ttl_ms=cls.Meta.ttl_ms if cls.Meta is not None else None,
        )
        await self._run(command)
        return self

    async def aupdate(self, **fields: Any) -> None:
        """Set some scalar fields, in Redis (one ``HSET``) and here; the model must exist.

        ``RedisSet`` fields cannot be passed: use their own methods.
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
        staged = self.model_copy()
        for name, value in fields.items():
            self.__pydantic_validator__.validate_assignment(staged, name, value)
        data = staged.model_dump(mode="json", include=set(fields))
        command = UpdateModel(
            model=cls.__name__,
            pk=self.pk,
            key=self.key,
            fields=tuple((name, orjson.dumps(value)) for name, value in data.items()),
        )
        validated = {name: staged.__dict__[name] for name in fields}
        await self._run(command, lambda _: self.__dict__.update(validated))

    async def adelete(self) -> bool | None:
        """Delete the model's hash and all its set keys; ``True`` if the model existed.

        Returns ``None`` inside a transaction, where the delete is applied on commit.
        """
        cls = type(self)
        command = DeleteModel(
            model=cls.__name__,
            pk=self.pk,
            key=self.key,
            sets=tuple((name, cls._set_key(self.pk, name)) for name in self.__ledgerset_sets__),
        )
        return await self._run(command)

    def apipeline(self) -> dispatcher.transaction:
        """Open a transaction: writes in the block are sent together, all-or-nothing, on exit.

        ``async with article.apipeline() as tx:``; ``tx.commands`` lists what is buffered.
        """
        return dispatcher.transaction()

    # -- reads ---------------------------------------------------------------------------------

    @classmethod
    async def aget(cls, key: str) -> Self:
        """Load the model stored at ``key`` (as ``model.key`` gives it), with its sets' members.

        Raises ``ModelNotFoundError`` when there is none.
        """
        pk = cls._pk_of(key)
        sets = cls.__ledgerset_sets__
        set_keys = {name: cls._set_key(pk, name) for name in sets}
        redis = cls._redis_of()
        try:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                for name in sets:
                    pipe.smembers(set_keys[name])
                replies = await pipe.execute()
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
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
            raise
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise dispatcher.unavailable(redis, "model.get", exc, "Nothing was changed.") from exc
        stored: dict[bytes, bytes] = replies[0]
        if not stored:
            raise ModelNotFoundError(
                f"{cls.__name__} {key!r} is not in Redis (never saved, deleted or expired)",
                model=cls.__name__,
                key=key,
            )
        data: dict[str, Any] = {}
        for field, raw in stored.items():
            name = field.decode()
            try:
                data[name] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ModelNotFoundError(
                    f"{cls.__name__} {key!r}: hash field {name!r} holds {raw!r}, which is not "
                    f"JSON; another client wrote it",
                    model=cls.__name__,
                    key=key,
                ) from None
        for (name, spec), members in zip(sets.items(), replies[1:], strict=True):
            if members:  # members exist: a set, even if assigned after the last save
                data[name] = spec.codec.decode_many(members, key=set_keys[name])
            else:  # Redis keeps no empty SET: the hash's marker tells empty from None
                data[name] = set() if data.get(name) else None
        data["pk"] = pk
        return cls.model_validate(data)

    async def aload(self) -> Self:
        """Refresh this instance from Redis (scalar fields and set members)."""
        fresh = await type(self).aget(self.key)
        self.__dict__.update(fresh.__dict__)
        return self

    @classmethod
    async def aexists(cls, key: str) -> bool:
        """Whether a model is stored at ``key``."""
        cls._pk_of(key)
        redis = cls._redis_of()
        try:
            return bool(await redis.exists(key))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise dispatcher.unavailable(
                redis, "model.exists", exc, "Nothing was changed."
            ) from exc

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
        return await dispatcher.execute(command, redis, on_result, journal=journal)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


def _set_annotation(annotation: Any) -> tuple[Any, bool] | None:
    """``(member type or None, optional)`` if ``annotation`` declares a set field."""
    if annotation is set or annotation is RedisSet:
        return None, False
    origin = get_origin(annotation)
    if origin is set or origin is RedisSet:
        args = get_args(annotation)
        return (args[0] if args else None), False
    if origin is Union or origin is types.UnionType:
        args = get_args(annotation)
        present = [arg for arg in args if arg is not type(None)]
        if len(present) == 1 and len(args) == 2:
            inner = _set_annotation(present[0])
            if inner is not None:
                return inner[0], True
    return None
