"""The bound context a journal records (``ctx``): never a blocked write, never a secret.

- values JSON cannot hold (a 128-bit int, an int-keyed dict, a lone surrogate, an object whose
  ``str()`` raises) are recorded as their ``str()``, and the write goes through, immediately and
  in a transaction;
- by default the usual secret names (password, token, authorization, cookie, api_key, ...,
  whatever their case) are dropped before anything is sent: the raw stream entry, and what
  ``ledgerset log`` prints (table and JSON), hold none of their values;
- ``ctx_keys`` (an allow-list) and ``ctx_redact`` (a deny-list) are the journal's own, so two
  journals written in one transaction each record what their policy lets through;
- a policy given as a bare string is refused, naming the option.

On a cluster too (``also_on_cluster``): the entries are read from every slot stream, and the
models of the one transaction share a hash tag (``{ctx}``), as a cluster requires.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from pydantic import Field
from redis.asyncio import Redis
from support import journal_entries, set_key_of, stream_of

import ledgerset
from ledgerset import AtomicRedisModel, RedisConfig, RedisSet, StreamJournal
from ledgerset.journal import JournalEntry

STREAM = "ledgerset:journal"
LEDGERSET = Path(sys.executable).with_name("ledgerset")

pytestmark = [pytest.mark.usefixtures("clean_structlog"), pytest.mark.also_on_cluster]


class CtxArticle(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class CtxAudited(AtomicRedisModel):
    Meta = RedisConfig(journal=StreamJournal("audit:ctx", ctx_keys=("request_id", "token")))
    tags: RedisSet[str] = Field(default_factory=RedisSet)


@pytest.fixture
async def journaled(redis: Redis) -> AsyncIterator[Redis]:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    yield redis


async def last_entry(redis: Redis, stream: str = STREAM) -> JournalEntry:
    return (await journal_entries(redis, stream))[-1]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


TRACE_ID = 2**128 - 1  # a 128-bit trace id


def bind_unencodable() -> None:
    structlog.contextvars.bind_contextvars(
        trace_id=TRACE_ID,
        by_shard={1: "a", 2: "b"},
        path="bad\udcffbyte",  # what os.fsdecode makes of a non-UTF-8 byte
        handle=Unprintable(),
        user="alice",
    )


UNENCODABLE_CTX = {
    "trace_id": str(TRACE_ID),
    "by_shard": "{1: 'a', 2: 'b'}",
    "path": "bad\\udcffbyte",
    "handle": "<Unprintable whose str() failed>",
    "user": "alice",
}


async def test_context_values_json_cannot_hold_are_recorded_as_str(journaled: Redis) -> None:
    article = await CtxArticle(pk="a").asave()
    bind_unencodable()
    await article.tags.aadd("written")
    assert await journaled.smembers(set_key_of("CtxArticle", "a", "tags")) == {b'"written"'}
    assert (await last_entry(journaled)).ctx == UNENCODABLE_CTX


async def test_context_values_json_cannot_hold_do_not_block_a_transaction(
    journaled: Redis,
) -> None:
    article = await CtxArticle(pk="a").asave()
    bind_unencodable()
    async with ledgerset.transaction():
        article.tags.add("one")
        article.tags.add("two")
    assert await article.tags.amembers() == {"one", "two"}
    entries = (await journal_entries(journaled))[-2:]
    assert [entry.ctx for entry in entries] == [UNENCODABLE_CTX, UNENCODABLE_CTX]


SECRETS = {
    "password": "hunter2-pw",
    "Authorization": "Bearer sekrit-bearer",
    "api_key": "sekrit-api-key",
    "X-Api-Key": "sekrit-header-key",
    "db_passwd": "sekrit-passwd",
    "access_token": "sekrit-token",
    "Cookie": "session=sekrit-cookie",
    "client_secret": "sekrit-client",
    "session_id": "sekrit-session",
}


def ledgerset_log(url: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name != "LEDGERSET_URL"}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [str(LEDGERSET), "--url", url, "log", *options],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def test_the_default_policy_drops_secret_names_before_anything_is_sent(
    journaled: Redis, server_url: str
) -> None:
    article = await CtxArticle(pk="a").asave()
    structlog.contextvars.bind_contextvars(request_id="req-1", user="alice", **SECRETS)
    await article.tags.aadd("tagged")
    structlog.contextvars.clear_contextvars()

    assert (await last_entry(journaled)).ctx == {"request_id": "req-1", "user": "alice"}
    raw = repr(await journaled.xrange(stream_of(journaled, article.key)))
    for name, secret in SECRETS.items():
        assert secret not in raw, name
    for options in ((), ("--format", "json")):
        shown = ledgerset_log(server_url, *options)
        assert shown.returncode == 0, shown.stderr
        assert "req-1" in shown.stdout
        for name, secret in SECRETS.items():
            assert secret not in shown.stdout + shown.stderr, (options, name)


async def test_each_journal_applies_its_own_policy(journaled: Redis) -> None:
    article = await CtxArticle(pk="{ctx}a").asave()
    audited = await CtxAudited(pk="{ctx}b").asave()
    structlog.contextvars.bind_contextvars(request_id="req-2", user="bob", token="sekrit-token")
    async with ledgerset.transaction():
        article.tags.add("x")
        audited.tags.add("y")
    # The default policy drops "token"; the allow-list keeps request_id (token: still denied).
    assert (await last_entry(journaled)).ctx == {"request_id": "req-2", "user": "bob"}
    assert (await last_entry(journaled, "audit:ctx")).ctx == {"request_id": "req-2"}


async def test_an_empty_deny_list_records_every_key(redis: Redis) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(ctx_redact=()))
    article = await CtxArticle(pk="a").asave()
    structlog.contextvars.bind_contextvars(password="on-purpose")
    await article.tags.aadd("x")
    assert (await last_entry(redis)).ctx == {"password": "on-purpose"}


def test_a_policy_given_as_one_string_is_refused() -> None:
    one_string = r"StreamJournal\(ctx_keys='request_id'\).*\('request_id',\)"
    with pytest.raises(TypeError, match=one_string):
        StreamJournal(ctx_keys="request_id")
    with pytest.raises(TypeError, match=r"ctx_redact=.*: 3 is not a context key name"):
        StreamJournal(ctx_redact=("password", 3))  # type: ignore[arg-type]
