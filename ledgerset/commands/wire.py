"""Sending one command on a pooled redis-py connection: packed here, sent once, reply raw.

``Redis.execute_command`` does three things ledgerset must not or need not pay for on every call:
it resends a command after a connection error (a write whose reply was lost may have been applied
and must not be applied twice), it turns replies into Python types by command name (a set of
100,000 bytes for ``SMEMBERS``, which ledgerset only joins into a list again), and it packs the
arguments in a general-purpose loop. ``call`` sends a command exactly once, unless the caller
says it is a read (``resend=True``), and returns the reply as hiredis parsed it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
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
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


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
    try:
        stale = await connection.can_read()
    except (RedisConnectionError, OSError):
        stale = True
    if stale:
        await connection.disconnect()
        await connection.connect()


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
    connection = await pool.get_connection()
    try:
        await _fresh(connection)
        await connection.send_packed_command(packed)
        return await connection.read_response()
    except ResponseError:
        raise  # the whole reply was read: the connection is fine
    except BaseException:
        # A reply may still be on its way: this connection must not serve another command.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
