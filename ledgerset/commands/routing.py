"""Routing on a Redis/Valkey Cluster: each call to the primary that owns its keys' slot, sent once.

``call(redis, args, keys=...)`` is ``wire.call`` for either kind of client. On one server it *is*
``wire.call``. On a ``RedisCluster`` it sends the command on a plain ``redis.asyncio.Redis``
client of the primary that owns the slot of ``keys`` -- one client per primary, built from the
cluster client's connection settings and kept for the cluster's lifetime -- so ``wire.call``'s
per-connection reuse, its fast path and its send-once rule apply unchanged. redis-py's
``RedisCluster.execute_command`` is never used for a write: it resends a command whose reply was
lost (up to 10 times), and a program that timed out may have run.

The slot map is redis-py's (``RedisCluster.nodes_manager``). A redirection is the server saying
that nothing ran, so it is followed, up to ``MAX_REDIRECTIONS`` times:

- ``MOVED slot host:port``: the slot has a new owner for good (resharding done, a failover); the
  map is updated (``nodes_manager.move_slot``) and the command sent there.
- ``ASK slot host:port``: the slot is being migrated and this key is on the target already; the
  command goes there once, right after ``ASKING`` on the same connection, and the map is kept.
- ``TRYAGAIN``: during a migration, some of a program's keys have moved and some not; sent again
  after a short pause, until ``socket_timeout`` has passed.

``SCRIPT LOAD`` goes to every primary, so a program redirected to another one finds it there.

A connection lost or timed out after sending is an unknown outcome and raised as it is (the
caller reports it), and the slot map is reloaded before the next call: the node may be gone.
``CLUSTERDOWN``/``MASTERDOWN`` (a failover under way) and redirections that never settle are
raised as connection errors naming the node, so callers report them as ledgerset's
``ServerUnavailableError``; a raw ``MovedError`` or ``ClusterDownError`` never reaches a user.

Keys in more than one slot: a write is refused before anything is sent (``program_slot``, the one
check, names the models and their slots: ``CrossSlotError``); a read of set algebra (``SUNION``,
``SINTER``, ``SDIFF``, ``SINTERCARD``) is computed here from per-slot reads instead, which is
correct but not atomic (see ``docs/cluster.md``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any, TypeGuard

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    MovedError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ledgerset._events import WARNING, emit, enabled
from ledgerset.commands import wire
from ledgerset.commands.program import Program
from ledgerset.errors import CrossSlotError, invalid_client
from ledgerset.keys import key_slot

__all__ = [
    "MAX_REDIRECTIONS",
    "Client",
    "aclose",
    "call",
    "check_cluster",
    "is_cluster",
    "node_client",
    "plain",
    "primaries",
    "program_slot",
    "same_slot",
    "server",
    "transaction_read",
]

#: A client ledgerset writes through: one server's, or a cluster's.
Client = Redis | RedisCluster

#: How many ``MOVED``/``ASK`` a call follows before it gives up (redis-py's own bound is 16).
MAX_REDIRECTIONS = 16

#: The longest single pause between two ``TRYAGAIN``s, in seconds.
_TRYAGAIN_PAUSE_S = 0.05

#: The set-algebra reads computed from per-slot reads when their keys span slots.
_SCATTERED_READS = frozenset({b"SUNION", b"SINTER", b"SDIFF", b"SINTERCARD"})

#: A member list sent in one ``SMISMEMBER`` at most (a long one is sent in parts).
_MEMBERS_PER_CALL = 10_000


def is_cluster(redis: object) -> TypeGuard[RedisCluster]:
    """Whether ``redis`` is a cluster client (``redis.asyncio.cluster.RedisCluster``)."""
    return isinstance(redis, RedisCluster)


def plain(redis: Client) -> Redis | None:
    """``redis`` if it is one server's client; ``None`` for a cluster's.

    Asked on every call, so the two exact classes are told apart by their type:
    ``isinstance`` with either runs Python code (redis-py's client classes are typing
    Protocols) unless the type matches exactly, 0.6 us a time. Subclasses take ``isinstance``.
    """
    if type(redis) is Redis:
        return redis
    if type(redis) is RedisCluster:
        return None
    return redis if isinstance(redis, Redis) else None


def check_cluster(value: RedisCluster, where: str, argument: str = "redis") -> RedisCluster:
    """``value`` if ledgerset can use this cluster client, else ``ConfigurationError``.

    As for one server's client: responses must be raw bytes (``decode_responses=False``).
    """
    if value.get_connection_kwargs().get("decode_responses"):
        problem = "the client decodes responses (decode_responses=True); ledgerset needs bytes"
        raise invalid_client(where, argument, value, problem)
    return value


def program_slot(redis: Client, program: Program) -> int | None:
    """The one slot of every key of ``program`` on a cluster (``None`` on one server).

    Raises ``CrossSlotError`` before anything is sent when the keys span slots, naming each
    model with its slot (and logs ``command.refused``, reason ``cross_slot``): one atomic
    program can only run in one slot. Called once the commands are compiled and before their
    journal entries, which then go to that slot's stream.
    """
    if plain(redis) is not None:
        return None
    slots = {key_slot(key) for key in program.keys}
    if len(slots) == 1:
        return slots.pop()
    owners: dict[tuple[str, str], int] = {}
    for command, _, _ in program.spans:
        for address in command.addresses:
            owners.setdefault((address.model, address.pk), key_slot(address.key))
    error = CrossSlotError.spans_slots(
        commands=[command.name for command, _, _ in program.spans],
        models=[(model, pk, slot) for (model, pk), slot in owners.items()],
    )
    if enabled(WARNING):
        emit(
            WARNING,
            "command.refused",
            command=error.commands[0],
            commands=len(error.commands),
            models=[f"{model}:{pk}" for model, pk, _ in error.models],
            slots=sorted({slot for _, _, slot in error.models}),
            reason=error.reason,
        )
    raise error


def same_slot(redis: Client, keys: Sequence[str]) -> bool:
    """Whether one command over ``keys`` can run on the server: always, except on a cluster
    when they are in several slots."""
    return not isinstance(redis, RedisCluster) or len({key_slot(key) for key in keys}) <= 1


async def call(
    redis: Client, args: Sequence[wire.Arg], *, keys: Sequence[wire.Arg] = (), resend: bool = False
) -> Any:
    """``wire.call(redis, args, resend=resend)``, sent to the owner of ``keys`` on a cluster.

    ``keys`` are the command's keys (none: any primary answers, e.g. ``PING``). ``resend``
    marks a read, which may be sent once more after a lost connection, and which may span
    slots when it is set algebra (computed from per-slot reads). A write goes to the slot of
    its first key (``program_slot`` checked the rest); one whose keys span slots is refused
    by the server, before it runs, as ``CrossSlotError``.
    """
    client = plain(redis)
    if client is not None:
        return await wire.call(client, args, resend=resend)
    assert isinstance(redis, RedisCluster)  # cheap: the exact type, or a subclass (rare)
    nodes = await _nodes(redis)
    if args[0] != "EVALSHA" and _name(args[0]) == b"SCRIPT":  # the usual call, at a glance
        # Loaded on every primary: a redirection may take the program to any of them.
        replies = [await nodes.everywhere(node, args) for node in redis.get_primaries()]
        return replies[0]
    if not keys:
        return await nodes.send(None, args, resend)
    first = key_slot(_text(keys[0]))
    if not resend or all(key_slot(_text(key)) == first for key in keys[1:]):
        # A write's keys were checked by program_slot (one slot); should another caller's
        # span slots, the server refuses it (CROSSSLOT, below) before anything runs.
        return await nodes.send(first, args, resend)
    name = _name(args[0])
    if name in _SCATTERED_READS:
        return await _Scattered(nodes).run(name, args)
    raise CrossSlotError.keys_span_slots(name.decode(), [_text(key) for key in keys])


async def transaction_read(
    redis: Client, key: str, commands: Sequence[tuple[wire.Arg, ...]]
) -> list[Any]:
    """The replies to read-only ``commands`` on keys of ``key``'s slot, run in one MULTI/EXEC
    (one moment), as redis-py's pipeline parses them (``HGETALL``: a dict, ``SMEMBERS``: a set).

    On a cluster the transaction goes to the slot's primary through its plain client; a
    redirection (the map is stale, the slot moving) is followed: nothing was read.
    """
    if isinstance(redis, Redis):
        return await _pipelined(redis, commands)
    nodes = await _nodes(redis)
    deadline = asyncio.get_running_loop().time() + wire.TIMEOUT_S
    while True:
        client = nodes.client(nodes.owner(key_slot(key)))
        try:
            return await _pipelined(client, commands)
        except MovedError as moved:  # before AskError: a MovedError is one
            await redis.nodes_manager.move_slot(moved)
        except (AskError, TryAgainError):
            # The slot is moving: a MULTI cannot follow an ASK, so wait for the MOVED.
            if asyncio.get_running_loop().time() >= deadline:
                raise _lost(client, "its slot stayed in migration") from None
            await asyncio.sleep(_TRYAGAIN_PAUSE_S)


async def _pipelined(client: Redis, commands: Sequence[tuple[wire.Arg, ...]]) -> list[Any]:
    async with client.pipeline(transaction=True) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute()


def server(redis: Client) -> Any:
    """What names the server(s) behind ``redis``, for the dispatcher to remember where its
    program ran: one server's connection pool, or the cluster client (a NOSCRIPT from any of
    its primaries, after the program ran on the cluster, means a node lost it: a failover)."""
    client = plain(redis)
    return client.connection_pool if client is not None else redis


async def primaries(cluster: RedisCluster) -> dict[str, Redis]:
    """The client of each primary of ``cluster`` (by ``host:port``) that calls are routed
    through, for readers that visit every primary (a journal's slot streams, a replay's or a
    verify's scans): reused, kept for the cluster client's lifetime, closed by ``aclose``."""
    nodes = await _nodes(cluster)
    return {node.name: nodes.client(node) for node in cluster.get_primaries()}


def node_client(cluster: RedisCluster, node: ClusterNode) -> Redis:
    """The routed client of one ``node`` of ``cluster`` (a primary that joined since
    ``primaries``)."""
    return _nodes_of(cluster).client(node)


async def aclose(redis: Client) -> None:
    """Close the per-primary clients ledgerset opened for cluster ``redis`` (if any)."""
    nodes = _by_cluster.pop(redis, None) if isinstance(redis, RedisCluster) else None
    if nodes is not None:
        await nodes.aclose()


def drop(redis: Client) -> None:
    """Forget the per-primary clients of ``redis``, whose event loop is gone, without awaiting."""
    nodes = _by_cluster.pop(redis, None) if isinstance(redis, RedisCluster) else None
    if nodes is not None:
        for client in nodes.clients.values():
            wire.drop_connections(client)


class _Nodes:
    """The per-primary clients of one cluster client, and the routing of one call."""

    __slots__ = ("__weakref__", "clients", "cluster", "stale")

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        #: node name ("host:port") -> its client
        self.clients: dict[str, Redis] = {}
        #: A node was lost: reload the slot map before the next call.
        self.stale = False

    def owner(self, slot: int | None) -> ClusterNode:
        manager = self.cluster.nodes_manager
        if slot is None:
            return manager.default_node or self.cluster.get_random_node()
        return manager.get_node_from_slot(slot)

    def client(self, node: ClusterNode) -> Redis:
        client = self.clients.get(node.name)
        if client is None:
            # The cluster's own settings (credentials, timeouts, TLS), minus its maintenance
            # handler, which would try to manage a cluster through a one-server client.
            kwargs = {
                name: value
                for name, value in node.connection_kwargs.items()
                if name != "oss_cluster_maint_notifications_handler"
            }
            pool = ConnectionPool(
                connection_class=node.connection_class,
                max_connections=node.max_connections,
                **kwargs,
            )
            # from_pool: the client owns its pool, so closing it closes the pool's connections.
            client = self.clients[node.name] = Redis.from_pool(pool)
        return client

    def at(self, host: str, port: int) -> Redis:
        """The client of the node at ``host:port`` (an ``ASK`` target the map may not name)."""
        node = self.cluster.nodes_manager.get_node(host=host, port=port)
        if node is None:
            template = self.owner(None)
            kwargs = {k: v for k, v in template.connection_kwargs.items() if k not in ("host",)}
            kwargs.pop("port", None)
            node = ClusterNode(host, port, connection_class=template.connection_class, **kwargs)
        return self.client(node)

    async def send(self, slot: int | None, args: Sequence[wire.Arg], resend: bool) -> Any:
        """Send ``args`` to the owner of ``slot``, following redirections; never resend a write."""
        if self.stale:
            self.stale = False
            await self.cluster.nodes_manager.initialize()
        node = self.owner(slot)
        client = self.client(node)
        asking = False
        redirections = 0
        deadline: float | None = None
        while True:
            try:
                if asking:
                    return await _asking(client, args)
                return await wire.call(client, args, resend=resend)
            except MovedError as moved:  # before AskError: a MovedError is one
                await self.cluster.nodes_manager.move_slot(moved)
                client, asking = self.client(self.owner(moved.slot_id)), False
                redirections += 1
            except AskError as ask:
                client, asking = self.at(ask.host, ask.port), True
                redirections += 1
            except TryAgainError:
                loop = asyncio.get_running_loop()
                deadline = deadline or loop.time() + _timeout(client)
                if loop.time() >= deadline:
                    raise _lost(client, "its slot stayed in migration (TRYAGAIN)") from None
                await asyncio.sleep(_TRYAGAIN_PAUSE_S)  # the migration moves the rest meanwhile
            except ClusterDownError as down:  # a failover under way; nothing ran
                self.stale = True
                raise _lost(client, f"{down} (nothing was applied)") from down
            except ClusterCrossSlotError as refused:  # keys ledgerset did not lay out
                raise CrossSlotError.keys_span_slots(_name(args[0]).decode(), []) from refused
            except (RedisConnectionError, RedisTimeoutError, TimeoutError):
                self.stale = True
                raise
            if redirections >= MAX_REDIRECTIONS:
                raise _lost(client, f"still redirected after {MAX_REDIRECTIONS} redirections")

    async def everywhere(self, node: ClusterNode, args: Sequence[wire.Arg]) -> Any:
        """``args`` on ``node`` itself (no redirection applies: e.g. ``SCRIPT LOAD``)."""
        return await wire.call(self.client(node), args, resend=True)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()


async def _nodes(cluster: RedisCluster) -> _Nodes:
    nodes = _nodes_of(cluster)
    if not cluster.nodes_manager.slots_cache:  # never connected: load the slot map
        await cluster.initialize()
    return nodes


def _nodes_of(cluster: RedisCluster) -> _Nodes:
    nodes = _by_cluster.get(cluster)
    if nodes is None:
        nodes = _by_cluster[cluster] = _Nodes(cluster)
    return nodes


#: cluster client -> its per-primary clients.
_by_cluster: weakref.WeakKeyDictionary[RedisCluster, _Nodes] = weakref.WeakKeyDictionary()


async def _asking(client: Redis, args: Sequence[wire.Arg]) -> Any:
    """``ASKING`` then ``args``, on one connection, in one write; the reply to ``args``.

    ``ASKING`` lets the next command on its connection, only that one, run on the node that is
    importing the slot. Rare (only while a slot moves), so it takes the pool's ordinary path.
    """
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        async with asyncio.timeout(_timeout(client)):
            await connection.send_packed_command(wire.pack(("ASKING",)) + wire.pack(args))
            try:
                await connection.read_response(disable_decoding=True)
            finally:  # the command's reply follows, even after a refused ASKING: read it too
                reply = await connection.read_response(disable_decoding=True)
    except ResponseError:
        raise  # the command's error reply: both replies were read, the connection is fine
    except BaseException:
        await connection.disconnect(nowait=True)  # a reply may still be on its way
        raise
    finally:
        await pool.release(connection)
    return reply


def _timeout(client: Redis) -> float:
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    return float(timeout) if timeout else wire.TIMEOUT_S


def _lost(client: Redis, why: str) -> RedisConnectionError:
    kwargs = client.connection_pool.connection_kwargs
    return RedisConnectionError(f"cluster node {kwargs.get('host')}:{kwargs.get('port')}: {why}")


def _name(arg: wire.Arg) -> bytes:
    return (arg if isinstance(arg, bytes) else str(arg).encode()).upper()


def _text(arg: wire.Arg) -> str:
    return arg.decode(errors="backslashreplace") if isinstance(arg, bytes) else str(arg)


class _Scattered:
    """Set algebra over keys in several slots, from reads of one slot each.

    Each operand is read at its own moment, so the result is exact for sets that do not change
    meanwhile, and otherwise reflects each operand at the moment it was read. Intersections read
    the sizes first and send only the smallest set's members, as ``SMISMEMBER`` against the
    others, each answer narrowing what the next one is asked.
    """

    __slots__ = ("nodes",)

    def __init__(self, nodes: _Nodes) -> None:
        self.nodes = nodes

    async def run(self, name: bytes, args: Sequence[wire.Arg]) -> Any:
        if name == b"SINTERCARD":  # SINTERCARD numkeys key... [LIMIT limit]
            count = int(args[1])
            keys = [_text(key) for key in args[2 : 2 + count]]
            rest = [_text(arg).upper() for arg in args[2 + count :]]
            limit = int(rest[1]) if rest[:1] == ["LIMIT"] else 0
            found = len(await self.intersection(keys))
            return min(found, limit) if limit else found
        keys = [_text(key) for key in args[1:]]
        if name == b"SUNION":
            union: set[bytes] = set()
            for key in keys:
                union.update(await self.read(key, ("SMEMBERS", key)))
            return list(union)
        if name == b"SINTER":
            return await self.intersection(keys)
        first, *others = keys
        return await self.keep(list(await self.read(first, ("SMEMBERS", first))), others, False)

    async def intersection(self, keys: list[str]) -> list[bytes]:
        sizes = [int(await self.read(key, ("SCARD", key))) for key in keys]
        if 0 in sizes:
            return []
        ordered = [key for _, key in sorted(zip(sizes, keys, strict=True))]
        smallest, *others = ordered
        members = list(await self.read(smallest, ("SMEMBERS", smallest)))
        return await self.keep(members, others, True)

    async def keep(self, members: list[bytes], others: list[str], present: bool) -> list[bytes]:
        """``members`` that are in every one of ``others`` (``present``), or in none of them."""
        for key in others:
            if not members:
                break
            kept: list[bytes] = []
            for start in range(0, len(members), _MEMBERS_PER_CALL):
                part = members[start : start + _MEMBERS_PER_CALL]
                found = await self.read(key, ("SMISMEMBER", key, *part))
                kept.extend(m for m, hit in zip(part, found, strict=True) if bool(hit) is present)
            members = kept
        return members

    async def read(self, key: str, args: Sequence[wire.Arg]) -> Any:
        return await self.nodes.send(key_slot(key), args, True)
