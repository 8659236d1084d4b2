"""The hash chain of ``StreamJournal(chain=True)``: written in the same program as each entry,
checked by ``check_chain`` (and ``ledgerset verify --chain``, in tests/cli/).

Shown through the raw stream, the chain head and ``check_chain``'s report: an intact chain of
every kind of write (a transaction, a pop, a fast-path add) is OK; each kind of tampering is
reported at the right entry -- an XDEL in the middle, a forged XADD (with or without plausible
chain fields), an edit in place (the stream rewritten with other fields at the same ids), an
XTRIM of the oldest entries, the newest ones cut off; a head key of another type refuses the
write and changes nothing; a stream that was never chained says so; maxlen is refused with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import Snapshot

from ledgerset import (
    AtomicRedisModel,
    RedisConfig,
    RedisSet,
    StreamJournal,
    WrongTypeError,
    journal,
)
from ledgerset.errors import RetentionError
from ledgerset.journal import check_chain
from ledgerset.journal.chain import entry_hashes

STREAM = "chained"
HEAD = "chained:chain"
CHAINED = StreamJournal(STREAM, chain=True)


class ChDoc(AtomicRedisModel):
    Meta = RedisConfig(journal=CHAINED)
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def history(redis: Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Ten chained entries of every path of the program: saves, fast adds, a transaction, a pop."""
    first = await ChDoc(pk="one").asave()
    second = await ChDoc(pk="two").asave()
    await first.tags.aadd("a")  # the fast path
    await first.tags.aadd_many(["b", "c"])
    async with first.apipeline():  # two entries in one program: the head moves twice
        await first.tags.aadd("d")
        await first.aupdate(title="renamed")
    await first.tags.apop()
    await second.tags.aadd("x")
    await second.adelete()
    entries = await redis.xrange(STREAM)
    assert len(entries) == 9
    return entries


async def test_an_intact_chain_is_ok_and_each_entry_names_the_one_before(redis: Redis) -> None:
    entries = await history(redis)
    previous = ""
    for number, (_, fields) in enumerate(entries, start=1):
        items = list(fields.items())
        assert [name for name, _ in items[-3:]] == [b"n", b"prev", b"hash"]
        assert fields[b"n"] == str(number).encode()
        assert fields[b"prev"].decode() == previous
        assert fields[b"hash"].decode() in entry_hashes(items[:-1])
        previous = fields[b"hash"].decode()
    head = await redis.hgetall(HEAD)
    assert head == {b"hash": previous.encode(), b"n": b"9", b"id": entries[-1][0], b"keyed": b"0"}

    report = await check_chain(redis, journal=CHAINED)
    assert report.ok and report.problem is None
    assert (report.entries, report.first_n, report.last_n) == (9, 1, 9)
    assert report.message == (
        f"journal 'chained': chain OK: entries #1 to #9 intact, the head matches the last "
        f"({entries[-1][0].decode()})"
    )
    assert str(await check_chain(redis, STREAM)) == report.message  # a stream key does too


async def test_a_deleted_entry_is_reported_with_its_neighbours(redis: Redis) -> None:
    entries = await history(redis)
    await redis.xdel(STREAM, entries[3][0])
    report = await check_chain(redis, journal=CHAINED)
    assert not report.ok and report.problem == "deleted"
    assert report.entry_id == entries[4][0].decode()
    assert report.message == (
        f"journal 'chained': chain broken: entry #4, between {entries[2][0].decode()} and "
        f"{entries[4][0].decode()}, was deleted (XDEL, or edited by delete and re-add)"
    )


async def test_a_forged_entry_without_chain_fields_is_reported_as_inserted(redis: Redis) -> None:
    entries = await history(redis)
    forged = {name: value for name, value in entries[2][1].items()
              if name not in (b"n", b"prev", b"hash")}  # fmt: skip
    forged_id = (await redis.xadd(STREAM, forged)).decode()
    report = await check_chain(redis, journal=CHAINED)
    assert (report.ok, report.problem, report.entry_id) == (False, "inserted", forged_id)
    assert f"entry {forged_id} carries no chain fields" in report.message
    assert entries[-1][0].decode() in report.message  # the entry it came after


async def test_a_forged_entry_with_plausible_chain_fields_breaks_the_head(redis: Redis) -> None:
    entries = await history(redis)
    last = entries[-1][1]
    body = [(name, value) for name, value in entries[2][1].items()
            if name not in (b"n", b"prev", b"hash")]  # fmt: skip
    body += [(b"n", b"10"), (b"prev", last[b"hash"])]
    forged_id = await redis.xadd(STREAM, dict([*body, (b"hash", entry_hashes(body)[0].encode())]))
    report = await check_chain(redis, journal=CHAINED)
    assert (report.ok, report.problem) == (False, "inserted")
    assert report.message.endswith(
        f"entries after #9 ({entries[-1][0].decode()}), the last the head names, were "
        f"inserted: the stream ends at #10 ({forged_id.decode()})"
    )


async def test_an_entry_edited_in_place_is_reported_as_edited(redis: Redis) -> None:
    entries = await history(redis)
    # Rewrite the whole stream at the same ids, one entry's args changed, its hash kept.
    await redis.delete(STREAM)
    for entry_id, fields in entries:
        if entry_id == entries[5][0]:
            fields = {**fields, b"args": b'{"members":["\\"evil\\""]}'}
        await redis.xadd(STREAM, fields, id=entry_id)
    report = await check_chain(redis, journal=CHAINED)
    assert (report.ok, report.problem, report.entry_id) == (False, "edited", entries[5][0].decode())
    assert report.message == (
        f"journal 'chained': chain broken: entry {entries[5][0].decode()} (#6) was edited: its "
        f"fields no longer hash to the hash it was written with"
    )


async def test_an_entry_edited_and_rehashed_breaks_the_next_one(redis: Redis) -> None:
    entries = await history(redis)
    await redis.delete(STREAM)
    for entry_id, fields in entries:
        if entry_id == entries[5][0]:
            body = [(n, v) for n, v in fields.items() if n != b"hash"]
            body = [(n, b'{"members":["\\"evil\\""]}' if n == b"args" else v) for n, v in body]
            fields = dict([*body, (b"hash", entry_hashes(body)[0].encode())])
        await redis.xadd(STREAM, fields, id=entry_id)
    report = await check_chain(redis, journal=CHAINED)
    assert (report.ok, report.problem) == (False, "inserted")
    assert report.entry_id == entries[6][0].decode()
    assert f"does not follow entry {entries[5][0].decode()} (#6)" in report.message


async def test_the_oldest_entries_trimmed_behind_its_back_are_reported(redis: Redis) -> None:
    entries = await history(redis)
    await redis.xtrim(STREAM, minid=entries[3][0], approximate=False)
    report = await check_chain(redis, journal=CHAINED)
    assert (report.ok, report.problem) == (False, "deleted")
    assert report.entry_id == entries[3][0].decode()
    assert report.message.endswith(
        f"the oldest entries, #1 to #3, before entry {entries[3][0].decode()}, were deleted "
        f"without a trim recording it (XTRIM or XDEL)"
    )


async def test_the_newest_entries_cut_off_are_reported(redis: Redis) -> None:
    entries = await history(redis)
    await redis.xdel(STREAM, entries[-1][0], entries[-2][0])
    report = await check_chain(redis, journal=CHAINED)
    assert (report.ok, report.problem) == (False, "truncated")
    assert report.entry_id == entries[-3][0].decode()
    assert report.message.endswith(
        f"the newest entries were cut off: the head names #9 ({entries[-1][0].decode()}), "
        f"the stream ends at #7 ({entries[-3][0].decode()})"
    )


async def test_a_stream_deleted_whole_is_reported_as_cut_off(redis: Redis) -> None:
    await history(redis)
    await redis.delete(STREAM)
    report = await check_chain(redis, journal=CHAINED)
    assert (report.ok, report.problem) == (False, "truncated")
    assert "the stream ends at nothing" in report.message


async def test_a_head_of_another_type_refuses_the_write_and_changes_nothing(
    redis: Redis, snapshot: Callable[[], Awaitable[Snapshot]]
) -> None:
    doc = await ChDoc(pk="one").asave()
    await redis.delete(HEAD)
    await redis.set(HEAD, "not a head")
    before = await snapshot()
    for write in (lambda: doc.tags.aadd("a"), lambda: doc.aupdate(title="t"), doc.asave):
        with pytest.raises(WrongTypeError) as refused:
            await write()
        assert HEAD in str(refused.value)
        assert await snapshot() == before


async def test_a_journal_that_was_never_chained_says_so(redis: Redis) -> None:
    plain = StreamJournal(STREAM)

    class ChPlain(AtomicRedisModel):
        Meta = RedisConfig(journal=plain)
        title: str = "x"

    await ChPlain().asave()
    report = await check_chain(redis, journal=plain)
    assert (report.ok, report.problem) == (False, "unchained")
    assert report.message == (
        "journal 'chained': chain broken: no chain: 1 entries and no chain head "
        "'chained:chain'; was the stream written with StreamJournal(chain=True)?"
    )


async def test_entries_older_than_the_chain_are_counted_not_covered(redis: Redis) -> None:
    plain = StreamJournal(STREAM)

    class ChEarly(AtomicRedisModel):
        Meta = RedisConfig(journal=plain)
        title: str = "x"

    await ChEarly().asave()
    await ChDoc().asave()
    report = await check_chain(redis, journal=CHAINED)
    assert report.ok and report.unchained == 1
    assert report.message.endswith("; 1 older entries predate the chain")


def test_chain_with_maxlen_is_refused_naming_the_way() -> None:
    with pytest.raises(ValueError, match=r"chain=True, maxlen=10.*trim\(\)"):
        StreamJournal(STREAM, chain=True, maxlen=10)


KEY = b"the writers' secret"
KEYED = StreamJournal("keyed", chain=True, chain_key=KEY)


class ChKeyed(AtomicRedisModel):
    Meta = RedisConfig(journal=KEYED)
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def keyed_history(redis: Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    doc = await ChKeyed(pk="k").asave()
    await doc.tags.aadd("a")  # the fast path
    await doc.tags.apop()  # the server's args
    async with doc.apipeline():
        await doc.tags.aadd("b")
        await doc.tags.aadd("c")
    await journal.snapshot(redis, KEYED)
    return await redis.xrange("keyed")


async def test_a_keyed_chain_checks_with_the_key_and_its_hashes_are_hmacs(redis: Redis) -> None:
    entries = await keyed_history(redis)
    for _, fields in entries:
        items = list(fields.items())
        assert fields[b"hash"].decode() in entry_hashes(items[:-1], KEY)
        assert fields[b"hash"].decode() not in entry_hashes(items[:-1])
    report = await check_chain(redis, journal=KEYED)
    assert report.ok and report.last_n == len(entries), report.message
    assert (await redis.hgetall("keyed:chain"))[b"keyed"] == b"1"
    assert "the writers' secret" not in repr(KEYED)


async def test_a_keyed_chain_reforged_without_the_key_is_caught(redis: Redis) -> None:
    entries = await keyed_history(redis)
    # A forger who may write to Redis edits entry 2 and recomputes every hash after it, and the
    # head, as an unkeyed chain would: without the key the hashes are not the HMACs.
    await redis.delete("keyed")
    previous = b""
    for number, (entry_id, fields) in enumerate(entries, start=1):
        body = [(n, v) for n, v in fields.items() if n not in (b"n", b"prev", b"hash")]
        if number == 2:
            body = [(n, b'{"members":["\\"forged\\""]}' if n == b"args" else v) for n, v in body]
        body += [(b"n", str(number).encode()), (b"prev", previous)]
        previous = entry_hashes(body)[0].encode()
        await redis.xadd("keyed", dict([*body, (b"hash", previous)]), id=entry_id)
    await redis.hset("keyed:chain", mapping={"hash": previous, "keyed": "0"})
    report = await check_chain(redis, journal=KEYED)
    assert (report.ok, report.problem) == (False, "edited")
    assert report.entry_id == entries[0][0].decode()  # the first rehashed entry


async def test_a_keyed_chain_checked_without_its_key_says_so(redis: Redis) -> None:
    await keyed_history(redis)
    report = await check_chain(redis, "keyed")
    assert (report.ok, report.problem) == (False, "keyed")
    assert "check it with the journal that holds the key" in report.message
    with pytest.raises(RetentionError) as refused:  # its own entries would break the chain
        await journal.snapshot(redis, "keyed")
    assert refused.value.reason == "keyed"


def test_a_chain_key_needs_chain_and_bytes() -> None:
    for bad in (
        dict(chain_key=KEY),
        dict(chain=True, chain_key="text"),
        dict(chain=True, chain_key=b""),
    ):
        with pytest.raises(ValueError, match=r"chain_key=\.\.\.\): a non-empty bytes secret"):
            StreamJournal("keyed", **bad)  # type: ignore[arg-type]


class ChPair(AtomicRedisModel):
    Meta = RedisConfig(journal=CHAINED)
    todo: RedisSet[str] = Field(default_factory=RedisSet)
    done: RedisSet[str] = Field(default_factory=RedisSet)


async def test_moves_and_versioned_saves_are_chained_on_every_path(redis: Redis) -> None:
    """The move's fast path (one owner, two owners), the add's, a save whose entry the program
    gives its version: each chained, the chain intact, the versions those the models hold."""
    one = await ChPair(pk="one", todo={"a", "b"}).asave()
    two = await ChPair(pk="two").asave()
    assert await one.todo.amove("a", one.done)  # one owner
    assert await one.todo.amove("b", two.todo)  # two owners
    await two.todo.aadd("c")
    await one.asave()

    entries = await redis.xrange(STREAM)
    assert [fields[b"cmd"] for _, fields in entries] == [
        b"model.save", b"model.save", b"set.move", b"set.move", b"set.add", b"model.save",
    ]  # fmt: skip
    assert [fields[b"n"] for _, fields in entries] == [str(n).encode() for n in range(1, 7)]
    assert b'"version":' + str(one.version).encode() in entries[-1][1][b"args"]
    assert await redis.hget("ChPair:one", "_version") == str(one.version).encode()
    assert (await redis.hgetall(HEAD))[b"n"] == b"6"
    report = await check_chain(redis, journal=CHAINED)
    assert report.ok, report.message
