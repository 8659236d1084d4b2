"""Sending one command on a pooled redis-py connection: packed here, sent once, reply raw.

``Redis.execute_command`` does three things ledgerset must not or need not pay for on every call:
it resends a command after a connection error (a write whose reply was lost may have been applied
and must not be applied twice), it turns replies into Python types by command name (a set of
100,000 bytes for ``SMEMBERS``, which ledgerset only joins into a list again), and it packs the
arguments in a general-purpose loop. ``call`` sends a command exactly once, unless the caller
says it is a read (``resend=True``), and returns the reply as hiredis parsed it. On Python 3.11
it also honours cancellation where redis-py's send path may not (its ``asyncio.wait_for`` returns
a finished write's result to a task that was cancelled meanwhile, so the cancellation is lost).

Taking a connection from redis-py's pool and giving it back costs more than a tenth of a small
command's round trip (a lock, the pool's bookkeeping, its events). So for redis-py's own pools a
connection is taken and given back directly, with no await, when nothing else is going on in the
pool: no lock held, nobody waiting, no re-authentication due. Otherwise, and for any other pool,
the pool's own ``get_connection``/``release`` are used. Either way a connection is back in the
pool the moment its call ends: none is ever withheld from another caller, however small the pool.

A connection is used only in the event loop that connected it: one that a closed (or other) loop
left in the pool is dropped, without awaiting that loop, and a new one is made in this loop.

The reply is read from redis-py's hiredis parser directly (``_read``), as its ``read_response``
would, but without entering a new ``asyncio.timeout`` per reply: the socket timeout is kept by one
timer per connection (``_Watch``). A connection just given back in this loop, with nothing unread
and not closed by the server, is used without awaiting redis-py's ``can_read`` (``_ready``).

Which of these paths a pool gets is decided once per pool (``_access``) and remembered: the
direct write only for redis-py's own stream connections whose ``send_packed_command`` is redis-py's
(a subclass that overrides it is sent through it), the direct read only for those that also parse
with redis-py's hiredis parser and read with its ``read_response``, the pool's lists only for
redis-py's pools.
"""

# The redis-py internals this module reads or changes, tested against redis-py 8.1.0 (pyproject
# requires >= 8.0; nothing here serves an older one):
#   AbstractConnection: _writer (an asyncio.StreamWriter: write, drain, transport, its _loop),
#     _reader and _parser (on_disconnect) when a socket is abandoned, _re_auth_token;
#   _AsyncHiredisParser (redis._parsers.hiredis, with NOT_ENOUGH_DATA): _reader (the
#     hiredis.Reader: gets, feed, has_data), _stream (the asyncio.StreamReader: read, at_eof,
#     exception, _buffer), _connected, _hiredis_PushNotificationType, handle_push_response;
#   ConnectionPool: _available_connections, _in_use_connections, _lock;
#   BlockingConnectionPool: _condition (locked, _waiters), _in_maintenance;
#   redis._defaults.DEFAULT_SOCKET_TIMEOUT, a connection's socket_timeout when none is given.
# A few public methods redis-py leaves untyped (connect, get_connection, ...) are called with
# `type: ignore[no-untyped-call]`.
# Everything else is public API (get_connection, release, send_packed_command, read_response,
# can_read, connect, disconnect, should_reconnect). A redis-py upgrade is checked against this
# list; a pool or connection class that is not redis-py's takes only the public path.

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from collections.abc import Sequence
from typing import Any, cast

import redis as sync_redis
from redis._defaults import DEFAULT_SOCKET_TIMEOUT
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, DefaultParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ledgerset._server_errors import server_address
from ledgerset.errors import invalid_client, request_too_large

__all__ = ["TIMEOUT_S", "Arg", "call", "check_client", "drop_connections", "for_this_loop", "pack"]

Arg = bytes | str | int

#: How long a command waits for its reply when the client sets no ``socket_timeout`` of its own.
TIMEOUT_S = 30.0

#: The smallest ``proto-max-bulk-len`` a server accepts (1 MiB): a request whose arguments are all
#: shorter cannot exceed the limit, so only a larger one makes ledgerset ask the server for it.
SMALLEST_BULK_LIMIT = 1024 * 1024

#: The server's default ``proto-max-bulk-len``, assumed when ``CONFIG GET`` is not allowed.
DEFAULT_BULK_LIMIT = 512 * 1024 * 1024


def check_client(value: object, where: str, argument: str = "redis") -> Redis:
    """``value`` if it is a client ledgerset can use, else ``ConfigurationError`` naming ``where``.

    The one check for every place a client enters (``ledgerset.init``, ``RedisConfig(redis=...)``,
    ``replay``/``verify``): a ``redis.asyncio.Redis`` whose responses are raw bytes. A client that
    decodes responses would make ledgerset misread members (``apop`` returning ``None`` after it
    removed one), so it is refused before anything is sent.
    """
    if isinstance(value, Redis):
        if value.connection_pool.connection_kwargs.get("decode_responses"):
            problem = "the client decodes responses (decode_responses=True); ledgerset needs bytes"
            raise invalid_client(where, argument, value, problem)
        return value
    if value is None:
        problem = "got None"
    elif isinstance(value, sync_redis.Redis):
        problem = ("got a synchronous redis.Redis client; ledgerset is async, so use "
                   "redis.asyncio.Redis instead")  # fmt: skip
    else:
        problem = f"got a {type(value).__name__}, not a redis.asyncio.Redis client"
    raise invalid_client(where, argument, value, problem)


def pack(args: Sequence[Arg]) -> bytes:
    """``args`` in the Redis protocol (RESP): an array of bulk strings."""
    return _pack(args)[0]


def _pack(args: Sequence[Arg]) -> tuple[bytes, int]:
    """``args`` packed, and the length of the longest argument (0 if all are short)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    longest = 0
    for arg in args:
        if not isinstance(arg, bytes):
            arg = arg.encode() if isinstance(arg, str) else b"%d" % arg
        size = len(arg)
        if size < 256:
            append(_HEADERS[size])
        else:
            append(b"$%d\r\n" % size)
            longest = max(longest, size)
        append(arg)
        append(b"\r\n")
    return b"".join(parts), longest


#: The bulk-string headers of short arguments, formatted once (formatting is most of pack's cost).
_HEADERS = [b"$%d\r\n" % size for size in range(256)]


async def call(redis: Redis, args: Sequence[Arg], *, resend: bool = False) -> Any:
    """Send ``args`` as one command and return the raw reply.

    An error reply raises its ``ResponseError`` (e.g. ``NoScriptError``). A connection error or
    timeout raises, after one more attempt on a new connection only when ``resend`` is true: for
    reads, which are safe to repeat. An argument longer than the server's ``proto-max-bulk-len``
    raises ``RequestTooLargeError`` before anything is sent (the server would close the
    connection on it). Cancelling the calling task ends it with ``CancelledError``.
    """
    packed, longest = _pack(args)
    if longest > SMALLEST_BULK_LIMIT:
        await _check_size(redis, args, longest)
    try:
        return await _once(redis, packed)
    except (RedisConnectionError, RedisTimeoutError, TimeoutError):
        if not resend:
            raise
        return await _once(redis, packed)


async def _check_size(redis: Redis, args: Sequence[Arg], longest: int) -> None:
    # Asked each time rather than remembered: the limit can change (CONFIG SET), and a request
    # this large costs far more than the question.
    try:
        reply = await _once(redis, pack(("CONFIG", "GET", "proto-max-bulk-len")))
        values = list(reply.values()) if isinstance(reply, dict) else reply[1::2]  # RESP3, RESP2
        limit = int(values[0]) if values else DEFAULT_BULK_LIMIT
    except ResponseError:  # CONFIG not allowed (ACL, managed services): the server's default
        limit = DEFAULT_BULK_LIMIT
    if longest > limit:
        command = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        raise request_too_large(command, longest, limit, server_address(redis))


async def _fresh(connection: AbstractConnection) -> None:
    """Make ``connection`` ready for a command in this event loop before using it.

    redis-py's pool skips the stale-socket check while its maintenance notifications are on (the
    default), and a write must not find out by failing: it could not tell whether the server got
    it. A socket another event loop opened cannot serve this one (and that loop may be closed).
    """
    writer = getattr(connection, "_writer", None)
    if writer is not None and getattr(writer, "_loop", None) is not asyncio.get_running_loop():
        _abandon(connection)
    if not connection.is_connected:  # e.g. the client was closed, or the socket just abandoned
        await connection.connect()  # type: ignore[no-untyped-call]
        return
    try:
        stale = await connection.can_read()
    except (RedisConnectionError, OSError):
        stale = True
    if stale:
        await connection.disconnect()
        await connection.connect()  # type: ignore[no-untyped-call]


def _abandon(connection: AbstractConnection) -> None:
    """Forget the socket of ``connection``, which belongs to another event loop.

    Closing it the usual way would schedule a callback on its loop, which may be closed (``Event
    loop is closed``). Shutting the socket down ends the server's side now; the descriptor is
    closed with the transport object.
    """
    writer = connection._writer
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no socket (any more)
        if writer is not None:
            writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
    connection._parser.on_disconnect()  # type: ignore[no-untyped-call]
    connection._reader = connection._writer = None


def for_this_loop(redis: Redis) -> Redis:
    """``redis``, its pool rid of idle connections that another event loop opened.

    ledgerset's own calls check each connection they take; this is for redis-py's methods that
    ledgerset calls on the same client (``aget``'s pipeline), which would use such a connection
    and fail. The pool is swept once per event loop it is used in.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return redis
    pool = redis.connection_pool
    seen = _loop_of_pool.get(pool)
    if seen is not None and seen() is loop:
        return redis
    _loop_of_pool[pool] = weakref.ref(loop)
    for connection in getattr(pool, "_available_connections", ()):
        writer = getattr(connection, "_writer", None)
        if writer is not None and getattr(writer, "_loop", None) is not loop:
            _abandon(connection)  # the pool connects it again, in this loop, when it hands it out
    return redis


#: pool -> the event loop it was last swept for.
_loop_of_pool: weakref.WeakKeyDictionary[ConnectionPool, weakref.ref[asyncio.AbstractEventLoop]] = (
    weakref.WeakKeyDictionary()
)


def drop_connections(redis: Redis) -> None:
    """Forget every connection of ``redis``, a client whose event loop is gone, without awaiting.

    ``redis.aclose()`` would await that loop's sockets; this shuts them down and empties the
    pool instead, so the server sees them end and nothing waits on a closed loop.
    """
    pool = redis.connection_pool
    for connection in [*pool._available_connections, *pool._in_use_connections]:
        if getattr(connection, "_writer", None) is not None:
            _abandon(connection)
    pool._available_connections.clear()
    pool._in_use_connections.clear()


async def _discard(connection: AbstractConnection) -> None:
    """Close ``connection`` without waiting: a reply may still be on its way to it."""
    writer = getattr(connection, "_writer", None)
    if writer is not None and getattr(writer, "_loop", None) is not asyncio.get_running_loop():
        _abandon(connection)
    else:
        await connection.disconnect(nowait=True)


async def _send(connection: AbstractConnection, packed: bytes, direct: bool) -> None:
    """Write ``packed`` on ``connection``, within its ``socket_timeout``; without ``direct``
    (see ``_Access``), through its own ``send_packed_command``.

    redis-py's ``send_packed_command`` bounds every write with ``asyncio.wait_for``, which on
    Python 3.11 runs it in a task of its own, one more turn of the event loop: a third of a small
    command's cost on the client (and the turn in which a cancellation can be lost). A write the
    socket takes at once needs no bound; only a larger one waits for the socket to drain, and
    that wait is bounded.
    """
    writer = connection._writer if direct else None
    if writer is None:
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


def _address(connection: AbstractConnection) -> str:
    host, port = getattr(connection, "host", None), getattr(connection, "port", None)
    return f"{host}:{port}" if host is not None else repr(connection)


class _Access:
    """How ledgerset may use one pool: decided once (``_access``), on what its classes are."""

    __slots__ = ("blocking", "bounded", "direct", "direct_read", "own")

    def __init__(self, pool: ConnectionPool) -> None:
        kind = type(pool)
        #: A redis-py pool: when it is quiet, its two lists may be changed directly.
        self.own = issubclass(kind, ConnectionPool)
        self.blocking = issubclass(kind, BlockingConnectionPool)
        connection_class = getattr(pool, "connection_class", None)
        #: redis-py's stream connections, sent to by its own send_packed_command: the direct
        #: write does what that would do. A class that overrides it gets it called.
        self.direct = (
            isinstance(connection_class, type)
            and issubclass(connection_class, AbstractConnection)
            and connection_class.send_packed_command is AbstractConnection.send_packed_command
        )
        kwargs = getattr(pool, "connection_kwargs", {})
        #: ... and they parse with redis-py's hiredis parser, and read as redis-py's own
        #: connections do: the reply is read from the parser directly (``_read``).
        self.direct_read = (
            self.direct
            and kwargs.get("parser_class", DefaultParser) is _AsyncHiredisParser
            and connection_class.read_response is AbstractConnection.read_response  # type: ignore[union-attr]
        )
        #: The pool's connections have a socket_timeout: redis-py bounds every wait itself.
        self.bounded = kwargs.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT) is not None


def _access(pool: ConnectionPool) -> _Access:
    access = _accesses.get(pool)
    if access is None:
        access = _accesses[pool] = _Access(pool)
    return access


#: pool -> how ledgerset uses it.
_accesses: weakref.WeakKeyDictionary[ConnectionPool, _Access] = weakref.WeakKeyDictionary()


async def _once(redis: Redis, packed: bytes) -> Any:
    pool = redis.connection_pool
    access = _access(pool)
    if access.bounded:
        return await _exchange(pool, access, packed)
    async with asyncio.timeout(TIMEOUT_S):  # getting a connection too: it may have to connect
        return await _exchange(pool, access, packed)


async def _exchange(pool: ConnectionPool, access: _Access, packed: bytes) -> Any:
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    connection = _take(pool) if _quiet(pool, access) else None
    if connection is None:
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        if not _ready(connection, access):
            await _fresh(connection)
            _raise_if_cancelled(task, cancels)  # before anything is sent: nothing happened
        await _send(connection, packed, access.direct)
        if access.direct_read:
            reply = await _read(connection)
        else:
            reply = await connection.read_response()
        _raise_if_cancelled(task, cancels)
    except ResponseError as exc:
        # The whole reply was read, so the connection is fine, unless the server closes it
        # after this error (a protocol error): then the next call must not find it.
        if _closes_connection(exc):
            await _discard(connection)
        await _give_back(pool, access, connection)
        raise
    except BaseException:
        # A reply may still be on its way: this connection must not serve another command.
        await _discard(connection)
        await _give_back(pool, access, connection)
        raise
    await _give_back(pool, access, connection)
    return reply


def _ready(connection: AbstractConnection, access: _Access) -> bool:
    """Whether ``connection`` is known, without an await, to be ready for a command: connected
    in this event loop, nothing unread on it, the server has not closed it (``_fresh`` tells
    otherwise). For redis-py's hiredis connections only: it reads what ``can_read`` would."""
    if not access.direct_read:
        return False
    writer = connection._writer
    if writer is None or writer._loop is not asyncio.get_running_loop():  # type: ignore[attr-defined]
        return False
    parser = cast(_AsyncHiredisParser, connection._parser)
    reader: Any = parser._reader  # a hiredis.Reader once connected (redis-py types it None)
    stream = parser._stream
    return not (
        not parser._connected
        or reader is None
        or reader.has_data()
        or stream is None
        or stream.at_eof()
        or stream._buffer  # type: ignore[attr-defined]
        or stream.exception() is not None
    )


async def _read(connection: AbstractConnection) -> Any:
    """The reply to the command just sent on ``connection``, read as redis-py's hiredis parser
    would (errors raised, push notifications handled), within the connection's socket timeout.

    redis-py's ``read_response`` enters an ``asyncio.timeout`` around every reply: a timer
    scheduled and cancelled per call, several microseconds. Here the timeout is kept by one timer
    per connection (``_Watch``), moved forward by each read with no scheduling at all.
    """
    parser = cast(_AsyncHiredisParser, connection._parser)
    reader: Any = parser._reader  # a hiredis.Reader once connected (redis-py types it None)
    stream = parser._stream
    if reader is None or stream is None:  # disconnected meanwhile
        raise RedisConnectionError(f"Error while reading from {_address(connection)}: closed")
    reply = reader.gets()
    if reply is NOT_ENOUGH_DATA:
        watch = _watch(connection)
        try:
            while reply is NOT_ENOUGH_DATA:
                try:
                    data = await stream.read(65536)
                except OSError as exc:  # as redis-py's read_response says it
                    raise RedisConnectionError(
                        f"Error while reading from {_address(connection)}: {exc}"
                    ) from exc
                if not data:
                    if watch.expired:
                        raise RedisTimeoutError(f"Timeout reading from {_address(connection)}")
                    raise RedisConnectionError(
                        f"Error while reading from {_address(connection)}: the server closed the"
                        " connection"
                    )
                reader.feed(data)
                reply = reader.gets()
        finally:
            watch.reading = False
    if isinstance(reply, (ResponseError, RedisConnectionError)):
        raise reply
    push = parser._hiredis_PushNotificationType
    if push is not None and isinstance(reply, push):
        await parser.handle_push_response(reply)
        return await _read(connection)
    return reply


class _Watch:
    """The read timeout of one connection: one timer, re-armed only when it fires.

    A read sets ``due`` (now + the connection's socket timeout) and ``reading``; when the timer
    fires it looks: no read going on, it stops; the read started later than it was armed for,
    it waits for the new ``due``; else the read has waited too long, and it aborts the socket,
    which ends the read (``expired`` tells it why). A connection whose read timed out is never
    used again, as after redis-py's own timeout.
    """

    __slots__ = ("connection", "due", "expired", "handle", "loop", "reading", "timeout")

    def __init__(self, connection: AbstractConnection, loop: asyncio.AbstractEventLoop) -> None:
        self.connection = weakref.ref(connection)
        self.loop = loop
        timeout = connection.socket_timeout
        self.timeout = TIMEOUT_S if timeout is None else float(timeout)
        self.due = 0.0
        self.reading = False
        self.expired = False
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.due = self.loop.time() + self.timeout
        self.reading = True
        if self.handle is None:
            self.handle = self.loop.call_at(self.due, self._check)

    def _check(self) -> None:
        self.handle = None
        connection = self.connection()
        if not self.reading or connection is None:
            return
        if self.loop.time() < self.due:
            self.handle = self.loop.call_at(self.due, self._check)
            return
        self.expired = True
        writer = connection._writer
        if writer is not None:
            writer.transport.abort()  # the read sees the end of the stream, and raises


def _watch(connection: AbstractConnection) -> _Watch:
    """The started ``_Watch`` of ``connection`` in this event loop."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(connection)
    if watch is None or watch.loop is not loop or watch.expired:
        watch = _watches[connection] = _Watch(connection, loop)
    watch.start()
    return watch


#: connection -> its read timeout's timer.
_watches: weakref.WeakKeyDictionary[AbstractConnection, _Watch] = weakref.WeakKeyDictionary()


def _raise_if_cancelled(task: asyncio.Task[Any] | None, cancels: int) -> None:
    """Raise the cancellation of ``task`` that redis-py's code lost since ``cancels`` was counted.

    Connecting runs redis-py's handshake (``HELLO``, ``SELECT``, ``CLIENT SETINFO``) through its
    ``asyncio.wait_for``, which on Python 3.11 returns normally to a task cancelled meanwhile.
    The task still counts the request (``cancelling()``), so it is raised here.
    """
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError


def _closes_connection(error: ResponseError) -> bool:
    # Redis and Valkey reply "-ERR Protocol error: ..." and then close the connection.
    return str(error).startswith(("Protocol error", "ERR Protocol error"))


async def _give_back(pool: ConnectionPool, access: _Access, connection: AbstractConnection) -> None:
    if _quiet(pool, access) and _put(pool, connection):
        return
    await pool.release(connection)


def _quiet(pool: ConnectionPool, access: _Access) -> bool:
    """Whether ``pool`` is a redis-py pool that nothing else is changing or waiting on right now.

    Then taking or returning a connection is two list operations that no await can interleave
    with; the pool's own methods would add a lock, events and metrics for the same effect. While
    its lock is held (a maintenance update), or a caller waits for a connection (a blocking pool
    must wake it), the pool's own methods are used.
    """
    if not access.own or pool._lock.locked():
        return False
    if access.blocking:
        blocking = cast(BlockingConnectionPool, pool)
        condition = blocking._condition
        waiting = getattr(condition, "_waiters", None)
        return not (condition.locked() or waiting or blocking._in_maintenance)
    return True


def _take(pool: ConnectionPool) -> AbstractConnection | None:
    """An idle connection of ``pool``, taken as its ``get_connection`` would; ``None`` if none."""
    available = pool._available_connections
    if not available:
        return None  # the pool's get_connection makes one, waits for one, or refuses
    connection = available.pop()
    pool._in_use_connections.add(connection)
    return connection


def _put(pool: ConnectionPool, connection: AbstractConnection) -> bool:
    """Return ``connection`` to ``pool`` as its ``release`` would, if nothing else is due."""
    due = connection.should_reconnect()  # type: ignore[no-untyped-call]
    if due or connection._re_auth_token is not None:
        return False  # the pool's release() renews or re-authenticates it
    in_use = pool._in_use_connections
    if connection in in_use:  # else the pool was reset during the call and forgot it
        in_use.remove(connection)
        pool._available_connections.append(connection)
    return True
