"""Faults between the caller and a server the test controls: nothing half-done, nothing hangs.

Each test starts its own server (AOF on, ``appendfsync always``, files in ``tmp_path``) and puts a
fault-injecting TCP proxy between it and a client with a 2 s socket timeout. The proxy breaks the
next ``EVALSHA`` request (the dispatcher's one write per call) in one of three ways: it drops the
request before the server sees it, it forwards it and then cuts the connection before the reply,
or it forwards it and never relays the reply. Whatever the fault, the caller gets
``ServerUnavailableError`` naming host:port, within bounds, and the server (read through a direct
client) holds all of the call's effects and journal entries exactly once, or none of them: the
dispatcher sends a write once and never resends it (a resent ``set.toggle`` or ``apop`` would show).
The same holds when the server is killed while a large transaction is in flight and restarted
from its AOF. A ``SCRIPT FLUSH`` or a server restart between calls is survived transparently, and
``init`` against a closed port fails fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fault_proxy import DROP_AFTER, DROP_BEFORE, STALL, SWALLOW, FaultProxy
from pydantic import Field
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from support import server_binary

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, ServerUnavailableError
from ledgerset.commands import wire
from ledgerset.commands.program import SOURCE
from ledgerset.embedded import EmbeddedServer

JOURNAL = "ledgerset:journal"
AOF = ["--appendonly", "yes", "--appendfsync", "always"]
SOCKET_TIMEOUT_S = 2.0
BOUND_S = 10.0  # far above every timeout involved: reaching it means the call hung


#: What the server must hold after each fault: none of the call, or all of it, exactly once.
OUTCOME = {DROP_BEFORE: "none", DROP_AFTER: "all", SWALLOW: "all"}
FAULTS = list(OUTCOME)


class FaultNote(AtomicRedisModel):
    title: str = "before"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class FaultTally(AtomicRedisModel):
    numbers: RedisSet[int] = Field(default_factory=RedisSet)


# -- a server, a proxy and two clients per test ---------------------------------------------------


class Rig:
    """Our own server (AOF, files in ``directory``), a proxy before it, and two clients.

    ``client`` talks through the proxy and is the one ``ledgerset.init`` got; ``direct`` talks
    to the server itself, to read what it holds.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server = EmbeddedServer(binary=server_binary(), directory=str(directory), options=AOF)
        self.proxy: FaultProxy
        self.client: Redis
        self.direct: Redis

    async def start(self) -> Rig:
        await asyncio.to_thread(self.server.start)
        self.proxy = await FaultProxy(self.server.port).start()
        self.client = client_of(self.proxy.port)
        self.direct = client_of(self.server.port)
        await ledgerset.init(redis=self.client, journal=ledgerset.StreamJournal())
        return self

    async def restart(self, *, kill: bool = False) -> None:
        """Stop the server (``kill``: with SIGKILL) and start another at the same port and files."""
        process = self.server._server
        assert process is not None
        if kill:
            process.kill()
            await asyncio.to_thread(process.wait)
        await asyncio.to_thread(self.server.stop)
        await self.direct.aclose()
        port = self.server.port
        self.server = EmbeddedServer(
            binary=server_binary(), port=port, directory=str(self.directory), options=AOF
        )
        await asyncio.to_thread(self.server.start)
        self.direct = client_of(port)

    async def close(self) -> None:
        await self.client.aclose()
        await self.direct.aclose()
        await self.proxy.close()
        await asyncio.to_thread(self.server.stop)

    @property
    def address(self) -> str:
        """host:port of the server as the library's client sees it (the proxy)."""
        return f"127.0.0.1:{self.proxy.port}"


def client_of(port: int) -> Redis:
    return Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )


@pytest.fixture
async def rig(redis: Redis, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await Rig(tmp_path).start()
    try:
        yield rig
    finally:
        await ledgerset.init(redis=redis)  # later tests use the suite's server again
        await rig.close()


# -- what the server holds ------------------------------------------------------------------------


def set_key(model: AtomicRedisModel, field: str) -> str:
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{field}"


async def entries(direct: Redis, *commands: bytes) -> list[dict[bytes, bytes]]:
    """The journal's entries for ``commands`` (by name), oldest first."""
    return [fields for _, fields in await direct.xrange(JOURNAL) if fields[b"cmd"] in commands]


async def expect_unavailable(rig: Rig, call: object) -> ServerUnavailableError:
    """Await ``call``: it must fail with ServerUnavailableError within BOUND_S, never hang."""
    with pytest.raises(ServerUnavailableError) as caught:
        await asyncio.wait_for(call, BOUND_S)  # type: ignore[arg-type]
    error = caught.value
    assert error.address == rig.address
    assert rig.address in str(error)
    assert "either all of it or none of it was applied" in str(error)
    return error


def check_cause(fault: str, error: ServerUnavailableError) -> None:
    """A lost connection for the dropping faults; the client's socket timeout for a swallow."""
    if fault == SWALLOW:
        assert isinstance(error.__cause__, RedisTimeoutError)
    else:
        assert isinstance(error.__cause__, RedisConnectionError)


# -- faults on a transaction, an aadd and an apop -------------------------------------------------


async def commit(note: FaultNote, tally: FaultTally) -> None:
    """Four commands over two models, one of them a toggle that a resend would undo."""
    async with ledgerset.transaction():
        note.tags.add("b")
        note.tags.symmetric_difference_update({"a", "c"})  # ^=: a leaves, c joins
        tally.numbers.update({2, 3})
        await note.aupdate(title="after")


async def transaction_state(rig: Rig, note: FaultNote, tally: FaultTally) -> object:
    txn = await entries(rig.direct, b"set.add", b"set.toggle", b"model.update")
    return (
        await rig.direct.smembers(set_key(note, "tags")),
        await rig.direct.smembers(set_key(tally, "numbers")),
        await rig.direct.hget(note.key, "title"),
        [fields[b"cmd"] for fields in txn],
        {fields[b"txn"] for fields in txn},
        [(fields[b"seq"], fields[b"of"]) for fields in txn],
    )


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_faulted_commit_applies_all_of_the_transaction_once_or_none(
    rig: Rig, fault: str
) -> None:
    note = await FaultNote(tags={"a"}).asave()
    tally = await FaultTally(numbers={1}).asave()
    rig.proxy.fault, sent = fault, rig.proxy.evalsha_requests
    error = await expect_unavailable(rig, commit(note, tally))
    check_cause(fault, error)
    await asyncio.wait_for(rig.proxy.fault_applied.wait(), BOUND_S)
    assert rig.proxy.evalsha_requests == sent + 1  # sent once, never resent
    state = await transaction_state(rig, note, tally)
    none = ({b'"a"'}, {b"1"}, b'"before"', [], set(), [])
    cmds = [b"set.add", b"set.toggle", b"set.add", b"model.update"]
    seqs = [(str(i).encode(), b"4") for i in range(1, 5)]
    if OUTCOME[fault] == "none":
        assert state == none
    else:
        tags, numbers, title, names, txns, order = state  # type: ignore[misc]
        assert (tags, numbers, title, names, order) == (
            {b'"b"', b'"c"'},
            {b"1", b"2", b"3"},
            b'"after"',
            cmds,
            seqs,
        )
        assert len(txns) == 1


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_faulted_aadd_applies_once_or_not_at_all(rig: Rig, fault: str) -> None:
    note = await FaultNote(tags={"a"}).asave()
    rig.proxy.fault, sent = fault, rig.proxy.evalsha_requests
    error = await expect_unavailable(rig, note.tags.aadd("z"))
    check_cause(fault, error)
    await asyncio.wait_for(rig.proxy.fault_applied.wait(), BOUND_S)
    assert rig.proxy.evalsha_requests == sent + 1
    members = await rig.direct.smembers(set_key(note, "tags"))
    added = await entries(rig.direct, b"set.add")
    if OUTCOME[fault] == "none":
        assert (members, added) == ({b'"a"'}, [])
    else:
        assert members == {b'"a"', b'"z"'}
        assert [fields[b"args"] for fields in added] == [b'{"members":["z"]}']


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_faulted_apop_pops_one_member_or_none(rig: Rig, fault: str) -> None:
    start = {b'"a"', b'"b"', b'"c"'}
    note = await FaultNote(tags={"a", "b", "c"}).asave()
    rig.proxy.fault, sent = fault, rig.proxy.evalsha_requests
    error = await expect_unavailable(rig, note.tags.apop())
    check_cause(fault, error)
    await asyncio.wait_for(rig.proxy.fault_applied.wait(), BOUND_S)
    assert rig.proxy.evalsha_requests == sent + 1
    members = await rig.direct.smembers(set_key(note, "tags"))
    popped = await entries(rig.direct, b"set.pop")
    if OUTCOME[fault] == "none":
        assert (members, popped) == (start, [])
    else:
        (gone,) = start - members  # exactly one member left the set
        assert len(members) == 2
        assert [fields[b"args"] for fields in popped] == [b'{"member":' + gone + b"}"]


# -- the server killed in flight, restarted from its AOF ------------------------------------------

BIG = 200_000


async def commit_big(note: FaultNote, tally: FaultTally) -> None:
    async with ledgerset.transaction():
        note.tags.update(f"m{i}" for i in range(BIG))
        tally.numbers.add(7)
        await note.aupdate(title="after")


#: When the server is killed: once it has the whole request (before or while it runs the program),
#: or once it has answered (the reply held back by the proxy); and what it may hold after.
KILLED_AT = {"request received": {"all", "none"}, "reply sent": {"all"}}


@pytest.mark.parametrize("moment", list(KILLED_AT))
async def test_a_server_killed_during_a_large_commit_keeps_all_of_it_or_none(
    rig: Rig, moment: str
) -> None:
    note = await FaultNote(tags={"a"}).asave()
    tally = await FaultTally(numbers={1}).asave()
    # The reply is held back, so the kill always lands before the client hears of the commit.
    rig.proxy.fault = SWALLOW
    task = asyncio.create_task(commit_big(note, tally))
    reached = (
        rig.proxy.request_forwarded if moment == "request received" else rig.proxy.fault_applied
    )
    await asyncio.wait_for(reached.wait(), BOUND_S * 3)
    await rig.restart(kill=True)  # SIGKILL, then a new server on the same port and AOF files
    error = await expect_unavailable(rig, task)
    assert isinstance(error.__cause__, (RedisConnectionError, RedisTimeoutError))

    assert await rig.direct.exists(note.key, tally.key) == 2  # the saves before it survived
    tags = await rig.direct.scard(set_key(note, "tags"))
    numbers = await rig.direct.smembers(set_key(tally, "numbers"))
    title = await rig.direct.hget(note.key, "title")
    txn = await entries(rig.direct, b"set.add", b"model.update")
    if tags == 1:
        outcome = "none"
        assert (numbers, title, txn) == ({b"1"}, b'"before"', [])
    else:
        outcome = "all"
        assert tags == BIG + 1
        assert (numbers, title) == ({b"1", b"7"}, b'"after"')
        # The big add's record is journaled in parts (test_large_entries), then the tally's add.
        assert [fields[b"cmd"] for fields in txn] == [b"set.add"] * (len(txn) - 1) + [
            b"model.update"
        ]
        added = [json.loads(fields[b"args"])["members"] for fields in txn[:-1]]
        assert added[-1] == [7]
        assert sorted(member for part in added[:-1] for member in part) == sorted(
            f"m{i}" for i in range(BIG)
        )
        assert len({fields[b"txn"] for fields in txn}) == 1
    assert outcome in KILLED_AT[moment]


# -- survived transparently -----------------------------------------------------------------------


async def test_aadd_and_a_transaction_survive_a_script_flush(rig: Rig) -> None:
    note = await FaultNote(tags={"a"}).asave()
    tally = await FaultTally(numbers={1}).asave()
    await rig.direct.script_flush()
    sent = rig.proxy.evalsha_requests
    await asyncio.wait_for(note.tags.aadd("z"), BOUND_S)
    assert rig.proxy.evalsha_requests == sent + 2  # NOSCRIPT, then one resend after the reload
    await rig.direct.script_flush()
    await asyncio.wait_for(commit(note, tally), BOUND_S)
    assert rig.proxy.evalsha_requests == sent + 4
    assert await rig.direct.smembers(set_key(note, "tags")) == {b'"b"', b'"c"', b'"z"'}
    assert await rig.direct.smembers(set_key(tally, "numbers")) == {b"1", b"2", b"3"}
    names = [fields[b"cmd"] for _, fields in await rig.direct.xrange(JOURNAL)]
    assert names == [b"model.save"] * 2 + [b"set.add"] * 2 + [b"set.toggle"] + [b"set.add"] + [
        b"model.update"
    ]


async def test_aadd_survives_a_server_restart_between_calls(rig: Rig) -> None:
    note = await FaultNote(tags={"a"}).asave()
    await note.tags.aadd("b")
    await rig.restart()  # same port, same files; the new server has no scripts loaded
    assert await rig.direct.script_exists(hashlib.sha1(SOURCE.encode()).hexdigest()) == [False]
    await asyncio.wait_for(note.tags.aadd("c"), BOUND_S)
    assert await rig.direct.smembers(set_key(note, "tags")) == {b'"a"', b'"b"', b'"c"'}
    added = await entries(rig.direct, b"set.add")
    assert [fields[b"args"] for fields in added] == [b'{"members":["b"]}', b'{"members":["c"]}']


# -- init fails fast ------------------------------------------------------------------------------


async def test_init_against_a_closed_port_fails_fast_naming_it(redis: Redis) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        with pytest.raises(ServerUnavailableError) as caught:
            await asyncio.wait_for(ledgerset.init(redis=f"redis://127.0.0.1:{port}/0"), BOUND_S)
    assert caught.value.address == f"127.0.0.1:{port}"
    assert f"127.0.0.1:{port}" in str(caught.value)
    # the failed init left the previous configuration in place
    note = await FaultNote(tags={"a"}).asave()
    assert await redis.exists(note.key) == 1


@pytest.mark.parametrize("fault", [DROP_BEFORE, DROP_AFTER])
async def test_a_read_is_repeated_once_after_a_lost_connection(rig: Rig, fault: str) -> None:
    note = await FaultNote(tags={"a", "b"}).asave()
    rig.proxy.target, rig.proxy.fault = b"SMEMBERS", fault
    sent = rig.proxy.evalsha_requests

    members = await asyncio.wait_for(note.tags.amembers(), BOUND_S)

    assert members == {"a", "b"}
    assert rig.proxy.fault_applied.is_set()
    assert rig.proxy.evalsha_requests == sent + 2  # the faulted request, then its one repeat


async def test_a_write_the_server_never_takes_is_bounded_and_applies_nothing(rig: Rig) -> None:
    note = await FaultNote(tags={"a"}).asave()
    # About 26 MB: more than the kernel's socket buffers between client and proxy hold, so the
    # write itself must wait for them to drain, and give up at the client's socket timeout.
    members = [f"{number:08d}" + "x" * 120 for number in range(200_000)]
    rig.proxy.fault = STALL
    error = await expect_unavailable(rig, note.tags.aadd_many(members))
    assert isinstance(error.__cause__, RedisTimeoutError)
    assert "writing" in str(error.__cause__)
    assert rig.proxy.fault_applied.is_set()
    assert await rig.direct.smembers(set_key(note, "tags")) == {b'"a"'}
    assert await entries(rig.direct, b"set.add") == []


async def test_a_write_without_a_client_socket_timeout_is_still_bounded(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ledgerset's own bound (30 s) made short, so the test proves the bound without waiting it.
    monkeypatch.setattr(wire, "TIMEOUT_S", 0.5)
    patient = Redis(host="127.0.0.1", port=rig.proxy.port, socket_timeout=None)
    await ledgerset.init(redis=patient, journal=ledgerset.StreamJournal())
    try:
        note = await FaultNote(tags={"a"}).asave()
        rig.proxy.fault = SWALLOW
        with pytest.raises(ServerUnavailableError) as caught:
            await asyncio.wait_for(note.tags.aadd("z"), BOUND_S)
        assert isinstance(caught.value.__cause__, TimeoutError)
        assert rig.address in str(caught.value)
    finally:
        await ledgerset.init(redis=rig.client)
        await patient.aclose()


async def test_a_client_made_by_init_has_bounded_timeouts_and_retries(redis_url: str) -> None:
    client = await ledgerset.init(redis=redis_url)
    try:
        options = client.connection_pool.connection_kwargs
        assert (options["socket_connect_timeout"], options["socket_timeout"]) == (5.0, 30.0)
        assert options["retry"].get_retries() == 2
    finally:
        await client.aclose()


async def test_a_read_after_an_idle_spell_still_times_out(rig: Rig) -> None:
    # One timer per connection keeps its read timeout: finding no read going on, it stops; the
    # next read must start it again, or a swallowed reply would be waited for forever.
    client = Redis(host="127.0.0.1", port=rig.proxy.port, socket_timeout=0.5)
    try:
        await ledgerset.init(redis=client)
        note = await FaultNote(tags={"a"}).asave()
        (connection,) = client.connection_pool._available_connections
        watch = wire._watches[connection]
        for _ in range(1000):  # until the timer has fired (after the timeout) and found it idle
            if watch.handle is None:
                break
            await asyncio.sleep(0.01)
        assert watch.handle is None and not watch.expired
        rig.proxy.fault = SWALLOW
        error = await expect_unavailable(rig, note.tags.aadd("z"))
        assert isinstance(error.__cause__, RedisTimeoutError)
        assert "Timeout reading from" in str(error)
    finally:
        await client.aclose()
