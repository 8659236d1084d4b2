"""Every ```python block of README.md and docs/*.md runs, in order, one namespace per page.

Top-level ``await`` is allowed, as in an asyncio REPL. The address the pages use,
``redis://localhost:6379/0``, is replaced by the test server's, whose database is emptied first.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import pytest
from redis.asyncio import Redis

import ledgerset

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_URL = "redis://localhost:6379/0"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line number, source)`` of each python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_every_page_has_examples() -> None:
    assert [page for page in PAGES if not python_blocks(page)] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
async def test_page_runs(page: Path, redis: Redis, redis_url: str) -> None:
    # A module of its own, so classes defined in the page resolve their annotations like a script's.
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    sys.modules[module.__name__] = module
    try:
        for line, source in python_blocks(page):
            source = source.replace(DOC_URL, redis_url)
            code = compile(
                "\n" * (line - 1) + source,
                str(page),
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
            result = eval(code, module.__dict__)
            if result is not None:
                await result
    finally:
        del sys.modules[module.__name__]
        # Pages call ledgerset.init with a client of their own; later tests get the fixture's.
        await ledgerset.init(redis=redis)
