"""The ``ledgerset`` console script, run end to end as a subprocess against a real server.

A journal is written in-process (``StreamJournal`` plus a few model operations), then the
installed console script reads it: ``demo`` on its own embedded server; ``log`` as a table and as
JSON lines, with its filters; ``tail`` following a live write until Ctrl-C; ``replay`` into other
databases of the same server (resumable, dry-run, ``--until``, ``--model``); ``verify`` catching
writes made behind the journal's back; one-line errors with the right exit status; and
``import ledgerset`` staying free of click and rich.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis
from toolrun import LEDGERSET, STREAM, cli_env, following, next_line, wait_for_blocked_xread
from toolrun import run_cli as cli

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet

JSON_KEYS = {"id", "ts", "cmd", "v", "model", "pk", "field", "key", "args", "txn", "seq", "of"}


class CliArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class CliNote(AtomicRedisModel):
    body: str = ""
    labels: RedisSet[str] = Field(default_factory=RedisSet)


@dataclass
class Journaled:
    """What the in-process writes left: the models, and the journal's entry ids in order."""

    article: CliArticle
    note: CliNote
    ids: list[str]


def tag_key(model: AtomicRedisModel, field: str) -> str:
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{field}"


def json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


async def model_state(redis: Redis, model: str) -> dict[bytes, object]:
    """Every key of ``model`` (hashes and sets) with its value."""
    state: dict[bytes, object] = {}
    for pattern in (f"{model}:*", f"__rapyer_special__:{model}:*"):
        for key in await redis.keys(pattern):
            kind = (await redis.type(key)).decode()
            state[key] = await (redis.hgetall(key) if kind == "hash" else redis.smembers(key))
    return state


@pytest.fixture
async def journaled(redis: Redis) -> Journaled:
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    article = await CliArticle(title="first").asave()
    await article.tags.aadd("python")
    await article.tags.aadd("redis")
    note = await CliNote(body="hello").asave()
    await note.labels.aadd_many(["x", "y"])
    await article.aupdate(title="second")
    await article.tags.aremove("python")
    ids = [raw_id.decode() for raw_id, _ in await redis.xrange(STREAM)]
    assert len(ids) == 7
    return Journaled(article, note, ids)


@pytest.fixture
async def targets(redis_url: str) -> AsyncIterator[list[tuple[str, Redis]]]:
    """Databases 2..5 of the test server, flushed: ``(url, client)`` each."""
    base = redis_url.rsplit("/", 1)[0]
    pairs = [(f"{base}/{db}", Redis.from_url(f"{base}/{db}")) for db in range(2, 6)]
    for _, client in pairs:
        await client.flushdb()
    yield pairs
    for _, client in pairs:
        await client.aclose()


# -- demo ------------------------------------------------------------------------------------


async def test_demo_walks_through_journals_replays_and_verifies_on_its_own_server() -> None:
    result = cli("demo")
    assert result.returncode == 0, result.stderr
    assert 'await article.tags.aadd("python")' in result.stdout
    assert "journal ledgerset:journal" in result.stdout
    assert re.search(r"replayed \d+ entries", result.stdout)
    assert "OK" in result.stdout


# -- log -------------------------------------------------------------------------------------


async def test_log_prints_a_table_of_the_commands(journaled: Journaled, redis_url: str) -> None:
    result = cli("--url", redis_url, "log")
    assert result.returncode == 0, result.stderr
    assert "journal ledgerset:journal" in result.stdout
    for command in ("model.save", "set.add", "set.remove", "model.update"):
        assert command in result.stdout
    for entry_id in journaled.ids:
        assert entry_id in result.stdout
    assert '"x" "y"' in result.stdout


async def test_log_json_prints_one_object_per_entry(journaled: Journaled, redis_url: str) -> None:
    result = cli("--url", redis_url, "log", "--format", "json")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["id"] for line in lines] == journaled.ids
    assert all(JSON_KEYS | {"ctx"} <= line.keys() for line in lines)
    added = lines[1]
    assert (added["cmd"], added["model"], added["pk"]) == (
        "set.add",
        "CliArticle",
        journaled.article.pk,
    )
    assert added["field"] == "tags"
    assert added["key"] == tag_key(journaled.article, "tags")
    assert added["args"] == {"members": ["python"]}
    assert (added["seq"], added["of"], added["ctx"]) == (1, 1, {})
    assert isinstance(added["txn"], str) and added["txn"]
    assert lines[0]["cmd"] == "model.save" and lines[0]["field"] is None


async def test_log_model_filter_keeps_that_model_only(journaled: Journaled, redis_url: str) -> None:
    result = cli("--url", redis_url, "log", "--format", "json", "--model", "CliNote")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["id"] for line in lines] == journaled.ids[3:5]
    assert {line["pk"] for line in lines} == {journaled.note.pk}


async def test_log_key_filter_keeps_the_entries_that_wrote_that_key(
    journaled: Journaled, redis_url: str
) -> None:
    key = tag_key(journaled.article, "tags")
    result = cli("--url", redis_url, "log", "--format", "json", "--key", key)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["cmd"] for line in lines] == ["set.add", "set.add", "set.remove"]
    assert {line["key"] for line in lines} == {key}


async def test_log_since_and_until_entry_ids_bound_the_entries(
    journaled: Journaled, redis_url: str
) -> None:
    ids = journaled.ids
    result = cli(
        "--url", redis_url, "log", "--format", "json", "--since", ids[2], "--until", ids[4]
    )
    assert result.returncode == 0, result.stderr
    assert [line["id"] for line in json_lines(result.stdout)] == ids[2:5]


async def test_log_since_and_until_iso_times_bound_the_entries(
    journaled: Journaled, redis_url: str
) -> None:
    def entries(*bounds: str) -> list[dict[str, Any]]:
        result = cli("--url", redis_url, "log", "--format", "json", *bounds)
        assert result.returncode == 0, result.stderr
        return json_lines(result.stdout)

    # Moments compare with each entry's ts (the writing client's clock), not with its id.
    stamps = [datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) for e in entries()]
    first, last = stamps[0], stamps[-1]
    millisecond = timedelta(milliseconds=1)

    def ids(*bounds: str) -> list[object]:
        return [entry["id"] for entry in entries(*bounds)]

    assert ids("--since", first.isoformat().replace("+00:00", "Z")) == journaled.ids
    assert ids("--since", (last + millisecond).isoformat()) == []
    assert ids("--until", last.isoformat()) == journaled.ids
    assert ids("--until", (first - millisecond).isoformat()) == []


async def test_log_until_a_bare_millisecond_includes_that_whole_millisecond(
    redis: Redis, redis_url: str
) -> None:
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    article = await CliArticle().asave()
    async with article.apipeline():
        article.tags.add("a")
        article.tags.add("b")
        article.tags.add("c")
    entries = await redis.xrange(STREAM)
    adds = [raw_id.decode() for raw_id, _ in entries[1:]]
    ms = adds[0].split("-")[0]
    assert {entry_id.split("-")[0] for entry_id in adds} == {ms}  # one program, one millisecond
    result = cli("--url", redis_url, "log", "--format", "json", "--until", ms)
    assert result.returncode == 0, result.stderr
    assert [line["id"] for line in json_lines(result.stdout)][-3:] == adds


async def test_log_refuses_a_since_that_is_neither_id_nor_time(
    journaled: Journaled, redis_url: str
) -> None:
    result = cli("--url", redis_url, "log", "--since", "nonsense")
    assert result.returncode == 2
    assert "'nonsense' is neither an entry id" in result.stderr
    assert "ISO time" in result.stderr
    assert result.stdout == ""


# -- tail ------------------------------------------------------------------------------------


async def test_tail_prints_a_new_entry_as_json_and_exits_0_on_ctrl_c(
    journaled: Journaled, redis: Redis, redis_url: str
) -> None:
    with following("--url", redis_url, "tail", "--format", "json", stop_within=10) as tail:
        await wait_for_blocked_xread(redis, tail)
        await journaled.article.tags.aadd("live")
        entry = json.loads(await next_line(tail))
        assert (entry["cmd"], entry["pk"], entry["field"]) == (
            "set.add",
            journaled.article.pk,
            "tags",
        )
        assert entry["args"] == {"members": ["live"]}


# -- replay ----------------------------------------------------------------------------------


async def test_replay_rebuilds_the_models_in_the_target(
    journaled: Journaled, redis: Redis, redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    url, target = targets[0]
    result = cli("--url", redis_url, "replay", "--to-url", url)
    assert result.returncode == 0, result.stderr
    assert "applied 7 entries" in result.stdout
    assert journaled.ids[-1] in result.stdout
    assert "entries" in result.stderr  # the progress bar
    for model in ("CliArticle", "CliNote"):
        assert await model_state(target, model) == await model_state(redis, model)
    assert await target.smembers(tag_key(journaled.article, "tags")) == {b'"redis"'}


async def test_replay_run_twice_applies_nothing_the_second_time(
    journaled: Journaled, redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    url, _ = targets[0]
    assert cli("--url", redis_url, "replay", "--to-url", url).returncode == 0
    again = cli("--url", redis_url, "replay", "--to-url", url)
    assert again.returncode == 0, again.stderr
    assert "applied 0 entries" in again.stdout


async def test_replay_dry_run_writes_nothing(
    journaled: Journaled, redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    url, target = targets[1]
    result = cli("--url", redis_url, "replay", "--to-url", url, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would apply 7 entries" in result.stdout
    assert await target.keys("*") == []


async def test_replay_until_an_entry_id_stops_after_it(
    journaled: Journaled, redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    url, target = targets[2]
    result = cli("--url", redis_url, "replay", "--to-url", url, "--until", journaled.ids[2])
    assert result.returncode == 0, result.stderr
    assert "applied 3 entries" in result.stdout
    article = journaled.article
    assert await target.smembers(tag_key(article, "tags")) == {b'"python"', b'"redis"'}
    assert await target.hget(f"CliArticle:{article.pk}", "title") == b'"first"'
    assert await model_state(target, "CliNote") == {}


async def test_replay_model_filter_replays_that_model_only(
    journaled: Journaled, redis: Redis, redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    url, target = targets[3]
    result = cli("--url", redis_url, "replay", "--to-url", url, "--model", "CliNote")
    assert result.returncode == 0, result.stderr
    assert "applied 2 entries, skipped 5" in result.stdout
    assert await model_state(target, "CliNote") == await model_state(redis, "CliNote")
    assert await model_state(target, "CliArticle") == {}


# -- verify ----------------------------------------------------------------------------------


async def test_verify_says_ok_when_the_live_data_matches_the_journal(
    journaled: Journaled, redis_url: str
) -> None:
    result = cli("--url", redis_url, "verify")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


async def test_verify_reports_a_set_changed_behind_the_journals_back(
    journaled: Journaled, redis: Redis, redis_url: str
) -> None:
    key = tag_key(journaled.article, "tags")
    await redis.sadd(key, b'"intruder"')
    result = cli("--url", redis_url, "verify")
    assert result.returncode == 1
    assert f"DIFFERENT {key}" in result.stdout
    assert "intruder" in result.stdout
    assert "1 key(s) differ" in result.stderr


async def test_verify_reports_a_hash_field_changed_behind_the_journals_back(
    journaled: Journaled, redis: Redis, redis_url: str
) -> None:
    key = f"CliNote:{journaled.note.pk}"
    await redis.hset(key, "body", b'"tampered"')
    result = cli("--url", redis_url, "verify")
    assert result.returncode == 1
    assert f"DIFFERENT {key}" in result.stdout
    assert "tampered" in result.stdout


async def test_verify_into_a_given_target(
    journaled: Journaled, redis: Redis, redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    url, target = targets[0]
    result = cli("--url", redis_url, "verify", "--to-url", url)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert await model_state(target, "CliArticle") == await model_state(redis, "CliArticle")


# -- errors and options ----------------------------------------------------------------------


async def test_unreachable_server_is_one_line_and_status_1() -> None:
    result = cli("--url", "redis://127.0.0.1:1/0", "log")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


async def test_log_without_a_journal_stream_names_the_stream(
    redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    url, _ = targets[0]
    result = cli("--url", url, "log")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'ledgerset:journal'" in result.stderr
    other = cli("--url", url, "--stream", "audit:elsewhere", "log")
    assert other.returncode == 1
    assert "'audit:elsewhere'" in other.stderr


async def test_log_without_any_url_is_a_usage_error() -> None:
    result = cli("log")
    assert result.returncode == 2
    assert "--url" in result.stderr and "LEDGERSET_URL" in result.stderr


async def test_ledgerset_url_from_the_environment(journaled: Journaled, redis_url: str) -> None:
    result = cli("log", "--format", "json", env=cli_env(LEDGERSET_URL=redis_url))
    assert result.returncode == 0, result.stderr
    assert [line["id"] for line in json_lines(result.stdout)] == journaled.ids


async def test_log_format_json_writes_log_events_as_json(
    journaled: Journaled, redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    url, _ = targets[0]
    args = ("--log-format", "json", "--log-level", "info", "replay", "--to-url", url)
    result = cli("--url", redis_url, *args)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    finished = [event for event in events if event["event"] == "replay.finished"]
    assert len(finished) == 1
    assert finished[0]["applied"] == 7


async def test_import_ledgerset_does_not_import_click_or_rich() -> None:
    check = "import ledgerset, sys; assert 'click' not in sys.modules and 'rich' not in sys.modules"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


async def test_replay_of_a_missing_stream_is_a_one_line_error(
    journaled: Journaled, redis_url: str, targets: list[tuple[str, Redis]]
) -> None:
    target_url, target = targets[0]
    result = cli("--url", redis_url, "--stream", "no:such", "replay", "--to-url", target_url)
    assert await target.dbsize() == 0
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "no:such" in result.stderr


def test_replay_until_is_checked_before_connecting() -> None:
    result = cli("--url", "redis://127.0.0.1:1/0", "replay", "--to-url", "redis://127.0.0.1:1/1",
                 "--until", "14:02")  # fmt: skip
    assert result.returncode == 2
    assert "14:02" in result.stderr and "127.0.0.1:1" not in result.stderr


async def test_log_into_a_closed_pipe_stops_quietly(journaled: Journaled, redis_url: str) -> None:
    log = subprocess.Popen(
        [str(LEDGERSET), "--url", redis_url, "log", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert log.stdout is not None and log.stderr is not None
    log.stdout.close()  # like `| head -0`: the reader is gone before the first line
    assert log.wait(timeout=60) == 141
    assert log.stderr.read() == b""
    log.stderr.close()
