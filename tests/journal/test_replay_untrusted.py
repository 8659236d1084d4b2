"""Replaying a journal that someone else could write to.

A foreign entry (``XADD ledgerset:journal * hello world``) or a damaged one stops the replay at
it, naming its id and the field at fault, with the way to go on: ``skip=[id]`` (or ``XDEL``); the
transactions before it are applied, nothing of its own. A well-formed entry that names what no
ledgerset model could have written -- a model that is not a class name or is one ledgerset
refuses (``ledgerset``, the set prefix), a key inside ``ledgerset:``, a field that is not a field
name -- stops the replay the same way; a delete whose keys hold something other than a model's
hash and sets is refused by the target. Refused, the target is unchanged.

On a cluster too (``also_on_cluster``), replayed out of it into one server: there the entries
written by hand go into the stream the fixture's entries are in, its slot's (``journal``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import raw_ids, stream_of

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal
from ledgerset.errors import JournalEntryError, ReplayConflictError
from ledgerset.journal import replay
from ledgerset.keys import KeyLayout, checkpoint_key

pytestmark = pytest.mark.also_on_cluster


class UtArticle(AtomicRedisModel):
    title: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)


@pytest.fixture
async def source(redis: Redis) -> AsyncIterator[Redis]:
    """Database 0, journaled: a save and an add of ``UtArticle:a1``."""
    await ledgerset.init(redis=redis, journal=StreamJournal())
    article = await UtArticle(pk="a1", title="t", tags={"x"}).asave()
    await article.tags.aadd("y")
    yield redis


async def take_snapshot(redis: Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key of the database: its serialized value, and whether it has a TTL."""
    return {key: (await redis.dump(key), await redis.pttl(key) > 0) for key in await redis.keys()}


def journal(source: Redis) -> str:
    """The stream of the fixture's entries: the journal's one stream, or its slot's on a cluster."""
    return stream_of(source, "UtArticle:a1")


def checkpoint(source: Redis) -> str:
    """Where a replay of ``journal(source)`` into one server records its progress."""
    return checkpoint_key(journal(source))


async def ids_of(redis: Redis) -> list[str]:
    return await raw_ids(redis)


def entry(cmd: str, model: str, pk: str, field: str, args: dict[str, Any]) -> dict[str, Any]:
    """The fields of a well-formed entry, as ledgerset writes them."""
    return {
        "cmd": cmd, "v": 1, "key": f"{model}:{pk}", "ts": int(time.time() * 1000),
        "txn": "0" * 32, "seq": 1, "of": 1, "model": model, "pk": pk, "field": field,
        "ctx": "{}", "args": orjson.dumps(args).decode(),
    }  # fmt: skip


async def append(redis: Redis, *entries: dict[str, Any]) -> list[str]:
    """XADD ``entries`` as one transaction of their own; their ids."""
    ids, txn = [], uuid.uuid4().hex
    for seq, fields in enumerate(entries, start=1):
        changed = {**fields, "txn": txn, "seq": seq, "of": len(entries)}
        ids.append((await redis.xadd(journal(redis), changed)).decode())
    return ids


def save(model: str, pk: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return entry("model.save", model, pk, "", {"fields": fields or {"pk": pk}, "sets": {},
                                               "ttl_ms": None})  # fmt: skip


def delete(model: str, pk: str, sets: list[str] | None = None) -> dict[str, Any]:
    return entry("model.delete", model, pk, "", {"sets": sets or []})


def add(model: str, pk: str, field: str, *members: str) -> dict[str, Any]:
    return entry("set.add", model, pk, field, {"members": list(members)})


def move(to_model: str, to_pk: str, to_field: str) -> dict[str, Any]:
    """A move of ``"x"`` from ``UtArticle:a1``'s tags to the set its args name."""
    to = {"model": to_model, "pk": to_pk, "field": to_field}
    return entry("set.move", "UtArticle", "a1", "tags", {"member": "x", "to": to})


async def assert_stopped_after_the_fixture(source: Redis, target: Redis) -> None:
    """The fixture's two entries landed, with their checkpoint, and nothing else."""
    fixture = (await ids_of(source))[:2]
    assert await target.get(checkpoint(source)) == fixture[-1].encode()
    assert sorted(await target.keys("*")) == [
        b"UtArticle:a1",
        b"__rapyer_special__:UtArticle:a1:tags",
        checkpoint(source).encode(),
    ]
    assert await target.smembers("__rapyer_special__:UtArticle:a1:tags") == {b'"x"', b'"y"'}


# -- foreign and malformed entries ----------------------------------------------------------------


async def test_a_foreign_entry_stops_the_replay_naming_it_and_the_way_on(
    source: Redis, target: Redis
) -> None:
    foreign = (await source.xadd(journal(source), {"hello": "world"})).decode()
    (after,) = await append(source, add("UtArticle", "a1", "tags", "z"))
    with pytest.raises(JournalEntryError) as stopped:
        await replay(source, target)
    error = stopped.value
    assert (error.entry_id, error.field) == (foreign, "cmd")
    message = str(error)
    assert foreign in message and "'cmd' is missing" in message and "'ctx'" not in message
    assert f"--skip {foreign}" in message and f"skip=['{foreign}']" in message
    assert f"XDEL {journal(source)} {foreign}" in message
    await assert_stopped_after_the_fixture(source, target)

    report = await replay(source, target, skip=[foreign])
    assert (report.applied, report.skipped, report.skipped_ids) == (1, 1, [foreign])
    assert report.last_id == after
    assert await target.sismember("__rapyer_special__:UtArticle:a1:tags", '"z"')
    again = await replay(source, target)  # the checkpoint is past it: no need to skip again
    assert (again.applied, again.skipped) == (0, 0)


async def test_deleting_the_foreign_entry_is_the_other_way_on(source: Redis, target: Redis) -> None:
    foreign = (await source.xadd(journal(source), {"hello": "world"})).decode()
    with pytest.raises(JournalEntryError):
        await replay(source, target)
    await source.xdel(journal(source), foreign)
    assert (await replay(source, target)).applied == 0  # the fixture's landed before the stop


@pytest.mark.parametrize(
    ("change", "field"),
    [({"ts": "soon"}, "ts"), ({"args": "[1]"}, "args"), ({"seq": "first"}, "seq")],
    ids=["ts", "args", "seq"],
)
async def test_a_damaged_entry_names_the_field_at_fault(
    source: Redis, target: Redis, change: dict[str, str], field: str
) -> None:
    in_tx = {**add("UtArticle", "a1", "tags", "in-tx"), "txn": "e" * 32, "of": 2}
    good = (await source.xadd(journal(source), {**in_tx, "seq": 1})).decode()
    damaged = (await source.xadd(journal(source), {**in_tx, "seq": 2, **change})).decode()
    with pytest.raises(JournalEntryError) as stopped:
        await replay(source, target)
    assert (stopped.value.entry_id, stopped.value.field) == (damaged, field)
    assert f"field {field!r}" in str(stopped.value) and f"--skip {damaged}" in str(stopped.value)
    await assert_stopped_after_the_fixture(source, target)  # nothing of its transaction
    assert good < damaged


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "one-id"])
async def test_a_skip_passes_over_a_well_formed_entry_too(
    source: Redis, target: Redis, as_list: bool
) -> None:
    (unwanted,) = await append(source, add("UtArticle", "a1", "tags", "unwanted"))
    report = await replay(source, target, skip=[unwanted] if as_list else unwanted)
    assert (report.applied, report.skipped_ids) == (2, [unwanted])
    assert not await target.sismember("__rapyer_special__:UtArticle:a1:tags", '"unwanted"')


# -- entries no model could have written ----------------------------------------------------------


@pytest.mark.parametrize(
    ("forged", "field", "says"),
    [
        (save("ledgerset", "evil"), "model", "ledgerset refuses"),
        (delete("ledgerset", "replay:other:journal"), "model", "ledgerset refuses"),
        (save("__rapyer_special__", "UtArticle:a1:tags"), "model", "ledgerset refuses"),
        (save("not-a-class", "p"), "model", "not a Python class name"),
        (save("a:b", "p"), "model", "not a Python class name"),
        (save("class", "p"), "model", "not a Python class name"),
        (save("", "p"), "model", "not a Python class name"),
        (save("UtArticle", ""), "pk", "pk is empty"),
        (add("UtArticle", "a1", "tags:evil", "m"), "field", "not a field name"),
        (add("UtArticle", "a1", "a.b.c", "m"), "field", "not a field name"),
        (add("UtArticle", "a1", "", "m"), "args", "names no set field"),
        (save("UtArticle", "a1", {"pk": "a1", "bad field": 1}), "args", "not a field name"),
        (delete("UtArticle", "a1", ["tags", "../x"]), "args", "not a field name"),
        (move("ledgerset", "evil", "tags"), "args", "ledgerset refuses"),
        (move("__rapyer_special__", "UtArticle:a1", "tags"), "args", "ledgerset refuses"),
        (move("UtArticle", "a1", "tags:evil"), "args", "not a field name"),
    ],
    ids=[
        "ledgerset-model", "checkpoint-delete", "special-prefix-model", "dash", "colon",
        "keyword", "empty-model", "empty-pk", "colon-field", "deep-field", "no-set-field",
        "hash-field",
        "delete-set-field", "move-to-ledgerset", "move-to-special-prefix", "move-to-colon-field",
    ],
)  # fmt: skip
async def test_an_entry_no_model_could_have_written_stops_the_replay(
    source: Redis, target: Redis, forged: dict[str, Any], field: str, says: str
) -> None:
    await target.set("ledgerset:replay:other:journal", "1-0")  # another replay's checkpoint
    before = await take_snapshot(target)
    good, bad = await append(source, add("UtArticle", "a1", "tags", "in-tx"), forged)
    with pytest.raises(JournalEntryError) as stopped:
        await replay(source, target, into_existing=True)
    assert (stopped.value.entry_id, stopped.value.field) == (bad, field)
    assert says in str(stopped.value) and f"--skip {bad}" in str(stopped.value)
    after = await take_snapshot(target)
    assert after.pop(b"ledgerset:replay:other:journal") == before[b"ledgerset:replay:other:journal"]
    assert not await target.exists("ledgerset:evil")
    assert not await target.sismember("__rapyer_special__:UtArticle:a1:tags", '"in-tx"')
    assert good < bad


@pytest.mark.parametrize(
    ("forged", "field"),
    [
        (add("UtArticle", "a1", "tags:evil", "m"), "field"),
        (add("UtArticle", "", "tags", "m"), "pk"),
        (add("ledgerset", "a1", "tags", "m"), "model"),
        ({**move("ledgerset", "evil", "tags"), "args": orjson.dumps(
            {"member": "in-tx", "to": {"model": "ledgerset", "pk": "evil", "field": "tags"}}
        ).decode()}, "args"),
    ],
    ids=["field", "pk", "model", "move-destination"],
)  # fmt: skip
async def test_an_entry_right_after_a_good_one_of_its_model_is_checked_again(
    source: Redis, target: Redis, forged: dict[str, Any], field: str
) -> None:
    # The replay remembers the checked target of the entry before (same model, pk, field and
    # ts): one that differs in a single name, at the same moment, must not ride on it.
    good = add("UtArticle", "a1", "tags", "in-tx")
    (landed,) = await append(source, good)
    (bad,) = await append(source, {**forged, "ts": good["ts"]})
    with pytest.raises(JournalEntryError) as stopped:
        await replay(source, target)
    assert (stopped.value.entry_id, stopped.value.field) == (bad, field)
    assert await target.get(checkpoint(source)) == landed.encode()
    assert await target.sismember("__rapyer_special__:UtArticle:a1:tags", '"in-tx"')
    assert not await target.exists("ledgerset:evil", "__rapyer_special__:ledgerset:evil:tags")


@pytest.mark.parametrize(
    "forged",
    [delete("session", "abc"), delete("acl", "admins"), delete("UtArticle", "a9", ["tags"])],
    ids=["string-as-hash", "set-as-hash", "string-as-set"],
)
async def test_a_delete_of_keys_that_are_not_a_models_is_refused_by_the_target(
    source: Redis, target: Redis, forged: dict[str, Any]
) -> None:
    await target.set("session:abc", "a session store's value")
    await target.sadd("acl:admins", "alice")
    await target.set("__rapyer_special__:UtArticle:a9:tags", "not a set")
    before = await take_snapshot(target)
    (bad,) = await append(source, forged)
    with pytest.raises(ReplayConflictError) as refused:
        await replay(source, target, into_existing=True)
    assert refused.value.entry_id == bad
    assert "wrong_type" in str(refused.value)
    assert await take_snapshot(target) == before  # nothing of the batch, no checkpoint


async def test_a_save_that_drops_a_set_over_a_foreign_key_is_refused(
    source: Redis, target: Redis
) -> None:
    await target.set("__rapyer_special__:UtArticle:a2:tags", "not a set")
    before = await take_snapshot(target)
    args = {"fields": {"pk": "a2", "tags": None}, "sets": {"tags": None}, "ttl_ms": None}
    (bad,) = await append(source, entry("model.save", "UtArticle", "a2", "", args))
    with pytest.raises(ReplayConflictError) as refused:
        await replay(source, target, into_existing=True)
    assert refused.value.entry_id == bad
    assert await take_snapshot(target) == before


@pytest.mark.parametrize(
    ("prefix", "forged", "field"),
    [("archive", save("archive", "UtArticle:a1:tags"), "model"),
     ("sets:v2", save("sets", "v2:UtArticle:a1:tags"), "pk")],
    ids=["prefix-as-model", "inside-the-prefix"],
)  # fmt: skip
async def test_no_model_key_lands_among_the_target_layouts_set_keys(
    source: Redis, target: Redis, prefix: str, forged: dict[str, Any], field: str
) -> None:
    (bad,) = await append(source, forged)
    with pytest.raises(JournalEntryError) as stopped:
        await replay(source, target, layout=KeyLayout(special_prefix=prefix))
    assert (stopped.value.entry_id, stopped.value.field) == (bad, field)
    assert await target.type(f"{prefix}:UtArticle:a1:tags") == b"set"  # the fixture's, no hash


async def test_a_models_own_keys_are_still_deleted(source: Redis, target: Redis) -> None:
    await UtArticle(pk="a1").adelete()
    report = await replay(source, target)
    assert report.applied == 3
    assert sorted(await target.keys("*")) == [checkpoint(source).encode()]


async def test_a_nested_set_field_is_a_field_name(source: Redis, target: Redis) -> None:
    await append(source, save("UtOuter", "o1"), add("UtOuter", "o1", "inner.tags", "deep"))
    report = await replay(source, target)
    assert report.applied == 4
    assert await target.smembers("__rapyer_special__:UtOuter:o1:inner.tags") == {b'"deep"'}
