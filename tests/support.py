"""Helpers the tests share: which server binary the suite runs, a whole-database snapshot (of
every primary, on a cluster), and waiting for a process to end.

Imported as ``support`` (``tests/`` is on ``sys.path`` through its ``conftest.py``), never
through ``conftest``: pytest loads several ``conftest`` modules, and the name means the last one.
"""

from __future__ import annotations

import os
import select
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ledgerset import RedisConfig
from ledgerset.embedded import find_server_binary

Snapshot = dict[bytes, tuple[str, Any, int]]


def server_binary() -> str:
    """The server the suite starts: ``LEDGERSET_TEST_SERVER``, else the embedded default."""
    return os.environ.get("LEDGERSET_TEST_SERVER") or find_server_binary()


async def take_snapshot(redis: Redis) -> Snapshot:
    """Every key of the database: its type, its whole value, and whether it has a TTL."""
    state: Snapshot = {}
    for key in sorted(await all_keys(redis)):
        kind = (await redis.type(key)).decode()
        value: Any
        if kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "string":
            value = await redis.get(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            value = await redis.xrange(key)
        else:
            value = None
        has_ttl = 1 if await redis.pttl(key) > 0 else 0
        state[key] = (kind, value, has_ttl)
    return state


async def all_keys(redis: Redis, pattern: str = "*") -> list[bytes]:
    """Every key matching ``pattern``: of the database, or of every primary of a cluster."""
    if isinstance(redis, RedisCluster):
        return await redis.keys(pattern, target_nodes=RedisCluster.PRIMARIES)  # type: ignore[no-any-return]
    return await redis.keys(pattern)  # type: ignore[no-any-return]


def spec_set_key(model: Any, field: str) -> str:
    """The documented key of set ``field`` of ``model`` under the configured layout: the
    specification's on one server, the model key braced on a cluster (docs/cluster.md)."""
    owner = f"{type(model).__name__}:{model.pk}"
    if RedisConfig().layout.cluster:
        return f"__rapyer_special__:{{{owner}}}:{field}"
    return f"__rapyer_special__:{owner}:{field}"


def wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    """Block until process ``pid`` has ended (its pidfd is readable), or fail after ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        assert readable, f"process {pid} still running after {timeout} s"
    finally:
        os.close(fd)
