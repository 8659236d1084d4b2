"""Every error ledgerset raises, in one hierarchy.

::

    LedgersetError
    ├── ModelDefinitionError       a model class cannot be built (TypeError)
    ├── InvalidMemberError         a set member of an unsupported type or value (ValueError)
    ├── InvalidArgumentError       an operand or count a set method cannot use (Type/ValueError)
    ├── UpdateAtomicModelError     aupdate() of a special or unknown field (ValueError)
    ├── InvalidKeyError            a key that is not one of the model's keys (ValueError)
    ├── ModelNotFoundError         the model does not exist in Redis (KeyError)
    ├── WrongTypeError             a key holds another Redis type than ledgerset expects
    ├── PermissionDeniedError      the ACL user may not run a command a write needs
    ├── ExpiryOutOfRangeError      an expiry the server program refuses (ValueError)
    ├── TransactionError           an operation that cannot run inside a transaction
    │   └── CrossSlotError         a write over keys in several slots of a cluster
    ├── ConflictError              another writer changed the model (or a store's sources) first
    ├── UnknownMirrorError         asave() of a set whose last write has an unknown outcome
    ├── NotInitializedError        no connection: neither ledgerset.init() nor Meta.redis
    ├── ConfigurationError         an unusable client or journal given to init, RedisConfig, replay
    ├── RequestTooLargeError       an argument exceeds the server's proto-max-bulk-len (ValueError)
    ├── ServerUnavailableError     the server cannot be reached (ConnectionError)
    ├── UnsupportedCommandError    the server lacks a command a method needs (too old, or renamed)
    ├── EmbeddedServerError        ledgerset.embedded found no server binary, or it did not start
    │   └── EmbeddedClusterError   an embedded cluster did not form, or cannot do what was asked
    └── JournalError               a journal cannot be read or replayed
        ├── JournalEntryError      one entry is malformed, unknown, or not a model's write
        ├── StreamExhaustedError   a journal stream's last id is the largest: it takes no entry
        ├── ReplayConflictError    the target refused a replay (another replay, foreign keys)
        ├── ReplayTargetError      the target is the source, or holds data of its own
        ├── SubscriptionError      a subscription cannot start or go on (options, group, stream)
        └── RetentionError         a snapshot or trim refused (no snapshot there, it would cut one)

Each error names what was attempted and with what (model, field, key, value) and, where there is
one, the fix; the same facts are attributes, so callers and log processors need not parse text.
The errors that a command can meet on the server (``ModelNotFoundError``, ``WrongTypeError``,
``PermissionDeniedError``, ``ExpiryOutOfRangeError``, ``StreamExhaustedError``) also carry
``command``: the journal name of the refused command. The first two are built by their
``refused`` classmethods, the last three by the constructors at the end of this module
(``permission_denied``, ...), used by the dispatcher and by replay; ``TransactionError``'s
classmethods word what a transaction refuses.
"""

from __future__ import annotations

from typing import Self

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "CrossSlotError",
    "EmbeddedClusterError",
    "EmbeddedServerError",
    "ExpiryOutOfRangeError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidMemberError",
    "JournalEntryError",
    "JournalError",
    "LedgersetError",
    "ModelDefinitionError",
    "ModelNotFoundError",
    "NotInitializedError",
    "PermissionDeniedError",
    "ReplayConflictError",
    "ReplayTargetError",
    "RequestTooLargeError",
    "RetentionError",
    "ServerUnavailableError",
    "StreamExhaustedError",
    "SubscriptionError",
    "TransactionError",
    "UnknownMirrorError",
    "UnsupportedCommandError",
    "UpdateAtomicModelError",
    "WrongTypeError",
    "conflict",
    "expiry_out_of_range",
    "permission_denied",
    "popped_foreign_member",
    "stream_exhausted",
]


class LedgersetError(Exception):
    """Base class of every error raised by ledgerset."""


class ModelDefinitionError(LedgersetError, TypeError):
    """A model class declares something ledgerset cannot store, e.g. ``RedisSet[dict]``."""

    def __init__(self, message: str, *, model: str, field: str) -> None:
        super().__init__(message)
        self.model = model
        self.field = field

    @classmethod
    def bad_meta(cls, model: str, meta: object) -> ModelDefinitionError:
        """``Meta`` is not a ``RedisConfig`` (e.g. a Django-style ``class Meta:``)."""
        shown = f"class {meta.__name__}" if isinstance(meta, type) else type(meta).__name__
        return cls(
            f"{model}.Meta is a {shown}, not a RedisConfig; ledgerset reads its settings from "
            f"Meta = RedisConfig(...), e.g. Meta = RedisConfig(ttl=60)",
            model=model,
            field="Meta",
        )

    @classmethod
    def name_taken(cls, model: str, field: str, owner: str) -> ModelDefinitionError:
        """A field would hide an attribute or method the model itself uses (``key``, ``asave``)."""
        return cls(
            f"{model}.{field}: a field cannot be named {field!r}, which {owner} uses for itself "
            f"(model.{field} would no longer be it); rename the field, and give it "
            f"Field(alias={field!r}) if its JSON name must stay {field!r}",
            model=model,
            field=field,
        )

    @classmethod
    def set_not_storable(cls, model: str, field: str, why: str) -> ModelDefinitionError:
        """A ``RedisSet`` where ledgerset cannot give it a key of its own."""
        return cls(
            f"{model}.{field}: {why}. Each RedisSet lives in a Redis key named after its field, "
            f"so only a RedisSet field of the model, or of a model held directly by one of its "
            f"fields (one level of nesting), can be stored; make it one of those, or use a plain "
            f"set[...] inside a plain BaseModel (stored as JSON in the hash)",
            model=model,
            field=field,
        )


class InvalidMemberError(LedgersetError, ValueError):
    """A set member is not a ``str``, ``int``, ``float`` or ``bool`` of the field's type.

    Raised before anything is sent to Redis, so the server is unchanged. ``command`` names the
    refused command (``set.add``, ...) when a set method was called; ``reason`` is
    ``"invalid_member"``, as in the ``command.refused`` log event.
    """

    reason = "invalid_member"

    def __init__(self, message: str, *, model: str, field: str, value: object) -> None:
        super().__init__(message)
        self.model = model
        self.field = field
        self.value = value
        self.command: str | None = None

    @classmethod
    def other_member_type(
        cls, model: str, field: str, destination: str, value: object, types: tuple[str, str]
    ) -> InvalidMemberError:
        """A member moved to a set of another member type, where it would be stored in another
        form (``1`` as ``1`` or as ``1.0``) or not be a member at all."""
        error = cls(
            f"{model}.{field}.amove({value!r}, {destination}): {model}.{field} is a {types[0]} "
            f"but {destination} is a {types[1]}, so a member of one is not stored as a member "
            f"of the other. Nothing was sent: move members between sets of the same member "
            f"type, or aremove() here and aadd() there",
            model=model,
            field=field,
            value=value,
        )
        error.command = "set.move"
        return error


class InvalidArgumentError(LedgersetError, TypeError, ValueError):
    """A set method got an operand or a count it cannot use; raised before any I/O.

    An operand of set algebra or of a comparison must be a ``RedisSet`` field of a model on the
    same Redis client (and, for the counts and comparisons, of the same member type); a count
    must be an ``int`` in range. ``command`` names the refused read (``set.intersect_size``,
    ...), ``argument`` the parameter and ``value`` what was passed. A ``TypeError`` and a
    ``ValueError``, as Python raises one or the other for such arguments.
    """

    def __init__(
        self, message: str, *, model: str, field: str, command: str, argument: str, value: object
    ) -> None:
        super().__init__(message)
        self.model = model
        self.field = field
        self.command = command
        self.argument = argument
        self.value = value

    @classmethod
    def not_a_set(
        cls, model: str, field: str, command: str, method: str, value: object
    ) -> InvalidArgumentError:
        """An operand that is not a ``RedisSet`` (a plain ``set``, a list, ...)."""
        return cls(
            f"{model}.{field}.{method}() takes RedisSet fields of saved models, got "
            f"{type(value).__name__}; pass another model's field (e.g. other.tags), or use "
            f"amembers() and Python's own set operations for a plain set",
            model=model,
            field=field,
            command=command,
            argument="other",
            value=value,
        )

    @classmethod
    def other_client(
        cls, model: str, field: str, command: str, method: str, operand: str, value: object
    ) -> InvalidArgumentError:
        """An operand whose model talks to another Redis client: one command reads one server."""
        return cls(
            f"{model}.{field}.{method}(): {operand} uses another Redis client than {model}, and "
            f"the server computes {method}() in one command on one server; nothing was sent. "
            f"Give both models the same RedisConfig(redis=...) (or none, for init's), or "
            f"compare their amembers() in Python",
            model=model,
            field=field,
            command=command,
            argument="other",
            value=value,
        )

    @classmethod
    def other_member_type(
        cls,
        model: str,
        field: str,
        command: str,
        method: str,
        operand: str,
        types: tuple[str, str],
        value: object,
    ) -> InvalidArgumentError:
        """An operand of another member type: equal values would be stored as other bytes."""
        return cls(
            f"{model}.{field}.{method}(): {model}.{field} is a {types[0]} but {operand} is a "
            f"{types[1]}; their members are stored in different forms (1 as 1 or as 1.0), so "
            f"the server's answer could disagree with Python's. Nothing was sent: compare sets "
            f"of the same member type",
            model=model,
            field=field,
            command=command,
            argument="other",
            value=value,
        )

    @classmethod
    def no_sources(cls, model: str, field: str, command: str, method: str) -> InvalidArgumentError:
        """A store of set algebra with no source set."""
        return cls(
            f"{model}.{field}.{method}() needs at least one source set, e.g. "
            f"{model.lower()}.{field}.{method}(other.tags); nothing was sent. To empty the set, "
            f"use aclear()",
            model=model,
            field=field,
            command=command,
            argument="sources",
            value=(),
        )

    @classmethod
    def bad_count(
        cls,
        model: str,
        field: str,
        command: str,
        method: str,
        argument: str,
        value: object,
        allowed: str,
    ) -> InvalidArgumentError:
        """A count (``count``, ``k``, ``limit``) that is not an ``int`` in its range."""
        return cls(
            f"{model}.{field}.{method}({argument}={value!r}): {argument} must be an int "
            f"{allowed}, got {type(value).__name__} {value!r}; nothing was sent",
            model=model,
            field=field,
            command=command,
            argument=argument,
            value=value,
        )


class UpdateAtomicModelError(LedgersetError, ValueError):
    """``aupdate()`` was given a special field (a ``RedisSet``) or a field the model lacks."""

    def __init__(self, message: str, *, model: str, field: str) -> None:
        super().__init__(message)
        self.model = model
        self.field = field


class InvalidKeyError(LedgersetError, ValueError):
    """A key passed to ``aget``/``aexists`` that does not name a model of that class, or a key
    that cannot be laid out: on a cluster, a set key that would leave its model's slot.

    ``pk`` and ``field`` name the model's pk and set field when the refused key is a set's.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        key: str,
        pk: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.key = key
        self.pk = pk
        self.field = field

    @classmethod
    def set_leaves_slot(
        cls,
        *,
        model: str,
        pk: str,
        field: str,
        key: str,
        prefix: str,
        model_slot: int,
        set_slot: int,
    ) -> InvalidKeyError:
        """On a cluster, braces in the pk (or the prefix) would put set ``key`` in another slot
        than its model's hash, and no atomic write could reach both."""
        if "{" in prefix or "}" in prefix:
            culprit = f"the set key prefix {prefix!r} has a brace"
            fix = "use a special_prefix without braces (RedisConfig(special_prefix=...))"
        else:
            culprit = f"the braces of pk {pk!r} are not one balanced hash tag"
            fix = (
                "use a pk without braces, or one that starts its hash tag with a non-empty "
                "'{...}' pair, e.g. '{acme}:home'"
            )
        return cls(
            f"{model}.{field} (pk {pk!r}) cannot be laid out for a cluster: {culprit}, so its "
            f"set key {key!r} would hash to slot {set_slot} and the model key "
            f"{model + ':' + pk!r} to slot {model_slot}, and one atomic write could not reach "
            f"both. Nothing was written; {fix}",
            model=model,
            key=key,
            pk=pk,
            field=field,
        )


class ModelNotFoundError(LedgersetError, KeyError):
    """The model is not in Redis: never saved, deleted, or expired.

    ``command`` (with ``pk`` and ``field``) names the refused command when a write was refused;
    they are ``None`` for a read. ``reason`` is ``"model_not_found"``, as in the log event.
    """

    reason = "model_not_found"

    def __init__(
        self,
        message: str,
        *,
        model: str,
        key: str,
        command: str | None = None,
        pk: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.key = key
        self.command = command
        self.pk = pk
        self.field = field

    def __str__(self) -> str:
        # KeyError would print the message quoted, like a missing dict key.
        return str(self.args[0])

    @classmethod
    def refused(
        cls, command: str, model: str, pk: str, field: str | None, key: str, in_transaction: str
    ) -> Self:
        """The server program refused ``command``: its model's key ``key`` does not exist.
        ``in_transaction`` is empty, or says what became of the transaction it was in."""
        where = f"{model}.{field}" if field else model
        return cls(
            f"{command} on {where} refused: model key {key!r} is not in Redis (never saved, "
            f"deleted or expired); nothing was written{in_transaction}. Save the model first "
            f"with await model.asave().",
            model=model,
            key=key,
            command=command,
            pk=pk,
            field=field,
        )


class WrongTypeError(LedgersetError):
    """A key ledgerset writes holds another Redis type (another client overwrote it).

    ``reason`` is ``"wrong_type"``, as in the ``command.refused`` log event.
    """

    reason = "wrong_type"

    def __init__(
        self,
        message: str,
        *,
        key: str,
        actual: str,
        command: str,
        model: str,
        pk: str,
        field: str | None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.actual = actual
        self.command = command
        self.model = model
        self.pk = pk
        self.field = field

    @classmethod
    def refused(
        cls,
        command: str,
        model: str,
        pk: str,
        field: str | None,
        key: str,
        actual: str,
        in_transaction: str,
    ) -> Self:
        """The server program refused ``command``: ``key`` holds a Redis ``actual``, not what
        ledgerset stored there. ``in_transaction``: as for ``ModelNotFoundError.refused``."""
        where = f"{model}.{field}" if field else model
        return cls(
            f"{command} on {where} refused: key {key!r} holds a Redis {actual}, not what "
            f"ledgerset stored there; another client overwrote it. Nothing was "
            f"written{in_transaction}. Delete or rename that key, then retry.",
            key=key,
            actual=actual,
            command=command,
            model=model,
            pk=pk,
            field=field,
        )


class PermissionDeniedError(LedgersetError, PermissionError):
    """The caller's ACL ``user`` may not run ``server_command`` on ``key``, which the write needs.

    The server program checks every command it will run before its first write, so nothing was
    written. ``command`` is the refused ledgerset command (``set.add``, ..., ``replay``).
    ``reason`` is ``"no_permission"``, as in the ``command.refused`` log event.
    """

    reason = "no_permission"

    def __init__(
        self,
        message: str,
        *,
        command: str,
        server_command: str,
        key: str,
        user: str,
        model: str | None = None,
    ) -> None:
        super().__init__(message)
        self.command = command
        self.server_command = server_command
        self.key = key
        self.user = user
        self.model = model


class ExpiryOutOfRangeError(LedgersetError, ValueError):
    """An expiry (``value``, in ms) for ``model``'s key that the server program refuses.

    ``RedisConfig(ttl=...)`` refuses such a TTL when the class is defined, so this is met by a
    command built some other way; nothing was written. ``reason`` is ``"expiry_out_of_range"``.
    """

    reason = "expiry_out_of_range"

    def __init__(self, message: str, *, model: str, key: str, value: str, command: str) -> None:
        super().__init__(message)
        self.model = model
        self.key = key
        self.value = value
        self.command = command


class TransactionError(LedgersetError):
    """An operation that cannot be part of the open transaction (e.g. ``apop``).

    Also raised for a command from another task than the one that opened the transaction, while
    it is open. ``command`` and ``key`` name the refused command, when there is one.
    """

    def __init__(self, message: str, *, command: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.command = command
        self.key = key

    @classmethod
    def other_task(cls, command: str, key: str, txn: str) -> Self:
        """``command`` on ``key`` comes from another task while transaction ``txn`` is open."""
        return cls(
            f"{command} on {key!r} comes from another task than the one that opened transaction "
            f"{txn}, which is still open (a task started inside its block, e.g. by "
            f"asyncio.create_task, asyncio.gather, asyncio.to_thread, or asyncio.wait_for on "
            f"Python 3.11): a transaction belongs to the task that opened it, so the command was "
            f"neither buffered nor sent. Await it in that task (asyncio.timeout rather than "
            f"wait_for), or open a transaction of its own in the new task.",
            command=command,
            key=key,
        )

    @classmethod
    def none_open(cls, command: str, key: str) -> Self:
        """``command`` on ``key`` was to be buffered, and no transaction is open."""
        return cls(f"{command} on {key!r}: no transaction is open", command=command, key=key)

    @classmethod
    def not_deferrable(cls, command: str, key: str) -> Self:
        """``command`` (``set.pop``) cannot wait for a commit: its caller needs its result."""
        return cls(
            f"{command} on {key!r} cannot run inside a transaction: its result is needed at "
            f"once, and a transaction only applies its commands on exit. Call it before or "
            f"after the transaction block.",
            command=command,
            key=key,
        )

    @classmethod
    def other_client(cls, command: str, key: str) -> Self:
        """``command`` uses another client than the transaction's first command."""
        return cls(
            f"{command} on {key!r} uses another Redis client than the transaction's first "
            f"command; one transaction runs on one server. Use separate transactions, or give "
            f"the models the same RedisConfig(redis=...).",
            command=command,
            key=key,
        )


class CrossSlotError(TransactionError):
    """A write whose keys span hash slots of a Redis/Valkey Cluster; nothing was sent.

    One atomic program runs in one slot, so a transaction (or a command) over models in several
    slots cannot run as one. ``models`` lists ``(model, pk, slot)`` for each model involved
    (empty when the keys were not a model's), ``commands`` the journal names of the refused
    commands. The fix: co-locate the models with a shared hash tag in their pks
    (``{tenant}:...``), or write them in separate transactions.
    """

    reason = "cross_slot"

    def __init__(
        self, message: str, *, commands: list[str], models: list[tuple[str, str, int]]
    ) -> None:
        super().__init__(message, command=commands[0] if commands else None)
        self.commands = commands
        self.models = models

    @classmethod
    def spans_slots(
        cls, *, commands: list[str], models: list[tuple[str, str, int]]
    ) -> CrossSlotError:
        """The refusal of a program over ``models`` (``(model, pk, slot)``) in several slots."""
        named = ", ".join(f"{model} {pk!r} (slot {slot})" for model, pk, slot in models)
        what = (
            f"a transaction of {len(commands)} commands" if len(commands) > 1 else commands[0]
        )
        return cls(
            f"{what} refused: it writes {named}, which are in different hash slots of the "
            f"cluster, and one atomic write runs in one slot. Nothing was sent. Co-locate the "
            f"models with a shared hash tag in their pks, e.g. pk='{{tenant}}:home' and "
            f"pk='{{tenant}}:about' (the same tag, the same slot), or write them in separate "
            f"transactions.",
            commands=commands,
            models=models,
        )

    @classmethod
    def keys_span_slots(cls, command: str, keys: list[str]) -> CrossSlotError:
        """The refusal of server command ``command`` over ``keys`` in several slots."""
        shown = f" {keys!r}" if keys else ""
        return cls(
            f"{command} refused: its keys{shown} are in different hash slots of the cluster, "
            f"and one command runs in one slot. Nothing was changed. Co-locate the models with "
            f"a shared hash tag in their pks (pk='{{tenant}}:...').",
            commands=[command],
            models=[],
        )


class ConflictError(LedgersetError):
    """A conditional write refused because another writer got there first; nothing was written.

    ``asave(if_unchanged=True)`` / ``aupdate(..., if_unchanged=True)``: the model's stored
    version is ``actual``, not the ``expected`` one this instance last read or wrote (``None``:
    this instance never knew it, e.g. after an interrupted write). ``astore_*``: a source set
    changed between the read of its members and the write (``expected`` and ``actual`` are
    ``None``). ``command`` names the refused command; ``reason`` is ``"conflict"``, as in the
    ``command.refused`` log event. Read the model again (``aload()``), redo the change, retry.
    """

    reason = "conflict"

    def __init__(
        self,
        message: str,
        *,
        command: str,
        model: str,
        pk: str,
        key: str,
        expected: int | None = None,
        actual: int | None = None,
    ) -> None:
        super().__init__(message)
        self.command = command
        self.model = model
        self.pk = pk
        self.key = key
        self.expected = expected
        self.actual = actual

    @classmethod
    def version_unknown(cls, command: str, model: str, pk: str, key: str) -> ConflictError:
        """An ``if_unchanged`` write by an instance that does not know the version it saw."""
        instance = model.lower()
        return cls(
            f"{command} on {model} (pk {pk!r}) refused before sending: if_unchanged=True "
            f"writes only over the version this instance saw, and it does not know it (an "
            f"earlier write of it was interrupted and may or may not have been applied). "
            f"Nothing was written. Read it again (await {instance}.aload()), redo the change, "
            f"and retry.",
            command=command,
            model=model,
            pk=pk,
            key=key,
        )


class UnknownMirrorError(LedgersetError):
    """``asave()`` refused: a set's local copy may be wrong after a write of unknown outcome.

    A write that was cancelled, timed out or lost its connection may have been applied on the
    server, so the set's local copy (what ``asave()`` writes) may still hold what it removed, or
    lack what it added; saving it could undo that write. ``command`` names that write. Nothing was
    written. Reading the set again (``amembers()``, or the model's ``aload()``) clears the mark.
    """

    reason = "mirror_unknown"

    def __init__(self, *, model: str, pk: str, field: str, key: str, command: str) -> None:
        instance = model.lower()
        super().__init__(
            f"{model}.asave() refused: the local copy of {model}.{field} (pk {pk!r}) is unknown, "
            f"because an earlier {command} on {key!r} was interrupted (cancelled, timed out or "
            f"its connection lost) and may have been applied on the server; saving the local "
            f"copy could undo it. Nothing was written. Read the set again first: "
            f"await {instance}.{field}.amembers() (or await {instance}.aload()), redo the local "
            f"changes you want, then asave()."
        )
        self.model = model
        self.pk = pk
        self.field = field
        self.key = key
        self.command = command


class NotInitializedError(LedgersetError):
    """No Redis connection is configured for a model."""


class ConfigurationError(LedgersetError, TypeError):
    """``where`` (``ledgerset.init``, ``RedisConfig``, ``replay``...) was given an unusable value.

    ``argument`` names the parameter (``redis``, ``journal``, ``source``...); nothing was sent to
    Redis and the previous configuration is unchanged. Raised by ``invalid_client`` and
    ``invalid_journal``, so every place a client enters says the same thing.
    """

    def __init__(self, message: str, *, where: str, argument: str, value: object) -> None:
        super().__init__(message)
        self.where = where
        self.argument = argument
        self.value = value


def invalid_client(where: str, argument: str, value: object, problem: str) -> ConfigurationError:
    """The error for a client ledgerset cannot use: ``problem`` says why, the fix follows."""
    return ConfigurationError(
        f"{where}({argument}=...): {problem}. ledgerset needs a redis.asyncio.Redis client "
        f"created with decode_responses=False (redis-py's default), e.g. "
        f"redis.asyncio.Redis.from_url('redis://localhost:6379/0'), or a URL where a URL is "
        f"accepted.",
        where=where,
        argument=argument,
        value=value,
    )


def database_on_cluster(where: str, value: object, argument: str = "redis") -> ConfigurationError:
    """The error for a URL or client (``value``, given as ``argument`` to ``where``: e.g.
    ``ledgerset.init``, ``ledgerset --url``) naming a database other than 0 of a cluster node,
    which has only database 0. A URL is shown as given, so pass it with its password redacted."""
    shown = repr(value) if isinstance(value, str) else f"the server of a {type(value).__name__}"
    return ConfigurationError(
        f"{where}: {shown} is a Redis Cluster node, and a cluster has only database 0 (no "
        f"SELECT). Nothing was changed. Connect without a database (redis://host:port) or with "
        f"/0, or to a single server; keep apart what would have gone to another database with a "
        f"hash tag or a key prefix instead.",
        where=where,
        argument=argument,
        value=value,
    )


def invalid_journal(where: str, value: object) -> ConfigurationError:
    """The error for a ``journal=`` that is not a ``StreamJournal`` (or ``None``)."""
    hint = f"StreamJournal({value!r})" if isinstance(value, str) else "StreamJournal()"
    return ConfigurationError(
        f"{where}(journal={value!r}): journal is a ledgerset.StreamJournal or None, not a "
        f"{type(value).__name__}. Pass journal={hint}.",
        where=where,
        argument="journal",
        value=value,
    )


class RequestTooLargeError(LedgersetError, ValueError):
    """A request argument is larger than the server accepts (its ``proto-max-bulk-len``).

    Refused before anything was sent: the server is unchanged and the connection still good.
    ``size`` is the argument's length in bytes, ``limit`` the server's, ``address`` host:port;
    ``command`` the journal name of the command whose journal entry is that argument, if one is.
    """

    def __init__(
        self, message: str, *, size: int, limit: int, address: str, command: str | None = None
    ) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.address = address
        self.command = command


def request_too_large(command: str, size: int, limit: int, address: str) -> RequestTooLargeError:
    """The error for a ``command`` whose argument of ``size`` bytes exceeds ``limit``."""
    return RequestTooLargeError(
        f"{command} to {address} refused before sending: one of its arguments is {size} bytes, "
        f"more than the server's proto-max-bulk-len of {limit} bytes (the server would close "
        f"the connection). Nothing was sent. Send fewer or smaller members per call (e.g. split "
        f"an aadd_many), or raise the limit: CONFIG SET proto-max-bulk-len <bytes>.",
        size=size,
        limit=limit,
        address=address,
    )


def entry_too_large(
    command: str, model: str, pk: str, field: str | None, refused: RequestTooLargeError
) -> RequestTooLargeError:
    """The error for a journaled ``command`` whose one entry is longer than the server accepts:
    its record cannot be split (``set.add``/``set.remove``/``set.toggle`` ones are)."""
    where = f"{model}.{field}" if field else model
    return RequestTooLargeError(
        f"{command} on {where} (pk {pk!r}) to {refused.address} refused before sending: its "
        f"journal entry is {refused.size} bytes, more than the server's proto-max-bulk-len of "
        f"{refused.limit} bytes (the server would close the connection). Nothing was sent. A "
        f"{command} record is one entry (replayed in parts it would do something else): write "
        f"the members in several calls (e.g. save the model with part of a large set, then "
        f"aadd_many the rest), or raise the limit: CONFIG SET proto-max-bulk-len <bytes>.",
        size=refused.size,
        limit=refused.limit,
        address=refused.address,
        command=command,
    )


class ServerUnavailableError(LedgersetError, ConnectionError):
    """The Redis server at ``address`` (host:port) could not be reached."""

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class UnsupportedCommandError(LedgersetError):
    """The server does not know a command a read needs: it is older than the command, or the
    command was renamed or disabled (``rename-command``). Nothing was changed.

    ``command`` is the ledgerset read (``set.intersect_size``, ...), ``redis_command`` the
    missing Redis command (``SINTERCARD``), ``since`` the Redis version that added it, and
    ``address`` the server's host:port.
    """

    def __init__(
        self, *, command: str, model: str, field: str, redis_command: str, since: str, address: str
    ) -> None:
        super().__init__(
            f"{command} on {model}.{field}: the server at {address} has no {redis_command} "
            f"command, which Redis {since} added (Valkey has it in every release); the server "
            f"is older, or {redis_command} was renamed or disabled there (rename-command). "
            f"Nothing was changed. Upgrade the server to Redis {since} or later, or Valkey."
        )
        self.command = command
        self.model = model
        self.field = field
        self.redis_command = redis_command
        self.since = since
        self.address = address


class EmbeddedServerError(LedgersetError):
    """``ledgerset.embedded`` found no server binary, or the server it started did not answer."""


class EmbeddedClusterError(EmbeddedServerError):
    """An ``EmbeddedCluster`` did not agree on its slot map in time, or was asked to do what
    its nodes cannot (fail over a primary without a replica, move a slot to a replica)."""

    @classmethod
    def bad_replicas(cls, replicas: object) -> EmbeddedClusterError:
        """``EmbeddedCluster(replicas=...)`` other than 0 or 1."""
        return cls(
            f"EmbeddedCluster(replicas={replicas!r}): replicas is 0 (3 primaries) or 1 (3 "
            f"primaries with one replica each)"
        )

    @classmethod
    def bad_slot(cls, slot: object) -> EmbeddedClusterError:
        """A slot number outside 0..16383."""
        return cls(f"slot {slot!r} does not exist: a cluster's slots are the integers 0 to 16383")

    @classmethod
    def not_a_primary(cls, node: str, action: str) -> EmbeddedClusterError:
        """``failover``/``migrate_slot`` named a node that is not a primary (any more)."""
        return cls(
            f"cannot {action} {node}: it is not a primary of this cluster now; take the node "
            f"from cluster.nodes (roles change after a failover), one whose role is 'primary'"
        )

    @classmethod
    def no_replica(cls, node: str) -> EmbeddedClusterError:
        """``failover`` of a primary that has no replica to take over."""
        return cls(
            f"cannot fail over {node}: it has no replica to take over; start the cluster with "
            f"EmbeddedCluster(replicas=1)"
        )

    @classmethod
    def not_ready(cls, what: str, timeout_s: float, trouble: str) -> EmbeddedClusterError:
        """The nodes did not reach the expected state within ``timeout_s``."""
        return cls(f"gave up waiting for {what} after {timeout_s:.0f} s: {trouble}")

    @classmethod
    def unreachable(cls, failures: list[str]) -> EmbeddedClusterError:
        """No node of the cluster answered."""
        return cls("no node of the embedded cluster answers: " + "; ".join(failures))


class JournalError(LedgersetError):
    """A journal stream cannot be read or replayed; ``stream`` names it."""

    def __init__(self, message: str, *, stream: str, entry_id: str | None = None) -> None:
        super().__init__(message)
        self.stream = stream
        self.entry_id = entry_id


class JournalEntryError(JournalError):
    """Journal entry ``entry_id`` is malformed, records a command/version this code cannot read,
    or names something no ledgerset model could have written; ``field`` names the entry's field
    at fault (``cmd``, ``model``, ``args``, ...) when one is.

    Replay stops before that entry's transaction: nothing of it is applied.
    """

    def __init__(
        self, message: str, *, stream: str, entry_id: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, stream=stream, entry_id=entry_id)
        self.field = field

    @classmethod
    def stops_replay(
        cls, stream: str, entry_id: str, problem: str, *, field: str | None = None
    ) -> Self:
        """``problem`` (sentences naming entry ``entry_id``), then how to go on without it."""
        return cls(
            f"{problem} To go on without entry {entry_id}: skip it on purpose (--skip {entry_id} "
            f"on ledgerset replay or verify, skip=[{entry_id!r}] in Python) or delete it (XDEL "
            f"{stream} {entry_id}), then run again.",
            stream=stream,
            entry_id=entry_id,
            field=field,
        )


class ReplayConflictError(JournalError):
    """The replay target refused a batch: another replay moved the checkpoint, or a key there
    holds another type. ``entry_id`` names the entry whose command was refused, if one was."""


class ReplayTargetError(JournalError):
    """A replay was refused before it wrote anything, because of its target: ``reason`` is
    ``"target_is_source"`` (the same server and database as the source, however the URL was
    spelled) or ``"target_not_empty"`` (keys there, and no checkpoint of this replay).
    ``target`` is the target's address and database, as ``host:port/db``."""

    def __init__(self, message: str, *, stream: str, target: str, reason: str) -> None:
        super().__init__(message, stream=stream)
        self.target = target
        self.reason = reason

    @classmethod
    def is_source(cls, stream: str, target: str) -> Self:
        """The target is the database the journal describes: replaying there would rewrite it."""
        return cls(
            f"refusing to replay {stream!r} into {target}: it is the source database itself (same "
            f"server run_id, same database), so the replay would rewrite the live data it reads. "
            f"Replay into another database or server (--to-url)",
            stream=stream,
            target=target,
            reason="target_is_source",
        )

    @classmethod
    def not_empty(cls, stream: str, target: str, keys: int, checkpoint: str) -> Self:
        """The target holds data, and no checkpoint says this replay wrote it."""
        return cls(
            f"refusing to replay {stream!r} into {target}: it holds {keys} key(s) and no "
            f"checkpoint of this replay ({checkpoint!r}), so the replay would mix the journal's "
            f"models with data it knows nothing of. Replay into an empty database, or say so on "
            f"purpose with --into-existing (into_existing=True in Python)",
            stream=stream,
            target=target,
            reason="target_not_empty",
        )


class SubscriptionError(JournalError):
    """A journal subscription (``ledgerset.journal.subscribe``) cannot start or go on.

    ``group`` and ``consumer`` name it; ``reason`` says why: ``"bad_option"`` (``option`` names
    the argument; nothing was sent to Redis), ``"not_a_stream"`` (the journal's key holds another
    type), ``"group_gone"`` (the consumer group, or the whole stream, was deleted meanwhile).
    """

    def __init__(
        self,
        message: str,
        *,
        stream: str,
        group: str,
        consumer: str,
        reason: str,
        option: str | None = None,
    ) -> None:
        super().__init__(message, stream=stream)
        self.group = group
        self.consumer = consumer
        self.reason = reason
        self.option = option

    @classmethod
    def bad_option(
        cls, stream: str, group: str, consumer: str, option: str, given: str, expected: str
    ) -> Self:
        """Argument ``option`` of ``subscribe`` is ``given`` (as shown), not ``expected``."""
        return cls(
            f"subscribe(journal={stream!r}, group={group!r}, consumer={consumer!r}): "
            f"{option}={given} is not {expected}; nothing was sent to Redis",
            stream=stream,
            group=group,
            consumer=consumer,
            reason="bad_option",
            option=option,
        )

    @classmethod
    def not_a_stream(cls, stream: str, group: str, consumer: str, actual: str) -> Self:
        """The journal's key exists and is not a stream, so no group can read it."""
        return cls(
            f"cannot subscribe group {group!r} (consumer {consumer!r}) to journal {stream!r}: "
            f"that key holds a {actual}, not a stream. Pass the stream your StreamJournal writes "
            f"to (journal=StreamJournal(...) or its stream name)",
            stream=stream,
            group=group,
            consumer=consumer,
            reason="not_a_stream",
        )

    @classmethod
    def group_gone(cls, stream: str, group: str, consumer: str) -> Self:
        """The group was destroyed (or the stream deleted) while the subscription was reading."""
        return cls(
            f"consumer group {group!r} of journal {stream!r} no longer exists (XGROUP DESTROY, "
            f"or the stream was deleted) while consumer {consumer!r} was reading; what it had not "
            f"acknowledged is lost with the group. Subscribe again to create the group anew, "
            f"with start='0' to deliver the whole stream again",
            stream=stream,
            group=group,
            consumer=consumer,
            reason="group_gone",
        )


class RetentionError(JournalError):
    """A snapshot or a trim of journal ``stream`` was refused; nothing was removed.

    ``reason``: ``"no_snapshot"`` (no complete snapshot to trim before), ``"not_a_snapshot"``
    (``before`` is no snapshot's id), ``"inside_snapshot"`` (``before`` would cut into one),
    ``"past_latest"`` (``before`` is after the latest complete snapshot), ``"moved"`` (the stream
    changed under the snapshot or trim, and it gave up), ``"refused"`` (the server refused it:
    a key of another type, a missing permission), ``"keyed"`` (the journal's chain is keyed,
    and the caller did not give its key), ``"cluster"`` (given a ``RedisCluster``: snapshot,
    trim, check_chain and a replay from a snapshot run on one server for now). ``before`` is the
    id the caller gave.
    """

    def __init__(
        self, message: str, *, stream: str, reason: str, before: str | None = None
    ) -> None:
        super().__init__(message, stream=stream, entry_id=before)
        self.reason = reason
        self.before = before

    @classmethod
    def no_snapshot(cls, stream: str) -> Self:
        """Nothing may be trimmed: no snapshot of ``stream`` is complete."""
        return cls(
            f"refusing to trim journal {stream!r}: it holds no complete snapshot, so the entries "
            f"before one would be all a replay has to rebuild the data. Take one first "
            f"(ledgerset snapshot, or await ledgerset.journal.snapshot(redis, journal=...))",
            stream=stream,
            reason="no_snapshot",
        )

    @classmethod
    def bad_before(cls, stream: str, before: str, reason: str, why: str, snapshots: str) -> Self:
        """``before`` is not where a trim may cut: ``why`` says so; ``snapshots`` lists them."""
        return cls(
            f"refusing to trim journal {stream!r} before {before}: {why}. Trim before a complete "
            f"snapshot, by its id ({snapshots}), or leave before out for the latest; nothing "
            f"was removed",
            stream=stream,
            reason=reason,
            before=before,
        )

    @classmethod
    def needs_key(cls, stream: str) -> Self:
        """The chain of ``stream`` is keyed: an entry appended without the key would break it."""
        return cls(
            f"journal {stream!r} has a keyed chain: its own entries must be HMACs with the "
            f"writers' secret. Pass journal=StreamJournal({stream!r}, chain=True, "
            f"chain_key=...); nothing was written",
            stream=stream,
            reason="keyed",
        )

    @classmethod
    def moved(cls, stream: str, what: str, attempts: int) -> Self:
        """The stream or a model kept changing under ``what`` for ``attempts`` tries."""
        return cls(
            f"{what} of journal {stream!r} gave up after {attempts} attempts: the data changed "
            f"under it each time. Run it again",
            stream=stream,
            reason="moved",
        )

    @classmethod
    def on_cluster(cls, stream: str, function: str) -> Self:
        """``function`` was given a ``RedisCluster``: it runs on one server for now."""
        return cls(
            f"{function}() of journal {stream!r} was given a RedisCluster: it runs on one server "
            f"for now (a cluster's journal is one stream per slot, which it does not route to "
            f"yet); nothing was read or written",
            stream=stream,
            reason="cluster",
        )

    @classmethod
    def refused(cls, stream: str, what: str, reason: str, key: str, detail: str) -> Self:
        """The server program refused ``what`` with ``reason`` at ``key``."""
        shown = f" ({detail})" if detail else ""
        return cls(
            f"{what} of journal {stream!r} refused by the server: {reason} at key {key!r}"
            f"{shown}; nothing of it was written",
            stream=stream,
            reason="refused",
        )


class StreamExhaustedError(JournalError):
    """Journal stream ``stream`` takes no more entries: its last id is the largest possible
    (another client added an entry with an explicit id at the maximum). Nothing was written.
    ``reason`` is ``"stream_exhausted"``."""

    reason = "stream_exhausted"

    def __init__(self, message: str, *, stream: str, command: str) -> None:
        super().__init__(message, stream=stream)
        self.command = command


def permission_denied(
    command: str, server_command: str, key: str, user: str | None, model: str | None = None
) -> PermissionDeniedError:
    """The error for a program refused because the caller may not run ``server_command``."""
    who = f"ACL user {user!r}" if user is not None else "this connection's ACL user"
    return PermissionDeniedError(
        f"{command} refused: {who} may not run {server_command} on key {key!r}, which it needs; "
        f"nothing was written. Grant it (e.g. ACL SETUSER {user or '<user>'} "
        f"+{server_command.lower()}), or use a user that may.",
        command=command,
        server_command=server_command,
        key=key,
        user=user or "",
        model=model,
    )


def expiry_out_of_range(command: str, model: str, key: str, value: str) -> ExpiryOutOfRangeError:
    """The error for a program refused because an expiry of ``model`` is out of range."""
    return ExpiryOutOfRangeError(
        f"{command} on {model} refused: expiry {value!r} ms for key {key!r} is out of range "
        f"(a whole number of ms, above 0, at most 2**52 from now); nothing was written. "
        f"Give the model a shorter RedisConfig(ttl=...).",
        model=model,
        key=key,
        value=value,
        command=command,
    )


def conflict(
    command: str,
    model: str,
    pk: str,
    key: str,
    expected: int | None,
    actual: str,
    context: str = "",
) -> ConflictError:
    """The error for a conditional write the server program refused: ``actual`` is the stored
    version it found (``""``: a store's sources changed), ``context`` says what else was not
    applied (a transaction's other commands)."""
    if not actual:
        return ConflictError(
            f"{command} on {model} (pk {pk!r}) refused: a source set changed between the read "
            f"of its members and the write, so the stored result would not be what the sources "
            f"hold; nothing was written{context}. Call it again (it reads the sources anew).",
            command=command,
            model=model,
            pk=pk,
            key=key,
        )
    instance = model.lower()
    seen = "never knew its version" if expected is None else f"last saw version {expected}"
    return ConflictError(
        f"{command} on {model} (pk {pk!r}) refused: another writer changed it since this "
        f"instance last read or wrote it (it {seen}; {key!r} is at version {actual}), and "
        f"if_unchanged=True writes only over the version it saw; nothing was written{context}. "
        f"Read it again (await {instance}.aload()), redo the change, and retry.",
        command=command,
        model=model,
        pk=pk,
        key=key,
        expected=expected,
        actual=int(actual),
    )


def stream_exhausted(command: str, stream: str) -> StreamExhaustedError:
    """The error for a program refused because journal ``stream`` takes no more entries."""
    return StreamExhaustedError(
        f"{command} refused: journal stream {stream!r} takes no more entries, its last id is the "
        f"largest possible (another client added an entry with an explicit maximum id); nothing "
        f"was written. Rename or delete that stream (after keeping what it holds), or journal "
        f"to another one with StreamJournal(stream=...).",
        stream=stream,
        command=command,
    )


def popped_foreign_member(model: str, field: str, key: str, raw: bytes) -> InvalidMemberError:
    """The error for an ``apop`` that removed a member it cannot decode (another client wrote it).

    Unlike every other ``InvalidMemberError``, Redis changed: the member is gone, and
    ``value`` holds its raw bytes so the caller can put it back or log it.
    """
    return InvalidMemberError(
        f"{model}.{field}: apop removed member {raw!r} from key {key!r}, and it is not a member "
        f"ledgerset can decode (another client wrote it); the pop happened, and was journaled "
        f"as those bytes. The exception's value holds them: SADD them back if they belong.",
        model=model,
        field=field,
        value=raw,
    )
