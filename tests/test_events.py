"""The structlog events: each emitted once, with its fields, for the situation it describes.

Also: no member value above debug level, bound context variables in every event, a quiet
library by default (stdlib logger "ledgerset"), and no global structlog state touched on import.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
import structlog
from pydantic import Field
from redis.asyncio import Redis
from structlog.testing import capture_logs

import ledgerset
from ledgerset.types import RedisSet

SECRET = "alice@example.com"


class EventArticle(ledgerset.AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class DeadArticle(ledgerset.AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


pytestmark = pytest.mark.usefixtures("clean_structlog")


def named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def saved() -> EventArticle:
    article = EventArticle(title="t")
    await article.asave()
    return article


async def test_command_executed(redis: Redis) -> None:
    article = await saved()
    with capture_logs() as logs:
        await article.tags.aadd_many(["a", "b"])
    (event,) = named(logs, "command.executed")
    assert event["log_level"] == "info"
    assert event["command"] == "set.add"
    assert event["model"] == "EventArticle"
    assert event["pk"] == article.pk
    assert event["field"] == "tags"
    assert event["key"] == f"__rapyer_special__:EventArticle:{article.pk}:tags"
    assert event["members"] == 2
    assert event["result"] == 2
    assert event["duration_ms"] >= 0


async def test_member_values_only_at_debug(redis: Redis) -> None:
    article = await saved()
    with capture_logs() as logs:
        await article.tags.aadd(SECRET)
        await article.tags.aremove(SECRET)
        with pytest.raises(ledgerset.InvalidMemberError):
            await article.tags.aadd_many([SECRET, float("nan")])  # type: ignore[list-item]
    above_debug = [entry for entry in logs if entry["log_level"] != "debug"]
    assert above_debug and SECRET not in repr(above_debug)
    debug = named(logs, "command.members")
    assert [entry["values"] for entry in debug] == [[f'"{SECRET}"'], [f'"{SECRET}"']]
    assert all(entry["log_level"] == "debug" for entry in debug)


async def test_transaction_committed(redis: Redis) -> None:
    first, second = await saved(), await saved()
    with capture_logs() as logs:
        async with ledgerset.transaction() as tx:
            first.tags.add("a")
            second.tags.update(["b", "c"])
            first.tags.discard("z")
    (event,) = named(logs, "transaction.committed")
    assert event["log_level"] == "info"
    assert event["txn"] == tx.id
    assert event["commands"] == 3
    assert event["keys"] == 4  # two set keys and their two model keys
    assert event["duration_ms"] >= 0


async def test_transaction_aborted_by_exception(redis: Redis) -> None:
    article = await saved()
    with capture_logs() as logs, pytest.raises(RuntimeError):
        async with article.apipeline() as tx:
            article.tags.add("a")
            raise RuntimeError("boom")
    (event,) = named(logs, "transaction.aborted")
    assert event == {
        "event": "transaction.aborted",
        "log_level": "warning",
        "txn": tx.id,
        "reason": "exception",
        "error": "RuntimeError",
        "commands": 1,
    }
    assert named(logs, "transaction.committed") == []


async def test_refused_on_the_server_in_a_transaction(redis: Redis) -> None:
    healthy, gone = await saved(), await saved()
    await gone.adelete()
    with capture_logs() as logs, pytest.raises(ledgerset.ModelNotFoundError) as caught:
        async with ledgerset.transaction() as tx:
            healthy.tags.add("a")
            gone.tags.add("b")
    (refused,) = named(logs, "command.refused")
    assert refused["log_level"] == "warning"
    assert refused["command"] == "set.add"
    assert refused["model"] == "EventArticle"
    assert refused["pk"] == gone.pk
    assert refused["field"] == "tags"
    assert refused["key"] == gone.key
    assert refused["reason"] == "model_not_found"
    (aborted,) = named(logs, "transaction.aborted")
    assert aborted["txn"] == tx.id
    assert aborted["reason"] == "model_not_found"
    assert aborted["command"] == "set.add"
    assert aborted["key"] == gone.key
    error = caught.value
    assert (error.command, error.model, error.pk, error.field, error.key, error.reason) == (
        "set.add",
        "EventArticle",
        gone.pk,
        "tags",
        gone.key,
        "model_not_found",
    )


async def test_refused_wrong_type(redis: Redis) -> None:
    article = await saved()
    await redis.set(article.tags._require_binding().key, "not a set")
    with capture_logs() as logs, pytest.raises(ledgerset.WrongTypeError) as caught:
        await article.tags.aadd("a")
    (refused,) = named(logs, "command.refused")
    assert refused["reason"] == "wrong_type" == caught.value.reason
    assert (
        refused["key"] == caught.value.key == f"__rapyer_special__:EventArticle:{article.pk}:tags"
    )


async def test_refused_invalid_member(redis: Redis) -> None:
    article = await saved()
    with capture_logs() as logs, pytest.raises(ledgerset.InvalidMemberError) as caught:
        await article.tags.aadd_many(["ok", None])  # type: ignore[list-item]
    (refused,) = named(logs, "command.refused")
    assert refused["reason"] == "invalid_member" == caught.value.reason
    assert refused["command"] == "set.add" == caught.value.command
    assert (refused["model"], refused["field"]) == ("EventArticle", "tags")


async def test_script_reloaded(redis: Redis) -> None:
    article = await saved()
    await redis.script_flush()
    with capture_logs() as logs:
        await article.tags.aadd("a")
    assert len(named(logs, "script.reloaded")) == 1
    assert len(named(logs, "command.executed")) == 1


async def test_connection_error_names_the_address(redis: Redis) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    DeadArticle.Meta = ledgerset.RedisConfig(redis=dead)
    try:
        with capture_logs() as logs, pytest.raises(ledgerset.ServerUnavailableError) as caught:
            await DeadArticle().asave()
    finally:
        DeadArticle.Meta = None
        await dead.aclose()
    (event,) = named(logs, "connection.error")
    assert event["log_level"] == "error"
    assert event["address"] == "127.0.0.1:1" == caught.value.address
    assert "127.0.0.1:1" in str(caught.value)


async def test_context_vars_in_every_event(redis: Redis) -> None:
    article = await saved()
    structlog.contextvars.bind_contextvars(request_id="req-42")
    with capture_logs() as logs:
        await article.tags.aadd("a")
        async with article.apipeline():
            article.tags.add("b")
        with pytest.raises(ledgerset.ModelNotFoundError):
            await EventArticle().tags.aadd("c")
    assert {entry["event"] for entry in logs} >= {
        "command.executed",
        "transaction.committed",
        "command.refused",
    }
    assert all(entry.get("request_id") == "req-42" for entry in logs)


async def test_unconfigured_structlog_goes_to_the_stdlib_logger(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    article = await saved()
    structlog.reset_defaults()  # as in an application that never configured structlog
    assert not structlog.is_configured()
    with caplog.at_level(logging.INFO, logger="ledgerset"):
        await article.tags.aadd("a")
    (record,) = [r for r in caplog.records if r.name == "ledgerset"]
    assert record.levelno == logging.INFO
    assert record.ledgerset["event"] == "command.executed"  # type: ignore[attr-defined]
    assert record.getMessage().startswith("command.executed command='set.add'")


def test_quiet_by_default_and_import_changes_no_config() -> None:
    code = (
        "import asyncio, structlog\n"
        "before = structlog.get_config()\n"
        "import ledgerset, ledgerset.types, ledgerset.embedded, ledgerset.logging\n"
        "assert structlog.get_config() == before, 'import changed structlog config'\n"
        "assert not structlog.is_configured()\n"
        "from ledgerset._events import emit, INFO\n"
        "from ledgerset._events import WARNING, ERROR\n"
        "emit(INFO, 'command.executed', command='set.add')\n"
        "emit(WARNING, 'command.refused', command='set.add')\n"
        "emit(ERROR, 'connection.error', address='127.0.0.1:1')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_configure_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from ledgerset.logging import configure

    try:
        configure(format="json", level="warning", stream=sys.stdout)
        structlog.get_logger("ledgerset").info("not.shown")
        structlog.get_logger("ledgerset").warning("shown", count=1)
    finally:
        structlog.reset_defaults()
    (line,) = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert (event["event"], event["count"], event["level"]) == ("shown", 1, "warning")
    assert event["timestamp"].endswith("Z")
