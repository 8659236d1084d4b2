"""Sending one command on a pooled redis-py connection: packed here, sent once, reply raw.

``Redis.execute_command`` does three things ledgerset must not or need not pay for on every call:
it resends a command after a connection error (a write whose reply was lost may have been applied
and must not be applied twice), it turns replies into Python types by command name (a set of
100,000 bytes for ``SMEMBERS``, which ledgerset only joins into a list again), and it packs the
arguments in a general-purpose loop. ``call`` sends a command exactly once, unless the caller
says it is a read (``resend=True``), and returns the reply as hiredis parsed it.

Taking a connection from redis-py's pool and giving it back costs more than a tenth of a small
command's round trip (a lock, and the pool's bookkeeping). So a connection that just served a call
is kept aside, *parked*, for the next call in the same turn of the event loop: back-to-back awaits
(``await s.aadd(a); await s.aadd(b)``) reuse it without touching the pool. At the loop's next turn
with no call in flight, it goes back to the pool, so it is never withheld from other users of a
small ``BlockingConnectionPool`` for longer than that.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["TIMEOUT_S", "Arg", "call", "pack"]

Arg = bytes | str | int

#: How long a command waits for its reply when the client sets no ``socket_timeout`` of its own.
TIMEOUT_S = 30.0


def pack(args: Sequence[Arg]) -> bytes:
    """``args`` in the Redis protocol (RESP): an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        if not isinstance(arg, bytes):
            arg = arg.encode() if isinstance(arg, str) else b"%d" % arg
        size = len(arg)
        append(_HEADERS[size] if size < 256 else b"$%d\r\n" % size)
        append(arg)
        append(b"\r\n")
    return b"".join(parts)


#: The bulk-string headers of short arguments, formatted once (formatting is most of pack's cost).
_HEADERS = [b"$%d\r\n" % size for size in range(256)]


async def call(redis: Redis, args: Sequence[Arg], *, resend: bool = False) -> Any:
    """Send ``args`` as one command and return the raw reply.

    An error reply raises its ``ResponseError`` (e.g. ``NoScriptError``). A connection error or
    timeout raises, after one more attempt on a new connection only when ``resend`` is true: for
    reads, which are safe to repeat.
    """
    packed = pack(args)
    try:
        return await _once(redis, packed)
    except (RedisConnectionError, RedisTimeoutError, TimeoutError):
        if not resend:
            raise
        return await _once(redis, packed)


async def _fresh(connection: Any) -> None:
    """Reconnect a pooled connection the server closed (e.g. it restarted) before using it.

    redis-py's pool skips this check while its maintenance notifications are on (the default),
    and a write must not find out by failing: it could not tell whether the server got it.
    """
    if not connection.is_connected:  # e.g. the client was closed while this one was parked
        await connection.connect()
        return
    try:
        stale = await connection.can_read()
    except (RedisConnectionError, OSError):
        stale = True
    if stale:
        await connection.disconnect()
        await connection.connect()


async def _send(connection: Any, packed: bytes) -> None:
    """Write ``packed`` on ``connection``, within its ``socket_timeout``.

    redis-py's ``send_packed_command`` bounds every write with ``asyncio.wait_for``, which on
    Python 3.11 runs it in a task of its own, one more turn of the event loop: a third of a small
    command's cost on the client. A write the socket takes at once needs no bound; only a larger
    one waits for the socket to drain, and that wait is bounded.
    """
    writer = getattr(connection, "_writer", None)
    if writer is None:  # a connection class that is not redis-py's stream-based one
        await connection.send_packed_command(packed)
        return
    try:
        writer.write(packed)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(connection.socket_timeout):
                await writer.drain()
    except TimeoutError:
        # Closing would wait for the unsent bytes to go out, which is what timed out: drop them.
        # The server sees a request cut short, and discards it.
        writer.transport.abort()
        raise RedisTimeoutError(f"Timeout writing to {_address(connection)}") from None
    except OSError as exc:
        raise RedisConnectionError(f"Error writing to {_address(connection)}: {exc}") from exc


def _address(connection: Any) -> str:
    host, port = getattr(connection, "host", None), getattr(connection, "port", None)
    return f"{host}:{port}" if host is not None else repr(connection)


async def _once(redis: Redis, packed: bytes) -> Any:
    pool = redis.connection_pool
    if _socket_timeout(pool):  # redis-py bounds every wait itself
        return await _exchange(pool, packed)
    async with asyncio.timeout(TIMEOUT_S):  # getting a connection too: it may have to connect
        return await _exchange(pool, packed)


def _socket_timeout(pool: Any) -> float | None:
    """The ``socket_timeout`` of the pool's connections: given to the pool, or their default."""
    kwargs = pool.connection_kwargs
    if "socket_timeout" in kwargs:
        return kwargs["socket_timeout"]  # type: ignore[no-any-return]
    return _default_socket_timeout(pool.connection_class)


@functools.cache
def _default_socket_timeout(connection_class: type) -> float | None:
    # redis-py 8 defaults to 5 s; older ones to None. Ask the classes rather than assume.
    for cls in connection_class.__mro__:
        init = cls.__dict__.get("__init__")
        parameter = inspect.signature(init).parameters.get("socket_timeout") if init else None
        if parameter is not None:
            default = parameter.default
            return default if isinstance(default, (int, float)) else None
    return None


async def _exchange(pool: Any, packed: bytes) -> Any:
    connection = _parked.pop(pool, None)
    if connection is None:
        connection = await pool.get_connection()
    try:
        await _fresh(connection)
        await _send(connection, packed)
        reply = await connection.read_response()
    except ResponseError:
        _park(pool, connection)  # the whole reply was read: the connection is fine
        raise
    except BaseException:
        # A reply may still be on its way: this connection must not serve another command.
        await connection.disconnect(nowait=True)
        await pool.release(connection)
        raise
    _park(pool, connection)
    return reply


#: pool -> the connection its last call used, kept for the next call in the same loop turn.
_parked: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_releasing: set[asyncio.Task[None]] = set()


def _park(pool: Any, connection: Any) -> None:
    if pool in _parked or _should_reconnect(connection):
        _give_back(pool, connection)  # one parked connection per pool is enough
        return
    _parked[pool] = connection
    asyncio.get_running_loop().call_soon(_unpark, pool, connection)


def _unpark(pool: Any, connection: Any) -> None:
    """The loop turned: a connection still parked was not wanted by a back-to-back call."""
    if _parked.get(pool) is connection:
        del _parked[pool]
        _give_back(pool, connection)


def _give_back(pool: Any, connection: Any) -> None:
    task = asyncio.ensure_future(pool.release(connection))
    _releasing.add(task)  # the loop keeps only a weak reference to a task
    task.add_done_callback(_releasing.discard)


def _should_reconnect(connection: Any) -> bool:
    # redis-py marks the connections its maintenance notifications want renewed, and its pool's
    # release() renews them: such a connection goes back there rather than being parked.
    should_reconnect = getattr(connection, "should_reconnect", None)
    return bool(should_reconnect()) if should_reconnect is not None else False
