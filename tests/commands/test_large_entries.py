"""Journal entries too long for the server's ``proto-max-bulk-len``: split, or refused unsent.

A journaled call sends each entry as one argument. On a server started with
``--proto-max-bulk-len 1mb`` (the smallest it accepts), a journaled ``aadd_many`` of 100,000
members lands as several ``set.add`` entries of one transaction, which replay into the same set;
so do large removals and toggles, beside other commands of a transaction. A record that cannot be
split (``set.retain``, ``model.save``, ``model.update`` of one huge value) is refused before
anything is sent: the server is unchanged, nothing is journaled, and the error names the command
and the limit. ``ledgerset log`` reads the split entries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import server_binary, take_snapshot

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, RequestTooLargeError, StreamJournal
from ledgerset.commands import dispatcher
from ledgerset.commands.catalog import ToggleMembers
from ledgerset.commands.record import SPLIT_BYTES, JournalEntry
from ledgerset.embedded import EmbeddedServer
from ledgerset.journal.reader import read_entries
from ledgerset.journal.replay import replay
from ledgerset.journal.verify import compare

STREAM = "ledgerset:journal"
LIMIT = 1024 * 1024
MEMBERS = [f"tag-{number:06d}" for number in range(100_000)]  # a record of about 1.3 MB


class LargeNote(AtomicRedisModel):
    body: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class OtherNote(AtomicRedisModel):
    labels: RedisSet[str] = Field(default_factory=RedisSet)


@pytest.fixture(scope="module")
def small_limit_url() -> Iterator[str]:
    """A server of its own whose ``proto-max-bulk-len`` is its smallest, 1 MiB."""
    with EmbeddedServer(
        binary=server_binary(), options=["--proto-max-bulk-len", "1mb"]
    ) as server:
        yield server.url


@pytest.fixture
async def live(small_limit_url: str) -> AsyncIterator[Redis]:
    """Database 0 of that server, empty, journaled by ``ledgerset.init``."""
    client = Redis.from_url(small_limit_url)
    await client.flushall()
    assert (await client.config_get("proto-max-bulk-len"))["proto-max-bulk-len"] == str(LIMIT)
    await ledgerset.init(redis=client, journal=StreamJournal())
    yield client
    await ledgerset.init(redis=client)
    await client.aclose()


@pytest.fixture
async def replayed(small_limit_url: str) -> AsyncIterator[Redis]:
    """Database 1 of the same server: the replay target."""
    client = Redis.from_url(small_limit_url.removesuffix("/0") + "/1")
    yield client
    await client.aclose()


async def entries(redis: Redis) -> list[JournalEntry]:
    return [entry async for entry in read_entries(redis, STREAM)]


async def assert_replays_the_same(live: Redis, replayed: Redis, models: set[str]) -> None:
    report = await replay(live, replayed)
    assert report.applied == await live.xlen(STREAM)
    assert await compare(live, replayed, models) == []


def assert_one_transaction(transaction: list[JournalEntry]) -> None:
    assert len({entry.txn for entry in transaction}) == 1
    assert [entry.seq for entry in transaction] == list(range(1, len(transaction) + 1))
    assert {entry.of for entry in transaction} == {len(transaction)}


async def test_a_journaled_aadd_many_of_100000_members_lands_as_several_entries(
    live: Redis, replayed: Redis
) -> None:
    note = LargeNote()
    await note.asave()

    await note.tags.aadd_many(MEMBERS)

    assert await note.tags.asize() == 100_000
    added = (await entries(live))[1:]  # after the save's
    assert len(added) > 1
    assert {entry.cmd for entry in added} == {"set.add"}
    assert_one_transaction(added)
    assert [member for entry in added for member in entry.args["members"]] == MEMBERS
    raw = await live.xrange(STREAM)
    assert max(len(value) for _, fields in raw for value in fields.values()) <= SPLIT_BYTES + 1024
    await assert_replays_the_same(live, replayed, {"LargeNote"})
    assert await replayed.scard(f"__rapyer_special__:LargeNote:{note.pk}:tags") == 100_000


async def test_split_entries_share_a_transaction_with_its_other_commands(
    live: Redis, replayed: Redis
) -> None:
    note, other = LargeNote(), OtherNote()
    await note.asave()
    await other.asave()

    async with ledgerset.transaction():
        await other.labels.aadd("first")
        await note.tags.aadd_many(MEMBERS)
        await note.aupdate(body="tagged")

    written = (await entries(live))[2:]  # after the two saves
    assert_one_transaction(written)
    assert [entry.cmd for entry in written[:2]] == ["set.add", "set.add"]
    assert written[0].args == {"members": ["first"]}
    assert written[-1].cmd == "model.update"
    assert {entry.cmd for entry in written[1:-1]} == {"set.add"}
    assert len(written) > 3
    await assert_replays_the_same(live, replayed, {"LargeNote", "OtherNote"})


async def test_large_removals_and_toggles_split_and_replay_to_the_same_set(
    live: Redis, replayed: Redis
) -> None:
    note = LargeNote()
    await note.asave()
    await note.tags.aadd_many(MEMBERS)
    toggled = {f"tag-{number:06d}" for number in range(50_000, 150_000)}
    removed = set(MEMBERS[:50_000])

    async with ledgerset.transaction():
        note.tags ^= toggled  # 50,000 of them leave, 50,000 arrive
        note.tags -= removed

    expected = {f"tag-{number:06d}" for number in range(100_000, 150_000)}
    assert await note.tags.amembers() == expected
    journal = await entries(live)
    last = [entry for entry in journal if entry.txn == journal[-1].txn]
    assert_one_transaction(last)
    commands = [entry.cmd for entry in last]
    assert commands == sorted(commands, key=["set.toggle", "set.remove"].index)
    assert commands.count("set.toggle") > 1 and commands.count("set.remove") >= 1
    await assert_replays_the_same(live, replayed, {"LargeNote"})


async def test_a_toggle_part_never_repeats_a_member_of_another_part(
    live: Redis, replayed: Redis
) -> None:
    # The server toggles a member given twice in one command once; given in two parts of its
    # record, replay would toggle it twice: back where it was.
    note = LargeNote()
    await note.asave()
    encoded = tuple(f'"{member}"'.encode() for member in MEMBERS)
    toggle = ToggleMembers(
        model="LargeNote",
        pk=note.pk,
        key=f"__rapyer_special__:LargeNote:{note.pk}:tags",
        field="tags",
        owner=f"LargeNote:{note.pk}",
        members=encoded + encoded,  # as a caller of the dispatcher may build it
    )

    await dispatcher.execute(toggle, live, journal=StreamJournal())

    assert await note.tags.asize() == 100_000
    toggles = [entry for entry in await entries(live) if entry.cmd == "set.toggle"]
    assert len(toggles) > 1
    assert [member for entry in toggles for member in entry.args["members"]] == MEMBERS
    await assert_replays_the_same(live, replayed, {"LargeNote"})


@pytest.mark.parametrize("command", ["set.retain", "model.save", "model.update"])
async def test_a_record_that_cannot_be_split_is_refused_before_sending(
    live: Redis, command: str
) -> None:
    note = LargeNote()
    await note.asave()
    await note.tags.aadd_many(MEMBERS[:10])
    before = await take_snapshot(live)

    with pytest.raises(RequestTooLargeError) as refused:
        if command == "set.retain":
            async with ledgerset.transaction():
                note.tags &= set(MEMBERS)
        elif command == "model.save":
            note.tags.update(MEMBERS)
            await note.asave()
        else:
            await note.aupdate(body="x" * (2 * LIMIT))

    assert await take_snapshot(live) == before  # nothing written, nothing journaled
    error = refused.value
    assert (error.command, error.limit) == (command, LIMIT)
    assert error.size > LIMIT
    message = str(error)
    assert f"{command} on LargeNote" in message and repr(note.pk) in message
    assert f"proto-max-bulk-len of {LIMIT} bytes" in message
    assert "Nothing was sent" in message
    assert "write the members in several calls" in message
    assert "CONFIG SET proto-max-bulk-len" in message
    await note.tags.aadd("small")  # the connection is still in step
    assert await note.tags.acontains("small")


async def test_a_refused_record_leaves_nothing_in_doubt(live: Redis) -> None:
    # Nothing was sent, so the outcome is known: the set's local copy is not marked unknown,
    # and a save after the refusal goes through.
    note = LargeNote()
    await note.asave()
    with pytest.raises(RequestTooLargeError):
        async with ledgerset.transaction():
            note.tags &= set(MEMBERS)

    note.tags.update(MEMBERS[:3])
    await note.asave()

    assert await note.tags.amembers() == set(MEMBERS[:3])


async def test_the_log_table_reads_split_entries(live: Redis, small_limit_url: str) -> None:
    note = LargeNote()
    await note.asave()
    await note.tags.aadd_many(MEMBERS)
    ids = [entry.id for entry in await entries(live)]

    result = subprocess.run(
        [str(Path(sys.executable).with_name("ledgerset")), "--url", small_limit_url, "log"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if k != "LEDGERSET_URL"}, "COLUMNS": "200"},
    )

    assert result.returncode == 0, result.stderr
    assert all(entry_id in result.stdout for entry_id in ids)
    assert result.stdout.count("set.add") == len(ids) - 1
