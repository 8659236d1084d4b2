"""Journal content cannot blind the operator: markup is shown as written, control characters
escaped, in ``log`` (table and JSON), ``tail`` and error lines.

Each hostile value is written by a real model through the library, or by another client with
XADD, and the console script's output is checked for the literal text and for the absence of
raw control characters.
"""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis
from test_log import ROW, read_until, wait_for_blocked_xread
from toolrun import STREAM, Cli, ToolArticle, following

import ledgerset

CLEAR_SCREEN = "\x1b[2J\x1b[H"
HOSTILE_MEMBERS = ["[/]", "[bold]admin[/bold]"]


def assert_no_control_characters(text: str) -> None:
    unsafe = [
        char
        for char in text
        if (ord(char) < 0x20 and char != "\n") or 0x7F <= ord(char) < 0xA0 or char in "\u202e\u2028"
    ]
    assert unsafe == [], f"raw control characters reach the terminal: {unsafe!r}"


@pytest.fixture
async def hostile(redis: Redis) -> list[str]:
    """A journal whose members are rich markup and whose pk clears the screen: its ids."""
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    article = await ToolArticle(pk=CLEAR_SCREEN, title="right\u202eleft").asave()
    await article.tags.aadd_many(HOSTILE_MEMBERS)
    return [raw_id.decode() for raw_id, _ in await redis.xrange(STREAM)]


async def test_log_table_shows_markup_as_written_and_escapes_control_characters(
    hostile: list[str], redis_url: str, cli: Cli
) -> None:
    result = cli("--url", redis_url, "log")
    # A "[/]" used to end log with a MarkupError traceback, and "[bold]admin[/bold]" read "admin".
    assert result.returncode == 0, result.stderr
    assert '"[/]"' in result.stdout
    assert '"[bold]admin[/bold]"' in result.stdout
    assert "\\u001b[2J\\u001b[H" in result.stdout  # the pk, visible and harmless
    assert "right\\u202eleft" in result.stdout
    assert_no_control_characters(result.stdout)
    assert [line.split()[0] for line in result.stdout.splitlines() if ROW.match(line)] == hostile


async def test_log_json_escapes_control_characters_and_stays_json(
    hostile: list[str], redis_url: str, cli: Cli
) -> None:
    result = cli("--url", redis_url, "log", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert_no_control_characters(result.stdout)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["pk"] == CLEAR_SCREEN  # the same value, once decoded by jq or json
    assert lines[0]["args"]["fields"]["title"] == "right\u202eleft"
    assert lines[1]["args"] == {"members": HOSTILE_MEMBERS}


async def test_a_foreign_entry_with_markup_and_escapes_is_shown_harmlessly(
    redis: Redis, redis_url: str, cli: Cli
) -> None:
    await redis.xadd(STREAM, {"[/]": f"[bold]admin[/bold]{CLEAR_SCREEN}", "\x07bell": "\x9b2J"})
    for output in ("table", "json"):
        result = cli("--url", redis_url, "log", "--format", output)
        assert result.returncode == 0, result.stderr
        assert_no_control_characters(result.stdout)
        assert "[bold]admin[/bold]" in result.stdout
        assert "\\u001b[2J" in result.stdout and "\\u0007bell" in result.stdout


async def test_tail_escapes_what_it_follows_and_survives_markup(
    hostile: list[str], redis: Redis, redis_url: str
) -> None:
    with following("--url", redis_url, "tail") as tail:
        await wait_for_blocked_xread(redis, tail)
        article = await ToolArticle.aget(f"ToolArticle:{CLEAR_SCREEN}")
        await article.tags.aadd("[/]")  # used to kill a running tail
        await article.tags.aadd("[bold]admin[/bold]")
        await article.tags.aadd("last")
        lines = await read_until(tail, '"last"')
        shown = "\n".join(lines)
        assert '"[/]"' in shown and '"[bold]admin[/bold]"' in shown
        assert "\\u001b[2J" in shown
        assert_no_control_characters(shown)


async def test_an_error_line_escapes_what_came_from_the_journal(
    redis: Redis, redis_url: str, cli: Cli
) -> None:
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    await ToolArticle(pk="a1").asave()
    (_, fields), = await redis.xrange(STREAM, count=1)  # fmt: skip
    await redis.xadd(STREAM, {**fields, b"cmd": b"no.such", b"txn": f"[/]{CLEAR_SCREEN}".encode()})
    target = redis_url.rsplit("/", 1)[0] + "/9"
    await Redis.from_url(target).flushdb()
    result = cli("--url", redis_url, "replay", "--to-url", target)
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("ledgerset:")]
    assert "no.such" in error and "\\u001b[2J" in error and "[/]" in error
    assert "Traceback" not in result.stderr
    assert_no_control_characters(result.stderr.replace("\r", ""))
