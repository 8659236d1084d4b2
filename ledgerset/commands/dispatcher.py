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

An immediate call is a transaction of one command: ``execute`` and ``Transaction.commit`` take
the same steps, ``_compile`` (commands and journal entries into one program) and ``_send`` (run
it once, the refusal's error, ``on_unknown``), then read replies and call ``on_result``
(``_commit`` for a transaction; ``execute`` for its one command, without slicing replies).

When the outcome of a write cannot be known (cancelled, timed out, connection lost after sending),
the caller's ``on_unknown`` is told, so it can stop trusting its local copy of what it touched.

A refused program raises, naming the command and key: ``ModelNotFoundError`` (a model that does
not exist), ``WrongTypeError`` (a key of the wrong type), ``PermissionDeniedError`` (the ACL user
may not run a command the program needs), ``StreamExhaustedError`` (a journal stream takes no
more entries), ``ExpiryOutOfRangeError``, ``ConflictError`` (an ``if_unchanged`` write over another
writer's change, or a store whose sources changed); nothing was written.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, NamedTuple, TypeVar, cast

from redis.exceptions import NoScriptError, ResponseError

from ledgerset._events import DEBUG, INFO, WARNING, emit, enabled
from ledgerset._server_errors import acl_user, translated
from ledgerset.commands import routing
from ledgerset.commands.catalog import AddMembers, Command, MembersCommand, RemoveMembers
from ledgerset.commands.program import OPS, SOURCE, Program, Refusal
from ledgerset.commands.record import StreamJournal, journal_ops, longest_entry
from ledgerset.commands.routing import Client
from ledgerset.errors import (
    ConflictError,
    ExpiryOutOfRangeError,
    ModelNotFoundError,
    PermissionDeniedError,
    RequestTooLargeError,
    StreamExhaustedError,
    TransactionError,
    WrongTypeError,
    conflict,
    entry_too_large,
    expiry_out_of_range,
    permission_denied,
    stream_exhausted,
)

__all__ = [
    "OnUnknown",
    "Transaction",
    "apply_batch",
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

#: The servers (``routing.server``: a pool, or a cluster) on which this process has run the
#: program: a NOSCRIPT from one of them means the server lost it; from any other, it is only the
#: program's first load.
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
    raise TransactionError.other_task(command, key, tx.id)


def _this_task() -> asyncio.Task[Any] | None:
    """The running task; ``None`` in a thread with no event loop (``asyncio.to_thread``)."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


async def execute(
    command: Command[R],
    redis: Client,
    on_result: Callable[[R], None] | None = None,
    *,
    journal: StreamJournal | None = None,
    on_unknown: OnUnknown | None = None,
) -> R | None:
    """Run ``command`` now, or buffer it into this task's open transaction and return ``None``.

    ``on_result`` is called with the command's result once it is applied (at once, or when the
    transaction commits); callers use it to keep their local state in step with the server.
    ``on_unknown`` is called with the command when its outcome cannot be known (see
    ``_send``). With a ``journal``, the command's entry is appended in the same atomic program.
    """
    tx = transaction_for(command.name, command.key)
    if tx is not None:
        tx.buffer(command, redis, on_result, journal, on_unknown=on_unknown)
        return None
    started = time.perf_counter() if enabled(INFO) else None
    # A transaction of one, through _commit's own steps; one command's replies need no slicing
    # (its result reads its ops' replies, first in the program), which this path, the most
    # frequent one, is spared.
    pending = (_Pending(command, on_result, on_unknown, journal),)
    replies = await _send(redis, _compile(redis, pending, None), pending, None)
    result = command.result(replies)
    if on_result is not None:
        on_result(result)
    if started is not None:
        journal_id = replies[-1] if journal is not None else None
        _executed(command, result, started, journal_id)
    return result


class _Pending(NamedTuple):
    """A command on its way to the server, and what its caller wants done once its outcome is
    known, or not. (A tuple: one is made for every immediate call.)"""

    command: Command[Any]
    on_result: OnResult | None
    on_unknown: OnUnknown | None
    journal: StreamJournal | None


async def _commit(
    redis: Client, pending: Sequence[_Pending], tx: Transaction
) -> tuple[Program, list[object]]:
    """Run a transaction's ``pending`` commands as one atomic program: the program, and each
    command's result, once its ``on_result`` has been called with it.

    ``_compile``, ``_send``, then each command is handed the replies of its own ops. An
    immediate call takes the same steps for its one command (``execute``).
    """
    program = _compile(redis, pending, tx)
    replies = await _send(redis, program, pending, tx)
    results: list[object] = []
    for (command, own), each in zip(program.replies_of(replies), pending, strict=True):
        result = command.result(own)
        if each.on_result is not None:
            each.on_result(result)
        results.append(result)
    return program, results


def _compile(redis: Client, pending: Sequence[_Pending], tx: Transaction | None) -> Program:
    """Every command of ``pending`` compiled into one program, with their journal entries
    (their transaction: ``tx``, or a new id for an immediate call). On a cluster, raises
    ``CrossSlotError`` when the program's keys span slots (``routing.program_slot``), and the
    entries go to its slot's stream."""
    program = Program()
    if len(pending) == 1:
        program.add(pending[0].command)
    else:
        _compile_commands(program, [each.command for each in pending], each=True)
    slot = routing.program_slot(redis, program)
    journaled = [(each.command, each.journal) for each in pending if each.journal is not None]
    if journaled:
        journal_ops(program, journaled, tx.id if tx is not None else _new_txn(), slot)
    return program


async def _send(
    redis: Client, program: Program, pending: Sequence[_Pending], tx: Transaction | None
) -> list[object]:
    """``_run(program)``: its replies; a refusal raises the error naming the refused command.

    Only a reply says what happened: a refusal or an error reply is the server's answer, given
    before the program's first write (it checks everything first), and a request refused as too
    long was never sent; anything else (the task cancelled, a timeout, the connection lost,
    before or after the request went out) leaves the outcome unknown, and every ``on_unknown``
    of ``pending`` is told before the exception propagates.
    """
    what = "transaction" if tx is not None else pending[0].command.name
    try:
        outcome = await _run(redis, program, what)
    except (ResponseError, RequestTooLargeError):
        raise
    except BaseException:
        for each in pending:
            if each.on_unknown is not None:
                each.on_unknown(each.command)
        raise
    if isinstance(outcome, Refusal):
        raise _refused(outcome, tx)
    return outcome


def _new_txn() -> str:
    """A transaction id: 128 random bits as hex, like ``uuid4().hex`` at a fraction of its cost."""
    return os.urandom(16).hex()


async def apply_batch(
    redis: Client,
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
    ``checkpoint_moved`` by a concurrent replay). It runs the program without what ``_commit``
    does around it (journal entries, results, callbacks): the checkpoint tells a resumed replay
    what landed.

    Consecutive adds (or removes) to one set compile into one operation and one bump of their
    model's version by their number: the same writes and the same version, in fewer steps (a
    journal's adds come one by one); a refusal of it names the first of them.
    """
    program = Program()
    for key, kind in key_types:
        program.op(OPS["EXPECT_TYPE"], (key,), [kind])
    _compile_commands(program, commands, each=False)
    program.op(OPS["CHECKPOINT"], (checkpoint,), [expected or "", new])
    outcome = await _run(redis, program, "replay")
    return outcome if isinstance(outcome, Refusal) else None


#: The commands whose runs on one set compile into one operation: applied in order or all at
#: once, their members do the same (a toggle's would not); each with the operation of a run that
#: replies with each command's own count.
_MERGED = {AddMembers: OPS["ADD_EACH"], RemoveMembers: OPS["REMOVE_EACH"]}


def _compile_commands(program: Program, commands: Sequence[Command[Any]], *, each: bool) -> None:
    """Compile ``commands`` into ``program``, in order. Consecutive adds (or removes) to one
    set compile into one operation and one bump of their model by their number: the same
    writes and the same version, in fewer steps (a transaction's adds, like a journal's, come
    one by one). ``each``: the operation replies with each command's own count (a
    transaction's results); else one SADD (SREM) of all their members (a replay's batch)."""
    run: list[MembersCommand[Any]] = []
    for command in commands:
        if run and not _continues(run[0], command):
            _add_run(program, run, each)
            run = []
        if type(command) in _MERGED:
            run.append(cast("MembersCommand[Any]", command))
        else:
            program.add(command)
    _add_run(program, run, each)


def _continues(first: MembersCommand[Any], command: Command[Any]) -> bool:
    """Whether ``command`` joins the run ``first`` started: the same kind, on the same set."""
    if type(command) is not type(first):
        return False
    return command.key == first.key and command.owner == first.owner  # (narrowed: first's class)


def _add_run(program: Program, run: Sequence[MembersCommand[Any]], each: bool) -> None:
    if len(run) <= 1:
        for command in run:
            program.add(command)
        return
    first = run[0]
    members = [member for command in run for member in command.members]
    if each:
        counts = [len(command.members) for command in run]
        program.add_run(run, _MERGED[type(first)], [len(run), *counts, *members], each=True)
    else:
        program.add_run(run, first.code, members, each=False)


async def run_program(redis: Client, program: Program, what: str) -> list[object] | Refusal:
    """Run a ``program`` built by the journal itself, of journal operations only (a snapshot's
    reads and entries, a trim): its replies, or why the server refused it. Sent once."""
    return await _run(redis, program, what)


class Transaction:
    """Commands buffered by one task; sent all-or-nothing, in one round trip, on exit.

    Use it through ``ledgerset.transaction()`` or ``model.apipeline()``. An exception inside the
    block sends nothing. ``commands`` lists what is buffered; ``results`` holds each command's
    result after the commit. Only the task that opened it buffers into it, and only until its
    block exits (``closed``).
    """

    __slots__ = ("_owner", "_pending", "_redis", "closed", "id", "results")

    def __init__(self) -> None:
        #: Names this transaction in log events (and, journaled, in its entries' ``txn``).
        self.id = _new_txn()
        self._pending: list[_Pending] = []
        self._redis: Client | None = None
        self._owner = _this_task()
        #: True once the block has exited: nothing joins the transaction any more.
        self.closed = False
        self.results: list[object] | None = None

    @property
    def commands(self) -> tuple[Command[Any], ...]:
        """The buffered commands, in the order they will be applied."""
        return tuple(each.command for each in self._pending)

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
        redis: Client,
        on_result: Callable[[R], None] | None,
        journal: StreamJournal | None = None,
        *,
        on_unknown: OnUnknown | None = None,
    ) -> None:
        """Add ``command`` to the transaction (called by ``execute``, and by the sync mutators,
        which found it with ``transaction_for``)."""
        if not command.deferrable:
            raise TransactionError.not_deferrable(command.name, command.key)
        if self._redis is None:
            self._redis = redis
        elif redis is not self._redis:
            raise TransactionError.other_client(command.name, command.key)
        self._pending.append(_Pending(command, on_result, on_unknown, journal))

    def discard_from(self, mark: int) -> None:
        """Drop the commands buffered after the first ``mark`` ones (a failed nested block)."""
        del self._pending[mark:]

    async def commit(self) -> None:
        """Send every buffered command in one atomic program; raise if the server refused it.

        If the outcome cannot be known (cancelled, timed out, connection lost), every command's
        ``on_unknown`` is told: all of them were applied, or none.
        """
        if not self._pending or self._redis is None:
            self.results = []
            return
        started = time.perf_counter()
        program, self.results = await _commit(self._redis, self._pending, self)
        if enabled(INFO):
            emit(
                INFO,
                "transaction.committed",
                txn=self.id,
                commands=len(self._pending),
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


async def _run(redis: Client, program: Program, what: str) -> list[object] | Refusal:
    """Send ``program`` in one EVALSHA; its replies, or why the server refused it."""
    command = ("EVALSHA", _SHA, len(program.keys), *program.keys, *program.argv)
    keys = program.keys
    try:
        try:
            reply = await routing.call(redis, command, keys=keys)
        except NoScriptError:
            # The server does not have the program (never loaded; SCRIPT FLUSH, restart,
            # failover): load, retry once. Safe: NOSCRIPT means nothing of the program ran.
            await routing.call(redis, ("SCRIPT", "LOAD", SOURCE), keys=keys, resend=True)
            if routing.server(redis) in _ran:  # it ran there before: the server lost it
                if enabled(INFO):
                    emit(INFO, "script.reloaded", sha=_SHA)
            elif enabled(DEBUG):
                emit(DEBUG, "script.loaded", sha=_SHA)
            reply = await routing.call(redis, command, keys=keys)
        # Where it ran (once per server: the set tells a later NOSCRIPT what it means).
        server = routing.server(redis)
        if server not in _ran:
            _ran.add(server)
    except RequestTooLargeError as exc:  # refused before sending: name the command it was for
        longest = longest_entry(program)
        if longest is None:
            raise
        if enabled(WARNING):
            emit(WARNING, "command.refused", **_event_fields(longest), reason="request_too_large")
        raise entry_too_large(longest.name, longest.model, longest.pk, longest.field, exc) from None
    except BaseException as exc:  # not `async with translate`: this runs on every write
        error = translated(exc, what, redis, _MAY_HAVE_LANDED)
        if error is None:
            raise
        raise error from exc
    if reply[0] == 1:
        return list(reply[1:])
    refusal = program.refusal(reply)
    if refusal.reason == "no_permission":
        refusal.user = await acl_user(redis)
    return refusal


def _executed(command: Command[Any], result: object, started: float, journal_id: object) -> None:
    fields = _event_fields(command)
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


def _event_fields(command: Command[Any]) -> dict[str, Any]:
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
    ConflictError
    | ModelNotFoundError
    | WrongTypeError
    | PermissionDeniedError
    | StreamExhaustedError
    | ExpiryOutOfRangeError
):
    """The error for a refused program; logs ``command.refused`` (and ``transaction.aborted``)."""
    command = refusal.command
    assert command is not None  # only a replay's checkpoint op belongs to no command
    if enabled(WARNING):
        facts = {**_event_fields(command), "key": refusal.key, "reason": refusal.reason}
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
    # The model the refusal names, of those the command touches (set.move: either of two).
    named = next(
        (a for a in command.addresses if refusal.key in (a.key, a.owner)), command.addresses[0]
    )
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
    if refusal.reason == "conflict":
        expected = getattr(command, "if_version", None)
        return conflict(
            command.name, named.model, named.pk, refusal.key, expected, refusal.detail, context
        )
    name, key = command.name, refusal.key
    if refusal.reason == "model_not_found":
        return ModelNotFoundError.refused(name, named.model, named.pk, named.field, key, context)
    return WrongTypeError.refused(
        name, command.model, command.pk, command.field, key, refusal.detail, context
    )
