"""Helpers the tests share: which server binary the suite runs, a whole-database snapshot, and
waiting for a process to end.

Imported as ``support`` (``tests/`` is on ``sys.path`` through its ``conftest.py``), never
through ``conftest``: pytest loads several ``conftest`` modules, and the name means the last one.
"""

from __future__ import annotations

import os
import select
from typing import Any

from redis.asyncio import Redis

from ledgerset.embedded import find_server_binary

Snapshot = dict[bytes, tuple[str, Any, int]]


def server_binary() -> str:
    """The server the suite starts: ``LEDGERSET_TEST_SERVER``, else the embedded default."""
    return os.environ.get("LEDGERSET_TEST_SERVER") or find_server_binary()


async def take_snapshot(redis: Redis) -> Snapshot:
    """Every key of the database: its type, its whole value, and whether it has a TTL."""
    state: Snapshot = {}
    for key in sorted(await redis.keys("*")):
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
