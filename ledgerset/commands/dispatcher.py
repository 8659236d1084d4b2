"""The dispatcher: the one place that decides "now or later", and the only module that writes.

``execute(command, redis)`` sends the command at once, in one round trip (one ``EVALSHA`` of
``program.lua``), unless this task has a transaction open: then the command joins it and the call
returns ``None``. A transaction's commit compiles all its commands into one program, so they are
checked, applied and given their TTLs in one atomic step on the server, or not at all.

A transaction belongs to the task that opened it. asyncio copies the context into every task
started inside the block, transaction included, so the context alone cannot say whose it is: a
command from another task while the block is open raises ``TransactionError`` (buffering it would
commit it with a block it does not belong to; running it would silently take it out of the
transaction it was written in), and once the block has closed it runs at once.

When the outcome of a write cannot be known (cancelled, timed out, connection lost after sending),
the caller's ``on_unknown`` is told, so it can stop trusting its local copy of what it touched.

A refused program raises, naming the command and key: ``ModelNotFoundError`` (a model that does
not exist), ``WrongTypeError`` (a key of the wrong type), ``PermissionDeniedError`` (the ACL user
may not run a command the program needs), ``StreamExhaustedError`` (a journal stream takes no
more entries), ``ExpiryOutOfRangeError``; nothing was written.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from ledgerset._events import DEBUG, INFO, WARNING, emit, enabled
from ledgerset._server_errors import translate
from ledgerset.commands import wire
from ledgerset.commands.catalog import Command
from ledgerset.commands.program import OPS, SOURCE, Program, Refusal
from ledgerset.commands.record import StreamJournal, bound_context, entry_args, entry_fields
from ledgerset.errors import (
    ExpiryOutOfRangeError,
    ModelNotFoundError,
    PermissionDeniedError,
    RequestTooLargeError,
    StreamExhaustedError,
    TransactionError,
    WrongTypeError,
    entry_too_large,
    expiry_out_of_range,
    permission_denied,
    stream_exhausted,
)

__all__ = [
    "OnUnknown",
    "Transaction",
    "apply_batch",
    "defer",
    "execute",
    "run_program",
    "transaction",
    "transaction_for",
]

R = TypeVar("R")
OnResult = Callable[[Any], None]
#: Told the command whose outcome cannot be known (it may or may not have been applied).
OnUnknown = Callable[[Command[Any]], None]

_SHA = hashlib.sha1(SOURCE.encode()).hexdigest()

_current: ContextVar[Transaction | None] = ContextVar("ledgerset_transaction", default=None)

#: The pools (one per server) on which this process has run the program: a NOSCRIPT from one of
#: them means the server lost it; from any other, it is only the program's first load.
_ran: weakref.WeakSet[Any] = weakref.WeakSet()


def transaction_for(command: str, key: str) -> Transaction | None:
    """The transaction that ``command`` on ``key`` joins: the one this task opened, while open.

    ``None`` when there is none, or when the one in this context has closed (a task started in a
    transaction block and still running after it). While another task's transaction is open in
    this context, raises ``TransactionError``: the command is in neither transaction nor outside.
    """
    tx = _current.get()
    if tx is None or tx.closed:
        return None
    if tx.owned_by(_this_task()):
        return tx
    raise TransactionError(
        f"{command} on {key!r} comes from another task than the one that opened transaction "
        f"{tx.id}, which is still open (a task started inside its block, e.g. by "
        f"asyncio.create_task, asyncio.gather, asyncio.to_thread, or asyncio.wait_for on Python "
        f"3.11): a transaction belongs to the task that opened it, so the command was neither "
        f"buffered nor sent. Await it in that task (asyncio.timeout rather than wait_for), or "
        f"open a transaction of its own in the new task.",
        command=command,
        key=key,
    )


def _this_task() -> asyncio.Task[Any] | None:
    """The running task; ``None`` in a thread with no event loop (``asyncio.to_thread``)."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


async def execute(
    command: Command[R],
    redis: Redis,
    on_result: Callable[[R], None] | None = None,
    *,
    journal: StreamJournal | None = None,
    on_unknown: OnUnknown | None = None,
) -> R | None:
    """Run ``command`` now, or buffer it into this task's open transaction and return ``None``.

    ``on_result`` is called with the command's result once it is applied (at once, or when the
    transaction commits); callers use it to keep their local state in step with the server.
    ``on_unknown`` is called with the command when its outcome cannot be known (see
    ``_send_once``). With a ``journal``, the command's entry is appended in the same atomic program.
    """
    tx = transaction_for(command.name, command.key)
    if tx is not None:
        tx.buffer(command, redis, on_result, journal, on_unknown=on_unknown)
        return None
    program = Program()
    program.add(command)
    if journal is not None:
        _journal(program, [(command, journal)], _new_txn())
    started = time.perf_counter() if enabled(INFO) else None
    outcome = await _send_once(redis, program, command.name, [(command, on_unknown)])
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
    """Append journal entry ops for each command (compiled already), in order.

    A command's record too long for one entry may be several (``entry_args``). ``seq``/``of``
    count entries within each stream: a transaction over models with different journals leaves
    in each stream a complete transaction of its own commands.
    """
    ts = int(time.time() * 1000)
    ctxs: dict[StreamJournal, str] = {}  # each journal records the context its policy lets through
    sizes: dict[str, int] = {}
    entries = []
    for command, journal in journaled:
        parts = entry_args(command)
        entries.append((command, journal, parts))
        sizes[journal.stream] = sizes.get(journal.stream, 0) + len(parts)
        if journal not in ctxs:
            ctxs[journal] = bound_context(journal)
    seqs = dict.fromkeys(sizes, 0)
    for command, journal, parts in entries:
        stream = journal.stream
        for args in parts:
            seq = seqs[stream] = seqs[stream] + 1
            fields = entry_fields(
                command, args, txn=txn, seq=seq, of=sizes[stream], ts=ts, ctx=ctxs[journal]
            )
            # A pop's entry records its effect: the server adds the member its (first) op removed.
            popped = _first_op(program, command) + 1 if args is None else 0
            index = program.op(
                OPS["JOURNAL"],
                journal.append_keys(stream),
                [journal.maxlen or 0, popped, fields, *journal.chain_pads],
            )
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
    on_unknown: OnUnknown | None = None,
) -> None:
    """Buffer ``command`` into this task's open transaction (for sync callers, which cannot await).

    Callers check ``transaction_for()`` first; without a transaction this is a programming error.
    """
    tx = transaction_for(command.name, command.key)
    if tx is None:
        raise TransactionError(
            f"{command.name} on {command.key!r}: no transaction is open",
            command=command.name,
            key=command.key,
        )
    tx.buffer(command, redis, on_result, journal, on_unknown=on_unknown)


async def _send_once(
    redis: Redis,
    program: Program,
    what: str,
    commands: Iterable[tuple[Command[Any], OnUnknown | None]],
) -> list[object] | Refusal:
    """``_run(program)``; if it fails without the server's answer, tell each ``on_unknown``.

    Only a reply says what happened: a refusal or an error reply is the server's answer, given
    before the program's first write (it checks everything first); a request refused as too
    long was never sent. Anything else (the task cancelled, a timeout, the connection lost,
    before or after the request went out) leaves the outcome unknown, and callers must not act
    as if they knew it.
    """
    try:
        return await _run(redis, program, what)
    except (ResponseError, RequestTooLargeError):
        raise
    except BaseException:
        for command, on_unknown in commands:
            if on_unknown is not None:
                on_unknown(command)
        raise


async def apply_batch(
    redis: Redis,
    commands: list[Command[Any]],
    *,
    checkpoint: str,
    expected: str | None,
    new: str,
    key_types: Sequence[tuple[str, str]] = (),
) -> Refusal | None:
    """Apply ``commands`` and move ``checkpoint`` from ``expected`` to ``new``, atomically.

    For replay: the batch and its checkpoint land together or not at all, so a replay stopped at
    any moment resumes exactly after the last batch applied. ``key_types`` are ``(key, type)``
    pairs checked first: each key must hold that type (``hash``, ``set``) or nothing. Returns why
    the server refused, if it did (a command's precondition, a key of another type, or
    ``checkpoint_moved`` by a concurrent replay).
    """
    program = Program()
    for key, kind in key_types:
        program.op(OPS["EXPECT_TYPE"], (key,), [kind])
    for command in commands:
        program.add(command)
    program.op(OPS["CHECKPOINT"], (checkpoint,), [expected or "", new])
    outcome = await _run(redis, program, "replay")
    return outcome if isinstance(outcome, Refusal) else None


async def run_program(redis: Redis, program: Program, what: str) -> list[object] | Refusal:
    """Run a ``program`` built by the journal itself, of journal operations only (a snapshot's
    reads and entries, a trim): its replies, or why the server refused it. Sent once."""
    return await _run(redis, program, what)


@dataclass(frozen=True, slots=True)
class _Buffered:
    """One buffered command and what its caller wants done once its outcome is known, or not."""

    command: Command[Any]
    on_result: OnResult | None
    on_unknown: OnUnknown | None
    journal: StreamJournal | None


class Transaction:
    """Commands buffered by one task; sent all-or-nothing, in one round trip, on exit.

    Use it through ``ledgerset.transaction()`` or ``model.apipeline()``. An exception inside the
    block sends nothing. ``commands`` lists what is buffered; ``results`` holds each command's
    result after the commit. Only the task that opened it buffers into it, and only until its
    block exits (``closed``).
    """

    __slots__ = ("_buffered", "_owner", "_redis", "closed", "id", "results")

    def __init__(self) -> None:
        #: Names this transaction in log events (and, journaled, in its entries' ``txn``).
        self.id = _new_txn()
        self._buffered: list[_Buffered] = []
        self._redis: Redis | None = None
        self._owner = _this_task()
        #: True once the block has exited: nothing joins the transaction any more.
        self.closed = False
        self.results: list[object] | None = None

    @property
    def commands(self) -> tuple[Command[Any], ...]:
        """The buffered commands, in the order they will be applied."""
        return tuple(buffered.command for buffered in self._buffered)

    def owned_by(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task`` opened this transaction (and it is still open)."""
        return not self.closed and task is self._owner

    def close(self) -> None:
        """Accept no more commands (the block exited); forget the owning task."""
        self.closed = True
        self._owner = None

    def buffer(
        self,
        command: Command[R],
        redis: Redis,
        on_result: Callable[[R], None] | None,
        journal: StreamJournal | None = None,
        *,
        on_unknown: OnUnknown | None = None,
    ) -> None:
        """Add ``command`` to the transaction (called by ``execute`` and ``defer``)."""
        if not command.deferrable:
            raise TransactionError(
                f"{command.name} on {command.key!r} cannot run inside a transaction: its result "
                f"is needed at once, and a transaction only applies its commands on exit. "
                f"Call it before or after the transaction block.",
                command=command.name,
                key=command.key,
            )
        if self._redis is None:
            self._redis = redis
        elif redis is not self._redis:
            raise TransactionError(
                f"{command.name} on {command.key!r} uses another Redis client than the "
                f"transaction's first command; one transaction runs on one server. "
                f"Use separate transactions, or give the models the same RedisConfig(redis=...).",
                command=command.name,
                key=command.key,
            )
        self._buffered.append(_Buffered(command, on_result, on_unknown, journal))

    def discard_from(self, mark: int) -> None:
        """Drop the commands buffered after the first ``mark`` ones (a failed nested block)."""
        del self._buffered[mark:]

    async def commit(self) -> None:
        """Send every buffered command in one atomic program; raise if the server refused it.

        If the outcome cannot be known (cancelled, timed out, connection lost), every command's
        ``on_unknown`` is told: all of them were applied, or none.
        """
        if not self._buffered or self._redis is None:
            self.results = []
            return
        program = Program()
        for buffered in self._buffered:
            program.add(buffered.command)
        journaled = [
            (buffered.command, buffered.journal)
            for buffered in self._buffered
            if buffered.journal is not None
        ]
        if journaled:
            _journal(program, journaled, self.id)
        started = time.perf_counter()
        unknown = [(buffered.command, buffered.on_unknown) for buffered in self._buffered]
        outcome = await _send_once(self._redis, program, "transaction", unknown)
        if isinstance(outcome, Refusal):
            raise _refused(outcome, self)
        replies = outcome
        results: list[object] = []
        for (command, start, end), buffered in zip(program.spans, self._buffered, strict=True):
            result = command.result(replies[start:end])
            if buffered.on_result is not None:
                buffered.on_result(result)
            results.append(result)
        self.results = results
        if enabled(INFO):
            emit(
                INFO,
                "transaction.committed",
                txn=self.id,
                commands=len(self._buffered),
                keys=len(program.keys),
                duration_ms=_ms_since(started),
            )


class transaction:
    """Open a transaction for this task; nested ones in the same task join the outermost.

    ``async with ledgerset.transaction() as tx:`` buffers every command this task executes in the
    block and commits them together on exit; an exception in the block discards them and
    propagates. A nested block that raises discards only what it buffered, like a savepoint, so an
    outer block that catches the exception commits the rest. A block in a task started inside
    another task's block opens a transaction of its own.
    """

    __slots__ = ("_mark", "_token", "_tx")

    def __init__(self) -> None:
        self._tx: Transaction | None = None
        self._token: Token[Transaction | None] | None = None
        self._mark = 0

    async def __aenter__(self) -> Transaction:
        outer = _current.get()
        if outer is not None and outer.owned_by(_this_task()):
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
        # Before the commit awaits: tasks started in the block that run on now are outside it.
        self._tx.close()
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


#: A write lost after it was sent: the program may or may not have run.
_MAY_HAVE_LANDED = (
    "The program runs atomically, so either all of it or none of it was applied; "
    "read the data back before retrying."
)


async def _run(redis: Redis, program: Program, what: str) -> list[object] | Refusal:
    """Send ``program`` in one EVALSHA; its replies, or why the server refused it."""
    command = ("EVALSHA", _SHA, len(program.keys), *program.keys, *program.argv)
    pool = redis.connection_pool
    try:
        async with translate(what, redis, _MAY_HAVE_LANDED):
            try:
                reply = await wire.call(redis, command)
            except NoScriptError:
                # The server does not have the program (never loaded; SCRIPT FLUSH, restart,
                # failover): load, retry once. Safe: NOSCRIPT means nothing of the program ran.
                await wire.call(redis, ("SCRIPT", "LOAD", SOURCE), resend=True)
                if pool in _ran:  # it ran there before: the server lost it, worth an INFO
                    if enabled(INFO):
                        emit(INFO, "script.reloaded", sha=_SHA)
                elif enabled(DEBUG):
                    emit(DEBUG, "script.loaded", sha=_SHA)
                reply = await wire.call(redis, command)
            if pool not in _ran:
                _ran.add(pool)
    except RequestTooLargeError as exc:  # refused before sending: name the command it was for
        raise _entry_too_large(program, exc) from None
    if reply[0] == 1:
        return list(reply[1:])
    refusal = program.refusal(reply)
    if refusal.reason == "no_permission":
        refusal.user = await _acl_user(redis)
    return refusal


def _entry_too_large(program: Program, refused: RequestTooLargeError) -> RequestTooLargeError:
    """``refused`` naming the journaled command of ``program`` with the longest entry, which is
    the argument the wire refused (it holds the command's largest value too); as it is if none."""
    journaled = {id(command): command for command in program.journaled.values()}.values()
    if not journaled:
        return refused
    command = max(journaled, key=lambda each: max(len(args or b"") for args in entry_args(each)))
    if enabled(WARNING):
        emit(WARNING, "command.refused", **_describe(command), reason="request_too_large")
    return entry_too_large(command.name, command.model, command.pk, command.field, refused)


async def _acl_user(redis: Redis) -> str | None:
    """The connection's ACL user, to name in a permission error (``None`` if it cannot tell)."""
    try:
        user = await wire.call(redis, ("ACL", "WHOAMI"), resend=True)
    except Exception:  # the refusal is the error to report; a failure here only loses a name
        return None
    return user.decode() if isinstance(user, bytes) else str(user)


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
