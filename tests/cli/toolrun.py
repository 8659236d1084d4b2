"""Helpers for the tool's tests (``from toolrun import ...``): run the console script, follow
what a running one prints (``following``, ``next_line``), write journals fast.

Every test runs the installed ``ledgerset`` script (with this checkout first on the path) against
the suite's real server, and looks at what an operator sees: stdout, stderr, the exit status,
and the server's state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet

LEDGERSET = Path(sys.executable).with_name("ledgerset")
STREAM = "ledgerset:journal"

Cli = Callable[..., subprocess.CompletedProcess[str]]


class ToolArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of the console script: no LEDGERSET_URL, unbuffered, 200 columns."""
    env = {name: value for name, value in os.environ.items() if name != "LEDGERSET_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script with ``args``; its exit status, stdout and stderr."""
    assert LEDGERSET.exists(), f"the console script is not installed at {LEDGERSET}"
    return subprocess.run(
        [str(LEDGERSET), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env if env is not None else cli_env(),
    )


@contextmanager
def following(*args: str, stop_within: float = 30) -> Iterator[subprocess.Popen[str]]:
    """The console script run with ``args`` (a ``tail``), its output read as it comes
    (``next_line``). When the block ends it is stopped with Ctrl-C (SIGINT), and must exit
    with status 0 within ``stop_within`` seconds, without a traceback; after a failure in the
    block it is killed. Its pipes are closed either way."""
    process = subprocess.Popen(
        [str(LEDGERSET), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=cli_env(),
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        yield process
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=stop_within) == 0, process.stderr.read()
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


async def next_line(process: subprocess.Popen[str]) -> str:
    """The next line ``process`` prints (without its newline), within 60 s; it must not have
    ended first."""
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)  # type: ignore[union-attr]
    assert line, f"{process.args} ended: {process.stderr.read()}"  # type: ignore[union-attr]
    return line.rstrip("\n")


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line on stderr (asserting there is exactly one, and no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


async def write_entries(redis: Redis, count: int) -> list[str]:
    """Append ``count`` well-formed ``set.add`` entries (one transaction each) to the journal,
    copied from a real one and sent in pipelines: a long journal in a second or two."""
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    article = await ToolArticle(pk="long").asave()
    await article.tags.aadd("first")
    (_, fields), = await redis.xrevrange(STREAM, count=1)  # fmt: skip
    for start in range(0, count, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for number in range(start, min(start + 5000, count)):
                pipe.xadd(STREAM, {**fields, b"txn": f"t{number}".encode(),
                                   b"args": f'{{"members":["m{number}"]}}'.encode()})  # fmt: skip
            await pipe.execute()
    return [raw_id.decode() for raw_id, _ in await redis.xrange(STREAM)]


async def wait_for_blocked_xread(redis: Redis, tail: subprocess.Popen[str]) -> None:
    """Return once a client of the server is blocked in XREAD (the tail is listening)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert tail.poll() is None, f"tail exited early: {tail.stderr.read()}"  # type: ignore[union-attr]
        clients = await redis.client_list()
        if any(c["cmd"] == "xread" and "b" in c["flags"] for c in clients):
            return
    pytest.fail("tail never blocked in XREAD")
