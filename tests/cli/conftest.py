"""The ``cli`` fixture: run the installed console script (see ``toolrun``)."""

from __future__ import annotations

import pytest
from toolrun import Cli, run_cli


@pytest.fixture
def cli() -> Cli:
    return run_cli
