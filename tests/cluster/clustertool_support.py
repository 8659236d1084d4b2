"""Helpers of the tool's and replay's cluster tests (``from clustertool_support import ...``).

A journal on a cluster is one stream per slot (``keys.journal_stream``). ``copy_journal``
puts a single server's journal there, each entry (same id, same fields) in the stream of the
slot its model lives in on a cluster: what the cluster's own journaled writes append.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ledgerset.embedded import EmbeddedCluster
from ledgerset.keys import KeyLayout, journal_stream, key_slot

# The tool's helpers (``toolrun``) live beside the tool's tests; put them on the path when only
# these tests run, so that both directories import the one ``toolrun`` module.
_TOOL_TESTS = str(Path(__file__).parent.parent / "cli")
if _TOOL_TESTS not in sys.path:
    sys.path.append(_TOOL_TESTS)

STREAM = "ledgerset:journal"
CLUSTER = KeyLayout(cluster=True)


def slot_of(model: str, pk: str) -> int:
    """The slot a model lives in on a cluster (and so the slot of its journal entries)."""
    return key_slot(CLUSTER.model_key(model, pk))


async def copy_journal(
    single: Redis, cluster: RedisCluster, stream: str = STREAM, to_stream: str | None = None
) -> dict[str, list[str]]:
    """Copy ``stream`` of ``single`` into the slot streams of ``cluster``; the ids per stream."""
    placed: dict[str, list[str]] = {}
    for raw_id, fields in await single.xrange(stream):
        name = journal_stream(to_stream or stream, slot_of(fields[b"model"].decode(),
                                                           fields[b"pk"].decode()))  # fmt: skip
        await cluster.xadd(name, fields, id=raw_id)
        placed.setdefault(name, []).append(raw_id.decode())
    return placed


async def flush(cluster: EmbeddedCluster) -> None:
    """Empty every primary of ``cluster``."""
    for node in cluster.nodes:
        if node.role == "primary":
            client = Redis.from_url(node.url)
            await client.flushall()
            await client.aclose()


async def cluster_state(cluster: EmbeddedCluster) -> dict[bytes, object]:
    """Every key of every primary with its type and value: to compare before and after."""
    state: dict[bytes, object] = {}
    for node in cluster.nodes:
        if node.role != "primary":
            continue
        client = Redis.from_url(node.url)
        for key in await client.keys("*"):
            kind = (await client.type(key)).decode()
            value: object = kind
            if kind == "hash":
                value = await client.hgetall(key)
            elif kind == "set":
                value = await client.smembers(key)
            elif kind == "string":
                value = await client.get(key)
            elif kind == "stream":
                value = await client.xrange(key)
            state[key] = (kind, value)
        await client.aclose()
    return state


async def wait_for_client_command(cluster: EmbeddedCluster, command: str) -> None:
    """Return once a client of some primary has last run ``command`` (a tool is polling)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            client = Redis.from_url(node.url)
            try:
                clients = await client.client_list()
            finally:
                await client.aclose()
            if any(c["cmd"] == command for c in clients):
                return
    raise AssertionError(f"no client ran {command} within 60 s")
