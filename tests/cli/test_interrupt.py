"""Ctrl-C (SIGINT) during ``log``, ``replay`` and ``verify``: exit status 130, after one line
saying where the command stopped and that rerunning goes on from there.

Each command runs as a real subprocess over a journal long enough to take seconds; the signal is
sent once the command is visibly under way (rows printed, a checkpoint on the target), never
after a sleep. The readers below them must honour a cancellation too: cancelled at many points,
``read_entries`` ends with ``CancelledError`` instead of reading on to the end of the stream.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from toolrun import LEDGERSET, cli_env, run_cli, write_entries

from ledgerset.journal import read_entries
from ledgerset.journal.reader import read_for_display, read_last

CHECKPOINT = "ledgerset:replay:ledgerset:journal"


async def interrupt_when(
    args: list[str], ready: Callable[[subprocess.Popen[str], Path], Awaitable[bool]], out: Path
) -> tuple[int, str, float]:
    """Start the tool with ``args``, SIGINT it once ``ready``; its status, stderr, and how long
    it took to stop after the signal."""
    with out.open("w") as stdout:
        process = subprocess.Popen([str(LEDGERSET), *args], stdout=stdout,
                                   stderr=subprocess.PIPE, text=True, env=cli_env())  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not await ready(process, out):
                assert process.poll() is None, f"it ended first: {process.stderr.read()}"  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "it never got under way"
                await asyncio.sleep(0.02)
            sent = time.monotonic()
            process.send_signal(signal.SIGINT)
            status = process.wait(timeout=60)
            stopped = time.monotonic() - sent
            return status, process.stderr.read(), stopped  # type: ignore[union-attr]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stderr.close()  # type: ignore[union-attr]


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert "Traceback" not in stderr
    return lines[-1]


@pytest.fixture
async def long_journal(redis: Redis) -> list[str]:
    return await write_entries(redis, 60_000)


async def test_ctrl_c_during_log_exits_130_saying_where_it_stopped(
    long_journal: list[str], redis_url: str, tmp_path: Path
) -> None:
    async def printing(_: subprocess.Popen[str], out: Path) -> bool:
        return out.stat().st_size > 10_000

    status, stderr, stopped = await interrupt_when(["--url", redis_url, "log"], printing,
                                                   tmp_path / "log.txt")  # fmt: skip
    assert status == 130, stderr
    line = last_line(stderr)
    found = re.search(r"ledgerset log: interrupted, stopped after entry (\S+); rerun with "
                      r"--since (\S+) to go on", line)  # fmt: skip
    assert found, line
    assert found.group(1) == found.group(2) and found.group(1) in long_journal
    printed = (tmp_path / "log.txt").read_text()
    assert found.group(1) in printed and long_journal[-1] not in printed
    assert stopped < 10
    rerun = run_cli("--url", redis_url, "log", "--format", "json", "--since", found.group(1),
                    "--limit", "1")  # fmt: skip
    assert f'"id":"{found.group(1)}"' in rerun.stdout


async def test_ctrl_c_during_replay_exits_130_and_a_rerun_resumes(
    long_journal: list[str], redis_url: str, tmp_path: Path
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/12"
    target = Redis.from_url(url)
    await target.flushdb()

    async def applying(_: subprocess.Popen[str], __: Path) -> bool:
        return bool(await target.exists(CHECKPOINT))

    try:
        status, stderr, stopped = await interrupt_when(
            ["--url", redis_url, "replay", "--to-url", url], applying, tmp_path / "replay.txt"
        )
        assert status == 130, stderr
        line = last_line(stderr)
        reached = (await target.get(CHECKPOINT)).decode()
        assert reached != long_journal[-1], "the replay ran to its end"
        assert f"ledgerset replay: interrupted, stopped after entry {reached};" in line, line
        assert "rerun the same command to resume" in line
        assert "applied" not in (tmp_path / "replay.txt").read_text()  # no success summary
        assert stopped < 10
        rerun = run_cli("--url", redis_url, "replay", "--to-url", url)
        assert rerun.returncode == 0, rerun.stderr
        applied = int(re.search(r"applied (\d+) entries", rerun.stdout).group(1))  # type: ignore[union-attr]
        assert applied == len(long_journal) - long_journal.index(reached) - 1
    finally:
        await target.flushdb()
        await target.aclose()


async def test_ctrl_c_during_verify_exits_130(
    long_journal: list[str], redis_url: str, tmp_path: Path
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/13"
    target = Redis.from_url(url)
    await target.flushdb()

    async def replaying(_: subprocess.Popen[str], __: Path) -> bool:
        return bool(await target.exists(CHECKPOINT))

    try:
        status, stderr, _ = await interrupt_when(
            ["--url", redis_url, "verify", "--to-url", url], replaying, tmp_path / "verify.txt"
        )
        assert status == 130, stderr
        line = last_line(stderr)
        assert line.startswith("ledgerset verify: interrupted, stopped after entry "), line
        assert "OK" not in (tmp_path / "verify.txt").read_text()
    finally:
        await target.flushdb()
        await target.aclose()


@pytest.mark.parametrize("reader", ["read_entries", "read_for_display", "read_last"])
async def test_a_cancelled_reader_ends_with_cancelled_error(
    redis: Redis, reader: str
) -> None:
    await write_entries(redis, 20_000)
    rng = random.Random(7)

    async def last() -> int:
        return len(await read_last(redis, "ledgerset:journal", 20_000))

    read: dict[str, Callable[[], Awaitable[int]]] = {
        "read_entries": lambda: count(read_entries(redis)),
        "read_for_display": lambda: count(read_for_display(redis)),
        "read_last": last,
    }
    finished = 0
    for _ in range(40):
        task = asyncio.ensure_future(read[reader]())
        for _ in range(rng.randrange(80)):  # a cancel point counted in loop turns, not in time
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
            finished += 1
        except asyncio.CancelledError:
            pass
    assert finished == 0, f"{finished} of 40 cancelled reads went on to the end"
    assert await redis.ping()  # the client still answers its own calls


async def count(entries: object) -> int:
    total = 0
    async for _ in entries:  # type: ignore[attr-defined]
        total += 1
    return total
