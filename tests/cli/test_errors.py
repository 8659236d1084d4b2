"""The tool's command-line surface: every mistake is one line naming the option, the value and
the fix; credentials are never printed; each way a server refuses gets its own message.

Bad URLs and levels are refused before anything connects. The servers' refusals are real: an
ACL user with a wrong password, an ACL user denied XRANGE, and a private server whose
client-output-buffer-limit closes the reading connection.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from toolrun import Cli, ToolArticle, cli_env, one_line, write_entries

import ledgerset
from ledgerset.embedded import EmbeddedServer

PASSWORD = "s3cret-pw"


def host_port(url: str) -> str:
    return url.split("//", 1)[1].rsplit("/", 1)[0]


@pytest.mark.parametrize(
    ("args", "option", "value", "fix"),
    [
        (["--url", "http://localhost:6379", "log"], "--url", "http://localhost:6379", "redis://"),
        (["--url", "127.0.0.1:6379", "log"], "--url", "127.0.0.1:6379", "redis://"),
        (["--url", "redis://localhost:6379/0?cluster=true", "log"], "--url", "cluster",
         "redis://"),
        (["--url", "redis://localhost:port/0", "log"], "--url", "localhost:port", "redis://"),
        (["--url", "redis://localhost:6379/db", "log"], "--url", "'db'", "/0"),
        (["--url", "redis://localhost:1/0", "replay", "--to-url", "notaurl"], "--to-url",
         "notaurl", "redis://"),
        (["--url", "redis://localhost:1/0", "verify", "--to-url", "notaurl"], "--to-url",
         "notaurl", "redis://"),
        (["demo", "--to-url", "notaurl"], "--to-url", "notaurl", "redis://"),
        (["--log-level", "verbose", "log"], "--log-level", "verbose", "'debug'"),
        (["log", "--log-level", "verbose"], "--log-level", "verbose", "'debug'"),
    ],
    ids=["http", "no-scheme", "unknown-parameter", "port", "database", "replay-to-url",
         "verify-to-url", "demo-to-url", "log-level", "log-level-after"],
)  # fmt: skip
def test_a_bad_option_value_is_one_line_naming_option_value_and_fix(
    cli: Cli, args: list[str], option: str, value: str, fix: str
) -> None:
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert option in line and value in line and fix in line, line
    assert result.stdout == ""


def test_a_bad_url_in_the_environment_names_it_too(cli: Cli) -> None:
    result = cli("log", env=cli_env(LEDGERSET_URL="localhost"))
    assert result.returncode == 2
    assert "--url" in one_line(result) and "'localhost'" in result.stderr


def test_a_password_in_a_bad_url_is_not_printed(cli: Cli) -> None:
    result = cli("--url", f"http://admin:{PASSWORD}@localhost:6379/0", "log")
    assert result.returncode == 2
    assert PASSWORD not in result.stderr and "admin:***@localhost" in one_line(result)


async def test_global_options_work_after_the_subcommand(
    redis: Redis, redis_url: str, cli: Cli
) -> None:
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal("audit:tool"))
    await ToolArticle(pk="a1").asave()
    result = cli("log", "--url", redis_url, "--stream", "audit:tool", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert '"pk":"a1"' in result.stdout
    # After the subcommand, they override what came before it.
    result = cli("--url", "redis://127.0.0.1:1/0", "log", "--url", redis_url,
                 "--stream", "audit:tool")  # fmt: skip
    assert result.returncode == 0, result.stderr
    target = redis_url.rsplit("/", 1)[0] + "/8"
    await Redis.from_url(target).flushdb()
    replayed = cli("replay", "--to-url", target, "--url", redis_url, "--stream", "audit:tool",
                   "--log-level", "info", "--log-format", "json")  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert '"event": "replay.finished"' in replayed.stderr or "replay.finished" in replayed.stderr
    assert "applied 1 entries" in replayed.stdout


@pytest.mark.parametrize("command", ["demo", "log", "tail", "replay", "verify"])
def test_every_subcommand_help_shows_the_global_options(cli: Cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--url", "--stream", "--log-level", "--log-format"):
        assert option in result.stdout, (command, option)


def test_without_the_cli_extra_the_script_says_what_to_install() -> None:
    # What the console script runs, with click (the cli extra) not importable.
    script = ("import sys; sys.modules['click'] = None; sys.argv = ['ledgerset', 'log']; "
              "from ledgerset.cli import main; sys.exit(main())")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=cli_env())  # fmt: skip
    assert result.returncode == 1
    line = one_line(result)
    assert "pip install 'ledgerset[cli]'" in line and "click" in line


@pytest.fixture
async def acl_user(redis: Redis) -> AsyncIterator[str]:
    """An ACL user ``tooluser`` (password PASSWORD) who may not read streams with XRANGE."""
    denied = ["+@all", "-xrange", "-xrevrange"]
    await redis.acl_setuser("tooluser", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"],
                            channels=["*"], commands=denied)  # fmt: skip
    yield "tooluser"
    await redis.acl_deluser("tooluser")


async def test_a_wrong_password_is_reported_as_such(
    acl_user: str, redis: Redis, redis_url: str, cli: Cli
) -> None:
    wrong = redis_url.replace("redis://", f"redis://{acl_user}:not-{PASSWORD}@")
    result = cli("--url", wrong, "log")
    assert result.returncode == 1
    line = one_line(result)
    assert "refused the credentials of --url" in line, line
    assert "cannot reach" not in line and PASSWORD not in line
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    await ToolArticle(pk="a1").asave()
    target = cli("--url", redis_url, "replay", "--to-url", wrong.rsplit("/", 1)[0] + "/8")
    assert target.returncode == 1
    line = [line for line in target.stderr.splitlines() if line.startswith("ledgerset:")][-1]
    assert "refused the credentials of --to-url" in line and PASSWORD not in target.stderr


async def test_an_acl_refusal_names_the_command_and_the_user(
    acl_user: str, redis: Redis, redis_url: str, cli: Cli
) -> None:
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    await ToolArticle(pk="a1").asave()
    url = redis_url.replace("redis://", f"redis://{acl_user}:{PASSWORD}@")
    result = cli("--url", url, "log")
    assert result.returncode == 1
    line = one_line(result)
    assert "xrange" in line.lower() and acl_user in line and "ACL SETUSER" in line, line
    assert "cannot reach" not in line and PASSWORD not in line


async def test_an_unreachable_to_url_names_to_url(
    redis: Redis, redis_url: str, cli: Cli
) -> None:
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    await ToolArticle(pk="a1").asave()
    result = cli("--url", redis_url, "replay", "--to-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    line = one_line(result)
    assert "127.0.0.1:1" in line and "check --to-url" in line and "--url " not in line


async def test_an_output_buffer_kill_is_reported_as_such(cli: Cli) -> None:
    # A private server whose normal clients may hold 4 kB of replies: a page of entries is more.
    async with EmbeddedServer(binary=os.environ.get("LEDGERSET_TEST_SERVER")) as server:
        client = Redis.from_url(server.url)
        try:
            await write_entries(client, 600)
            await client.config_set("client-output-buffer-limit", "normal 4096 4096 0")
            address = host_port(server.url)
            result = cli("--url", server.url, "log", "--format", "json")
        finally:
            await client.aclose()
    assert result.returncode == 1
    line = one_line(result)
    assert "client-output-buffer-limit" in line and "cannot reach" not in line, line
    assert address in line


async def test_demo_never_prints_the_password(
    acl_user: str, redis: Redis, redis_url: str, cli: Cli
) -> None:
    await redis.acl_setuser("tooluser", enabled=True, commands=["+@all"])
    base = redis_url.rsplit("/", 1)[0].replace("redis://", f"redis://{acl_user}:{PASSWORD}@")
    first, second = Redis.from_url(f"{base}/10"), Redis.from_url(f"{base}/11")
    await first.flushdb()
    await second.flushdb()
    try:
        result = cli("demo", "--url", f"{base}/10", "--to-url", f"{base}/11")
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        assert f"{acl_user}:***@" in result.stdout
        assert "OK" in result.stdout
    finally:
        await first.flushdb()
        await second.flushdb()
        await first.aclose()
        await second.aclose()


def test_a_bare_ledgerset_prints_its_help(cli: Cli) -> None:
    result = cli()
    assert result.returncode == 2
    assert result.stderr.startswith("Usage: ledgerset [OPTIONS] COMMAND")
    assert "ledgerset: Usage" not in result.stderr and "Traceback" not in result.stderr
