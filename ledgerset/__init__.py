"""ledgerset: Pydantic models in Redis whose set fields are real Redis SETs.

Every set mutation is an immutable command that the dispatcher runs at once or buffers into a
transaction (``model.apipeline()`` / ``ledgerset.transaction()``), sent all-or-nothing, and that
a ``StreamJournal`` can record atomically with its effect, for audit and replay.
"""

from ledgerset.commands.dispatcher import Transaction, transaction
from ledgerset.commands.record import StreamJournal
from ledgerset.core.config import RedisConfig, aclose, init
from ledgerset.core.model import AtomicRedisModel
from ledgerset.core.redis_set import RedisSet
from ledgerset.errors import (
    ConfigurationError,
    ConflictError,
    CrossSlotError,
    ExpiryOutOfRangeError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidMemberError,
    LedgersetError,
    ModelDefinitionError,
    ModelNotFoundError,
    NotInitializedError,
    PermissionDeniedError,
    RequestTooLargeError,
    ServerUnavailableError,
    StreamExhaustedError,
    TransactionError,
    UnknownMirrorError,
    UnsupportedCommandError,
    UpdateAtomicModelError,
    WrongTypeError,
)

__all__ = [
    "AtomicRedisModel",
    "ConfigurationError",
    "ConflictError",
    "CrossSlotError",
    "ExpiryOutOfRangeError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidMemberError",
    "LedgersetError",
    "ModelDefinitionError",
    "ModelNotFoundError",
    "NotInitializedError",
    "PermissionDeniedError",
    "RedisConfig",
    "RedisSet",
    "RequestTooLargeError",
    "ServerUnavailableError",
    "StreamExhaustedError",
    "StreamJournal",
    "Transaction",
    "TransactionError",
    "UnknownMirrorError",
    "UnsupportedCommandError",
    "UpdateAtomicModelError",
    "WrongTypeError",
    "aclose",
    "init",
    "transaction",
]
