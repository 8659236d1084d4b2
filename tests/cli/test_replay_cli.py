"""``ledgerset replay``, ``verify`` and ``demo`` refusing where they must not write, and going on
where an operator says so, run as the installed console script against a real server.

A target that is the source (however the URL spells it) or holds keys of its own is refused with
one line and status 1, writing nothing; ``--into-existing`` says so on purpose; a target holding
the replay's checkpoint is a resume. A foreign entry stops ``replay`` and ``verify`` with its id
and the way on, ``--skip ID``. A ``--model`` that names no model warns and leaves no checkpoint.
``verify`` shows its progress; a resumed replay's bar counts what it had left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet

LEDGERSET = Path(sys.executable).with_name("ledgerset")
STREAM = "ledgerset:journal"
CHECKPOINT = "ledgerset:replay:ledgerset:journal"


class RcArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class RcNote(AtomicRedisModel):
    body: str = ""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with ``args``; its exit status, stdout and stderr."""
    assert LEDGERSET.exists(), f"the console script is not installed at {LEDGERSET}"
    env = {name: value for name, value in os.environ.items() if name != "LEDGERSET_URL"}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="200")
    return subprocess.run(
        [str(LEDGERSET), *args], capture_output=True, text=True, timeout=120, env=env
    )


def only_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused run wrote on stderr, and nothing else (no progress bar)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledgerset: "), result.stderr
    return lines[0]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed run wrote on stderr (after any progress bar)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("ledgerset:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
async def ids(redis: Redis) -> list[str]:
    """Seven journaled entries in database 0; their ids."""
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    article = await RcArticle(pk="a1", title="first").asave()
    await article.tags.aadd("python")
    await article.tags.aadd("redis")
    note = await RcNote(pk="n1", body="hello").asave()
    await note.aupdate(body="bye")
    await article.aupdate(title="second")
    await article.tags.aremove("python")
    return [raw_id.decode() for raw_id, _ in await redis.xrange(STREAM)]


@pytest.fixture
async def target(redis_url: str) -> AsyncIterator[tuple[str, Redis]]:
    """Database 6 of the test server, flushed: its URL and a client."""
    url = redis_url.rsplit("/", 1)[0] + "/6"
    client = Redis.from_url(url)
    await client.flushdb()
    yield url, client
    await client.aclose()


def other_spelling(redis_url: str) -> str:
    """The same server and database 0, without saying ``/0`` and through ``localhost``."""
    port = redis_url.rsplit("/", 1)[0].rsplit(":", 1)[1]
    return f"redis://localhost:{port}"


# -- the source as target -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["verify", "replay"])
@pytest.mark.parametrize("spelled", ["as given", "otherwise"])
async def test_the_source_as_target_is_refused_and_the_tampering_stays(
    ids: list[str], redis: Redis, redis_url: str, command: str, spelled: str
) -> None:
    tags = "__rapyer_special__:RcArticle:a1:tags"
    await redis.sadd(tags, '"intruder"')  # behind the journal's back: verify must report it
    to_url = redis_url if spelled == "as given" else other_spelling(redis_url)
    result = cli("--url", redis_url, command, "--to-url", to_url, "--into-existing")
    assert result.returncode == 1
    assert "it is the source database itself" in only_line(result)
    assert "OK" not in result.stdout
    assert await redis.smembers(tags) == {b'"redis"', b'"intruder"'}
    assert not await redis.exists(CHECKPOINT)


async def test_demo_into_its_own_database_is_refused(redis: Redis, redis_url: str) -> None:
    result = cli("--url", redis_url, "demo", "--to-url", other_spelling(redis_url))
    assert result.returncode == 1
    assert "it is the source database itself" in only_line(result)
    assert "OK" not in result.stdout
    assert await redis.dbsize() == 0  # refused before its walk-through wrote anything


# -- a target that holds keys ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["replay", "verify"])
async def test_a_target_with_keys_needs_into_existing(
    ids: list[str], redis_url: str, target: tuple[str, Redis], command: str
) -> None:
    url, client = target
    await client.set("unrelated", "keep me")
    refused = cli("--url", redis_url, command, "--to-url", url)
    assert refused.returncode == 1
    line = only_line(refused)
    assert "holds 1 key(s)" in line and "--into-existing" in line
    assert await client.keys("*") == [b"unrelated"]

    accepted = cli("--url", redis_url, command, "--to-url", url, "--into-existing")
    assert accepted.returncode == 0, accepted.stderr
    assert await client.get("unrelated") == b"keep me"
    assert await client.get(CHECKPOINT) == ids[-1].encode()


async def test_a_target_with_this_replays_checkpoint_is_a_resume(
    ids: list[str], redis: Redis, redis_url: str, target: tuple[str, Redis]
) -> None:
    url, _ = target
    first = cli("--url", redis_url, "replay", "--to-url", url, "--until", ids[2])
    assert first.returncode == 0, first.stderr
    rest = cli("--url", redis_url, "replay", "--to-url", url)
    assert rest.returncode == 0, rest.stderr
    assert "applied 4 entries" in rest.stdout
    assert "4/4 entries" in rest.stderr  # what was left after the checkpoint, not 4/7
    await RcNote(pk="n2").asave()
    verified = cli("--url", redis_url, "verify", "--to-url", url)
    assert verified.returncode == 0, verified.stderr
    assert "OK" in verified.stdout
    assert "replaying" in verified.stderr and "1/1 entries" in verified.stderr
    assert "reading models" in verified.stderr and "8/8 entries" in verified.stderr


# -- foreign entries ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["replay", "verify"])
async def test_a_foreign_entry_stops_and_skip_goes_on(
    ids: list[str], redis: Redis, redis_url: str, target: tuple[str, Redis], command: str
) -> None:
    url, client = target
    foreign = (await redis.xadd(STREAM, {"hello": "world"})).decode()
    await RcNote(pk="n3").asave()
    stopped = cli("--url", redis_url, command, "--to-url", url)
    assert stopped.returncode == 1
    line = one_line(stopped)
    assert foreign in line and "'cmd' is missing" in line
    assert f"--skip {foreign}" in line and f"XDEL {STREAM} {foreign}" in line
    assert await client.get(CHECKPOINT) == ids[-1].encode()  # what came before it landed
    assert not await client.exists("RcNote:n3")

    went_on = cli("--url", redis_url, command, "--to-url", url, "--skip", foreign)
    assert went_on.returncode == 0, went_on.stderr
    assert await client.exists("RcNote:n3")
    if command == "replay":
        assert "applied 1 entries, skipped 1" in went_on.stdout
    else:
        assert "OK" in went_on.stdout


# -- filters that match nothing -------------------------------------------------------------------


async def test_a_model_that_is_not_in_the_journal_warns_and_leaves_no_checkpoint(
    ids: list[str], redis_url: str, target: tuple[str, Redis]
) -> None:
    url, client = target
    result = cli("--url", redis_url, "replay", "--to-url", url, "--model", "rcnote")
    assert result.returncode == 1
    assert "applied 0 entries, skipped 7" in result.stdout
    line = one_line(result)
    assert "--model 'rcnote' matches no entry" in line and "RcArticle, RcNote" in line
    assert await client.dbsize() == 0


# -- progress -------------------------------------------------------------------------------------


async def test_verify_shows_its_progress(
    ids: list[str], redis_url: str, target: tuple[str, Redis]
) -> None:
    url, _ = target
    result = cli("--url", redis_url, "verify", "--to-url", url)
    assert result.returncode == 0, result.stderr
    assert "replaying" in result.stderr and "7/7 entries" in result.stderr
    assert "comparing" in result.stderr and "3/3 keys" in result.stderr
