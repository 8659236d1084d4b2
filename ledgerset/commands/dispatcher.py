"""The dispatcher: the one place that decides "now or later", and the only module that writes.

``execute(command, redis)`` sends the command at once, in one round trip (one ``EVALSHA`` of
``program.lua``), unless a transaction is open in the current context: then the command joins it
and the call returns ``None``. A transaction's commit compiles all its commands into one program,
so they are checked, applied and given their TTLs in one atomic step on the server, or not at all.

A refused program (a model that does not exist, a key of the wrong type) raises
``ModelNotFoundError`` or ``WrongTypeError`` naming the command and key; nothing was written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from ledgerset.commands.catalog import Command
from ledgerset.commands.program import SOURCE, Program, Refusal
from ledgerset.errors import ModelNotFoundError, TransactionError, WrongTypeError

__all__ = ["Transaction", "current_transaction", "defer", "execute", "transaction"]

R = TypeVar("R")
OnResult = Callable[[Any], None]

_SHA = hashlib.sha1(SOURCE.encode()).hexdigest()

_current: ContextVar[Transaction | None] = ContextVar("ledgerset_transaction", default=None)


def current_transaction() -> Transaction | None:
    """The transaction open in this context, if any."""
    return _current.get()


async def execute(
    command: Command[R], redis: Redis, on_result: Callable[[R], None] | None = None
) -> R | None:
    """Run ``command`` now, or buffer it into the open transaction and return ``None``.

    ``on_result`` is called with the command's result once it is applied (at once, or when the
    transaction commits); callers use it to keep their local state in step with the server.
    """
    tx = _current.get()
    if tx is not None:
        tx.buffer(command, redis, on_result)
        return None
    program = Program()
    program.add(command)
    replies = await _run(redis, program)
    result = command.result(replies)
    if on_result is not None:
        on_result(result)
    return result


def defer(command: Command[R], redis: Redis, on_result: Callable[[R], None] | None = None) -> None:
    """Buffer ``command`` into the open transaction (for sync callers, which cannot await).

    Callers check ``current_transaction()`` first; without one this is a programming error.
    """
    tx = _current.get()
    if tx is None:
        raise TransactionError(f"{command.name} on {command.key!r}: no transaction is open")
    tx.buffer(command, redis, on_result)


class Transaction:
    """Commands buffered in this context; sent all-or-nothing, in one round trip, on exit.

    Use it through ``ledgerset.transaction()`` or ``model.apipeline()``. An exception inside the
    block sends nothing. ``commands`` lists what is buffered; ``results`` holds each command's
    result after the commit.
    """

    __slots__ = ("_callbacks", "_commands", "_redis", "results")

    def __init__(self) -> None:
        self._commands: list[Command[Any]] = []
        self._callbacks: list[OnResult | None] = []
        self._redis: Redis | None = None
        self.results: list[object] | None = None

    @property
    def commands(self) -> tuple[Command[Any], ...]:
        """The buffered commands, in the order they will be applied."""
        return tuple(self._commands)

    def buffer(
        self, command: Command[R], redis: Redis, on_result: Callable[[R], None] | None
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

    async def commit(self) -> None:
        """Send every buffered command in one atomic program; raise if the server refused it."""
        if not self._commands or self._redis is None:
            self.results = []
            return
        program = Program()
        for command in self._commands:
            program.add(command)
        replies = await _run(self._redis, program, transaction_size=len(self._commands))
        results: list[object] = []
        for (command, start, end), callback in zip(program.spans, self._callbacks, strict=True):
            result = command.result(replies[start:end])
            if callback is not None:
                callback(result)
            results.append(result)
        self.results = results


class transaction:
    """Open a transaction for this context; nested ones join the outermost.

    ``async with ledgerset.transaction() as tx:`` buffers every command executed in the block and
    commits them together on exit; an exception in the block discards them and propagates.
    """

    __slots__ = ("_token", "_tx")

    def __init__(self) -> None:
        self._tx: Transaction | None = None
        self._token: Token[Transaction | None] | None = None

    async def __aenter__(self) -> Transaction:
        outer = _current.get()
        if outer is not None:
            self._tx = outer
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
            return
        _current.reset(self._token)
        self._token = None
        if exc_type is None:
            assert self._tx is not None
            await self._tx.commit()


async def _run(redis: Redis, program: Program, *, transaction_size: int = 0) -> list[object]:
    try:
        reply = await redis.evalsha(_SHA, len(program.keys), *program.keys, *program.argv)
    except NoScriptError:
        # The server lost its script cache (SCRIPT FLUSH, restart, failover): load and retry once.
        await redis.script_load(SOURCE)
        reply = await redis.evalsha(_SHA, len(program.keys), *program.keys, *program.argv)
    if reply[0] == 1:
        return list(reply[1:])
    raise _refusal_error(program.refusal(reply), transaction_size)


def _refusal_error(refusal: Refusal, transaction_size: int) -> ModelNotFoundError | WrongTypeError:
    command = refusal.command
    where = f"{command.model}.{command.field}" if command.field else command.model
    context = (
        f" (in a transaction of {transaction_size} commands: none of them was applied)"
        if transaction_size
        else ""
    )
    if refusal.reason == "model_not_found":
        return ModelNotFoundError(
            f"{command.name} on {where} refused: model key {refusal.key!r} is not in Redis "
            f"(never saved, deleted or expired); nothing was written{context}. "
            f"Save the model first with await model.asave().",
            model=command.model,
            key=refusal.key,
            command=command.name,
        )
    return WrongTypeError(
        f"{command.name} on {where} refused: key {refusal.key!r} holds a Redis "
        f"{refusal.actual}, not what ledgerset stored there; another client overwrote it. "
        f"Nothing was written{context}. Delete or rename that key, then retry.",
        key=refusal.key,
        actual=refusal.actual,
        command=command.name,
    )
