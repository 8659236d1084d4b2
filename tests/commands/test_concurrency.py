"""Concurrent writers lose no update, and the journal records exactly what they did.

Dozens of asyncio tasks (sharing the process's client and its connection pool, or split over two
clients) and a second Python process write the same sets and models at once, mixing immediate
calls and transactions. Every writer adds members of its own and removes only those, so the
expected final state is the union of what each writer's calls did. The tests check that the
server holds exactly that; that each call returned what it should; and, journaled, that the stream
holds one entry per applied command (a transaction's entries contiguous, sharing one ``txn``,
numbered ``1..of``) and that replaying it into an empty database rebuilds the same members and
model hashes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisConfig, RedisSet, StreamJournal
from ledgerset.journal import replay

STREAM = "ledgerset:journal"
CHILD_TIMEOUT_S = 60


class ConcArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class ConcRouted(AtomicRedisModel):
    """Uses the default client, or (``two_clients``) a second client of its own."""

    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class ConcShared(AtomicRedisModel):
    """Written by this process and by a child process that defines the same class."""

    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


MODELS: dict[str, type[ConcArticle | ConcRouted | ConcShared]] = {
    cls.__name__: cls for cls in (ConcArticle, ConcRouted, ConcShared)
}


def tags_key(model: AtomicRedisModel) -> str:
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:tags"


@dataclass
class Tally:
    """What one writer's successful calls did: members it leaves, journal entries it caused."""

    members: dict[str, set[str]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    #: Model keys of models deleted by the end.
    deleted: set[str] = field(default_factory=set)
    #: (command name, physical key) of every applied command.
    commands: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: The number of commands of each transaction (1 for an immediate call).
    txn_sizes: list[int] = field(default_factory=list)

    def immediate(self, name: str, key: str, times: int = 1) -> None:
        for _ in range(times):
            self.commands[(name, key)] += 1
            self.txn_sizes.append(1)

    def transaction(self, *commands: tuple[str, str]) -> None:
        self.commands.update(commands)
        self.txn_sizes.append(len(commands))

    def leave(self, key: str, members: Iterable[str]) -> None:
        self.members.setdefault(key, set()).update(members)

    @classmethod
    def merged(cls, tallies: Iterable[Tally]) -> Tally:
        total = cls()
        for tally in tallies:
            for key, members in tally.members.items():
                total.leave(key, members)
            total.titles.update(tally.titles)
            total.deleted.update(tally.deleted)
            total.commands.update(tally.commands)
            total.txn_sizes.extend(tally.txn_sizes)
        return total


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(params=["plain", "journaled"])
async def journal(request: pytest.FixtureRequest, redis: Redis) -> bool:
    """Run the test without and with a journal (``init`` replaces the whole configuration)."""
    journaled = request.param == "journaled"
    await ledgerset.init(redis=redis, journal=StreamJournal() if journaled else None)
    return journaled


@pytest.fixture
async def target(redis: Redis, redis_url: str) -> AsyncIterator[Redis]:
    """Database 1 of the same server, empty: where the journal is replayed."""
    client = Redis.from_url(urlunsplit(urlsplit(redis_url)._replace(path="/1")))
    assert client.connection_pool.connection_kwargs.get("db") == 1
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["one_client", "two_clients"])
async def second_client(
    request: pytest.FixtureRequest, redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str | None]:
    """``two_clients``: ConcRouted models talk through a second client (its own pool), whose
    connections are named by this client name."""
    if request.param == "one_client":
        yield None
        return
    second = Redis.from_url(redis_url, client_name="conc-second")
    monkeypatch.setattr(ConcRouted, "Meta", RedisConfig(redis=second))
    yield "conc-second"
    await second.aclose()


# -- checking the outcome -------------------------------------------------------------------------


async def assert_members(redis: Redis, expected: Tally) -> None:
    """Each set holds exactly the union of what its writers left there, read raw and through
    a freshly loaded model; each model has its last title; deleted models left no key."""
    for key, members in expected.members.items():
        assert await redis.smembers(key) == {json.dumps(m).encode() for m in members}, key
    for model_key, title in expected.titles.items():
        loaded = await MODELS[model_key.split(":")[0]].aget(model_key)
        assert loaded.title == title
        assert await loaded.tags.amembers() == expected.members.get(tags_key(loaded), set())
    for model_key in expected.deleted:
        assert not await redis.exists(model_key), model_key


async def assert_journal_is_exact(redis: Redis, expected: Tally) -> None:
    """One entry per applied command; a transaction's entries contiguous, numbered 1..of."""
    entries = [fields for _, fields in await redis.xrange(STREAM)]
    commands = Counter((f[b"cmd"].decode(), f[b"key"].decode()) for f in entries)
    assert commands == expected.commands
    runs: list[tuple[bytes, list[tuple[int, int]]]] = []
    for f in entries:
        if not runs or runs[-1][0] != f[b"txn"]:
            runs.append((f[b"txn"], []))
        runs[-1][1].append((int(f[b"seq"]), int(f[b"of"])))
    assert len({txn for txn, _ in runs}) == len(runs), "a transaction's entries were split"
    for _, seqs in runs:
        assert seqs == [(seq, len(seqs)) for seq in range(1, len(seqs) + 1)]
    assert sorted(len(seqs) for _, seqs in runs) == sorted(expected.txn_sizes)


async def data_of(redis: Redis) -> dict[bytes, tuple[str, Any]]:
    """Every data key (not ledgerset's own bookkeeping): its type and whole value."""
    state: dict[bytes, tuple[str, Any]] = {}
    for key in await redis.keys("*"):
        if key.startswith(b"ledgerset:"):
            continue
        kind = (await redis.type(key)).decode()
        value = await (redis.smembers(key) if kind == "set" else redis.hgetall(key))
        state[key] = (kind, value)
    return state


async def assert_replay_rebuilds(source: Redis, target: Redis) -> None:
    report = await replay(source, target)
    assert report.applied == await source.xlen(STREAM)
    expected = await data_of(source)
    assert expected
    assert await data_of(target) == expected


async def check(journaled: bool, redis: Redis, target: Redis | None, expected: Tally) -> None:
    await assert_members(redis, expected)
    if not journaled:
        assert not await redis.exists(STREAM)
        return
    await assert_journal_is_exact(redis, expected)
    assert target is not None
    await assert_replay_rebuilds(redis, target)


# -- writers --------------------------------------------------------------------------------------


async def write_own_members(article: AtomicRedisModel, writer: str, rounds: int) -> Tally:
    """Immediate calls and transactions on ``article.tags``, touching only ``writer``'s members."""
    tally = Tally()
    tags: RedisSet[str] = article.tags  # type: ignore[attr-defined]
    key = tags_key(article)
    for r in range(rounds):
        own = f"{writer}-r{r}"
        for i in range(4):
            await tags.aadd(f"{own}-a{i}")
        await tags.aadd_many([f"{own}-m{i}" for i in range(10)])
        tally.immediate("set.add", key, times=5)
        assert await tags.aremove(f"{own}-a0") is True
        assert await tags.aremove(f"{own}-absent") is False
        tally.immediate("set.remove", key, times=2)
        async with article.apipeline() as tx:
            tags.add(f"{own}-x0")
            tags.update([f"{own}-x1", f"{own}-x2"])
            assert await tags.aadd(f"{own}-x3") is None
            tags.discard(f"{own}-m0")
            tags -= {f"{own}-a1"}
        assert tx.results == [1, 2, 1, 1, 1]
        tally.transaction(*[("set.add", key)] * 3, *[("set.remove", key)] * 2)
        left = [f"{own}-a{i}" for i in (2, 3)] + [f"{own}-m{i}" for i in range(1, 10)]
        tally.leave(key, left + [f"{own}-x{i}" for i in range(4)])
    return tally


async def write_shared_and_private(
    shared: ConcArticle | ConcRouted, writer: str, model_type: type[ConcArticle | ConcRouted]
) -> Tally:
    """Writes to a model shared with other writers and to one of the writer's own, with a
    save, update, pop, clear, delete, and a transaction spanning both models."""
    tally = await write_own_members(shared, writer, rounds=2)
    private = model_type(pk=f"private-{writer}", title="new", tags={"p0", "p1", "p2"})
    await private.asave()
    key, model_key = tags_key(private), private.key
    tally.immediate("model.save", model_key)
    await private.aupdate(title=f"{writer}-renamed")
    tally.immediate("model.update", model_key)
    popped = await private.tags.apop()
    assert popped in {"p0", "p1", "p2"}
    assert await private.tags.aclear() is None
    await private.tags.aadd_many(["q0", "q1", "q2"])
    tally.immediate("set.pop", key)
    tally.immediate("set.clear", key)
    tally.immediate("set.add", key)
    async with ledgerset.transaction() as tx:
        shared.tags.add(f"{writer}-both")
        private.tags.discard("q0")
        await private.aupdate(title=f"{writer}-final")
    assert tx.results == [1, 1, None]
    tally.transaction(
        ("set.add", tags_key(shared)), ("set.remove", key), ("model.update", model_key)
    )
    tally.leave(tags_key(shared), [f"{writer}-both"])
    tally.leave(key, ["q1", "q2"])
    tally.titles[model_key] = f"{writer}-final"

    doomed = model_type(pk=f"doomed-{writer}", tags={"d"})
    await doomed.asave()
    await doomed.tags.aadd("e")
    assert await doomed.adelete() is True
    tally.immediate("model.save", doomed.key)
    tally.immediate("set.add", tags_key(doomed))
    tally.immediate("model.delete", doomed.key)
    tally.leave(tags_key(doomed), [])
    tally.deleted.add(doomed.key)
    return tally


# -- one process ----------------------------------------------------------------------------------


async def test_32_tasks_on_one_set_lose_no_update(
    redis: Redis, journal: bool, target: Redis
) -> None:
    article = await ConcArticle(pk="one-set", title="shared").asave()
    saved = Tally(titles={article.key: "shared"})
    saved.immediate("model.save", article.key)
    # Half the tasks share one loaded instance, half load their own: both must lose nothing.
    loaded = [await ConcArticle.aget(article.key) for _ in range(16)]
    writers = [article] * 16 + loaded
    tallies = await asyncio.gather(
        *(write_own_members(model, f"t{n}", rounds=3) for n, model in enumerate(writers))
    )
    expected = Tally.merged([saved, *tallies])
    assert len(expected.members[tags_key(article)]) == 32 * 3 * 15
    assert await article.tags.asize() == 32 * 3 * 15
    await check(journal, redis, target, expected)


async def test_24_tasks_on_many_models_lose_no_update(
    redis: Redis, journal: bool, second_client: str | None, target: Redis
) -> None:
    shared: list[ConcArticle | ConcRouted] = []
    saved = Tally()
    for n in range(6):
        model_type = ConcArticle if n % 2 else ConcRouted
        model = await model_type(pk=f"shared-{n}", title=f"s{n}").asave()
        saved.immediate("model.save", model.key)
        saved.titles[model.key] = f"s{n}"
        shared.append(model)
    tallies = await asyncio.gather(
        *(write_shared_and_private(shared[n % 6], f"t{n}", type(shared[n % 6])) for n in range(24))
    )
    expected = Tally.merged([saved, *tallies])
    if second_client is not None:
        assert second_client in {client["name"] for client in await redis.client_list()}
    for model in shared:
        assert len(expected.members[tags_key(model)]) == 4 * (2 * 15 + 1)
    await check(journal, redis, target, expected)


# -- two processes --------------------------------------------------------------------------------

CHILD = """
import asyncio, json, sys

from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal


class ConcShared(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def write(model, writer, key):
    commands, sizes, left = [], [], []
    for r in range(3):
        own = f"{writer}-r{r}"
        await model.tags.aadd_many([f"{own}-m{i}" for i in range(6)])
        await model.tags.aadd(f"{own}-a")
        assert await model.tags.aremove(f"{own}-m0") is True
        commands += [["set.add", key], ["set.add", key], ["set.remove", key]]
        sizes += [1, 1, 1]
        async with model.apipeline():
            model.tags.update([f"{own}-x0", f"{own}-x1"])
            model.tags.discard(f"{own}-m1")
        commands += [["set.add", key], ["set.remove", key]]
        sizes.append(2)
        left += [f"{own}-m{i}" for i in range(2, 6)] + [f"{own}-a", f"{own}-x0", f"{own}-x1"]
    return commands, sizes, left


async def main(url, model_key, ready, go):
    redis = Redis.from_url(url)
    await ledgerset.init(redis=redis, journal=StreamJournal())
    models = [await ConcShared.aget(model_key) for _ in range(12)]
    key = f"__rapyer_special__:ConcShared:{models[0].pk}:tags"
    await redis.rpush(ready, "ready")
    if await redis.blpop([go], timeout=30) is None:
        sys.exit("no go token within 30 s")
    results = await asyncio.gather(*(write(m, f"child{n}", key) for n, m in enumerate(models)))
    report = {"commands": [], "sizes": [], "left": []}
    for commands, sizes, left in results:
        report["commands"] += commands
        report["sizes"] += sizes
        report["left"] += left
    print(json.dumps(report))
    await redis.aclose()


asyncio.run(main(*sys.argv[1:]))
"""


async def start_child(
    tmp_path: Path, redis: Redis, redis_url: str, model_key: str
) -> asyncio.subprocess.Process:
    """Start the child and wait (no sleep) until it has loaded the model and waits for "go"."""
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        redis_url,
        model_key,
        "conc:ready",
        "conc:go",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    ready = asyncio.ensure_future(redis.blpop(["conc:ready"], timeout=CHILD_TIMEOUT_S))
    exited = asyncio.ensure_future(child.wait())
    await asyncio.wait([ready, exited], return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        stderr = await child.stderr.read() if child.stderr else b""
        pytest.fail(f"the child exited before it was ready: {stderr.decode()}")
    exited.cancel()
    assert ready.result() is not None, "the child was not ready in time"
    return child


async def test_two_processes_on_one_set_lose_no_update_and_journal_exactly(
    redis: Redis, redis_url: str, target: Redis, tmp_path: Path
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    article = await ConcShared(pk="two-processes", title="shared", tags={"seed"}).asave()
    key = tags_key(article)
    child = await start_child(tmp_path, redis, redis_url, article.key)

    await redis.rpush("conc:go", "go")
    loaded = [await ConcShared.aget(article.key) for _ in range(12)]
    tallies = await asyncio.gather(
        *(write_own_members(model, f"parent{n}", rounds=2) for n, model in enumerate(loaded))
    )
    async with asyncio.timeout(CHILD_TIMEOUT_S):
        stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()

    report = json.loads(stdout)
    from_child = Tally(txn_sizes=report["sizes"])
    from_child.commands.update((name, cmd_key) for name, cmd_key in report["commands"])
    from_child.leave(key, report["left"])
    saved = Tally(titles={article.key: "shared"})
    saved.immediate("model.save", article.key)
    saved.leave(key, ["seed"])
    expected = Tally.merged([saved, from_child, *tallies])

    assert len(expected.members[key]) == 1 + 12 * 3 * 7 + 12 * 2 * 15
    assert await redis.smembers(key) == {json.dumps(m).encode() for m in expected.members[key]}
    assert await (await ConcShared.aget(article.key)).tags.amembers() == expected.members[key]
    await assert_journal_is_exact(redis, expected)
    await assert_replay_rebuilds(redis, target)
