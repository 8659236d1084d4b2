"""Connection and per-model settings: ``ledgerset.init()``, ``ledgerset.aclose()``, ``RedisConfig``.

``await ledgerset.init(redis=...)`` sets the process-wide default connection and pings it, so a
wrong address fails there and then. A model's ``Meta = RedisConfig(...)`` overrides the defaults
for that model; what it leaves unset falls back to ``init``.

A redis-py client belongs to the event loop it first connects in. A client that ``init`` made
from a URL is ledgerset's own: used from another event loop (a second ``asyncio.run``, a test's
own loop), it is replaced by a new client for the same URL, and the old one is dropped without
awaiting its loop, which may be closed.
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import overload

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ResponseError

from ledgerset._server_errors import translate
from ledgerset.commands import routing, wire
from ledgerset.commands.program import MAX_TTL_MS
from ledgerset.commands.record import StreamJournal
from ledgerset.errors import (
    ModelDefinitionError,
    NotInitializedError,
    ServerUnavailableError,
    database_on_cluster,
    invalid_client,
    invalid_journal,
)
from ledgerset.keys import DEFAULT_SPECIAL_PREFIX, KeyLayout

__all__ = ["RedisConfig", "aclose", "default_journal", "default_redis", "init"]

#: Connection settings for clients that ``init`` creates from a URL: a lost server must surface
#: as an error within seconds, never as a hang. Retries are for connecting and for reads: the
#: dispatcher never resends a write.
CONNECT_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 30.0
CONNECT_RETRIES = 2


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Per-model settings, given as ``Meta = RedisConfig(...)`` in the model class.

    ``ttl``: how long after ``asave()`` the model and its sets expire (``None``: never): ``int``
    or ``float`` seconds (to the millisecond) or a ``datetime.timedelta``; ``ttl_ms`` holds it
    in milliseconds, as it is stored and journaled.
    ``redis``: the client this model uses instead of the one given to ``ledgerset.init``
    (a ``redis.asyncio.Redis``, or a ``redis.asyncio.cluster.RedisCluster``).
    ``special_prefix``: the first part of each set field's key.
    ``journal``: the ``StreamJournal`` recording this model's commands instead of ``init``'s.
    """

    ttl: float | timedelta | None = None
    redis: Redis | RedisCluster | None = None
    special_prefix: str = DEFAULT_SPECIAL_PREFIX
    journal: StreamJournal | None = None
    ttl_ms: int | None = field(init=False, default=None)

    @property
    def layout(self) -> KeyLayout:
        """The key layout of this model's keys: the cluster layout when its client (its own,
        else ``init``'s) is a cluster client."""
        client = self.redis if self.redis is not None else _defaults.redis
        return KeyLayout(self.special_prefix, cluster=routing.is_cluster(client))

    def __post_init__(self) -> None:
        if self.redis is not None:
            _check_client(self.redis, "RedisConfig")
        if self.ttl is not None:
            object.__setattr__(self, "ttl_ms", _ttl_ms(self.ttl))


def _ttl_ms(ttl: object) -> int:
    """``ttl`` in whole milliseconds, or ``ModelDefinitionError`` naming the model being defined."""
    ms: int | None = None
    if isinstance(ttl, timedelta):
        ms = round(ttl / timedelta(milliseconds=1))
    elif isinstance(ttl, int) and not isinstance(ttl, bool):
        ms = ttl * 1000
    elif isinstance(ttl, float) and math.isfinite(ttl):
        ms = round(ttl * 1000)
    if ms is not None and 0 < ms <= MAX_TTL_MS:
        return ms
    # RedisConfig is built in the class body of the model it configures (Meta = RedisConfig(...)):
    # that frame's __qualname__ names the model, before the class exists. Three frames up:
    # __post_init__, the dataclass's __init__, then its caller.
    frame = sys._getframe(3)
    qualname = frame.f_locals.get("__qualname__") if "__module__" in frame.f_locals else None
    model = str(qualname).rpartition(".")[2] if qualname else ""
    what = "not a duration" if ms is None else "too large" if ms > 0 else "not above 0 ms"
    raise ModelDefinitionError(
        f"{model or 'a model'}: RedisConfig(ttl={ttl!r}) is {what}: give int or float seconds "
        f"(to the millisecond) or a datetime.timedelta, above 0 and at most {MAX_TTL_MS // 1000} "
        f"seconds (the longest expiry the server program accepts)",
        model=model,
        field="Meta.ttl",
    )


class _Defaults:
    redis: Redis | RedisCluster | None = None
    #: The URL init() made ``redis`` from: ledgerset owns (and closes) that client, and makes a
    #: new one for it in another event loop. ``None`` for an application's client.
    url: str | None = None
    #: Whether ``redis`` is a cluster client (made again as one for another event loop).
    cluster: bool = False
    #: The event loop ``redis`` was made in, when ledgerset owns it.
    loop: asyncio.AbstractEventLoop | None = None
    journal: StreamJournal | None = None


_defaults = _Defaults()


#: How ``init`` ends a "cannot reach" message.
_NO_SERVER = "Start a server there, or pass another address to ledgerset.init(redis=...)."


@overload
async def init(redis: Redis, journal: StreamJournal | None = None) -> Redis: ...


@overload
async def init(redis: RedisCluster, journal: StreamJournal | None = None) -> RedisCluster: ...


@overload
async def init(
    redis: Redis | RedisCluster | str, journal: StreamJournal | None = None
) -> Redis | RedisCluster: ...


async def init(
    redis: Redis | RedisCluster | str, journal: StreamJournal | None = None
) -> Redis | RedisCluster:
    """Set the default Redis connection (and journal) for every model; check the server answers.

    ``redis`` is a ``redis.asyncio.Redis`` client (created with ``decode_responses=False``, the
    default), a ``redis.asyncio.cluster.RedisCluster``, or a URL such as
    ``"redis://localhost:6379/0"``; a URL of a cluster node gets a cluster client (a cluster has
    database 0 only: another one is refused). On a cluster every model uses the cluster key
    layout (``docs/cluster.md``). ``journal`` records every command
    in a Redis Stream (``None``: no journal). A second call replaces the whole configuration,
    also from another event loop. Raises ``ConfigurationError`` for an unusable argument and
    ``ServerUnavailableError`` (with host:port) when the server cannot be reached; either way
    the previous configuration stays.
    """
    if journal is not None and not isinstance(journal, StreamJournal):
        raise invalid_journal("ledgerset.init", journal)
    client: Redis | RedisCluster
    if isinstance(redis, str):
        client = await _connect(redis)
        url: str | None = redis
    else:
        client = _check_client(redis, "ledgerset.init")
        url = None
    try:
        async with translate("ledgerset.init", client, _NO_SERVER):
            await routing.call(client, ("PING",), resend=True)
    except ResponseError as exc:
        if url is not None:
            await _close(client)
        if _SELECT_ON_CLUSTER in str(exc):
            raise database_on_cluster("ledgerset.init", redis) from None
        raise
    except ServerUnavailableError:
        if url is not None:
            await _close(client)
        raise
    replaced = _defaults.redis
    previous = _release_defaults()
    _defaults.redis, _defaults.url, _defaults.journal = client, url, journal
    _defaults.cluster = routing.is_cluster(client)
    _defaults.loop = asyncio.get_running_loop() if url is not None else None
    if previous is not None and previous is not client:
        await _close(previous)
    elif previous is None and replaced is not None and replaced is not client:
        await routing.aclose(replaced)  # an application's cluster: what ledgerset opened for it
    return client


#: What a cluster node answers a client that asks for another database than 0.
_SELECT_ON_CLUSTER = "SELECT is not allowed in cluster mode"


def _check_client(value: object, where: str) -> Redis | RedisCluster:
    if routing.is_cluster(value):
        return routing.check_cluster(value, where)
    return wire.check_client(value, where)


async def _connect(url: str) -> Redis | RedisCluster:
    """A client for ``url``: a cluster client when the server there is a cluster node.

    Asked once, with ``INFO cluster`` (``cluster_enabled:1``): a URL does not say.
    """
    probe = _from_url(url)
    try:
        async with translate("ledgerset.init", probe, _NO_SERVER):
            info = await wire.call(probe, ("INFO", "cluster"), resend=True)
    except ResponseError as exc:
        if _SELECT_ON_CLUSTER in str(exc):
            raise database_on_cluster("ledgerset.init", url) from None
        raise
    finally:
        await probe.aclose()
    if b"cluster_enabled:1" not in info:
        return _from_url(url)
    return _cluster_from_url(url)


async def _close(client: Redis | RedisCluster) -> None:
    await routing.aclose(client)
    await client.aclose()


async def aclose() -> None:
    """Forget the configuration ``init`` set, and close the client it made from a URL.

    A client the application passed to ``init`` is the application's to close. Models then
    raise ``NotInitializedError`` until the next ``init``. Safe to call more than once.
    """
    client = _defaults.redis
    previous = _release_defaults()
    _defaults.redis, _defaults.url, _defaults.loop, _defaults.journal = None, None, None, None
    if previous is not None:
        await _close(previous)
    elif client is not None:  # the application's client: only what ledgerset opened for it
        await routing.aclose(client)


def _cluster_from_url(url: str) -> RedisCluster:
    # No retry object: a RedisCluster retries reads itself, and ledgerset's writes never go
    # through it (routing.py).
    return RedisCluster.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S
    )


def _from_url(url: str) -> Redis:
    try:
        return Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CONNECT_RETRIES),
        )
    except ValueError as exc:  # redis-py's message names the schemes it accepts
        raise invalid_client("ledgerset.init", "redis", url, str(exc)) from exc


def _release_defaults() -> Redis | RedisCluster | None:
    """The client ledgerset owns, if it may be closed in this event loop; else dropped here.

    A client made in a loop that is no longer running cannot be closed (its sockets would
    schedule callbacks on that loop): its connections are forgotten instead.
    """
    owned = _defaults.redis if _defaults.url is not None else None
    if owned is None or _defaults.loop is _running_loop():
        return owned
    if isinstance(owned, RedisCluster):
        routing.drop(owned)
    else:
        wire.drop_connections(owned)
    return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def default_journal(config: RedisConfig | None) -> StreamJournal | None:
    """The journal recording a model's commands: its ``RedisConfig.journal``, else ``init``'s."""
    if config is not None and config.journal is not None:
        return config.journal
    return _defaults.journal


def default_redis(
    config: RedisConfig | None, model: str, *, swept: bool = True
) -> Redis | RedisCluster:
    """The client ``model`` uses: its own ``RedisConfig.redis``, else ``init``'s.

    ``init``'s client made from a URL is replaced by one for this event loop when used in
    another loop than the one it was made in; an application's client has the idle connections
    another loop opened dropped from its pool, for redis-py's own methods. The dispatcher's
    calls check each connection they take (the wire does), and need no sweep: ``swept=False``
    (a transaction's sync mutators ask once per command).
    """
    if config is not None and config.redis is not None:
        return _for_this_loop(config.redis) if swept else config.redis
    if _defaults.redis is None:
        raise NotInitializedError(
            f"{model} has no Redis connection: call await ledgerset.init(redis=...) first, "
            f"or give the model Meta = RedisConfig(redis=...)."
        )
    if _defaults.url is not None:
        loop = _running_loop()
        if loop is not None and loop is not _defaults.loop:
            _release_defaults()
            url = _defaults.url
            _defaults.redis = _cluster_from_url(url) if _defaults.cluster else _from_url(url)
            _defaults.loop = loop
    return _for_this_loop(_defaults.redis) if swept else _defaults.redis


def _for_this_loop(redis: Redis | RedisCluster) -> Redis | RedisCluster:
    # A cluster's per-primary clients check each connection they use (wire.py does).
    client = routing.plain(redis)
    return wire.for_this_loop(client) if client is not None else redis
