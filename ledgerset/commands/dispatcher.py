"""The dispatcher: the one place that decides "now or later", and the only module that writes.

``execute(command, redis)`` sends the command at once, in one round trip (one ``EVALSHA`` of
``program.lua``), unless a transaction is open in the current context: then the command joins it
and the call returns ``None``. A transaction's commit compiles all its commands into one program,
so they are checked, applied and given their TTLs in one atomic step on the server, or not at all.

A refused program raises, naming the command and key: ``ModelNotFoundError`` (a model that does
not exist), ``WrongTypeError`` (a key of the wrong type), ``PermissionDeniedError`` (the ACL user
may not run a command the program needs), ``StreamExhaustedError`` (a journal stream takes no
more entries), ``ExpiryOutOfRangeError``; nothing was written.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ledgerset._events import DEBUG, ERROR, INFO, WARNING, emit, enabled
from ledgerset.commands import wire
from ledgerset.commands.catalog import Command
from ledgerset.commands.program import OPS, SOURCE, Program, Refusal
from ledgerset.commands.record import StreamJournal, bound_context, entry_fields
from ledgerset.errors import (
    ExpiryOutOfRangeError,
    ModelNotFoundError,
    PermissionDeniedError,
    ServerUnavailableError,
    StreamExhaustedError,
    TransactionError,
    WrongTypeError,
    expiry_out_of_range,
    permission_denied,
    stream_exhausted,
)

__all__ = [
    "Transaction",
    "apply_batch",
    "current_transaction",
    "defer",
    "execute",
    "server_address",
    "transaction",
    "unavailable",
]

R = TypeVar("R")
OnResult = Callable[[Any], None]

_SHA = hashlib.sha1(SOURCE.encode()).hexdigest()

_current: ContextVar[Transaction | None] = ContextVar("ledgerset_transaction", default=None)


def current_transaction() -> Transaction | None:
    """The transaction open in this context, if any."""
    return _current.get()


async def execute(
    command: Command[R],
    redis: Redis,
    on_result: Callable[[R], None] | None = None,
    *,
    journal: StreamJournal | None = None,
) -> R | None:
    """Run ``command`` now, or buffer it into the open transaction and return ``None``.

    ``on_result`` is called with the command's result once it is applied (at once, or when the
    transaction commits); callers use it to keep their local state in step with the server.
    With a ``journal``, the command's entry is appended in the same atomic program.
    """
    tx = _current.get()
    if tx is not None:
        tx.buffer(command, redis, on_result, journal)
        return None
    program = Program()
    program.add(command)
    if journal is not None:
        _journal(program, [(command, journal)], _new_txn())
    started = time.perf_counter() if enabled(INFO) else None
    outcome = await _run(redis, program, command.name)
    if isinstance(outcome, Refusal):
        raise _refused(outcome)
    result = command.result(outcome)
    if on_result is not None:
        on_result(result)
    if started is not None:
        journal_id = outcome[-1] if journal is not None else None
        _executed(command, result, started, journal_id)
    return result


def _journal(
    program: Program, journaled: list[tuple[Command[Any], StreamJournal]], txn: str
) -> None:
    """Append a journal entry op for each command (compiled already), in order.

    ``seq``/``of`` count within each stream: a transaction over models with different journals
    leaves in each stream a complete transaction of its own commands.
    """
    ts = int(time.time() * 1000)
    ctx = bound_context()
    sizes: dict[str, int] = {}
    for _, journal in journaled:
        sizes[journal.stream] = sizes.get(journal.stream, 0) + 1
    seqs = dict.fromkeys(sizes, 0)
    for command, journal in journaled:
        stream = journal.stream
        seq = seqs[stream] = seqs[stream] + 1
        fields, effect = entry_fields(command, txn=txn, seq=seq, of=sizes[stream], ts=ts, ctx=ctx)
        # A pop's entry records its effect: the server adds the member its (first) op removed.
        popped = _first_op(program, command) + 1 if effect else 0
        index = program.op(OPS["JOURNAL"], (stream,), [journal.maxlen or 0, popped, fields])
        program.journaled[index] = command


def _first_op(program: Program, command: Command[Any]) -> int:
    return next(start for compiled, start, _ in program.spans if compiled is command)


def _new_txn() -> str:
    """A transaction id: 128 random bits as hex, like ``uuid4().hex`` at a fraction of its cost."""
    return os.urandom(16).hex()


def defer(
    command: Command[R],
    redis: Redis,
    on_result: Callable[[R], None] | None = None,
    *,
    journal: StreamJournal | None = None,
) -> None:
    """Buffer ``command`` into the open transaction (for sync callers, which cannot await).

    Callers check ``current_transaction()`` first; without one this is a programming error.
    """
    tx = _current.get()
    if tx is None:
        raise TransactionError(f"{command.name} on {command.key!r}: no transaction is open")
    tx.buffer(command, redis, on_result, journal)


async def apply_batch(
    redis: Redis,
    commands: list[Command[Any]],
    *,
    checkpoint: str,
    expected: str | None,
    new: str,
) -> Refusal | None:
    """Apply ``commands`` and move ``checkpoint`` from ``expected`` to ``new``, atomically.

    For replay: the batch and its checkpoint land together or not at all, so a replay stopped at
    any moment resumes exactly after the last batch applied. Returns why the server refused, if
    it did (a command's precondition, or ``checkpoint_moved`` by a concurrent replay).
    """
    program = Program()
    for command in commands:
        program.add(command)
    program.op(OPS["CHECKPOINT"], (checkpoint,), [expected or "", new])
    outcome = await _run(redis, program, "replay")
    return outcome if isinstance(outcome, Refusal) else None


class Transaction:
    """Commands buffered in this context; sent all-or-nothing, in one round trip, on exit.

    Use it through ``ledgerset.transaction()`` or ``model.apipeline()``. An exception inside the
    block sends nothing. ``commands`` lists what is buffered; ``results`` holds each command's
    result after the commit.
    """

    __slots__ = ("_callbacks", "_commands", "_journals", "_redis", "id", "results")

    def __init__(self) -> None:
        #: Names this transaction in log events (and, journaled, in its entries' ``txn``).
        self.id = _new_txn()
        self._commands: list[Command[Any]] = []
        self._callbacks: list[OnResult | None] = []
        self._journals: list[StreamJournal | None] = []
        self._redis: Redis | None = None
        self.results: list[object] | None = None

    @property
    def commands(self) -> tuple[Command[Any], ...]:
        """The buffered commands, in the order they will be applied."""
        return tuple(self._commands)

    def buffer(
        self,
        command: Command[R],
        redis: Redis,
        on_result: Callable[[R], None] | None,
        journal: StreamJournal | None = None,
    ) -> None:
        """Add ``command`` to the transaction (called by ``execute``)."""
        if not command.deferrable:
            raise TransactionError(
                f"{command.name} on {command.key!r} cannot run inside a transaction: its result "
                f"is needed at once, and a transaction only applies its commands on exit. "
                f"Call it before or after the transaction block."
            )
        if self._redis is None:
            self._redis = redis
        elif redis is not self._redis:
            raise TransactionError(
                f"{command.name} on {command.key!r} uses another Redis client than the "
                f"transaction's first command; one transaction runs on one server. "
                f"Use separate transactions, or give the models the same RedisConfig(redis=...)."
            )
        self._commands.append(command)
        self._callbacks.append(on_result)
        self._journals.append(journal)

    def discard_from(self, mark: int) -> None:
        """Drop the commands buffered after the first ``mark`` ones (a failed nested block)."""
        del self._commands[mark:]
        del self._callbacks[mark:]
        del self._journals[mark:]

    async def commit(self) -> None:
        """Send every buffered command in one atomic program; raise if the server refused it."""
        if not self._commands or self._redis is None:
            self.results = []
            return
        program = Program()
        for command in self._commands:
            program.add(command)
        journaled = [
            (command, journal)
            for command, journal in zip(self._commands, self._journals, strict=True)
            if journal is not None
        ]
        if journaled:
            _journal(program, journaled, self.id)
        started = time.perf_counter()
        outcome = await _run(self._redis, program, "transaction")
        if isinstance(outcome, Refusal):
            raise _refused(outcome, self)
        replies = outcome
        results: list[object] = []
        for (command, start, end), callback in zip(program.spans, self._callbacks, strict=True):
            result = command.result(replies[start:end])
            if callback is not None:
                callback(result)
            results.append(result)
        self.results = results
        if enabled(INFO):
            emit(
                INFO,
                "transaction.committed",
                txn=self.id,
                commands=len(self._commands),
                keys=len(program.keys),
                duration_ms=_ms_since(started),
            )


class transaction:
    """Open a transaction for this context; nested ones join the outermost.

    ``async with ledgerset.transaction() as tx:`` buffers every command executed in the block and
    commits them together on exit; an exception in the block discards them and propagates. A
    nested block that raises discards only what it buffered, like a savepoint, so an outer block
    that catches the exception commits the rest.
    """

    __slots__ = ("_mark", "_token", "_tx")

    def __init__(self) -> None:
        self._tx: Transaction | None = None
        self._token: Token[Transaction | None] | None = None
        self._mark = 0

    async def __aenter__(self) -> Transaction:
        outer = _current.get()
        if outer is not None:
            self._tx = outer
            self._mark = len(outer.commands)
            return outer
        self._tx = Transaction()
        self._token = _current.set(self._tx)
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:  # a nested block: the outermost one commits
            if exc_type is not None and self._tx is not None:
                self._tx.discard_from(self._mark)  # what the failed block queued never happened
            return
        _current.reset(self._token)
        self._token = None
        assert self._tx is not None
        if exc_type is None:
            await self._tx.commit()
        elif enabled(WARNING):
            emit(
                WARNING,
                "transaction.aborted",
                txn=self._tx.id,
                reason="exception",
                error=exc_type.__name__,
                commands=len(self._tx.commands),
            )


async def _run(redis: Redis, program: Program, what: str) -> list[object] | Refusal:
    """Send ``program`` in one EVALSHA; its replies, or why the server refused it."""
    command = ("EVALSHA", _SHA, len(program.keys), *program.keys, *program.argv)
    try:
        try:
            reply = await wire.call(redis, command)
        except NoScriptError:
            # The server lost its scripts (SCRIPT FLUSH, restart, failover): load, retry once.
            # Safe: NOSCRIPT means nothing of the program ran.
            await redis.script_load(SOURCE)
            if enabled(INFO):
                emit(INFO, "script.reloaded", sha=_SHA)
            reply = await wire.call(redis, command)
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
        raise unavailable(
            redis,
            what,
            exc,
            "The program runs atomically, so either all of it or none of it was applied; "
            "read the data back before retrying.",
        ) from exc
    if reply[0] == 1:
        return list(reply[1:])
    refusal = program.refusal(reply)
    if refusal.reason == "no_permission":
        refusal.user = await _acl_user(redis)
    return refusal


async def _acl_user(redis: Redis) -> str | None:
    """The connection's ACL user, to name in a permission error (``None`` if it cannot tell)."""
    try:
        user = await redis.acl_whoami()
    except Exception:  # the refusal is the error to report; a failure here only loses a name
        return None
    return user.decode() if isinstance(user, bytes) else str(user)


def server_address(redis: Redis) -> str:
    """``host:port`` (or the socket path) of the server ``redis`` talks to."""
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def unavailable(redis: Redis, what: str, exc: Exception, advice: str) -> ServerUnavailableError:
    """The error (and ``connection.error`` event) for losing the server during ``what``."""
    address = server_address(redis)
    if enabled(ERROR):
        emit(ERROR, "connection.error", address=address, command=what, error=str(exc))
    return ServerUnavailableError(
        f"{what}: cannot reach the Redis server at {address} ({exc}). {advice}",
        address=address,
    )


def _executed(command: Command[Any], result: object, started: float, journal_id: object) -> None:
    fields = _describe(command)
    if isinstance(result, (bool, int)):
        fields["result"] = result
    fields["duration_ms"] = _ms_since(started)
    if isinstance(journal_id, bytes):
        fields["journal_id"] = journal_id.decode()
    emit(INFO, "command.executed", **fields)
    members = getattr(command, "members", None)
    if members is not None and enabled(DEBUG):
        # Member values may be personal data: only ever in this debug event.
        values = [member.decode() for member in members]
        emit(DEBUG, "command.members", command=command.name, key=command.key, values=values)


def _describe(command: Command[Any]) -> dict[str, Any]:
    """The facts an event tells about ``command``: names, keys and counts, never member values."""
    fields: dict[str, Any] = {
        "command": command.name,
        "model": command.model,
        "pk": command.pk,
        "field": command.field,
        "key": command.key,
    }
    members = getattr(command, "members", None)
    if members is not None:
        fields["members"] = len(members)
    return fields


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _refused(
    refusal: Refusal, tx: Transaction | None = None
) -> (
    ModelNotFoundError
    | WrongTypeError
    | PermissionDeniedError
    | StreamExhaustedError
    | ExpiryOutOfRangeError
):
    """The error for a refused program; logs ``command.refused`` (and ``transaction.aborted``)."""
    command = refusal.command
    assert command is not None  # only a replay's checkpoint op belongs to no command
    if enabled(WARNING):
        facts = {**_describe(command), "key": refusal.key, "reason": refusal.reason}
        emit(WARNING, "command.refused", **facts)
        if tx is not None:
            emit(
                WARNING,
                "transaction.aborted",
                txn=tx.id,
                reason=refusal.reason,
                command=command.name,
                key=refusal.key,
                commands=len(tx.commands),
            )
    where = f"{command.model}.{command.field}" if command.field else command.model
    context = (
        f" (in a transaction of {len(tx.commands)} commands: none of them was applied)"
        if tx is not None
        else ""
    )
    if refusal.reason == "no_permission":
        return permission_denied(
            command.name, refusal.detail, refusal.key, refusal.user, command.model
        )
    if refusal.reason == "stream_exhausted":
        return stream_exhausted(command.name, refusal.key)
    if refusal.reason == "expiry_out_of_range":
        return expiry_out_of_range(command.name, command.model, refusal.key, refusal.detail)
    if refusal.reason == "model_not_found":
        return ModelNotFoundError(
            f"{command.name} on {where} refused: model key {refusal.key!r} is not in Redis "
            f"(never saved, deleted or expired); nothing was written{context}. "
            f"Save the model first with await model.asave().",
            model=command.model,
            key=refusal.key,
            command=command.name,
            pk=command.pk,
            field=command.field,
        )
    return WrongTypeError(
        f"{command.name} on {where} refused: key {refusal.key!r} holds a Redis "
        f"{refusal.detail}, not what ledgerset stored there; another client overwrote it. "
        f"Nothing was written{context}. Delete or rename that key, then retry.",
        key=refusal.key,
        actual=refusal.detail,
        command=command.name,
        model=command.model,
        pk=command.pk,
        field=command.field,
    )
