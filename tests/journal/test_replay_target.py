"""Where a replay may write, and what it leaves there.

A replay refuses a target that is its source (same server ``run_id`` and database, however the
client reached it) and a target that holds keys but no checkpoint of this replay, unless told
``into_existing``; refused, it writes nothing, on either side. A target holding this replay's
checkpoint is a resume. A replay that applied nothing leaves no checkpoint, and a model filter
that names no model of the journal says so. A resumed replay's progress total is what it has
left to read.

On a cluster too (``also_on_cluster``), replayed out of it into one server: the models share a
hash tag (``{tg}``), so the journal is one slot stream with its own checkpoint. How one server's
URL is spelled and what a user without ``INFO`` sees are a server's matters: those tests run on
the server only (a cluster as its own target: tests/cluster/test_replay_cluster.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import journal_entries, raw_ids, stream_of

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal
from ledgerset.errors import JournalError, ReplayTargetError
from ledgerset.journal import replay
from ledgerset.keys import checkpoint_key

pytestmark = pytest.mark.also_on_cluster

STREAM = "ledgerset:journal"

Snapshot = dict[bytes, tuple[str, Any, int]]


class TgArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class TgNote(AtomicRedisModel):
    body: str = ""
    labels: RedisSet[str] = Field(default_factory=RedisSet)


class TgLate(AtomicRedisModel):
    note: str = ""


@pytest.fixture
async def source(redis: Redis) -> AsyncIterator[Redis]:
    """Database 0, journaled, with nine entries over two models."""
    await ledgerset.init(redis=redis, journal=StreamJournal())
    article = await TgArticle(pk="{tg}a1", title="first", tags={"x"}).asave()
    await article.tags.aadd_many(["y", "z"])
    note = await TgNote(pk="{tg}n1", body="hello").asave()
    await note.labels.aadd("l1")
    await article.aupdate(title="second")
    await article.tags.aremove("x")
    async with ledgerset.transaction():
        await note.labels.aadd("l2")
        await note.aupdate(body="bye")
    await article.tags.aadd("w")
    assert len(await journal_entries(redis)) == 9
    yield redis


async def ids_of(redis: Redis) -> list[str]:
    return await raw_ids(redis)


def checkpoint(source: Redis, model: str | None = None) -> str:
    """Where a replay of the fixture's journal into one server records its progress: the
    checkpoint of the source's stream (on a cluster, of the slot stream of ``{tg}``)."""
    return checkpoint_key(stream_of(source, "{tg}"), model)


def spellings(url: str) -> list[str]:
    """Other URLs of the same server and database 0 as ``url`` (``redis://127.0.0.1:P/0``)."""
    base = url.rsplit("/", 1)[0]
    port = base.rsplit(":", 1)[1]
    return [url, base, f"redis://localhost:{port}/0", f"{base}/0?socket_timeout=5", f"{base}/00"]


# -- the source itself ----------------------------------------------------------------------------


@pytest.mark.server_only  # the spellings of one server's URL
@pytest.mark.parametrize("spelling", range(5))
async def test_a_target_that_is_the_source_is_refused_however_it_is_spelled(
    source: Redis,
    redis_url: str,
    snapshot: Callable[[], Awaitable[Snapshot]],
    spelling: int,
) -> None:
    # What verify looks for:
    await source.sadd("__rapyer_special__:TgArticle:{tg}a1:tags", '"tampered"')
    before = await snapshot()
    same = Redis.from_url(spellings(redis_url)[spelling])
    try:
        for dry_run in (False, True):
            with pytest.raises(ReplayTargetError) as refused:
                await replay(source, same, dry_run=dry_run, into_existing=True)
            assert refused.value.reason == "target_is_source"
            assert isinstance(refused.value, JournalError)
            assert refused.value.target.endswith("/0")
            assert "it is the source database itself" in str(refused.value)
            assert "--to-url" in str(refused.value)
    finally:
        await same.aclose()
    assert await snapshot() == before  # the tampering is still there to be found; no checkpoint


async def test_the_same_client_as_target_is_refused(
    source: Redis, snapshot: Callable[[], Awaitable[Snapshot]]
) -> None:
    before = await snapshot()
    with pytest.raises(ReplayTargetError, match="source database itself"):
        await replay(source, source, into_existing=True)
    assert await snapshot() == before


@pytest.mark.server_only  # a user of one server (a cluster's ACL users are per node)
async def test_a_user_who_may_not_run_info_is_still_refused_the_source(
    source: Redis, redis_url: str, snapshot: Callable[[], Awaitable[Snapshot]]
) -> None:
    user = f"no-info-{uuid.uuid4().hex[:8]}"
    await source.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                             commands=["+@all", "-info"])  # fmt: skip
    host_port = redis_url.split("//", 1)[1].rsplit("/", 1)[0]
    try:
        before = await snapshot()
        same = Redis.from_url(f"redis://{user}:pw@{host_port}/0")
        other = Redis.from_url(f"redis://{user}:pw@{host_port}/1")
        try:
            await other.flushdb()
            with pytest.raises(ReplayTargetError, match="source database itself"):
                await replay(source, same, into_existing=True)
            assert await snapshot() == before
            assert (await replay(source, other)).applied == 9  # another database: a target
            await other.flushdb()
        finally:
            await same.aclose()
            await other.aclose()
    finally:
        await source.acl_deluser(user)


async def test_another_database_of_the_same_server_is_a_target(
    source: Redis, target: Redis
) -> None:
    report = await replay(source, target)
    assert report.applied == 9
    assert await target.smembers("__rapyer_special__:TgArticle:{tg}a1:tags") == {
        b'"y"',
        b'"z"',
        b'"w"',
    }


# -- a target that holds data ---------------------------------------------------------------------


async def test_a_target_with_keys_of_its_own_is_refused_and_left_alone(
    source: Redis, target: Redis
) -> None:
    await target.set("unrelated", "keep me")
    await target.hset("TgArticle:{tg}a1", "title", '"theirs"')
    for dry_run in (False, True):
        with pytest.raises(ReplayTargetError) as refused:
            await replay(source, target, dry_run=dry_run)
        assert refused.value.reason == "target_not_empty"
        message = str(refused.value)
        assert "holds 2 key(s)" in message and checkpoint(source) in message
        assert "--into-existing" in message and "into_existing=True" in message
    assert sorted(await target.keys("*")) == [b"TgArticle:{tg}a1", b"unrelated"]
    assert await target.hgetall("TgArticle:{tg}a1") == {b"title": b'"theirs"'}


async def test_into_existing_replays_on_top_of_the_targets_keys(
    source: Redis, target: Redis
) -> None:
    await target.set("unrelated", "keep me")
    report = await replay(source, target, into_existing=True)
    assert report.applied == 9
    assert await target.get("unrelated") == b"keep me"
    assert await target.get(checkpoint(source)) == (await ids_of(source))[-1].encode()


async def test_a_target_holding_this_replays_checkpoint_is_a_resume(
    source: Redis, target: Redis
) -> None:
    ids = await ids_of(source)
    first = await replay(source, target, until=ids[3])
    assert first.applied == 4 and await target.dbsize() > 1
    rest = await replay(source, target)  # no into_existing: the checkpoint says it is ours
    assert (rest.applied, rest.resumed_after, rest.last_id) == (5, ids[3], ids[-1])
    await TgNote(pk="{tg}n2").asave()
    newer = await replay(source, target)
    assert (newer.applied, newer.resumed_after) == (1, ids[-1])


async def test_another_replays_checkpoint_does_not_make_a_resume(
    source: Redis, target: Redis
) -> None:
    await replay(source, target, model="TgNote")  # its checkpoint is ...:TgNote
    with pytest.raises(ReplayTargetError, match="no checkpoint of this replay"):
        await replay(source, target)
    assert not await target.exists(checkpoint(source))


# -- checkpoints for nothing, model filters that match nothing ------------------------------------


async def test_a_model_filter_that_matches_nothing_leaves_no_checkpoint(
    source: Redis, target: Redis
) -> None:
    report = await replay(source, target, model="tgnote")
    assert (report.applied, report.skipped) == (0, 9)
    assert report.model_absent
    assert report.models == {"TgArticle", "TgNote"}
    assert await target.dbsize() == 0  # no ledgerset:replay:ledgerset:journal:tgnote


async def test_a_model_filter_that_matches_is_not_absent(source: Redis, target: Redis) -> None:
    report = await replay(source, target, model="TgNote")
    assert (report.applied, report.skipped, report.model_absent) == (4, 5, False)
    again = await replay(source, target, model="TgNote")  # resumed: nothing left, not absent
    assert (again.applied, again.model_absent) == (0, False)


async def test_a_replay_that_applied_nothing_yet_leaves_no_checkpoint(
    source: Redis, target: Redis
) -> None:
    # The model's only entry comes after more than a batch of another model's entries.
    filler = await TgArticle(pk="{tg}filler").asave()
    async with ledgerset.transaction():
        for number in range(600):
            filler.tags.add(f"t{number}")
    await TgLate(pk="{tg}late").asave()
    ids = await ids_of(source)
    before = await replay(source, target, model="TgLate", until=ids[-2])
    assert (before.applied, before.skipped, before.last_id) == (0, len(ids) - 1, ids[-2])
    assert await target.dbsize() == 0
    late = await replay(source, target, model="TgLate")
    assert (late.applied, late.skipped, late.resumed_after) == (1, len(ids) - 1, None)
    assert await target.get(checkpoint(source, "TgLate")) == ids[-1].encode()
    assert await target.exists("TgLate:{tg}late")


# -- progress -------------------------------------------------------------------------------------


async def test_a_resumed_replays_progress_counts_what_it_has_left(
    source: Redis, target: Redis
) -> None:
    ids = await ids_of(source)
    calls: list[tuple[int, int]] = []
    await replay(source, target, until=ids[2], on_progress=lambda *call: calls.append(call))
    assert calls[-1] == (3, 9)  # stopped by until: 3 of the stream's 9
    calls.clear()
    await replay(source, target, on_progress=lambda *call: calls.append(call))
    assert calls[-1] == (6, 6)  # the 6 left after the checkpoint, not 6 of 9
