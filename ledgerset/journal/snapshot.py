"""Snapshots and trims: a journal that keeps only what it needs and still rebuilds the data.

``snapshot`` records the current state of every model the journal names into the journal
itself, while writers keep writing: a ``snapshot.begin`` entry, then one ``snapshot.model``
entry per model (its hash's raw values, each set's raw members, its absolute expiry), each read
and appended in the same atomic program (``program.lua``'s SNAPSHOT op, a batch of models per
program), then a ``snapshot.end`` entry naming the begin. Every write that lands during the
snapshot has its own entry in the stream: before a model's snapshot entry it is part of that
state, after it it follows it, so a replay from the ``snapshot.begin`` rebuilds exactly the
state a replay of the full history reaches (see ``replay``: a write on a model the replay has
not reached yet, found missing on the target, is dropped, its snapshot entry restores it).

``trim`` removes the entries before a complete snapshot's ``snapshot.begin`` (``XTRIM MINID``)
and appends a ``journal.trim`` entry, in one program; on a chained journal the head records the
last entry removed (``cut_*``), so ``check_chain`` still checks the rest.

The models are found with ``SCAN`` (``{Model}:*``, hashes only) for each model class the stream
names; ``layout`` spells their set keys (its ``special_prefix`` must be the models' own).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ledgerset.commands import dispatcher, wire
from ledgerset.commands.catalog import RecordTarget, SaveModel
from ledgerset.commands.program import OPS, Program, Refusal
from ledgerset.commands.record import DEFAULT_STREAM, StreamJournal, marker_fields
from ledgerset.errors import RetentionError
from ledgerset.journal.reader import read_entries
from ledgerset.keys import KeyLayout, chain_head, pk_from_key

__all__ = [
    "MARKERS",
    "SNAPSHOT_BEGIN",
    "SNAPSHOT_END",
    "SNAPSHOT_MODEL",
    "TRIM",
    "SnapshotReport",
    "SnapshotSpan",
    "TrimReport",
    "latest_snapshot",
    "restored",
    "snapshot",
    "snapshots",
    "trim",
]

SNAPSHOT_BEGIN = "snapshot.begin"
SNAPSHOT_MODEL = "snapshot.model"
SNAPSHOT_END = "snapshot.end"
TRIM = "journal.trim"
#: The journal's own entries that record no write: replay passes over them.
MARKERS = frozenset({SNAPSHOT_BEGIN, SNAPSHOT_END, TRIM})

#: Models per atomic program.
BATCH = 100
#: How often a batch is read again when a model changed its set fields under it.
ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class SnapshotReport:
    """What ``snapshot`` recorded: its id (the ``snapshot.begin`` entry's), its end entry, the
    models recorded (by class), and how long it took."""

    stream: str
    id: str
    end_id: str
    models: dict[str, int]
    duration_s: float


@dataclass(frozen=True, slots=True)
class SnapshotSpan:
    """One snapshot in a stream: its ``snapshot.begin`` id, and its ``snapshot.end`` id
    (``None``: incomplete, it never finished)."""

    begin: str
    end: str | None


@dataclass(frozen=True, slots=True)
class TrimReport:
    """What ``trim`` removed: ``removed`` entries before snapshot ``before``; ``cut_id`` the last
    one removed (``None``: nothing was there to remove); ``entry_id`` its ``journal.trim``."""

    stream: str
    before: str
    removed: int
    cut_id: str | None
    entry_id: str | None


def _stream_of(journal: StreamJournal | str) -> StreamJournal:
    return journal if isinstance(journal, StreamJournal) else StreamJournal(journal)


async def _chained(redis: Redis, journal: StreamJournal) -> StreamJournal:
    """``journal``, chained if its stream has a chain head: its own entries must keep the chain
    whether or not the caller said ``chain=True``."""
    if journal.chain_key is not None or journal.maxlen is not None:
        return journal
    keyed = await wire.call(redis, ("HGET", chain_head(journal.stream), "keyed"), resend=True)
    if keyed == b"1":
        raise RetentionError.needs_key(journal.stream)
    if journal.chain or keyed is None:
        return journal
    return StreamJournal(journal.stream, chain=True)


async def snapshot(
    redis: Redis | RedisCluster,
    journal: StreamJournal | str = DEFAULT_STREAM,
    *,
    models: Collection[str] | None = None,
    layout: KeyLayout | None = None,
    batch: int = BATCH,
) -> SnapshotReport:
    """Record the current state of every model of the classes the journal names (or of
    ``models``) into the journal, between a ``snapshot.begin`` and a ``snapshot.end`` entry.

    Writers may keep writing: each ``batch`` of models is read and appended in one atomic
    program, and writes land between two programs. Returns a
    ``SnapshotReport``; its ``id`` is what ``trim(before=...)`` takes. Raises ``RetentionError``
    if the server refuses a program (a key of another type, a missing permission), and a
    ``RedisCluster``: it runs on one server for now.
    """
    if isinstance(redis, RedisCluster):
        raise RetentionError.on_cluster(_stream_of(journal).stream, "snapshot")
    wire.check_client(redis, "snapshot")
    started = time.perf_counter()
    chosen = await _chained(redis, _stream_of(journal))
    stream = chosen.stream
    names = sorted(set(models) if models is not None else await _model_names(redis, stream))
    layout = layout or KeyLayout()
    begin = await _append_marker(redis, chosen, SNAPSHOT_BEGIN, {"models": names}, what="snapshot")
    counts: dict[str, int] = {}
    for model in names:
        counts[model] = 0
        cursor = 0
        while True:
            cursor, found = await wire.call(
                redis,
                ("SCAN", cursor, "MATCH", f"{_glob(model)}:*", "COUNT", 1000, "TYPE", "hash"),
                resend=True,
            )
            keys = [key.decode() for key in found]
            for start in range(0, len(keys), batch):
                counts[model] += await _record(
                    redis, chosen, layout, model, keys[start : start + batch]
                )
            cursor = int(cursor)
            if cursor == 0:
                break
    end = await _append_marker(
        redis, chosen, SNAPSHOT_END, {"begin": begin, "models": counts}, what="snapshot"
    )
    return SnapshotReport(stream, begin, end, counts, time.perf_counter() - started)


async def _model_names(redis: Redis, stream: str) -> set[str]:
    names: set[str] = set()
    async for entry in read_entries(redis, stream):
        if entry.model:
            names.add(entry.model)
    return names


async def _record(
    redis: Redis, journal: StreamJournal, layout: KeyLayout, model: str, keys: list[str]
) -> int:
    """Append a ``snapshot.model`` entry for each model key of ``keys`` in one program; the
    models recorded (one deleted since SCAN found it has no entry: its delete has one)."""
    for _ in range(ATTEMPTS):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            hashes: list[dict[bytes, bytes]] = await pipe.execute()
        program = Program()
        snapshot_ops = []
        ts = int(time.time() * 1000)
        for key, stored in zip(keys, hashes, strict=True):
            pk = pk_from_key(model, key)
            if pk is None:
                continue
            fields = sorted(name.decode() for name, value in stored.items() if value == b"true")
            op = program.op(
                OPS["SNAPSHOT"], (key, *(layout.set_key(model, pk, f) for f in fields)), fields
            )
            snapshot_ops.append(op)
            entry = marker_fields(
                SNAPSHOT_MODEL, key=key, model=model, pk=pk, txn=os.urandom(16).hex(), ts=ts,
                args=None,
            )  # fmt: skip
            program.op(
                OPS["JOURNAL"],
                journal.append_keys(journal.stream),
                [0, op + 1, entry, *journal.chain_pads],
            )
        if not snapshot_ops:
            return 0
        outcome = await dispatcher.run_program(redis, program, "snapshot")
        if isinstance(outcome, Refusal):
            if outcome.reason == "snapshot_moved":
                continue  # a set field came or went since the read: read the batch again
            raise RetentionError.refused(
                journal.stream, "snapshot", outcome.reason, outcome.key, outcome.detail
            )
        return sum(1 for op in snapshot_ops if outcome[op] == 1)
    raise RetentionError.moved(journal.stream, "snapshot", ATTEMPTS)


async def _append_marker(
    redis: Redis, journal: StreamJournal, name: str, args: dict[str, Any], *, what: str
) -> str:
    program = Program()
    program.op(
        OPS["JOURNAL"],
        journal.append_keys(journal.stream),
        [0, 0, _marker(journal, name, args), *journal.chain_pads],
    )
    outcome = await dispatcher.run_program(redis, program, what)
    if isinstance(outcome, Refusal):
        raise RetentionError.refused(
            journal.stream, what, outcome.reason, outcome.key, outcome.detail
        )
    return _text(outcome[0])


def _marker(journal: StreamJournal, name: str, args: dict[str, Any]) -> bytes:
    return marker_fields(
        name, key=journal.stream, model="", pk="", txn=os.urandom(16).hex(),
        ts=int(time.time() * 1000), args=orjson.dumps(args),
    )  # fmt: skip


async def snapshots(
    redis: Redis, journal: StreamJournal | str = DEFAULT_STREAM
) -> list[SnapshotSpan]:
    """Every snapshot whose ``snapshot.begin`` the stream still holds, oldest first."""
    stream = _stream_of(journal).stream
    spans: dict[str, str | None] = {}
    async for entry in read_entries(redis, stream):
        if entry.cmd == SNAPSHOT_BEGIN:
            spans[entry.id] = None
        elif entry.cmd == SNAPSHOT_END and entry.args.get("begin") in spans:
            spans[entry.args["begin"]] = entry.id
    return [SnapshotSpan(begin, end) for begin, end in spans.items()]


async def latest_snapshot(
    redis: Redis, journal: StreamJournal | str = DEFAULT_STREAM
) -> str | None:
    """The id of the latest complete snapshot whose ``snapshot.begin`` the stream still holds,
    or ``None``; read backwards from the stream's end, only as far as that snapshot's end."""
    stream = _stream_of(journal).stream
    high = "+"
    while True:
        page = await wire.call(redis, ("XREVRANGE", stream, high, "-", "COUNT", 500), resend=True)
        for _, flat in page:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if fields.get(b"cmd") != SNAPSHOT_END.encode():
                continue
            try:
                begin = orjson.loads(fields.get(b"args", b"{}")).get("begin")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(begin, str) and await wire.call(
                redis, ("XRANGE", stream, begin, begin), resend=True
            ):
                return begin
        if len(page) < 500:
            return None
        high = "(" + _text(page[-1][0])


async def trim(
    redis: Redis | RedisCluster,
    journal: StreamJournal | str = DEFAULT_STREAM,
    *,
    before: str | None = None,
) -> TrimReport:
    """Remove every entry of the journal before complete snapshot ``before`` (its id, as
    ``snapshot`` returned it; default: the latest complete snapshot), in one atomic program with
    a ``journal.trim`` entry recording the cut.

    Refused with ``RetentionError``, removing nothing, when there is no complete snapshot, or
    ``before`` is no snapshot's id, lies inside one, or is after the latest complete one; and a
    ``RedisCluster``: it runs on one server for now.
    """
    if isinstance(redis, RedisCluster):
        raise RetentionError.on_cluster(_stream_of(journal).stream, "trim")
    wire.check_client(redis, "trim")
    chosen = await _chained(redis, _stream_of(journal))
    stream = chosen.stream
    spans = await snapshots(redis, chosen)
    complete = [span for span in spans if span.end is not None]
    if not complete:
        raise RetentionError.no_snapshot(stream)
    latest = complete[-1]
    if before is None:
        before = latest.begin
    elif before not in {span.begin for span in complete}:
        listed = ", ".join(span.begin for span in complete)
        inside = next((s for s in complete if _after(before, s.begin)
                       and not _after(before, s.end or s.begin)), None)  # fmt: skip
        if inside is not None:
            why = f"that is inside snapshot {inside.begin} (to {inside.end})"
            raise RetentionError.bad_before(stream, before, "inside_snapshot", why, listed)
        if _after(before, latest.begin):
            why = f"that is after the latest complete snapshot, {latest.begin}"
            raise RetentionError.bad_before(stream, before, "past_latest", why, listed)
        why = "that is not the id of a complete snapshot"
        raise RetentionError.bad_before(stream, before, "not_a_snapshot", why, listed)
    for _ in range(ATTEMPTS):
        last = await wire.call(
            redis, ("XREVRANGE", stream, f"({before}", "-", "COUNT", 1), resend=True
        )
        if not last:
            return TrimReport(stream, before, 0, None, None)
        cut_id = _text(last[0][0])
        cut = dict(zip(last[0][1][::2], last[0][1][1::2], strict=True))
        recorded: dict[str, Any] = {"before": before, "cut_id": cut_id}
        if b"hash" in cut:  # chained: the hash it cut at, as the head records it too
            recorded["cut_hash"], recorded["cut_n"] = _text(cut[b"hash"]), _text(cut[b"n"])
        program = Program()
        entry = _marker(chosen, TRIM, recorded)
        program.op(OPS["JOURNAL"], chosen.append_keys(stream), [0, 0, entry, *chosen.chain_pads])
        trim_op = program.op(OPS["TRIM"], chosen.append_keys(stream), [before, cut_id])
        outcome = await dispatcher.run_program(redis, program, "trim")
        if isinstance(outcome, Refusal):
            if outcome.reason == "trim_moved":
                continue  # an entry before the cut was deleted meanwhile: look again
            raise RetentionError.refused(
                stream, "trim", outcome.reason, outcome.key, outcome.detail
            )
        return TrimReport(stream, before, int(outcome[trim_op]), cut_id, _text(outcome[0]))  # type: ignore[call-overload]
    raise RetentionError.moved(stream, "trim", ATTEMPTS)


def restored(args: dict[str, Any], target: RecordTarget) -> SaveModel:
    """The save a ``snapshot.model`` entry's ``args`` amount to on ``target``: the hash's values
    (its version among them) and the sets as recorded, with the recorded absolute expiry."""
    fields = {name: orjson.loads(value) for name, value in args["fields"].items()}
    sets: dict[str, list[Any] | None] = {
        name: [orjson.loads(member) for member in members] if members else []
        for name, members in args["sets"].items()
    }
    expire_at = args.get("expire_at_ms")
    if expire_at is not None and (type(expire_at) is not int or expire_at <= 0):
        raise ValueError(f"expire_at_ms {expire_at!r} is not a positive whole number of ms")
    save = SaveModel.from_record({"fields": fields, "sets": sets, "ttl_ms": None}, target)
    assert isinstance(save, SaveModel)
    # The hash's version (VERSION_FIELD) is among its fields: written as recorded, not bumped,
    # so the replay's version is the source's.
    return SaveModel(
        model=save.model, pk=save.pk, key=save.key, fields=save.fields, sets=save.sets,
        expire_at_ms=expire_at, restores_version=True,
    )  # fmt: skip


def _after(one: str, other: str) -> bool:
    """Whether stream id ``one`` comes after ``other``."""
    return _id(one) > _id(other)


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _glob(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH glob."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
