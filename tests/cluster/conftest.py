"""Every test here runs on the run's embedded cluster: ``redis`` is a ``RedisCluster`` given to
``ledgerset.init``, its primaries flushed before each test (see ``tests/conftest.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def server_kind() -> str:
    return "cluster"
