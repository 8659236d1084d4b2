"""Every error ledgerset raises, in one hierarchy.

::

    LedgersetError
    ├── ModelDefinitionError       a model class cannot be built (TypeError)
    ├── InvalidMemberError         a set member of an unsupported type or value (ValueError)
    ├── UpdateAtomicModelError     aupdate() of a special or unknown field (ValueError)
    ├── InvalidKeyError            a key that is not one of the model's keys (ValueError)
    ├── ModelNotFoundError         the model does not exist in Redis (KeyError)
    ├── WrongTypeError             a key holds another Redis type than ledgerset expects
    ├── PermissionDeniedError      the ACL user may not run a command a write needs
    ├── ExpiryOutOfRangeError      an expiry the server program refuses (ValueError)
    ├── TransactionError           an operation that cannot run inside a transaction
    ├── NotInitializedError        no connection: neither ledgerset.init() nor Meta.redis
    ├── ServerUnavailableError     the server cannot be reached (ConnectionError)
    ├── EmbeddedServerError        ledgerset.embedded found no server binary, or it did not start
    └── JournalError               a journal cannot be read or replayed
        ├── JournalEntryError      one entry is malformed or of an unknown command/version
        ├── StreamExhaustedError   a journal stream's last id is the largest: it takes no entry
        └── ReplayConflictError    the target refused a replay (another replay, foreign keys)

Each error names what was attempted and with what (model, field, key, value) and, where there is
one, the fix; the same facts are attributes, so callers and log processors need not parse text.
The errors that a command can meet on the server (``ModelNotFoundError``, ``WrongTypeError``,
``PermissionDeniedError``, ``ExpiryOutOfRangeError``, ``StreamExhaustedError``) also carry
``command``: the journal name of the refused command. The last three are built by the
constructors at the end of this module (``permission_denied``, ...), used by the dispatcher and
by replay.
"""

from __future__ import annotations

__all__ = [
    "EmbeddedServerError",
    "ExpiryOutOfRangeError",
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
    "ServerUnavailableError",
    "StreamExhaustedError",
    "TransactionError",
    "UpdateAtomicModelError",
    "WrongTypeError",
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
    """An operation that cannot be part of the open transaction (e.g. ``apop``)."""


class NotInitializedError(LedgersetError):
    """No Redis connection is configured for a model."""


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
