"""The reads of issue 13: ``aiter``, ``arandom``, ``acontains_many``, ``aintersect_size`` and the
subset tests, against a real server.

"On the server" is proved as in ``test_redis_set_methods.py``: a second instance loaded with
``aget`` changes the set, so the first instance's mirror is stale. Paging is proved by the
server's own count of ``SSCAN`` calls (``INFO commandstats``). Refusals are checked before any
I/O with a model whose client points at a port where nothing listens, and against the whole
database (``snapshot``). An older server is stood in for by one whose commands were disabled with
``rename-command``: it answers exactly as a server without them does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from support import server_binary, take_snapshot

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    InvalidArgumentError,
    InvalidMemberError,
    LedgersetError,
    RedisConfig,
    UnsupportedCommandError,
    WrongTypeError,
)
from ledgerset.embedded import EmbeddedServer
from ledgerset.types import RedisSet

pytestmark = pytest.mark.also_on_cluster

TakeSnapshot = Callable[[], Awaitable[dict[bytes, Any]]]


class ReadsArticle(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class ReadsNumbers(AtomicRedisModel):
    values: RedisSet[int] = Field(default_factory=RedisSet)
    anything: RedisSet = Field(default_factory=RedisSet)  # type: ignore[type-arg]


class ReadsOffline(AtomicRedisModel):
    """Talks to a port where no server listens: any I/O would raise a connection error."""

    Meta = RedisConfig(redis=Redis.from_url("redis://127.0.0.1:1/0"))
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def saved(*members: str) -> ReadsArticle:
    return await ReadsArticle(tags=set(members)).asave()


async def sscan_calls(redis: Redis) -> int:
    if isinstance(redis, RedisCluster):  # the calls of every primary, by node
        by_node = await redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        calls = (stats.get("cmdstat_sscan", {}).get("calls", 0) for stats in by_node.values())
        return sum(int(count) for count in calls)
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_sscan", {}).get("calls", 0))


async def reset_stats(redis: Redis) -> None:
    if isinstance(redis, RedisCluster):
        await redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
    else:
        await redis.config_resetstat()


async def collect(members: AsyncIterator[Any]) -> list[Any]:
    return [member async for member in members]


# -- aiter / async for ------------------------------------------------------------------------


async def test_async_for_yields_the_servers_members(redis: Redis) -> None:
    article = await saved("a", "b")
    other = await ReadsArticle.aget(article.key)
    await other.tags.aadd("new")
    await other.tags.aremove("a")

    assert sorted([member async for member in article.tags]) == ["b", "new"]
    assert article.tags == {"a", "b"}  # the mirror is neither read nor changed


async def test_aiter_reads_a_large_set_in_pages_of_about_count(redis: Redis) -> None:
    article = await saved()
    members = [f"m{i}" for i in range(3000)]
    await article.tags.aadd_many(members)
    await reset_stats(redis)

    seen = await collect(article.tags.aiter(count=100))

    assert sorted(seen) == sorted(members)  # no repeat: the set did not change meanwhile
    assert await sscan_calls(redis) >= 3000 // 200  # many pages, none of them the whole set
    await reset_stats(redis)
    assert sorted(await collect(article.tags.aiter(count=10_000))) == sorted(members)
    assert await sscan_calls(redis) == 1


async def test_aiter_stopped_early_reads_no_further_page(redis: Redis) -> None:
    article = await saved()
    await article.tags.aadd_many([f"m{i}" for i in range(3000)])
    await reset_stats(redis)

    async for _ in article.tags.aiter(count=50):
        break

    assert await sscan_calls(redis) == 1


async def test_aiter_yields_every_member_present_throughout_while_the_set_changes(
    redis: Redis,
) -> None:
    article = await saved()
    stable = {f"stable{i}" for i in range(1000)}
    churn = [f"churn{i}" for i in range(1000)]
    await article.tags.aadd_many([*stable, *churn])
    writer = await ReadsArticle.aget(article.key)

    seen: list[str] = []
    async for member in article.tags.aiter(count=20):
        seen.append(member)
        if len(seen) % 20 == 0:  # between pages: another client removes some and adds some
            await writer.tags.aremove(churn.pop())
            await writer.tags.aadd(f"added{len(seen)}")

    assert stable <= set(seen)


async def test_aiter_decodes_members_of_the_fields_type(redis: Redis) -> None:
    numbers = await ReadsNumbers(values={1, 2, 3}, anything={1.5, "x", True}).asave()

    assert sorted(await collect(numbers.values.aiter())) == [1, 2, 3]
    assert sorted(await collect(numbers.anything.aiter()), key=str) == [1, 1.5, "x"]


async def test_aiter_in_a_transaction_sees_the_state_before_the_commit(redis: Redis) -> None:
    article = await saved("a", "b")

    async with article.apipeline():
        await article.tags.aadd("c")
        article.tags.discard("a")
        assert sorted(await collect(article.tags.aiter(count=1))) == ["a", "b"]

    assert sorted([member async for member in article.tags]) == ["b", "c"]


async def test_aiter_of_a_model_never_saved_yields_nothing(redis: Redis) -> None:
    assert await collect(ReadsArticle(tags={"local"}).tags.aiter()) == []


@pytest.mark.parametrize("count", [0, -1, True, 1.5, "10", None])
async def test_aiter_refuses_a_bad_count_at_the_call_before_any_io(
    redis: Redis, snapshot: TakeSnapshot, count: object
) -> None:
    offline = ReadsOffline()
    before = await snapshot()

    with pytest.raises(InvalidArgumentError) as caught:
        offline.tags.aiter(count=count)  # type: ignore[arg-type]

    assert (caught.value.argument, caught.value.value) == ("count", count)
    assert caught.value.command == "set.scan"
    assert "ReadsOffline.tags.aiter(count=" in str(caught.value)
    assert await snapshot() == before


async def test_aiter_of_an_unbound_set_raises_at_the_call() -> None:
    with pytest.raises(LedgersetError, match="not a field of a model"):
        RedisSet().aiter()


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.arandom(),
        lambda s: s.arandom(2),
        lambda s: s.acontains_many(["a"]),
        lambda s: s.aintersect_size(),
    ],
    ids=["arandom", "arandom-k", "acontains_many", "aintersect_size"],
)
async def test_reads_of_an_unbound_set_raise(read: Callable[[RedisSet[Any]], Any]) -> None:
    with pytest.raises(LedgersetError, match="not a field of a model"):
        await read(RedisSet({"a"}))


# -- arandom ----------------------------------------------------------------------------------


async def test_arandom_returns_a_member_of_the_server_and_removes_nothing(
    redis: Redis, snapshot: TakeSnapshot
) -> None:
    article = await saved("a")
    other = await ReadsArticle.aget(article.key)
    await other.tags.aadd("b")
    await other.tags.aremove("a")
    before = await snapshot()

    assert await article.tags.arandom() == "b"  # not the mirror's "a"
    assert await snapshot() == before


async def test_arandom_of_an_empty_or_never_saved_set_is_none(redis: Redis) -> None:
    assert await (await saved()).tags.arandom() is None
    assert await ReadsArticle(tags={"local"}).tags.arandom() is None
    assert await ReadsArticle().tags.arandom(3) == []
    assert await ReadsArticle().tags.arandom(-3) == []


async def test_arandom_k_gives_up_to_k_distinct_members(redis: Redis) -> None:
    article = await saved("a", "b", "c", "d")

    picked = await article.tags.arandom(2)
    assert isinstance(picked, list) and len(picked) == len(set(picked)) == 2
    assert set(picked) <= {"a", "b", "c", "d"}
    assert sorted(await article.tags.arandom(10)) == ["a", "b", "c", "d"]
    assert await article.tags.arandom(0) == []


async def test_arandom_negative_k_gives_exactly_minus_k_members_with_repeats(redis: Redis) -> None:
    article = await saved("only")
    numbers = await ReadsNumbers(values={7, 8}).asave()

    assert await article.tags.arandom(-5) == ["only"] * 5
    picked = await numbers.values.arandom(-50)
    assert len(picked) == 50 and set(picked) <= {7, 8}
    assert all(type(value) is int for value in picked)


@pytest.mark.parametrize("k", [None, 10, -10])
async def test_arandom_names_a_member_another_client_wrote(redis: Redis, k: int | None) -> None:
    article = await saved()
    await redis.sadd(article.tags.special_key, b"7")  # an int, in a set of str

    with pytest.raises(InvalidMemberError) as caught:
        await article.tags.arandom(k) if k is not None else await article.tags.arandom()
    assert caught.value.value == b"7" and article.tags.special_key in str(caught.value)


@pytest.mark.parametrize("k", [True, 1.5, "2", 2**63, -(2**63)])
async def test_arandom_refuses_a_bad_k_before_any_io(
    redis: Redis, snapshot: TakeSnapshot, k: object
) -> None:
    before = await snapshot()

    with pytest.raises(InvalidArgumentError) as caught:
        await ReadsOffline().tags.arandom(k)  # type: ignore[call-overload]

    assert (caught.value.argument, caught.value.command) == ("k", "set.random")
    assert await snapshot() == before


# -- acontains_many ---------------------------------------------------------------------------


async def test_acontains_many_answers_in_the_order_given_from_the_server(redis: Redis) -> None:
    article = await saved("a", "b")
    other = await ReadsArticle.aget(article.key)
    await other.tags.aadd("new")
    await other.tags.aremove("a")

    assert await article.tags.acontains_many(["new", "a", "x", "b", "new"]) == [
        True,
        False,
        False,
        True,
        True,
    ]
    assert await article.tags.acontains_many(value for value in ("b", "zz")) == [True, False]


async def test_acontains_many_encodes_members_with_the_fields_codec(redis: Redis) -> None:
    numbers = await ReadsNumbers(values={1}, anything={1, "1"}).asave()

    assert await numbers.values.acontains_many([1, 2, 1]) == [True, False, True]
    # A bare RedisSet stores True, 1 and 1.0 as one member, as a Python set holds them.
    assert await numbers.anything.acontains_many([True, 1.0, "1", 2.5]) == [True, True, True, False]


async def test_acontains_many_of_nothing_is_an_empty_list_without_io(redis: Redis) -> None:
    assert await ReadsOffline().tags.acontains_many([]) == []


@pytest.mark.parametrize(
    "values",
    [["a", 1], ["a", None], [b"raw"], "abc"],
    ids=["int-in-str-set", "none", "bytes", "a-str-not-a-list"],
)
async def test_acontains_many_refuses_a_bad_member_before_any_io(
    redis: Redis, snapshot: TakeSnapshot, values: Any
) -> None:
    before = await snapshot()

    with pytest.raises(InvalidMemberError) as caught:
        await ReadsOffline().tags.acontains_many(values)

    assert "ReadsOffline.tags" in str(caught.value)
    assert caught.value.command == "set.contains_many"
    assert await snapshot() == before


async def test_acontains_many_of_a_model_never_saved_is_all_false(redis: Redis) -> None:
    assert await ReadsArticle(tags={"a"}).tags.acontains_many(["a", "b"]) == [False, False]


# -- aintersect_size --------------------------------------------------------------------------


async def test_aintersect_size_counts_on_the_server(redis: Redis) -> None:
    a, b, c = await saved("a", "b", "c"), await saved("b", "c", "d"), await saved("c", "b", "x")
    await (await ReadsArticle.aget(c.key)).tags.aremove("b")  # c's mirror still has "b"

    assert await a.tags.aintersect_size(b.tags) == 2
    assert await a.tags.aintersect_size(b.tags, c.tags) == 1
    assert await a.tags.aintersect_size() == 3
    assert await a.tags.aintersect_size(b.tags, limit=1) == 1
    assert await a.tags.aintersect_size(b.tags, limit=0) == 2


async def test_aintersect_size_with_a_model_never_saved_is_zero(redis: Redis) -> None:
    a = await saved("a")

    assert await a.tags.aintersect_size(ReadsArticle(tags={"a"}).tags) == 0
    assert await ReadsArticle(tags={"a"}).tags.aintersect_size(a.tags) == 0


@pytest.mark.parametrize("limit", [-1, True, 1.5, "1"])
async def test_aintersect_size_refuses_a_bad_limit_before_any_io(
    redis: Redis, snapshot: TakeSnapshot, limit: object
) -> None:
    offline = ReadsOffline()
    before = await snapshot()

    with pytest.raises(InvalidArgumentError) as caught:
        await offline.tags.aintersect_size(ReadsOffline().tags, limit=limit)  # type: ignore[arg-type]

    assert (caught.value.argument, caught.value.value) == ("limit", limit)
    assert await snapshot() == before


# -- aissubset, aissuperset, aisdisjoint -------------------------------------------------------

SUBSET_CASES = [
    pytest.param((), (), True, True, True, id="both-empty"),
    pytest.param((), ("a",), True, False, True, id="empty-and-not"),
    pytest.param(("a",), ("a", "b"), True, False, False, id="proper-subset"),
    pytest.param(("a", "b"), ("a", "b"), True, True, False, id="equal"),
    pytest.param(("a", "b"), ("b", "c"), False, False, False, id="overlap"),
    pytest.param(("a",), ("b",), False, False, True, id="disjoint"),
]


@pytest.mark.parametrize(("left", "right", "subset", "superset", "disjoint"), SUBSET_CASES)
async def test_subset_tests_agree_with_python_sets(
    redis: Redis,
    left: tuple[str, ...],
    right: tuple[str, ...],
    subset: bool,
    superset: bool,
    disjoint: bool,
) -> None:
    assert set(left).issubset(right) is subset  # the table is Python's own answer
    assert set(left).issuperset(right) is superset
    assert set(left).isdisjoint(right) is disjoint
    a, b = await saved(*left), await saved(*right)

    assert await a.tags.aissubset(b.tags) is subset
    assert await a.tags.aissuperset(b.tags) is superset
    assert await a.tags.aisdisjoint(b.tags) is disjoint


async def test_subset_tests_use_the_servers_members(redis: Redis) -> None:
    a, b = await saved("a", "b"), await saved("a", "b", "c")
    assert await a.tags.aissubset(b.tags) is True
    await (await ReadsArticle.aget(b.key)).tags.aremove("b")  # b's mirror still has "b"
    await (await ReadsArticle.aget(a.key)).tags.aadd("c")

    assert await a.tags.aissubset(b.tags) is False
    assert await b.tags.aissubset(a.tags) is True
    assert await a.tags.aissuperset(b.tags) is True
    assert await a.tags.aisdisjoint(b.tags) is False
    assert await a.tags.aissubset(a.tags) is True  # a set is a subset of itself


async def test_subset_tests_with_a_model_never_saved_see_an_empty_set(redis: Redis) -> None:
    a = await saved("a")
    unsaved = ReadsArticle(tags={"a"})

    assert await unsaved.tags.aissubset(a.tags) is True
    assert await a.tags.aissubset(unsaved.tags) is False
    assert await a.tags.aisdisjoint(unsaved.tags) is True


async def test_reads_in_a_transaction_run_at_once(redis: Redis) -> None:
    a, b = await saved("a"), await saved("a", "b")

    async with ledgerset.transaction() as tx:
        await b.tags.aremove("a")
        assert await a.tags.aissubset(b.tags) is True
        assert await a.tags.aintersect_size(b.tags) == 1
        assert await b.tags.acontains_many(["a"]) == [True]
        assert await a.tags.arandom() == "a"
    assert len(tx.commands) == 1  # only the write was buffered

    assert await a.tags.aissubset(b.tags) is False


# -- operands: checked before any I/O ---------------------------------------------------------

OPERAND_READS: dict[str, Callable[[RedisSet[Any], Any], Awaitable[object]]] = {
    "aintersect_size": lambda s, other: s.aintersect_size(other),
    "aissubset": lambda s, other: s.aissubset(other),
    "aissuperset": lambda s, other: s.aissuperset(other),
    "aisdisjoint": lambda s, other: s.aisdisjoint(other),
}
ALGEBRA = {
    "aunion": lambda s, other: s.aunion(other),
    "aintersect": lambda s, other: s.aintersect(other),
    "adifference": lambda s, other: s.adifference(other),
}


@pytest.mark.parametrize("method", [*OPERAND_READS, *ALGEBRA])
async def test_an_operand_on_another_client_is_refused_before_any_io(
    redis: Redis, snapshot: TakeSnapshot, method: str
) -> None:
    article = await saved("a")
    before = await snapshot()
    read = {**OPERAND_READS, **ALGEBRA}[method]

    # Had the call reached the network, the offline client would fail with a connection error;
    # and the default client would compute the answer from keys of another server.
    with pytest.raises(InvalidArgumentError) as caught:
        await read(article.tags, ReadsOffline().tags)

    assert "ReadsOffline.tags uses another Redis client" in str(caught.value)
    assert f"ReadsArticle.tags.{method}()" in str(caught.value)
    assert await snapshot() == before


@pytest.mark.parametrize("method", list(OPERAND_READS))
async def test_an_operand_of_another_member_type_is_refused(
    redis: Redis, snapshot: TakeSnapshot, method: str
) -> None:
    article = await saved("1")
    numbers = await ReadsNumbers(values={1}).asave()
    before = await snapshot()

    with pytest.raises(InvalidArgumentError) as caught:
        await OPERAND_READS[method](article.tags, numbers.values)

    assert "RedisSet[str]" in str(caught.value) and "RedisSet[int]" in str(caught.value)
    assert "ReadsNumbers.values" in str(caught.value)
    assert await snapshot() == before


@pytest.mark.parametrize("method", list(OPERAND_READS))
async def test_an_operand_that_is_not_a_bound_redis_set_is_refused(
    redis: Redis, method: str
) -> None:
    article = await saved("a")

    with pytest.raises(InvalidArgumentError, match="takes RedisSet fields") as caught:
        await OPERAND_READS[method](article.tags, {"a"})
    assert isinstance(caught.value, TypeError)
    with pytest.raises(LedgersetError, match="not a field of a model"):
        await OPERAND_READS[method](article.tags, RedisSet({"a"}))
    with pytest.raises(LedgersetError, match="not a field of a model"):
        await OPERAND_READS[method](RedisSet({"a"}), article.tags)


# -- a key overwritten by another client ------------------------------------------------------


async def test_reads_of_an_overwritten_set_key_raise_wrong_type(redis: Redis) -> None:
    article = await saved("a")
    other = await saved("b")
    await redis.set(other.tags.special_key, "not a set")

    for what, read in [
        ("set.scan", lambda: collect(other.tags.aiter())),
        ("set.random", lambda: other.tags.arandom()),
        ("set.random", lambda: other.tags.arandom(2)),
        ("set.contains_many", lambda: other.tags.acontains_many(["b"])),
        ("set.intersect_size", lambda: article.tags.aintersect_size(other.tags)),
        ("set.issubset", lambda: article.tags.aissubset(other.tags)),
        ("set.issuperset", lambda: article.tags.aissuperset(other.tags)),
        ("set.isdisjoint", lambda: article.tags.aisdisjoint(other.tags)),
    ]:
        with pytest.raises(WrongTypeError) as caught:
            await read()
        assert (caught.value.key, caught.value.actual) == (other.tags.special_key, "string")
        assert caught.value.command == what


# -- a server without the commands ------------------------------------------------------------


@pytest.fixture(scope="module")
def server_without_sintercard() -> Any:
    """SINTERCARD and SMISMEMBER disabled: a server answers as one older than Redis 7.0/6.2."""
    options = ["--rename-command", "SINTERCARD", "", "--rename-command", "SMISMEMBER", ""]
    with EmbeddedServer(binary=server_binary(), options=options) as server:
        yield server


@pytest.fixture(scope="module")
def server_without_eval_ro() -> Any:
    with EmbeddedServer(binary=server_binary(), options=["--rename-command", "EVAL_RO", ""]) as s:
        yield s


async def test_a_read_the_server_lacks_names_the_command_and_version(
    redis: Redis, server_without_sintercard: EmbeddedServer
) -> None:
    old = Redis.from_url(server_without_sintercard.url)
    try:
        await ledgerset.init(redis=old)
        a, b = await saved("a"), await saved("a", "b")
        before = await take_snapshot(old)

        for what, redis_command, since, read in [
            ("set.intersect_size", "SINTERCARD", "7.0", lambda: a.tags.aintersect_size(b.tags)),
            ("set.isdisjoint", "SINTERCARD", "7.0", lambda: a.tags.aisdisjoint(b.tags)),
            ("set.issubset", "SINTERCARD", "7.0", lambda: a.tags.aissubset(b.tags)),
            ("set.issuperset", "SINTERCARD", "7.0", lambda: a.tags.aissuperset(b.tags)),
            ("set.contains_many", "SMISMEMBER", "6.2", lambda: a.tags.acontains_many(["a"])),
        ]:
            with pytest.raises(UnsupportedCommandError) as caught:
                await read()
            error = caught.value
            assert (error.command, error.redis_command, error.since) == (what, redis_command, since)
            assert (error.model, error.field) == ("ReadsArticle", "tags")
            message = str(error)
            assert f"has no {redis_command} command" in message and f"Redis {since}" in message
            assert server_without_sintercard.url.split("//")[1].split("/")[0] in message
        assert await take_snapshot(old) == before
        assert await a.tags.amembers() == {"a"}
    finally:
        await old.aclose()


async def test_a_subset_test_without_eval_ro_names_it(
    redis: Redis, server_without_eval_ro: EmbeddedServer
) -> None:
    old = Redis.from_url(server_without_eval_ro.url)
    try:
        await ledgerset.init(redis=old)
        a, b = await saved("a"), await saved("a", "b")

        with pytest.raises(UnsupportedCommandError) as caught:
            await a.tags.aissubset(b.tags)

        assert (caught.value.redis_command, caught.value.since) == ("EVAL_RO", "7.0")
        assert await a.tags.aisdisjoint(b.tags) is False  # SINTERCARD alone needs no script
    finally:
        await old.aclose()
