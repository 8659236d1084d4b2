"""Every error ledgerset raises, in one hierarchy.

::

    LedgersetError
    ├── ModelDefinitionError       a model class cannot be built (TypeError)
    ├── InvalidMemberError         a set member of an unsupported type or value (ValueError)
    ├── UpdateAtomicModelError     aupdate() of a special or unknown field (ValueError)
    ├── InvalidKeyError            a key that is not one of the model's keys (ValueError)
    ├── ModelNotFoundError         the model does not exist in Redis (KeyError)
    ├── WrongTypeError             a key holds another Redis type than ledgerset expects
    ├── TransactionError           an operation that cannot run inside a transaction
    ├── NotInitializedError        no connection: neither ledgerset.init() nor Meta.redis
    ├── ConfigurationError         an unusable client or journal given to init, RedisConfig, replay
    ├── RequestTooLargeError       an argument exceeds the server's proto-max-bulk-len (ValueError)
    ├── ServerUnavailableError     the server cannot be reached (ConnectionError)
    ├── EmbeddedServerError        ledgerset.embedded found no server binary, or it did not start
    └── JournalError               a journal cannot be read or replayed
        ├── JournalEntryError      one entry is malformed or of an unknown command/version
        └── ReplayConflictError    the target refused a replay (another replay, foreign keys)

Each error names what was attempted and with what (model, field, key, value) and, where there is
one, the fix; the same facts are attributes, so callers and log processors need not parse text.
The errors that a command can meet on the server (``ModelNotFoundError``, ``WrongTypeError``)
also carry ``command``: the journal name of the refused command.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "EmbeddedServerError",
    "InvalidKeyError",
    "InvalidMemberError",
    "JournalEntryError",
    "JournalError",
    "LedgersetError",
    "ModelDefinitionError",
    "ModelNotFoundError",
    "NotInitializedError",
    "ReplayConflictError",
    "RequestTooLargeError",
    "ServerUnavailableError",
    "TransactionError",
    "UpdateAtomicModelError",
    "WrongTypeError",
]


class LedgersetError(Exception):
    """Base class of every error raised by ledgerset."""


class ModelDefinitionError(LedgersetError, TypeError):
    """A model class declares something ledgerset cannot store, e.g. ``RedisSet[dict]``."""

    def __init__(self, message: str, *, model: str, field: str) -> None:
        super().__init__(message)
        self.model = model
        self.field = field


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


class UpdateAtomicModelError(LedgersetError, ValueError):
    """``aupdate()`` was given a special field (a ``RedisSet``) or a field the model lacks."""

    def __init__(self, message: str, *, model: str, field: str) -> None:
        super().__init__(message)
        self.model = model
        self.field = field


class InvalidKeyError(LedgersetError, ValueError):
    """A key passed to ``aget``/``aexists`` that does not name a model of that class."""

    def __init__(self, message: str, *, model: str, key: str) -> None:
        super().__init__(message)
        self.model = model
        self.key = key


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


class TransactionError(LedgersetError):
    """An operation that cannot be part of the open transaction (e.g. ``apop``)."""


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
    ``size`` is the argument's length in bytes, ``limit`` the server's, ``address`` host:port.
    """

    def __init__(self, message: str, *, size: int, limit: int, address: str) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.address = address


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


class ServerUnavailableError(LedgersetError, ConnectionError):
    """The Redis server at ``address`` (host:port) could not be reached."""

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class EmbeddedServerError(LedgersetError):
    """``ledgerset.embedded`` found no server binary, or the server it started did not answer."""


class JournalError(LedgersetError):
    """A journal stream cannot be read or replayed; ``stream`` names it."""

    def __init__(self, message: str, *, stream: str, entry_id: str | None = None) -> None:
        super().__init__(message)
        self.stream = stream
        self.entry_id = entry_id


class JournalEntryError(JournalError):
    """Journal entry ``entry_id`` is malformed, or records a command/version this code cannot read.

    Replay stops before that entry's transaction: nothing of it is applied.
    """


class ReplayConflictError(JournalError):
    """The replay target refused a batch: another replay moved the checkpoint, or a key there
    holds another type. ``entry_id`` names the entry whose command was refused, if one was."""
