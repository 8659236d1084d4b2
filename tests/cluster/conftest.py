"""Every test here runs on the run's embedded cluster: ``redis`` is a ``RedisCluster`` given to
``ledgerset.init``, its primaries flushed before each test (see ``tests/conftest.py``).

The tool's tests (``test_tool_cluster.py``, ``test_replay_cluster.py``) keep ``redis`` on the
single server, where the journals they move or read start, and reach the cluster through
``embedded`` (the run's ``EmbeddedCluster``) and ``cluster`` (a client of it, flushed first).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from clustertool_support import flush
from redis.asyncio.cluster import RedisCluster

from ledgerset.embedded import EmbeddedCluster


@pytest.fixture
def server_kind() -> str:
    return "cluster"


@pytest.fixture
def embedded(embedded_cluster: EmbeddedCluster) -> EmbeddedCluster:
    return embedded_cluster


@pytest.fixture
async def cluster(embedded: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    await flush(embedded)
    client = RedisCluster.from_url(embedded.url)
    yield client
    await client.aclose()
