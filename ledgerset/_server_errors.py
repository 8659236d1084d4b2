"""How redis-py's errors become ledgerset's: one translator for every read and write site.

``async with translate(what, redis, advice):`` around a call to the server turns what redis-py
raises into the ledgerset error a user can act on, named after ``what`` (the ledgerset command or
method that was running) and the server's ``host:port``:

==============================================  =============================================
redis-py raises                                 the block raises
==============================================  =============================================
``AuthenticationError`` (wrong user/password)   ``ServerUnavailableError``, "refused the
                                                credentials" (``credentials_refused``)
``ConnectionError``, ``TimeoutError``, an       ``ServerUnavailableError``, "cannot reach", and
``OSError`` of the socket; of a cluster, no     a ``connection.error`` event (``unavailable``)
node reachable, ``CLUSTERDOWN``
``NoPermissionError`` (``NOPERM``)              ``PermissionDeniedError`` naming the command,
                                                key (with ``command=``) and ACL user
``ResponseError`` ``WRONGTYPE``                 whatever ``wrong_type(exc)`` raises (the site
                                                knows which keys to look at): ``WrongTypeError``
==============================================  =============================================

Anything else passes through unchanged. ``NOSCRIPT`` is not translated here: it means nothing of
the program ran, and the dispatcher, which holds the program's source, loads it and runs it once
more. The translator is a plain class, not ``contextlib.asynccontextmanager``: it wraps every
write, and a generator per call would cost more than the rest of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoPermissionError,
    RedisClusterException,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ledgerset._events import ERROR, emit, enabled
from ledgerset.errors import ServerUnavailableError, permission_denied

__all__ = [
    "acl_user",
    "credentials_refused",
    "server_address",
    "translate",
    "translated",
    "unavailable",
]

#: What redis-py (and the socket under it) raises when the server cannot be reached in time;
#: of a cluster, when no node answers or the cluster is down (a failover under way).
_UNREACHABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OSError,
    RedisClusterException,
    ClusterDownError,
)

#: The advice of a read or of a write refused before it was sent.
NOTHING_CHANGED = "Nothing was changed."


def server_address(redis: Redis | RedisCluster) -> str:
    """``host:port`` (or the socket path) of the server ``redis`` talks to; of a cluster, the
    node it started from."""
    if isinstance(redis, RedisCluster):
        node = redis.get_default_node() or redis.startup_nodes[0]
        return f"{node.host}:{node.port} (cluster)"
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def unavailable(
    redis: Redis | RedisCluster, what: str, exc: BaseException, advice: str
) -> ServerUnavailableError:
    """The error (and ``connection.error`` event) for losing the server during ``what``."""
    address = server_address(redis)
    if enabled(ERROR):
        emit(ERROR, "connection.error", address=address, command=what, error=str(exc))
    return ServerUnavailableError(
        f"{what}: cannot reach the Redis server at {address} ({exc}). {advice}",
        address=address,
    )


def credentials_refused(
    redis: Redis | RedisCluster, what: str, exc: BaseException
) -> ServerUnavailableError:
    """The error for a server that refused the client's user name or password during ``what``."""
    address = server_address(redis)
    if enabled(ERROR):
        emit(ERROR, "connection.error", address=address, command=what, error=str(exc))
    return ServerUnavailableError(
        f"{what}: the Redis server at {address} refused the credentials ({exc}). Nothing was "
        f"changed. Give the right user and password (redis://user:password@host:port/db, or "
        f"the client's username= and password=).",
        address=address,
    )


def translated(
    exc: BaseException, what: str, redis: Redis | RedisCluster, advice: str
) -> ServerUnavailableError | None:
    """The error to raise for ``exc``, raised by redis-py during ``what``, if it is a lost server
    or refused credentials (``None``: let it go on). For a call site too hot for ``translate``:
    ``except BaseException as exc:``, then ``raise translated(...) from exc``."""
    # AuthenticationError is a ConnectionError to redis-py: looked at first.
    if isinstance(exc, AuthenticationError):
        return credentials_refused(redis, what, exc)
    if isinstance(exc, _UNREACHABLE):
        return unavailable(redis, what, exc, advice)
    return None


async def acl_user(redis: Redis | RedisCluster) -> str | None:
    """The client's ACL user, to name in a permission error (``None`` if it cannot tell: a
    failure here only loses a name, the refusal is the error to report)."""
    try:
        user = await redis.acl_whoami()
    except Exception:
        return None
    return user.decode() if isinstance(user, bytes) else str(user)


class translate:  # lower case: used as a statement, like contextlib's suppress
    """``async with translate(what, redis, advice):`` redis-py's errors as ledgerset's.

    ``advice`` ends the message of a lost server (a write that may have landed says "read the
    data back before retrying"). ``command``, the command sent, names the server command and key
    of a ``NOPERM``. ``wrong_type(exc)`` is awaited on a ``WRONGTYPE`` reply to raise the error
    that names the key; if it returns, the ``ResponseError`` goes on.
    """

    __slots__ = ("advice", "command", "redis", "what", "wrong_type")

    def __init__(
        self,
        what: str,
        redis: Redis | RedisCluster,
        advice: str = NOTHING_CHANGED,
        *,
        command: tuple[object, ...] | None = None,
        wrong_type: Callable[[ResponseError], Awaitable[None]] | None = None,
    ) -> None:
        self.what, self.redis, self.advice = what, redis, advice
        self.command, self.wrong_type = command, wrong_type

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        error = translated(exc, self.what, self.redis, self.advice)
        if error is not None:
            raise error from exc
        if isinstance(exc, NoPermissionError) and self.command is not None:
            server_command, *rest = (
                part.decode(errors="backslashreplace") if isinstance(part, bytes) else str(part)
                for part in self.command[:2]
            )
            key = rest[0] if rest else ""
            user = await acl_user(self.redis)
            raise permission_denied(self.what, server_command.upper(), key, user) from exc
        # ``in``, not ``startswith``: a pipeline puts "Command # 1 (...) of pipeline" first.
        if (
            isinstance(exc, ResponseError)
            and self.wrong_type is not None
            and "WRONGTYPE" in str(exc)
        ):
            await self.wrong_type(exc)
