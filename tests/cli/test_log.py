"""``ledgerset log`` and ``tail`` as an operator sees them: foreign entries, long journals, width.

A foreign entry (``XADD ledgerset:journal * hello world``) or a malformed one is shown flagged
and the listing goes on; the table streams (the first lines of a long journal come at once, and
memory stays flat); ``--limit``/``--last``; the date in the time column; 80 columns without
losing the ctx column or cutting a name across lines; ``tail`` with the columns of ``log``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from redis.asyncio import Redis
from rich.cells import cell_len
from toolrun import (
    LEDGERSET,
    STREAM,
    Cli,
    ToolArticle,
    cli_env,
    following,
    next_line,
    one_line,
    wait_for_blocked_xread,
    write_entries,
)

import ledgerset

#: The first line of a table row: it starts with the entry's id.
ROW = re.compile(r"\d{13}-")


@pytest.fixture
async def with_foreign_entry(redis: Redis, clean_structlog: None) -> list[str]:
    """A journal of two good entries, a foreign one, and a good one: their ids in order."""
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    article = await ToolArticle(pk="a1").asave()
    await article.tags.aadd("before")
    await redis.xadd(STREAM, {"hello": "world"})
    await article.tags.aadd("after")
    return [raw_id.decode() for raw_id, _ in await redis.xrange(STREAM)]


async def test_log_table_flags_a_foreign_entry_and_goes_on(
    with_foreign_entry: list[str], redis_url: str, cli: Cli
) -> None:
    result = cli("--url", redis_url, "log")
    assert result.returncode == 0, result.stderr
    rows = {entry_id: line for line in result.stdout.splitlines()
            for entry_id in with_foreign_entry if line.startswith(entry_id)}  # fmt: skip
    assert rows.keys() == set(with_foreign_entry)  # every entry, the ones after it too
    foreign = rows[with_foreign_entry[2]]
    assert "MALFORMED" in foreign
    assert "not a ledgerset entry" in result.stdout and "hello=world" in result.stdout
    assert '"after"' in result.stdout
    assert "MALFORMED" in one_line(result) and "XDEL" in result.stderr


async def test_log_json_flags_a_foreign_entry_and_goes_on(
    with_foreign_entry: list[str], redis_url: str, cli: Cli
) -> None:
    result = cli("--url", redis_url, "log", "--format", "json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == with_foreign_entry
    foreign = lines[2]
    assert foreign["fields"] == {"hello": "world"}
    assert "not a ledgerset entry" in foreign["malformed"]
    assert lines[3]["args"] == {"members": ["after"]}


async def test_log_model_filter_skips_a_foreign_entry_that_is_not_that_models(
    with_foreign_entry: list[str], redis: Redis, redis_url: str, cli: Cli
) -> None:
    result = cli("--url", redis_url, "log", "--format", "json", "--model", "ToolArticle")
    assert result.returncode == 0, result.stderr
    ids = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert ids == [with_foreign_entry[index] for index in (0, 1, 3)]
    assert result.stderr == ""
    # A malformed entry that names the model is that model's, and is shown, flagged.
    (_, fields), = await redis.xrange(STREAM, count=1)  # fmt: skip
    bad = (await redis.xadd(STREAM, {**fields, b"ts": b"yesterday"})).decode()
    table = cli("--url", redis_url, "log", "--model", "ToolArticle")
    assert table.returncode == 0, table.stderr
    (row,) = [line for line in table.stdout.splitlines() if line.startswith(bad)]
    assert "MALFORMED" in row
    assert "field 'ts' is 'yesterday', not a whole number" in table.stdout


@pytest.mark.parametrize("output", ["table", "json"])
async def test_log_model_filter_matching_nothing_warns_with_the_journals_models(
    with_foreign_entry: list[str], redis: Redis, redis_url: str, cli: Cli, output: str
) -> None:
    before = await redis.xlen(STREAM)
    typo = cli("--url", redis_url, "log", "--format", output, "--model", "toolarticle")
    assert typo.returncode == 1
    assert not ROW.search(typo.stdout) and '"id"' not in typo.stdout  # no entry was shown
    assert "--model 'toolarticle' matches no entry of 'ledgerset:journal'" in typo.stderr
    assert "(its models: ToolArticle)" in typo.stderr
    assert await redis.xlen(STREAM) == before  # a read, nothing written
    ranged = cli("--url", redis_url, "log", "--model", "Nope", "--since", with_foreign_entry[3])
    assert ranged.returncode == 1 and "in the range given" in ranged.stderr
    found = cli("--url", redis_url, "log", "--model", "ToolArticle")
    assert found.returncode == 0 and "matches no entry" not in found.stderr


async def read_until(tail: subprocess.Popen[str], needle: str) -> list[str]:
    """The tail's stdout lines up to and including the first one holding ``needle``."""
    lines: list[str] = []
    while not lines or needle not in lines[-1]:
        lines.append(await next_line(tail))
    return lines


async def test_tail_shows_a_foreign_entry_flagged_and_keeps_following(
    with_foreign_entry: list[str], redis: Redis, redis_url: str
) -> None:
    with following("--url", redis_url, "tail") as tail:
        await wait_for_blocked_xread(redis, tail)
        foreign = (await redis.xadd(STREAM, {"hello": "again"})).decode()
        lines = await read_until(tail, foreign)
        assert "MALFORMED" in lines[-1]
        # The same columns as log's table.
        log = subprocess.run([str(LEDGERSET), "--url", redis_url, "log"], capture_output=True,
                             text=True, env=cli_env(), timeout=120)  # fmt: skip
        assert [line for line in lines if line.startswith("entry id")] == [
            line for line in log.stdout.splitlines() if line.startswith("entry id")
        ]
        article = await ToolArticle.aget("ToolArticle:a1")
        await article.tags.aadd("still-followed")
        assert '"still-followed"' in (await read_until(tail, "still-followed"))[-1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_log_table_streams_a_long_journal_with_flat_memory(
    redis: Redis, redis_url: str
) -> None:
    ids = await write_entries(redis, 40_000)
    started = time.monotonic()
    log = subprocess.Popen(
        [str(LEDGERSET), "--url", redis_url, "log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )  # fmt: skip
    assert log.stdout is not None and log.stderr is not None
    try:
        first = [log.stdout.readline() for _ in range(5)]
        # The whole table used to be built first: 40,000 entries took most of a minute.
        assert time.monotonic() - started < 10, "the first lines waited for the whole journal"
        assert first[0].startswith("journal ledgerset:journal")
        seen = sum(bool(ROW.match(line)) for line in first)
        early = late = 0
        for line in log.stdout:
            seen += bool(ROW.match(line))
            if seen == 1_000 and not early:
                early = rss_kib(log.pid)
            if seen == 35_000 and not late:
                late = rss_kib(log.pid)
        assert log.wait(timeout=120) == 0, log.stderr.read()
        assert seen == len(ids)
        assert late - early < 30_000, f"memory grew from {early} KiB to {late} KiB"
    finally:
        if log.poll() is None:
            log.kill()
            log.wait()
        log.stdout.close()
        log.stderr.close()


async def test_log_limit_and_last_select_the_first_and_the_last_entries(
    redis: Redis, redis_url: str, cli: Cli
) -> None:
    ids = await write_entries(redis, 1_200)  # more than two pages

    def shown(*args: str) -> list[str]:
        result = cli("--url", redis_url, "log", "--format", "json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["id"] for line in result.stdout.splitlines()]

    assert shown("--limit", "3") == ids[:3]
    assert shown("--last", "3") == ids[-3:]
    assert shown("--last", "700") == ids[-700:]
    assert shown("--last", "5", "--until", ids[10]) == ids[6:11]
    assert shown("--limit", "2", "--since", ids[100]) == ids[100:102]
    assert shown("--last", "5000") == ids
    table = cli("--url", redis_url, "log", "--last", "2")
    assert [line.split()[0] for line in table.stdout.splitlines() if ROW.match(line)] == ids[-2:]
    both = cli("--url", redis_url, "log", "--limit", "1", "--last", "1")
    assert both.returncode == 2
    assert "--limit and --last" in one_line(both)
    zero = cli("--url", redis_url, "log", "--last", "0")
    assert zero.returncode == 2 and "--last" in one_line(zero)


async def test_log_table_shows_the_date_and_fits_80_columns_with_ctx(
    redis: Redis, redis_url: str, cli: Cli, clean_structlog: None
) -> None:
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    structlog.contextvars.bind_contextvars(request_id="r-101", user="alice")
    article = await ToolArticle(pk="p" * 40, title="a rather long title " * 4).asave()
    await article.tags.aadd_many(["python", "redis", "a-member-name-far-longer-than-a-column"])
    structlog.contextvars.clear_contextvars()
    (raw_id, fields), = await redis.xrange(STREAM, count=1)  # fmt: skip
    day = datetime.fromtimestamp(int(fields[b"ts"]) / 1000, tz=UTC).strftime("%Y-%m-%d")

    result = cli("--url", redis_url, "log", env=cli_env(COLUMNS="80"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(cell_len(line) <= 80 for line in lines), max(lines, key=cell_len)
    (head,) = [line for line in lines if line.startswith("entry id")]
    assert head.split() == ["entry", "id", "time", "(UTC)", "command", "target", "args", "ctx"]
    assert day in result.stdout  # the date, not only the time of day
    words = result.stdout.split()
    # Names wrap whole (or end in an ellipsis); none is cut in two across lines.
    for name in ("ToolArticle:", "python", "redis", "request_id=", "r-101", "user=alice"):
        assert any(name in word for word in words), name
    assert any(word.endswith("…") for word in words)  # the long member, truncated
    assert not any(word.startswith("r-member") or word == "column" for word in words)
    wide = cli("--url", redis_url, "log")
    assert f"{day} " in wide.stdout
    assert "request_id=r-101" in wide.stdout and "user=alice" in wide.stdout  # in either order
    assert raw_id.decode() in wide.stdout
