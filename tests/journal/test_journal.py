"""The stream journal records one entry per applied command, atomically with its writes.

Shown through ``read_entries`` and the raw stream: every field of the entry of every command kind
(set.add, set.remove, set.pop with and without a member, set.clear, set.retain, set.toggle,
model.save, model.update, model.delete); a transaction's entries in order under one ``txn``; no
entry for anything refused or aborted; ``ts`` from the client clock (freezegun); the caller's
structlog context in ``ctx``; a model's own stream; ``maxlen`` trimming; the reader's filters and
paging; a malformed entry named in the error; and the entry id in the ``command.executed`` event.

On a cluster too (``also_on_cluster``): there the entries are in one stream per slot, read through
``support`` (every slot stream, merged, or ``XRANGE`` of each); the models a transaction writes
together share a hash tag (``{jt}``), as a cluster requires.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from freezegun import freeze_time
from pydantic import Field
from redis.asyncio import Redis
from structlog.testing import capture_logs
from support import journal_entries, journal_streams, raw_ids, spec_set_key, stream_of

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    InvalidMemberError,
    ModelNotFoundError,
    RedisConfig,
    RedisSet,
    StreamJournal,
    TransactionError,
    WrongTypeError,
)
from ledgerset.errors import JournalEntryError
from ledgerset.journal import JournalEntry, read_entries

STREAM = "ledgerset:journal"
FROZEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
FROZEN_MS = 1767323045678
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


class JrnArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    scores: RedisSet[int] | None = None


class JrnTimed(AtomicRedisModel):
    Meta = RedisConfig(ttl=60)
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class JrnRouted(AtomicRedisModel):
    Meta = RedisConfig(journal=StreamJournal("other:stream"))
    tags: RedisSet[str] = Field(default_factory=RedisSet)


@pytest.fixture
async def journaled(redis: Redis) -> AsyncIterator[Redis]:
    """The test database, with ``init`` done again with the default journal."""
    await ledgerset.init(redis=redis, journal=StreamJournal())
    yield redis


pytestmark = [pytest.mark.usefixtures("clean_structlog"), pytest.mark.also_on_cluster]


async def entries(redis: Redis, stream: str = STREAM, **filters: Any) -> list[JournalEntry]:
    return await journal_entries(redis, stream, **filters)


def set_key(model: AtomicRedisModel, field: str = "tags") -> str:
    return spec_set_key(model, field)


async def journal_of(redis: Redis, call: Callable[[], Awaitable[object]]) -> JournalEntry:
    """Run ``call`` at the frozen time; the one entry it added (its raw stream id checked)."""
    before = await raw_ids(redis)
    with freeze_time(FROZEN, tick=False):
        await call()
    after = await raw_ids(redis)
    assert after[: len(before)] == before
    (new_id,) = after[len(before) :]
    (entry,) = await entries(redis, start=new_id, end=new_id)
    assert entry.id == new_id
    return entry


def assert_lone(
    entry: JournalEntry,
    *,
    cmd: str,
    key: str,
    args: dict[str, Any],
    model: str,
    pk: str,
    field: str | None,
) -> None:
    """Every field of the entry of a command run on its own, at the frozen time."""
    assert (entry.cmd, entry.v, entry.key, entry.args) == (cmd, 1, key, args)
    assert (entry.model, entry.pk, entry.field) == (model, pk, field)
    assert entry.ts == FROZEN
    assert entry.ts_ms == FROZEN_MS
    assert HEX_ID.match(entry.txn)
    assert (entry.seq, entry.of) == (1, 1)
    assert entry.ctx == {}


async def saved_article(**fields: Any) -> JrnArticle:
    return await JrnArticle(**fields).asave()


# -- one entry per command kind -------------------------------------------------------------------


async def test_aadd_is_journaled_as_set_add(journaled: Redis) -> None:
    article = await saved_article()
    entry = await journal_of(journaled, lambda: article.tags.aadd("python"))
    assert_lone(
        entry,
        cmd="set.add",
        key=set_key(article),
        args={"members": ["python"]},
        model="JrnArticle",
        pk=article.pk,
        field="tags",
    )


async def test_aadd_many_is_one_set_add_entry_with_every_member(journaled: Redis) -> None:
    article = await saved_article(scores=set())
    entry = await journal_of(journaled, lambda: article.scores.aadd_many([3, 1, 3, 2]))
    assert_lone(
        entry,
        cmd="set.add",
        key=set_key(article, "scores"),
        args={"members": [3, 1, 2]},
        model="JrnArticle",
        pk=article.pk,
        field="scores",
    )


async def test_aremove_is_journaled_as_set_remove(journaled: Redis) -> None:
    article = await saved_article(tags={"a", "b"})
    entry = await journal_of(journaled, lambda: article.tags.aremove("a"))
    assert_lone(
        entry,
        cmd="set.remove",
        key=set_key(article),
        args={"members": ["a"]},
        model="JrnArticle",
        pk=article.pk,
        field="tags",
    )


async def test_apop_is_journaled_with_the_member_that_left(journaled: Redis) -> None:
    article = await saved_article(tags={"only"})
    entry = await journal_of(journaled, article.tags.apop)
    assert_lone(
        entry,
        cmd="set.pop",
        key=set_key(article),
        args={"member": "only"},
        model="JrnArticle",
        pk=article.pk,
        field="tags",
    )


async def test_apop_of_an_empty_set_is_journaled_with_a_null_member(journaled: Redis) -> None:
    article = await saved_article()
    entry = await journal_of(journaled, article.tags.apop)
    assert_lone(
        entry,
        cmd="set.pop",
        key=set_key(article),
        args={"member": None},
        model="JrnArticle",
        pk=article.pk,
        field="tags",
    )


async def test_aclear_is_journaled_as_set_clear(journaled: Redis) -> None:
    article = await saved_article(tags={"a"})
    entry = await journal_of(journaled, article.tags.aclear)
    assert_lone(
        entry,
        cmd="set.clear",
        key=set_key(article),
        args={},
        model="JrnArticle",
        pk=article.pk,
        field="tags",
    )


async def test_intersection_in_a_transaction_is_journaled_as_set_retain(journaled: Redis) -> None:
    article = await saved_article(tags={"a", "b", "c"})
    txn: list[str] = []

    async def retain() -> None:
        async with article.apipeline() as tx:
            article.tags &= {"a", "c", "z"}
            txn.append(tx.id)

    entry = await journal_of(journaled, retain)
    assert sorted(entry.args["members"]) == ["a", "c", "z"]
    assert_lone(
        entry,
        cmd="set.retain",
        key=set_key(article),
        args=entry.args,
        model="JrnArticle",
        pk=article.pk,
        field="tags",
    )
    assert entry.txn == txn[0]


async def test_symmetric_difference_in_a_transaction_is_journaled_as_set_toggle(
    journaled: Redis,
) -> None:
    article = await saved_article(tags={"a", "b"})
    txn: list[str] = []

    async def toggle() -> None:
        async with article.apipeline() as tx:
            article.tags ^= {"b", "c"}
            txn.append(tx.id)

    entry = await journal_of(journaled, toggle)
    assert sorted(entry.args["members"]) == ["b", "c"]
    assert_lone(
        entry,
        cmd="set.toggle",
        key=set_key(article),
        args=entry.args,
        model="JrnArticle",
        pk=article.pk,
        field="tags",
    )
    assert entry.txn == txn[0]


async def test_asave_is_journaled_with_fields_sets_and_no_ttl(journaled: Redis) -> None:
    article = JrnArticle(title="Hello", tags={"x"})
    entry = await journal_of(journaled, article.asave)
    assert_lone(
        entry,
        cmd="model.save",
        key=f"JrnArticle:{article.pk}",
        args={
            "version": 1,  # the version the save wrote
            "fields": {"pk": article.pk, "title": "Hello", "tags": True, "scores": None},
            "sets": {"tags": ["x"], "scores": None},
            "ttl_ms": None,
        },
        model="JrnArticle",
        pk=article.pk,
        field=None,
    )


async def test_asave_of_a_model_with_a_ttl_records_it_in_ms(journaled: Redis) -> None:
    timed = JrnTimed(tags={"t"})
    entry = await journal_of(journaled, timed.asave)
    assert_lone(
        entry,
        cmd="model.save",
        key=f"JrnTimed:{timed.pk}",
        args={
            "version": 1,
            "fields": {"pk": timed.pk, "tags": True},
            "sets": {"tags": ["t"]},
            "ttl_ms": 60000,
        },
        model="JrnTimed",
        pk=timed.pk,
        field=None,
    )


async def test_aupdate_is_journaled_with_only_the_updated_fields(journaled: Redis) -> None:
    article = await saved_article(title="old")
    entry = await journal_of(journaled, lambda: article.aupdate(title="new"))
    assert_lone(
        entry,
        cmd="model.update",
        key=f"JrnArticle:{article.pk}",
        args={"version": 2, "fields": {"title": "new"}},
        model="JrnArticle",
        pk=article.pk,
        field=None,
    )


async def test_adelete_is_journaled_with_the_set_fields(journaled: Redis) -> None:
    article = await saved_article(tags={"a"})
    entry = await journal_of(journaled, article.adelete)
    assert_lone(
        entry,
        cmd="model.delete",
        key=f"JrnArticle:{article.pk}",
        args={"sets": ["tags", "scores"]},
        model="JrnArticle",
        pk=article.pk,
        field=None,
    )


async def test_each_lone_command_has_its_own_txn(journaled: Redis) -> None:
    article = await saved_article()
    await article.tags.aadd("a")
    await article.tags.aadd("b")
    txns = [entry.txn for entry in await entries(journaled)]
    assert len(txns) == 3
    assert len(set(txns)) == 3


# -- transactions ---------------------------------------------------------------------------------


async def test_a_committed_transaction_journals_its_commands_in_order(journaled: Redis) -> None:
    article = await saved_article(pk="{jt}article", tags={"a"})
    other = JrnArticle(pk="{jt}other", title="other")
    async with ledgerset.transaction() as tx:
        await other.asave()
        article.tags.add("b")
        await article.tags.aremove("a")
        await other.tags.aadd_many(["x", "y"])
        await article.aupdate(title="changed")
    found = (await entries(journaled))[1:]
    assert [(e.cmd, e.pk) for e in found] == [
        ("model.save", other.pk),
        ("set.add", article.pk),
        ("set.remove", article.pk),
        ("set.add", other.pk),
        ("model.update", article.pk),
    ]
    assert {e.txn for e in found} == {tx.id}
    assert [(e.seq, e.of) for e in found] == [(seq, 5) for seq in range(1, 6)]
    assert len({e.ts for e in found}) == 1


async def test_a_transactions_entries_are_consecutive_in_the_stream(journaled: Redis) -> None:
    article = await saved_article()
    await article.tags.aadd("before")
    async with ledgerset.transaction():
        for member in ("a", "b", "c", "d"):
            await article.tags.aadd(member)
    await article.tags.aadd("after")
    ids = await raw_ids(journaled)
    found = await entries(journaled)
    assert [e.id for e in found] == ids
    assert [e.seq for e in found] == [1, 1, 1, 2, 3, 4, 1]
    # Written by one atomic program: adjacent in the stream, no other entry between them.
    assert len({e.txn for e in found[2:6]}) == 1
    assert found[1].txn != found[2].txn and found[5].txn != found[6].txn
    numeric = [tuple(int(part) for part in entry_id.split("-")) for entry_id in ids]
    assert numeric == sorted(set(numeric))


# -- nothing journaled ----------------------------------------------------------------------------


async def test_a_set_command_on_a_missing_model_is_not_journaled(journaled: Redis) -> None:
    await saved_article()
    ghost = JrnArticle()
    with pytest.raises(ModelNotFoundError):
        await ghost.tags.aadd("a")
    assert len(await raw_ids(journaled)) == 1


async def test_an_update_of_a_missing_model_is_not_journaled(journaled: Redis) -> None:
    with pytest.raises(ModelNotFoundError):
        await JrnArticle().aupdate(title="t")
    assert await journal_streams(journaled) == []


async def test_a_wrongtype_refusal_is_not_journaled(journaled: Redis) -> None:
    article = await saved_article()
    await journaled.set(set_key(article), "not a set")
    with pytest.raises(WrongTypeError):
        await article.tags.aadd("a")
    assert len(await raw_ids(journaled)) == 1


async def test_an_invalid_member_is_not_journaled(journaled: Redis) -> None:
    article = await saved_article()
    with pytest.raises(InvalidMemberError):
        await article.tags.aadd(1)  # type: ignore[arg-type]
    with pytest.raises(InvalidMemberError):
        await article.tags.aadd_many(["ok", None])  # type: ignore[list-item]
    assert len(await raw_ids(journaled)) == 1


async def test_a_transaction_that_raised_in_its_block_is_not_journaled(journaled: Redis) -> None:
    article = await saved_article()
    with pytest.raises(RuntimeError):
        async with ledgerset.transaction():
            await article.tags.aadd("a")
            await article.aupdate(title="t")
            raise RuntimeError("abort")
    assert len(await raw_ids(journaled)) == 1
    assert await journaled.exists(set_key(article)) == 0


async def test_a_transaction_refused_by_the_server_is_not_journaled(journaled: Redis) -> None:
    article = await saved_article(pk="{jt}article")
    ghost = JrnArticle(pk="{jt}ghost")
    with pytest.raises(ModelNotFoundError):
        async with ledgerset.transaction():
            await article.tags.aadd("a")
            await ghost.tags.aadd("b")
    assert len(await raw_ids(journaled)) == 1
    assert await journaled.exists(set_key(article)) == 0


async def test_apop_in_a_transaction_is_refused_and_nothing_is_journaled(
    journaled: Redis,
) -> None:
    article = await saved_article(tags={"a"})
    with pytest.raises(TransactionError):
        async with ledgerset.transaction():
            await article.tags.aadd("b")
            await article.tags.apop()
    assert len(await raw_ids(journaled)) == 1
    assert await journaled.smembers(set_key(article)) == {b'"a"'}


# -- ts, ctx, streams -----------------------------------------------------------------------------


async def test_ts_is_the_client_clock_at_the_call(journaled: Redis) -> None:
    article = await saved_article()
    with freeze_time("2026-01-02 03:04:05.678", tick=False):
        await article.tags.aadd("a")
    (_, entry) = await entries(journaled)
    assert entry.ts == FROZEN
    assert entry.ts_ms == FROZEN_MS
    stream = stream_of(journaled, article.key)
    ((_, fields),) = await journaled.xrange(stream, min=entry.id, max=entry.id)
    assert fields[b"ts"] == str(FROZEN_MS).encode()


@pytest.mark.parametrize(
    "moment", ["2004-09-14 12:17:19.997", "2039-06-18 05:32:05.773", "2026-01-02 03:04:05.678"]
)
async def test_ts_ms_is_the_stored_ts_exactly(journaled: Redis, moment: str) -> None:
    # Through a float (ts.timestamp() * 1000) some milliseconds come back one lower.
    article = await saved_article()
    with freeze_time(moment, tick=False):
        await article.tags.aadd("a")
    (_, entry) = await entries(journaled)
    stream = stream_of(journaled, article.key)
    ((_, fields),) = await journaled.xrange(stream, min=entry.id, max=entry.id)
    assert entry.ts_ms == int(fields[b"ts"])
    assert entry.ts == datetime.fromtimestamp(0, tz=UTC) + timedelta(milliseconds=entry.ts_ms)


async def test_bound_structlog_context_is_recorded_in_ctx(journaled: Redis) -> None:
    article = await saved_article()
    structlog.contextvars.bind_contextvars(request_id="r-1")
    await article.tags.aadd("a")
    saved, added = await entries(journaled)
    assert saved.ctx == {}
    assert added.ctx == {"request_id": "r-1"}


async def test_a_models_own_journal_receives_its_entries(journaled: Redis) -> None:
    routed = await JrnRouted().asave()
    await routed.tags.aadd("a")
    await saved_article()
    assert [(e.cmd, e.model) for e in await entries(journaled, "other:stream")] == [
        ("model.save", "JrnRouted"),
        ("set.add", "JrnRouted"),
    ]
    assert [(e.cmd, e.model) for e in await entries(journaled)] == [("model.save", "JrnArticle")]


async def test_a_models_own_journal_works_without_a_default_one(redis: Redis) -> None:
    await JrnRouted().asave()
    await saved_article()
    assert [e.cmd for e in await entries(redis, "other:stream")] == ["model.save"]
    assert await journal_streams(redis) == []


async def test_maxlen_trims_the_stream_approximately(redis: Redis) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(maxlen=10))
    article = await saved_article()
    async with ledgerset.transaction():
        for n in range(2000):
            await article.tags.aadd(f"m{n}")
    assert await redis.scard(set_key(article)) == 2000
    length = await redis.xlen(stream_of(redis, article.key))
    assert 10 <= length < 2000
    # Trimming drops the oldest entries: the newest one is still there.
    (last,) = await entries(redis, start=(await raw_ids(redis))[-1])
    assert last.args == {"members": ["m1999"]}
    assert (last.seq, last.of) == (2000, 2000)


# -- reading --------------------------------------------------------------------------------------


async def test_read_entries_filters_by_model_and_key(journaled: Redis) -> None:
    first = await saved_article()
    second = await saved_article()
    timed = await JrnTimed().asave()
    await first.tags.aadd("a")
    await second.tags.aadd("b")
    await timed.tags.aadd("c")
    await first.aupdate(title="t")
    by_model = await entries(journaled, model="JrnTimed")
    assert [(e.cmd, e.pk) for e in by_model] == [("model.save", timed.pk), ("set.add", timed.pk)]
    by_set_key = await entries(journaled, key=set_key(first))
    assert [(e.cmd, e.args) for e in by_set_key] == [("set.add", {"members": ["a"]})]
    by_model_key = await entries(journaled, key=first.key)
    assert [e.cmd for e in by_model_key] == ["model.save", "model.update"]
    assert await entries(journaled, model="JrnArticle", key=timed.key) == []


async def test_read_entries_start_and_end_ids_are_inclusive(journaled: Redis) -> None:
    article = await saved_article()
    for member in ("a", "b", "c", "d"):
        await article.tags.aadd(member)
    ids = await raw_ids(journaled)
    assert [e.id for e in await entries(journaled, start=ids[1], end=ids[3])] == ids[1:4]
    assert [e.id for e in await entries(journaled, start=ids[3])] == ids[3:]
    assert [e.id for e in await entries(journaled, end=ids[0])] == ids[:1]


async def test_read_entries_start_and_end_datetimes_select_by_entry_time(
    journaled: Redis,
) -> None:
    article = JrnArticle()
    moments = [FROZEN + timedelta(seconds=n) for n in range(4)]
    with freeze_time(moments[0]):
        await article.asave()
    for moment, member in zip(moments[1:], ("a", "b", "c"), strict=True):
        with freeze_time(moment):
            await article.tags.aadd(member)
    window = await entries(journaled, start=moments[1], end=moments[2])
    assert [e.args for e in window] == [{"members": ["a"]}, {"members": ["b"]}]
    since = await entries(journaled, start=moments[3])
    assert [e.args for e in since] == [{"members": ["c"]}]
    naive_until = await entries(journaled, end=moments[0].replace(tzinfo=None))
    assert [e.cmd for e in naive_until] == ["model.save"]


async def three_pages_of_entries() -> None:
    """A save, then one transaction of 1,200 adds: 1,201 entries, three pages' worth."""
    article = await saved_article()
    async with ledgerset.transaction():
        for n in range(1200):
            await article.tags.aadd(f"m{n}")


async def test_read_entries_pages_through_a_long_stream_in_order(journaled: Redis) -> None:
    await three_pages_of_entries()
    found = await entries(journaled)
    assert len(found) == 1201
    assert [e.id for e in found] == await raw_ids(journaled)
    assert [e.args["members"][0] for e in found[1:]] == [f"m{n}" for n in range(1200)]
    assert [e.seq for e in found[1:]] == list(range(1, 1201))


# Server only: the point is read_entries' own read-ahead of one stream; a cluster's streams are
# read by read_merged, which closes each stream's reader as it stops.
@pytest.mark.server_only
async def test_stopping_early_leaves_no_page_request_behind(journaled: Redis) -> None:
    # The next page is requested while the current one is read; a reader that stops early (at
    # the end bound here, or by closing the iterator) must not leave that request running.
    await three_pages_of_entries()
    ids = await raw_ids(journaled)
    before = asyncio.all_tasks()  # after a round trip: what the writes left has been scheduled
    reading = read_entries(journaled, end=ids[10])
    assert len([entry async for entry in reading]) == 11
    partial = read_entries(journaled)
    assert (await anext(partial)).id == ids[0]
    await partial.aclose()
    assert asyncio.all_tasks() - before == set()  # whatever the reader's tasks are named


GOOD_FIELDS = {
    "cmd": "set.add",
    "v": "1",
    "key": "__rapyer_special__:JrnArticle:p:tags",
    "args": '{"members":["a"]}',
    "ts": str(FROZEN_MS),
    "txn": "0" * 32,
    "seq": "1",
    "of": "1",
    "model": "JrnArticle",
    "pk": "p",
    "field": "tags",
    "ctx": "{}",
}


# Server only: the point is the raw stream, entries written into it by hand with XADD (a cluster
# names its slot stream in the error instead).
@pytest.mark.server_only
@pytest.mark.parametrize(
    "change",
    [
        {"ts": None},
        {"args": None},
        {"args": "not json"},
        {"args": "[1, 2]"},
        {"ctx": "{"},
        {"v": "one"},
        {"seq": ""},
    ],
    ids=["no-ts", "no-args", "args-not-json", "args-not-object", "ctx-not-json", "v", "seq"],
)
async def test_a_malformed_entry_is_an_error_naming_it(
    journaled: Redis, change: dict[str, str | None]
) -> None:
    good = await journaled.xadd(STREAM, GOOD_FIELDS)
    fields = {name: value for name, value in {**GOOD_FIELDS, **change}.items() if value is not None}
    bad = (await journaled.xadd(STREAM, fields)).decode()
    seen: list[str] = []
    with pytest.raises(JournalEntryError) as caught:
        async for entry in read_entries(journaled):
            seen.append(entry.id)
    assert seen == [good.decode()]
    assert caught.value.entry_id == bad
    assert caught.value.stream == STREAM
    assert bad in str(caught.value)


async def test_command_executed_event_carries_the_journal_id(journaled: Redis) -> None:
    article = await saved_article()
    with capture_logs() as logs:
        await article.tags.aadd("a")
    (event,) = [log for log in logs if log["event"] == "command.executed"]
    assert event["journal_id"] == (await raw_ids(journaled))[-1]
    assert event["command"] == "set.add"


async def test_a_transaction_over_two_journals_is_complete_in_each(journaled: Redis) -> None:
    article = await JrnArticle(pk="{jt}article").asave()
    routed = await JrnRouted(pk="{jt}routed").asave()

    async with ledgerset.transaction() as tx:
        article.tags.add("a")
        routed.tags.add("b")
        article.tags.add("c")

    main = await entries(journaled, start=(await raw_ids(journaled))[-2])
    other = (await entries(journaled, "other:stream"))[-1:]
    assert [(e.txn, e.seq, e.of, e.args) for e in main] == [
        (tx.id, 1, 2, {"members": ["a"]}),
        (tx.id, 2, 2, {"members": ["c"]}),
    ]
    assert [(e.txn, e.seq, e.of, e.args) for e in other] == [(tx.id, 1, 1, {"members": ["b"]})]


@pytest.mark.parametrize("in_transaction", [False, True])
async def test_a_journal_stream_of_another_type_refuses_the_command(
    journaled: Redis, in_transaction: bool
) -> None:
    article = await JrnArticle().asave()
    stream = stream_of(journaled, article.key)
    await journaled.delete(stream)
    await journaled.set(stream, "not a stream")

    with pytest.raises(ledgerset.WrongTypeError) as caught:
        if in_transaction:
            async with article.apipeline():
                article.tags.add("a")
        else:
            await article.tags.aadd("a")

    assert (caught.value.key, caught.value.actual, caught.value.command) == (
        stream,
        "string",
        "set.add",
    )
    assert await journaled.exists(set_key(article)) == 0
    assert await journaled.get(stream) == b"not a stream"
