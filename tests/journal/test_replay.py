"""Replay rebuilds a database from the journal: the same keys, members, fields and expiries.

A random history (saves with and without TTL, updates, deletes, every set mutation, immediate and
in transactions) in database 0, replayed into an empty database 1, gives the same data. Also:
a second replay applies nothing; a replay stopped at an entry resumes where it stopped; ``until``
an entry id or a moment; models whose expiry has passed are not created (and counted); the
``model`` filter; ``dry_run``; an unknown record version or malformed args stop the replay before
that entry's transaction; an upcaster brings an old record up to date; a target key of the wrong
type is a conflict; a target with another key layout gets its sets at its own prefix.

On a cluster too (``also_on_cluster``): replayed out of it into one server (``target``, its keys
spelled the single server's way, one checkpoint per slot stream), and into a second cluster
(``cluster_target``: from one server, and from a cluster). The models a transaction writes together
share a hash tag (``{rp}``), so their entries are in one slot stream; in a random history,
transactions over models of several slots are refused on a cluster (``CrossSlotError``, nothing
written) like those over missing models, and those over the models of ``{rp}`` commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from support import all_keys, journal_streams, raw_ids, set_key_of, single_spelling, stream_of

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    CrossSlotError,
    ModelNotFoundError,
    RedisConfig,
    RedisSet,
    StreamJournal,
)
from ledgerset.commands.record import UPCASTERS
from ledgerset.embedded import EmbeddedCluster
from ledgerset.errors import JournalEntryError, ReplayConflictError
from ledgerset.journal import replay
from ledgerset.keys import KeyLayout, checkpoint_key

STREAM = "ledgerset:journal"
TTL_TOLERANCE_MS = 2000
#: A hash tag that puts models in one slot (and their entries in one slot stream) on a cluster.
TAG = "{rp}"

pytestmark = pytest.mark.also_on_cluster


class RpArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    scores: RedisSet[int] | None = None


class RpTimed(AtomicRedisModel):
    Meta = RedisConfig(ttl=1000)
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    scores: RedisSet[int] | None = None


MODELS: dict[str, type[AtomicRedisModel]] = {"RpArticle": RpArticle, "RpTimed": RpTimed}


@pytest.fixture
async def source(redis: Redis) -> AsyncIterator[Redis]:
    """Database 0, journaled."""
    await ledgerset.init(redis=redis, journal=StreamJournal())
    yield redis


@pytest.fixture
async def cluster_target(other_cluster: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    """The second embedded cluster, flushed: where a test replays into a cluster."""
    client = RedisCluster.from_url(other_cluster.url)
    await client.flushdb()
    yield client
    await client.aclose()


def checkpoint(source: Redis, key: str, model: str | None = None) -> str:
    """Where a replay into one server records its progress through the entries of ``key``:
    the checkpoint of the source's stream, or of the slot stream of ``key`` on a cluster."""
    return checkpoint_key(stream_of(source, key), model)


# -- comparing databases --------------------------------------------------------------------------


async def data_of(redis: Redis) -> dict[bytes, tuple[str, Any]]:
    """Every data key (not ledgerset's own), as one server spells it: its type and value."""
    state: dict[bytes, tuple[str, Any]] = {}
    for key in sorted(await all_keys(redis)):
        if key.startswith(b"ledgerset:"):
            continue
        kind = (await redis.type(key)).decode()
        if kind == "set":
            value: Any = await redis.smembers(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        else:
            value = await redis.dump(key)
        state[single_spelling(key)] = (kind, value)
    return state


async def ttls_of(redis: Redis) -> dict[bytes, int]:
    return {
        single_spelling(key): await redis.pttl(key)
        for key in await all_keys(redis)
        if not key.startswith(b"ledgerset:")
    }


def assert_ttls_match(expected: dict[bytes, int], actual: dict[bytes, int]) -> None:
    assert expected.keys() == actual.keys()
    for key, ttl in expected.items():
        if ttl < 0:
            assert actual[key] == ttl, key
        else:
            assert abs(actual[key] - ttl) <= TTL_TOLERANCE_MS, (key, ttl, actual[key])


async def assert_same_data(source: Redis, target: Redis) -> None:
    assert await data_of(target) == await data_of(source)
    assert_ttls_match(await ttls_of(source), await ttls_of(target))


async def stream_ids(redis: Redis) -> list[str]:
    return await raw_ids(redis)


def set_key(model: str, pk: str, field: str = "tags", prefix: str = "__rapyer_special__") -> str:
    """A set's key in a single server's layout: the target's."""
    return f"{prefix}:{model}:{pk}:{field}"


# -- a random history -----------------------------------------------------------------------------

model_names = st.sampled_from(sorted(MODELS))
# Two of the pks share a hash tag: on a cluster, transactions over those models commit (one slot).
pks = st.sampled_from(["p1", f"{TAG}p2", f"{TAG}p3"])
set_fields = st.sampled_from(["tags", "scores"])
numbers = st.integers(0, 4)
some_numbers = st.lists(numbers, max_size=4)
titles = st.text(max_size=4)

# Each op: (kind, model, pk, argument).
saves = st.tuples(
    st.just("save"),
    model_names,
    pks,
    st.tuples(titles, some_numbers, st.none() | some_numbers),
)
updates = st.tuples(st.just("update"), model_names, pks, titles)
deletes = st.tuples(st.just("delete"), model_names, pks, st.none())
set_ops = st.tuples(
    st.sampled_from(["add", "remove", "clear", "retain", "toggle", "discard_many"]),
    model_names,
    pks,
    st.tuples(set_fields, some_numbers),
)
pops = st.tuples(st.just("pop"), model_names, pks, set_fields)
buffered_ops = st.one_of(saves, updates, deletes, set_ops)
transactions = st.tuples(
    st.just("transaction"), st.none(), st.none(), st.lists(buffered_ops, min_size=1, max_size=4)
)
histories = st.lists(st.one_of(saves, updates, deletes, set_ops, pops, transactions), max_size=14)


def member(field: str, number: int) -> str | int:
    return f"m{number}" if field == "tags" else number


def instance(model: str, pk: str) -> Any:
    """A handle on a stored model: its set fields bound (``scores`` too) to build commands."""
    return MODELS[model](pk=pk, scores=set())


async def run_buffered(op: tuple[str, str, str, Any]) -> None:
    """One op that can run at once or inside a transaction."""
    kind, model, pk, argument = op
    if kind == "save":
        title, tags, scores = argument
        await MODELS[model](
            pk=pk,
            title=title,
            tags={member("tags", n) for n in tags},
            scores=None if scores is None else set(scores),
        ).asave()
    elif kind == "update":
        await instance(model, pk).aupdate(title=argument)
    elif kind == "delete":
        await instance(model, pk).adelete()
    else:
        field, chosen = argument
        redis_set = getattr(instance(model, pk), field)
        values = {member(field, n) for n in chosen}
        if kind == "add":
            if values:
                await redis_set.aadd_many(values)
        elif kind == "remove":
            if values:
                await redis_set.aremove(next(iter(values)))
        elif kind == "clear":
            await redis_set.aclear()
        elif kind in ("retain", "toggle", "discard_many"):
            # Sync mutators only send commands inside a transaction: open one if none is.
            async with ledgerset.transaction():
                if kind == "retain":
                    redis_set &= values
                elif kind == "toggle":
                    redis_set ^= values
                else:
                    redis_set -= values


async def run_history(history: list[tuple[str, Any, Any, Any]]) -> None:
    for kind, model, pk, argument in history:
        try:
            if kind == "pop":
                await getattr(instance(model, pk), argument).apop()
            elif kind == "transaction":
                async with ledgerset.transaction():
                    for op in argument:
                        await run_buffered(op)
            else:
                await run_buffered((kind, model, pk, argument))
        except (ModelNotFoundError, CrossSlotError):
            pass  # refused: nothing written, nothing journaled


SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def assert_replay_rebuilds(
    source: Redis, target: Redis, history: list[tuple[str, Any, Any, Any]]
) -> None:
    """``history`` run on the emptied source, replayed into the emptied target: the same data,
    every entry applied."""
    await source.flushdb()
    await target.flushdb()
    await run_history(history)
    report = await replay(source, target)
    assert await data_of(target) == await data_of(source)
    assert_ttls_match(await ttls_of(source), await ttls_of(target))
    entry_count = len(await raw_ids(source))
    assert (report.applied, report.skipped, report.expired) == (entry_count, 0, 0)


@SETTINGS
@given(history=histories)
async def test_replay_of_a_random_history_rebuilds_the_same_data(
    source: Redis, target: Redis, history: list[tuple[str, Any, Any, Any]]
) -> None:
    await assert_replay_rebuilds(source, target, history)


@settings(SETTINGS, max_examples=8)  # a second cluster's flushes cost more: fewer examples
@given(history=histories)
async def test_replay_of_a_random_history_into_a_cluster_rebuilds_the_same_data(
    source: Redis, cluster_target: RedisCluster, history: list[tuple[str, Any, Any, Any]]
) -> None:
    await assert_replay_rebuilds(source, cluster_target, history)  # type: ignore[arg-type]


# -- resuming -------------------------------------------------------------------------------------


async def small_history() -> tuple[RpArticle, RpTimed]:
    """Nine entries over two models of one slot: saves, set mutations, a transaction, an update,
    a pop."""
    article = await RpArticle(pk=f"{TAG}article", title="a", tags={"x"}).asave()
    timed = await RpTimed(pk=f"{TAG}timed", title="t").asave()
    await article.tags.aadd_many(["y", "z"])
    async with ledgerset.transaction():
        article.tags -= {"x"}
        await timed.tags.aadd("t1")
        await timed.aupdate(title="t2")
    await article.tags.apop()
    await timed.tags.aclear()
    await article.aupdate(title="b")
    return article, timed


async def test_a_second_replay_applies_nothing(source: Redis, target: Redis) -> None:
    await small_history()
    first = await replay(source, target)
    assert first.applied == 9
    before = await data_of(target)
    second = await replay(source, target)
    assert (second.applied, second.skipped, second.expired) == (0, 0, 0)
    assert second.last_id == first.last_id == (await stream_ids(source))[-1]
    assert await data_of(target) == before
    await assert_same_data(source, target)


async def test_a_replay_into_a_cluster_resumes_and_a_second_one_applies_nothing(
    source: Redis, cluster_target: RedisCluster
) -> None:
    await small_history()
    ids = await stream_ids(source)
    first = await replay(source, cluster_target, until=ids[2])
    assert (first.applied, first.last_id) == (3, ids[2])
    rest = await replay(source, cluster_target)
    assert (rest.applied, rest.last_id) == (len(ids) - 3, ids[-1])
    before = await data_of(cluster_target)
    again = await replay(source, cluster_target)
    assert (again.applied, again.skipped, again.expired) == (0, 0, 0)
    assert await data_of(cluster_target) == before
    await assert_same_data(source, cluster_target)


async def test_a_replay_until_an_entry_resumes_after_it(source: Redis, target: Redis) -> None:
    article, _ = await small_history()
    ids = await stream_ids(source)
    first = await replay(source, target, until=ids[2])
    assert (first.applied, first.last_id) == (3, ids[2])
    assert await target.get(checkpoint(source, article.key)) == ids[2].encode()
    members = {b'"x"', b'"y"', b'"z"'}
    assert await target.smembers(set_key("RpArticle", article.pk)) == members
    second = await replay(source, target)
    assert first.applied + second.applied == len(ids)
    assert second.last_id == ids[-1]
    assert await target.get(checkpoint(source, article.key)) == ids[-1].encode()
    await assert_same_data(source, target)


async def test_a_replay_cancelled_between_batches_resumes_to_the_same_data(
    source: Redis, target: Redis
) -> None:
    # Three batches: a save and a transaction of 500 adds, then two more such transactions.
    article = await RpArticle(title="many").asave()
    for start in range(0, 1500, 500):
        async with article.apipeline():
            for number in range(start, start + 500):
                article.tags.add(f"tag-{number}")
    entries = len(await stream_ids(source))

    def cancel_after_the_first_batch(done: int, total: int) -> None:
        replaying.cancel()

    replaying = asyncio.ensure_future(
        replay(source, target, on_progress=cancel_after_the_first_batch)
    )
    with pytest.raises(asyncio.CancelledError):
        await replaying
    batches = [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "_Run.apply"]
    assert not batches  # no batch left running behind the cancelled replay
    stopped_at = await target.get(checkpoint(source, article.key))
    assert stopped_at is not None  # the first batch landed, with its checkpoint
    landed = await target.scard(set_key("RpArticle", article.pk))
    assert landed % 500 == 0 and landed < 1500  # whole transactions only, and not all of them

    rest = await replay(source, target)
    assert rest.applied == entries - 1 - landed  # resumed after the checkpoint, nothing twice
    await assert_same_data(source, target)


async def test_until_inside_a_transaction_applies_none_of_it(source: Redis, target: Redis) -> None:
    article, timed = await small_history()
    ids = await stream_ids(source)  # ids[3:6] are the transaction's
    report = await replay(source, target, until=ids[4])
    assert (report.applied, report.last_id) == (3, ids[2])
    assert await target.get(checkpoint(source, article.key)) == ids[2].encode()
    assert await target.smembers(set_key("RpArticle", article.pk)) == {b'"x"', b'"y"', b'"z"'}
    assert await target.exists(set_key("RpTimed", timed.pk)) == 0
    assert await target.hget(timed.key, "title") == b'"t"'


async def test_until_a_moment_gives_the_state_as_of_then(source: Redis, target: Redis) -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    article = RpArticle(title="v1")
    with freeze_time(start):
        await article.asave()
    with freeze_time(start + timedelta(seconds=10)):
        await article.tags.aadd("early")
    with freeze_time(start + timedelta(seconds=20)):
        await article.aupdate(title="v2")
        await article.tags.aadd("late")
    report = await replay(source, target, until=start + timedelta(seconds=15))
    assert report.applied == 2
    assert await target.hget(article.key, "title") == b'"v1"'
    assert await target.smembers(set_key("RpArticle", article.pk)) == {b'"early"'}


# -- expiries -------------------------------------------------------------------------------------


async def test_a_model_whose_expiry_passed_is_not_created(source: Redis, target: Redis) -> None:
    gone = RpTimed(pk=f"{TAG}gone", title="gone", tags={"a"})
    with freeze_time(datetime.now(UTC) - timedelta(seconds=2000)):
        await gone.asave()  # on the source it lives 1000 s from now: the server's clock
    await gone.tags.aadd("b")
    await gone.aupdate(title="still gone")
    kept = await RpArticle(pk=f"{TAG}kept", tags={"k"}).asave()
    report = await replay(source, target)
    assert (report.applied, report.expired, report.skipped) == (1, 3, 0)
    assert report.expired_models == {("RpTimed", gone.pk)}
    assert set(await target.keys("*")) == {
        checkpoint(source, kept.key).encode(),
        kept.key.encode(),
        set_key("RpArticle", kept.pk).encode(),
    }


async def test_a_model_saved_later_again_is_created_again(source: Redis, target: Redis) -> None:
    model = RpTimed(title="old")
    with freeze_time(datetime.now(UTC) - timedelta(seconds=2000)):
        await model.asave()
    await model.tags.aadd("lost")
    await RpTimed(pk=model.pk, title="new", tags={"kept"}).asave()
    report = await replay(source, target)
    assert (report.applied, report.expired) == (1, 2)
    assert await target.hget(model.key, "title") == b'"new"'
    assert await target.smembers(set_key("RpTimed", model.pk)) == {b'"kept"'}


async def test_an_expiry_is_restored_as_an_absolute_time(source: Redis, target: Redis) -> None:
    model = RpTimed(tags={"a"})
    saved_at = datetime.now(UTC) - timedelta(seconds=100)
    with freeze_time(saved_at):
        await model.asave()
    await model.tags.aadd("b")
    await replay(source, target)
    expected = saved_at.timestamp() * 1000 + 1_000_000 - time.time() * 1000  # about 900 s
    for key in (model.key, set_key("RpTimed", model.pk)):
        assert abs(await target.pttl(key) - expected) <= TTL_TOLERANCE_MS, key
    assert await target.smembers(set_key("RpTimed", model.pk)) == {b'"a"', b'"b"'}


# -- filters and dry runs -------------------------------------------------------------------------


async def test_the_model_filter_replays_only_that_model(source: Redis, target: Redis) -> None:
    _, timed = await small_history()
    report = await replay(source, target, model="RpTimed")
    assert (report.applied, report.skipped) == (4, 5)
    data = await data_of(target)
    assert set(data) == {timed.key.encode()}
    assert data[timed.key.encode()][1][b"title"] == b'"t2"'
    last = (await stream_ids(source))[-1].encode()
    assert await target.get(checkpoint(source, timed.key, "RpTimed")) == last
    assert await target.exists(checkpoint(source, timed.key)) == 0


async def test_a_dry_run_counts_but_writes_nothing(source: Redis, target: Redis) -> None:
    await small_history()
    report = await replay(source, target, dry_run=True)
    assert report.dry_run
    assert (report.applied, report.skipped, report.expired) == (9, 0, 0)
    assert report.last_id == (await stream_ids(source))[-1]
    assert await target.dbsize() == 0


# -- bad entries ----------------------------------------------------------------------------------


async def raw_entry(redis: Redis, entry_id: str) -> dict[bytes, bytes]:
    """The fields of entry ``entry_id`` of the journal's one stream (of each slot stream, on a
    cluster), as ``XRANGE`` gives them."""
    (fields,) = [
        dict(fields)
        for name in await journal_streams(redis)
        for _, fields in await redis.xrange(name, min=entry_id, max=entry_id)
    ]
    return fields


async def append_transaction(redis: Redis, *entries: dict[bytes, bytes]) -> list[str]:
    """XADD ``entries`` by hand as one transaction of their own, into the stream that holds
    the entries of their key (on a cluster, its slot's)."""
    ids = []
    for seq, fields in enumerate(entries, start=1):
        changed = {**fields, b"txn": b"f" * 32, b"seq": str(seq), b"of": str(len(entries))}
        stream = stream_of(redis, fields[b"key"].decode())
        ids.append((await redis.xadd(stream, changed)).decode())  # type: ignore[arg-type]
    return ids


@pytest.mark.parametrize(
    "change",
    [
        {b"v": b"99"},
        {b"args": b'{"items":["c"]}'},
        {b"args": b"not json"},
        {b"cmd": b"set.explode"},
    ],
    ids=["unknown-version", "args-do-not-fit", "args-not-json", "unknown-command"],
)
async def test_a_bad_entry_stops_the_replay_before_its_transaction(
    source: Redis, target: Redis, change: dict[bytes, bytes]
) -> None:
    article = await RpArticle(tags={"a"}).asave()
    await article.tags.aadd("b")
    ids = await stream_ids(source)
    add = await raw_entry(source, ids[1])
    good_id, bad_id = await append_transaction(
        source, {**add, b"args": b'{"members":["in-tx"]}'}, {**add, **change}
    )
    with pytest.raises(JournalEntryError) as caught:
        await replay(source, target)
    assert caught.value.entry_id == bad_id
    assert bad_id in str(caught.value)
    # What came before the bad transaction is applied; nothing of that transaction is.
    assert await target.smembers(set_key("RpArticle", article.pk)) == {b'"a"', b'"b"'}
    assert await target.get(checkpoint(source, article.key)) == ids[1].encode()
    assert good_id > ids[1]


async def test_an_upcaster_brings_an_old_record_up_to_date(source: Redis, target: Redis) -> None:
    article = await RpArticle(tags={"a"}).asave()
    await article.tags.aadd("b")
    add = await raw_entry(source, (await stream_ids(source))[1])
    await append_transaction(source, {**add, b"v": b"0", b"args": b'{"items":["c","d"]}'})
    UPCASTERS[("set.add", 0)] = lambda args: {"members": args["items"]}
    try:
        report = await replay(source, target)
    finally:
        del UPCASTERS[("set.add", 0)]
    assert report.applied == 3
    members = {b'"a"', b'"b"', b'"c"', b'"d"'}
    assert await target.smembers(set_key("RpArticle", article.pk)) == members


# -- conflicts and layouts ------------------------------------------------------------------------


async def test_a_target_key_of_the_wrong_type_is_a_conflict(source: Redis, target: Redis) -> None:
    article = await RpArticle(tags={"a"}).asave()
    await article.tags.aadd("b")
    first = await replay(source, target)
    await article.tags.aadd("c")
    conflicting = (await stream_ids(source))[-1]
    await target.delete(set_key("RpArticle", article.pk))
    await target.set(set_key("RpArticle", article.pk), "foreign")
    with pytest.raises(ReplayConflictError) as caught:
        await replay(source, target)
    assert caught.value.entry_id == conflicting
    assert conflicting in str(caught.value)
    reached = first.last_id.encode()  # type: ignore[union-attr]
    assert await target.get(checkpoint(source, article.key)) == reached
    assert await target.get(set_key("RpArticle", article.pk)) == b"foreign"


async def calls_of(redis: Redis, command: str) -> int:
    """How many times the server ran ``command`` since its statistics were reset."""
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_run_of_writes_to_one_set_lands_as_one_write_with_every_version(
    source: Redis, target: Redis
) -> None:
    # A journal's adds come one entry each: replayed, a run of them on one set is one SADD and
    # one bump of the version by their number, and the target ends as the source did.
    article = await RpArticle().asave()
    for number in range(9):
        await article.tags.aadd(f"t{number}")
    for number in range(3):
        await article.tags.aremove(f"t{number}")
    other = await RpArticle().asave()
    await other.tags.aadd("o")
    await article.tags.aadd("late")
    await target.config_resetstat()
    report = await replay(source, target)
    assert report.applied == len(await stream_ids(source))
    # The runs: article's 9 adds, its 3 removes, other's add, article's last add.
    assert (await calls_of(target, "sadd"), await calls_of(target, "srem")) == (3, 1)
    assert await target.hget(article.key, "_version") == await source.hget(article.key, "_version")
    await assert_same_data(source, target)


async def test_a_refused_run_of_writes_names_its_first_entry(source: Redis, target: Redis) -> None:
    article = await RpArticle(tags={"a"}).asave()
    first = await replay(source, target)
    for number in range(3):
        await article.tags.aadd(f"t{number}")
    refused = (await stream_ids(source))[1]  # the first add of the run
    await target.delete(set_key("RpArticle", article.pk))
    await target.set(set_key("RpArticle", article.pk), "foreign")
    with pytest.raises(ReplayConflictError) as caught:
        await replay(source, target)
    assert caught.value.entry_id == refused
    assert await target.get(checkpoint(source, article.key)) == first.last_id.encode()  # type: ignore[union-attr]
    assert await target.get(set_key("RpArticle", article.pk)) == b"foreign"


async def test_a_run_of_writes_to_a_model_gone_from_the_target_counts_as_expired(
    source: Redis, target: Redis
) -> None:
    # The model expired on the target between two runs: each write of the run is dropped and
    # counted, the rest of the batch lands.
    article = await RpArticle(tags={"a"}).asave()
    await replay(source, target)
    for number in range(3):
        await article.tags.aadd(f"t{number}")
    kept = await RpArticle(tags={"k"}).asave()
    await target.delete(article.key, set_key("RpArticle", article.pk))
    report = await replay(source, target)
    assert (report.applied, report.expired) == (1, 3)
    assert report.expired_models == {("RpArticle", article.pk)}
    assert await target.exists(article.key, set_key("RpArticle", article.pk)) == 0
    assert await target.smembers(set_key("RpArticle", kept.pk)) == {b'"k"'}


async def test_a_conflict_on_the_first_batch_leaves_no_checkpoint(
    source: Redis, target: Redis
) -> None:
    article = await RpArticle(tags={"a"}).asave()
    await target.set(set_key("RpArticle", article.pk), "foreign")
    with pytest.raises(ReplayConflictError) as caught:
        await replay(source, target, into_existing=True)
    assert caught.value.entry_id == (await stream_ids(source))[0]
    assert await target.exists(checkpoint(source, article.key), article.key) == 0


async def test_a_target_layout_puts_the_sets_at_its_own_prefix(
    source: Redis, target: Redis
) -> None:
    article, timed = await small_history()
    await replay(source, target, layout=KeyLayout(special_prefix="other"))
    keys = set(await target.keys("*"))
    assert keys == {
        checkpoint(source, article.key).encode(),
        article.key.encode(),
        timed.key.encode(),
        set_key("RpArticle", article.pk, prefix="other").encode(),
    }
    moved = await target.smembers(set_key("RpArticle", article.pk, prefix="other"))
    assert moved == await source.smembers(set_key_of("RpArticle", article.pk, "tags"))
