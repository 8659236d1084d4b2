"""Every ```python block of README.md and docs/*.md runs.

The README's example is a complete script: it runs as one, in a process of its own (it starts its
own embedded server), and prints what the README says it prints.

The blocks of a docs/ page run in order, in one namespace per page. Top-level ``await`` is
allowed, as in an asyncio REPL. The address the pages use, ``redis://localhost:6379/0``, is
replaced by the test server's, whose database is emptied first.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from redis.asyncio import Redis

import ledgerset

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
DOC_URL = "redis://localhost:6379/0"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line number, source)`` of each python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_every_page_has_examples() -> None:
    assert [page for page in PAGES if not python_blocks(page)] == []


def test_the_readme_example_runs_as_a_script(tmp_path: Path) -> None:
    ((_, source),) = python_blocks(README)
    script = tmp_path / "example.py"
    script.write_text(source, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    ran = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    promised = re.search(r"^It prints `(.*)`\.$", README.read_text(encoding="utf-8"), re.MULTILINE)
    assert promised is not None, "the README says what its example prints"
    assert ran.stdout == promised.group(1) + "\n"
    assert ran.stderr == ""


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
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
