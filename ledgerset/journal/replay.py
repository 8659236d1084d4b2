"""Replay: rebuild a database from a journal, resumably, one atomic batch at a time.

Each source transaction is applied whole: transactions are gathered into batches, and each batch
runs on the target as one atomic program together with the move of the replay's checkpoint
(``ledgerset:replay:<stream>``), so a second run applies nothing and a stopped run resumes after
the last batch that landed. Keys are built through the target's ``KeyLayout``. A save's TTL is
restored as an absolute expiry (entry time + TTL); if that moment has passed, the model is not
created, and it and the later entries of that model until its next save count as ``expired``.

The journal is not trusted: before anything is written, the target must not be the source (same
server ``run_id`` and database) and must be empty, unless it holds this replay's checkpoint (a
resume) or the caller says ``into_existing``; every entry must name what a ledgerset model could
have written (``keys.unwritable``), and the keys a delete removes must hold a hash or a set. An
entry that fails any of this stops the replay before its transaction, unless ``skip`` names it.

On a cluster. A source cluster's journal is one stream per slot (``journal.streams``); each is
replayed on its own, with its own checkpoint (``ledgerset:replay:<slot stream>``): entries of
different slots touch different keys, so the order across them does not change the result. A
target cluster runs one atomic program per slot, so each source stream is split by the slot its
entries' models live in on the target: each part is applied to that slot's primary, in batches
atomic with the part's own checkpoint in that slot (``keys.slot_checkpoint_key``). A rerun reads
the stream again and applies nothing that a checkpoint covers. A source transaction whose models
land in several target slots is applied per slot (each part atomic); a single command whose
models land in several slots cannot be, and stops the replay before its transaction.

From a snapshot. A fresh run (no checkpoint on the target) of one server's stream starts at its
latest complete snapshot when entries were removed from the stream, or when asked
(``from_snapshot=True``); its ``snapshot.model`` entries apply as saves that write the recorded
version (``snapshot.restored``), and the journal's own entries (``snapshot.MARKERS``) write
nothing (on a target cluster they belong to no slot: passed over, counted as skipped). A resumed
run reads on from its checkpoint. A cluster's slot streams hold no snapshot (``snapshot`` runs
on one server for now): from a cluster, ``from_snapshot=True`` is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError, ResponseError

from ledgerset._events import DEBUG, INFO, emit, enabled
from ledgerset._server_errors import server_address
from ledgerset.commands import dispatcher, routing, wire
from ledgerset.commands.catalog import (
    Address,
    Command,
    DeleteModel,
    RecordTarget,
    SaveModel,
    SetCommand,
)
from ledgerset.commands.program import Refusal
from ledgerset.commands.record import DEFAULT_STREAM, JournalEntry, decode
from ledgerset.errors import (
    JournalEntryError,
    PermissionDeniedError,
    ReplayConflictError,
    ReplayTargetError,
    RetentionError,
    permission_denied,
)
from ledgerset.journal.reader import Position, read_entries
from ledgerset.journal.snapshot import MARKERS, SNAPSHOT_MODEL, latest_snapshot, restored
from ledgerset.journal.streams import JournalStream, Source, open_journal
from ledgerset.keys import (
    KeyLayout,
    checkpoint_key,
    key_slot,
    slot_checkpoint_key,
    unwritable,
)

__all__ = ["ReplayReport", "check_target", "read_skipping", "replay"]

#: Entries per atomic batch on the target.
BATCH = 500
#: Entries per page when counting what a resumed run has left to read.
_COUNT_PAGE = 2000
#: At most this many answers of the checks of what a model could have written are kept.
_FAULTS_KEPT = 4096
#: What ``_Run.faults`` holds for a question not asked yet (``None`` is the answer "no fault").
_UNASKED = ("", "")

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: entries ``applied``, ``skipped`` (other models, or named in ``skip``),
    ``expired``."""

    applied: int = 0
    skipped: int = 0
    expired: int = 0
    #: The last entry id handled (and recorded in the target's checkpoint, unless this was a dry
    #: run or nothing has been applied into that target yet). On a cluster, with a checkpoint per
    #: stream or slot, it is the last one handled of the last stream read.
    last_id: str | None = None
    dry_run: bool = False
    #: ``(model, pk)`` of the models whose expiry had passed when replayed.
    expired_models: set[tuple[str, str]] = field(default_factory=set)
    #: The checkpoint found on the target when the run started: it resumed after that entry.
    resumed_after: str | None = None
    #: The ids of the entries passed over because ``skip`` named them.
    skipped_ids: list[str] = field(default_factory=list)
    #: The model classes of the entries read (skipped ones aside).
    models: set[str] = field(default_factory=set)
    #: With ``model=``, that no entry read names that model (a typo?); nothing was replayed.
    model_absent: bool = False
    #: The snapshot the replay started at (its ``snapshot.begin`` id), if it did not start at
    #: the stream's first entry.
    from_snapshot: str | None = None


async def replay(
    source: Source,
    target: Source,
    stream: str = DEFAULT_STREAM,
    until: Position | None = None,
    model: str | None = None,
    dry_run: bool = False,
    *,
    layout: KeyLayout | None = None,
    on_progress: Progress | None = None,
    into_existing: bool = False,
    skip: Collection[str] = (),
    from_snapshot: bool | None = None,
) -> ReplayReport:
    """Apply the journal ``stream`` of ``source`` to ``target``, from where the last run stopped.

    ``until`` (an entry id or a datetime) stops after the last entry at or before it: the state
    "as of" that moment. ``model`` replays only that model class (with its own checkpoint).
    ``dry_run`` reads and checks everything and writes nothing. ``layout`` spells the target's
    keys (default: the standard one; the cluster layout for a ``RedisCluster`` target).
    ``on_progress(done, total)`` is called after each batch, with the entries this run handled
    and the entries it had to read when it started. A target that is the source, or holds keys
    but no checkpoint of this replay, is refused with ``ReplayTargetError`` (writing nothing)
    unless ``into_existing``; ``skip`` lists entry ids to pass over on purpose (an entry that
    stopped an earlier run). Either side may be a ``RedisCluster``: see the module's docstring.

    A run that starts afresh (no checkpoint) starts at the latest complete snapshot when the
    stream no longer holds every entry ever added to it (a ``trim``, ``maxlen``, an ``XDEL``), or
    when ``from_snapshot=True`` (refused with ``RetentionError`` if there is none, or if the
    source is a cluster: snapshots are taken on one server for now);
    ``from_snapshot=False`` always starts at the stream's first entry. Either way it reaches the
    state a replay of the whole history would (``report.from_snapshot`` says where it started).
    """
    _check_side(source, "source")
    _check_side(target, "target")
    # A single id is a Collection[str] too, of its characters: take it as the one id it means.
    skipped = frozenset([skip] if isinstance(skip, str) else skip)
    layout = _target_layout(target, layout)
    report = ReplayReport(dry_run=dry_run)
    async with open_journal(source, stream) as journal, _Target.open(target) as sink:
        # One server without the stream reads nothing, as always; a cluster without any of its
        # slot streams has nothing to read either.
        streams = journal.streams or (
            [] if journal.cluster else [JournalStream(stream, _single(source))]
        )
        resume = await check_target(source, target, stream, model, into_existing=into_existing)
        report.last_id = report.resumed_after = resume
        start_after: str | None = None
        if journal.cluster and from_snapshot is True:
            raise RetentionError.on_cluster(stream, "replay(from_snapshot=True)")
        if resume is None and from_snapshot is not False and not journal.cluster and streams:
            # A fresh run of one stream: from its latest complete snapshot, when it must or
            # was told to. (A cluster's slot streams hold no snapshot: snapshot() runs on one
            # server for now.)
            begin = await _snapshot_to_start_at(streams[0].redis, stream, from_snapshot is True)
            if begin is not None:
                report.from_snapshot = begin
                start_after = _id_before(begin)
        progress = _Progress(on_progress)
        for found in streams:
            progress.total += await _entries_after(
                found.redis, found.name, (None if sink.cluster else await sink.checkpoint_of(
                    checkpoint_key(found.name, model)
                )) or start_after
            )  # fmt: skip
        for found in streams:
            run = _Run(found, sink, model, layout, progress, skipped, report, start_after)
            await run.execute(until)
    if model is not None and report.resumed_after is None:
        report.model_absent = model not in report.models
    return report


def _check_side(redis: object, argument: str, where: str = "replay") -> None:
    if isinstance(redis, RedisCluster):
        routing.check_cluster(redis, where, argument)
    else:
        wire.check_client(redis, where, argument)


def _single(redis: Source) -> Redis:
    assert isinstance(redis, Redis)  # only ever called for a side that is not a cluster
    return redis


def _target_layout(target: Source, layout: KeyLayout | None) -> KeyLayout:
    """The target's layout: the given one, the cluster layout on a cluster."""
    layout = layout or KeyLayout()
    if isinstance(target, RedisCluster) and not layout.cluster:
        return KeyLayout(special_prefix=layout.special_prefix, cluster=True)
    return layout


async def check_target(
    source: Source,
    target: Source,
    stream: str = DEFAULT_STREAM,
    model: str | None = None,
    *,
    into_existing: bool = False,
) -> str | None:
    """Raise ``ReplayTargetError`` if a replay of ``stream`` (limited to ``model``) must not write
    into ``target``: it is the source (same server ``run_id``, same database), or it holds keys
    but no checkpoint of this replay, unless ``into_existing``. Returns a checkpoint of this
    replay found there, if any: the entry a replay there resumes after (on a cluster, where
    there is one checkpoint per stream and slot, the first found)."""
    _check_side(source, "source", "check_target")
    _check_side(target, "target", "check_target")
    async with open_journal(source, stream) as journal, _Target.open(target) as sink:
        names = [found.name for found in journal.streams] or [stream]
        resume_at = await sink.find_checkpoint(names, model)
        mine = [await _identity(client) for client in _clients(source, journal.nodes)]
        theirs = [await _identity(client) for client in sink.clients()]
        where = sink.where(theirs)
        if any(a.same_database(b) for a in mine for b in theirs):
            raise ReplayTargetError.is_source(stream, where)
        if resume_at is None and not into_existing:
            keys = sum([int(await wire.call(client, ("DBSIZE",), resend=True))
                        for client in sink.clients()])  # fmt: skip
            if keys:
                checkpoint = checkpoint_key(names[0], model)
                if sink.cluster:  # one per slot: name their pattern
                    checkpoint = checkpoint.replace(
                        "ledgerset:replay:", "ledgerset:replay:{<tag>}:"
                    )
                raise ReplayTargetError.not_empty(stream, where, keys, checkpoint)
    return resume_at


def _clients(redis: Source, nodes: dict[str, Redis]) -> list[Redis]:
    return list(nodes.values()) if isinstance(redis, RedisCluster) else [redis]


class _Target:
    """Where a replay writes: one server, or a cluster's primaries by slot (plain clients, so
    each batch is one atomic program on its slot's primary, sent once)."""

    def __init__(self, redis: Source, nodes: dict[str, Redis]) -> None:
        self.redis = redis
        self.cluster = isinstance(redis, RedisCluster)
        self.nodes = nodes

    @classmethod
    @asynccontextmanager
    async def open(cls, redis: Source) -> AsyncIterator[_Target]:
        # A cluster's: the clients ledgerset routes through, which live as long as the cluster
        # client (routing.aclose closes them).
        nodes = await routing.primaries(redis) if isinstance(redis, RedisCluster) else {}
        yield cls(redis, nodes)

    def clients(self) -> list[Redis]:
        return list(self.nodes.values()) if self.cluster else [_single(self.redis)]

    def where(self, identities: list[_Database]) -> str:
        if not self.cluster:
            return f"{server_address(_single(self.redis))}/{identities[0].db}"
        return "the cluster at " + ", ".join(self.nodes)

    def client_for(self, slot: int) -> Redis:
        """The client of the primary serving ``slot`` (the only client on one server)."""
        if not isinstance(self.redis, RedisCluster):
            return self.redis
        node = self.redis.nodes_manager.get_node_from_slot(slot)
        if node.name not in self.nodes:  # a primary that joined since: a client of it, too
            self.nodes[node.name] = routing.node_client(self.redis, node)
        return self.nodes[node.name]

    async def checkpoint_of(self, key: str, slot: int | None = None) -> str | None:
        client = self.client_for(slot) if slot is not None else self.clients()[0]
        raw = await wire.call(client, ("GET", key), resend=True)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def find_checkpoint(self, streams: list[str], model: str | None) -> str | None:
        """A checkpoint of a replay of ``streams`` (limited to ``model``) on the target."""
        if not self.cluster:
            for name in streams:
                found = await self.checkpoint_of(checkpoint_key(name, model))
                if found is not None:
                    return found
            return None
        wanted = set(streams)
        for client in self.clients():
            cursor: bytes | int = 0
            while True:
                command = ("SCAN", cursor, "MATCH", "ledgerset:replay:{*}:*", "COUNT", 1000)
                cursor, keys = await wire.call(client, command, resend=True)
                for raw in keys:
                    name = raw.decode(errors="surrogateescape")
                    slot = key_slot(raw)
                    for stream_name in wanted:
                        if name == slot_checkpoint_key(stream_name, slot, model):
                            return await self.checkpoint_of(name, slot)
                if int(cursor) == 0:
                    break
        return None


@dataclass(slots=True)
class _Progress:
    """The progress of a whole replay, over every stream it reads."""

    on_progress: Progress | None
    done: int = 0
    total: int = 0

    def __call__(self, done: int) -> None:
        if self.on_progress is not None:
            self.on_progress(done, max(self.total, done))


async def read_skipping(
    redis: Redis,
    stream: str,
    skip: Collection[str],
    *,
    end: Position | None = None,
    after: str | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> AsyncGenerator[JournalEntry, None]:
    """``read_entries``, passing over the entries ``skip`` names, even ones that do not parse;
    an entry that does not parse and is not named stops it with the way to go on."""
    while True:
        try:
            # Closed as it stops (a cancelled replay), not whenever it is collected.
            async with aclosing(read_entries(redis, stream, end=end, after=after)) as entries:
                async for entry in entries:
                    if entry.id in skip:
                        if on_skip is not None:
                            on_skip(entry.id)
                        continue
                    yield entry
            return
        except JournalEntryError as exc:
            if exc.entry_id is None:
                raise
            if exc.entry_id not in skip:
                raise JournalEntryError.stops_replay(
                    stream, exc.entry_id, str(exc), field=exc.field
                ) from exc
            if on_skip is not None:
                on_skip(exc.entry_id)
            after = exc.entry_id  # the reader stopped at it: read on after it


class _Lane:
    """One checkpoint's part of a replay: the batches for one target (a server, or one slot's
    primary), applied in order, each atomic with the move of ``checkpoint``."""

    def __init__(self, target: Redis, checkpoint: str, applied_through: str | None) -> None:
        self.target, self.checkpoint = target, checkpoint
        #: The last entry whose batch landed (the checkpoint's value on the target).
        self.applied_through = applied_through
        #: The last entry routed here (the checkpoint's value once the batch lands).
        self.last_id = applied_through
        self.batch: list[_Queued] = []
        self.batch_entries = 0
        #: The batch being applied on the target while the next one is read and decoded.
        self.in_flight: asyncio.Task[None] | None = None
        #: The checkpoint an earlier run left here, until the stream is read past it.
        self.resumed_through = None if applied_through is None else _id(applied_through)

    def covers(self, entry_id: str) -> bool:
        """Whether an earlier run applied ``entry_id`` here already (the checkpoint is past it)."""
        # Only an earlier run's batches can cover an entry this run reads: the stream is read in
        # order, so once past that checkpoint no entry is compared again.
        if self.resumed_through is None:
            return False
        if _id(entry_id) <= self.resumed_through:
            return True
        self.resumed_through = None
        return False


class _Queued(NamedTuple):
    """A command waiting in a lane's batch, with what its errors name of its entry (not the
    entry itself: a batch would keep every entry's decoded args alive until it lands)."""

    id: str
    cmd: str
    model: str
    pk: str
    txn: str
    command: Command[Any]


def _id(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


class _Run:
    """The replay of one source stream into the target, through one lane (one server), or one
    lane per target slot (a cluster)."""

    def __init__(
        self,
        source: JournalStream,
        sink: _Target,
        model: str | None,
        layout: KeyLayout,
        progress: _Progress,
        skip: frozenset[str],
        report: ReplayReport,
        start_after: str | None = None,
    ) -> None:
        self.source, self.stream, self.sink, self.model = source.redis, source.name, sink, model
        self.layout, self.progress, self.skip, self.report = layout, progress, skip, report
        self.lanes: dict[int | None, _Lane] = {}
        #: One server: the entry the one lane resumes after, so reading starts after it.
        self.resume_after: str | None = None
        #: A fresh run from a snapshot: read after this (just before its ``snapshot.begin``).
        self.start_after = start_after
        #: ``keys.unwritable``'s answers for this run's layout, by (model, pk, field names): a
        #: journal names the same few models and fields entry after entry.
        self.faults: dict[tuple[str, str, tuple[str, ...]], tuple[str, str] | None] = {}
        #: The names (model, pk, field, ts) of the last entry decoded, and its ``RecordTarget``:
        #: a model's entries tend to come in a row, and a transaction's share one ``ts``.
        self.last_target: tuple[tuple[str, str, str | None, datetime] | None, RecordTarget] = (
            None, RecordTarget("", "", None, layout, 0)
        )  # fmt: skip

    async def execute(self, until: Position | None) -> None:
        started = time.perf_counter()
        if not self.sink.cluster:
            checkpoint = checkpoint_key(self.stream, self.model)
            self.resume_after = await self.sink.checkpoint_of(checkpoint)
            self.lanes[None] = _Lane(self.sink.clients()[0], checkpoint, self.resume_after)
            if self.resume_after is not None:
                self.report.last_id = self.resume_after
                self.report.resumed_after = self.report.resumed_after or self.resume_after
        if enabled(INFO):
            emit(INFO, "replay.started", stream=self.stream, after=self.resume_after,
                 model=self.model, dry_run=self.report.dry_run)  # fmt: skip
        applied, skipped, expired = self.report.applied, self.report.skipped, self.report.expired
        done = self.progress.done
        group: list[JournalEntry] = []
        models = self.report.models
        # The reader is closed as the run stops (a cancellation too), not when it is collected.
        async with aclosing(self.entries(until)) as entries:
            try:
                async for entry in entries:
                    if entry.cmd not in MARKERS:
                        models.add(entry.model)
                    if (group and entry.txn != group[0].txn) or (not group and entry.seq != 1):
                        raise _broken(self.stream, group[-1] if group else entry)
                    group.append(entry)
                    if entry.seq == entry.of:  # a whole transaction: decide it, queue it
                        commands = self.decoded(group)
                        # (On one server, one lane: no entry to route, and no coroutine run.)
                        lanes = await self.routed(group, commands) if self.sink.cluster else None
                        for lane in self.queue(group, commands, lanes):
                            if lane.batch_entries >= BATCH:
                                await self.flush(lane)
                        group = []
            except JournalEntryError:
                await self.flush_all()  # what came before the bad entry's transaction lands
                raise
            except BaseException:
                await self.abandon()
                raise
        # An unfinished group at the end (``until`` cut a transaction): apply none of it.
        await self.flush_all()
        if enabled(INFO):
            elapsed = time.perf_counter() - started
            handled = self.progress.done - done
            emit(INFO, "replay.finished", stream=self.stream,
                 applied=self.report.applied - applied, skipped=self.report.skipped - skipped,
                 expired=self.report.expired - expired, last_id=self.report.last_id,
                 duration_ms=round(elapsed * 1000, 3),
                 entries_per_s=round(handled / elapsed) if elapsed else None)  # fmt: skip

    def entries(self, until: Position | None) -> AsyncGenerator[JournalEntry, None]:
        """The entries to replay, without those ``skip`` names."""
        return read_skipping(
            self.source, self.stream, self.skip,
            end=until, after=self.resume_after or self.start_after, on_skip=self.pass_over,
        )  # fmt: skip

    def pass_over(self, entry_id: str) -> None:
        """Count an entry ``skip`` names, as if it had been deleted from the stream."""
        self.progress.done += 1
        self.report.skipped += 1
        self.report.skipped_ids.append(entry_id)
        self.report.last_id = entry_id
        # On one server the checkpoint moves past it; on a cluster it belongs to no slot's part.
        lane = self.lanes.get(None)
        if lane is not None:
            lane.last_id = entry_id
            lane.batch_entries += 1

    async def lane_of(self, entry: JournalEntry, command: Command[Any] | None) -> _Lane | None:
        """The lane ``entry`` goes to: the one server's, or its target slot's on a cluster
        (``None``: the journal's own entry, a snapshot's bounds or a trim, of no slot)."""
        if not self.sink.cluster:
            return self.lanes[None]
        if entry.cmd in MARKERS:
            return None
        owners = [address.owner for address in command.addresses] if command is not None else []
        slots = {key_slot(owner) for owner in owners} or {
            key_slot(self.layout.model_key(entry.model, entry.pk))
        }
        if len(slots) > 1:
            raise JournalEntryError.stops_replay(
                self.stream,
                entry.id,
                f"journal entry {entry.id} of stream {self.stream!r} ({entry.cmd}) writes models "
                f"in slots {', '.join(map(str, sorted(slots)))} of the target cluster, and a "
                f"cluster applies one atomic program per slot; replay stops before its "
                f"transaction ({entry.txn}), applying nothing of it. Replay into a single server, "
                f"or give those models pks with a shared hash tag ({{tenant}}:...).",
                field="args",
            )
        (slot,) = slots
        lane = self.lanes.get(slot)
        if lane is None:
            checkpoint = slot_checkpoint_key(self.stream, slot, self.model)
            applied = await self.sink.checkpoint_of(checkpoint, slot)
            lane = self.lanes[slot] = _Lane(self.sink.client_for(slot), checkpoint, applied)
            if applied is not None:
                self.report.resumed_after = self.report.resumed_after or applied
        return lane

    def decoded(self, group: list[JournalEntry]) -> list[Command[Any] | None]:
        """The commands of one source transaction's entries (``None``: nothing to write, or
        another model's), or the error of the first entry that stops the replay."""
        size, model = len(group), self.model
        for position, entry in enumerate(group, start=1):
            if entry.seq != position or entry.of != size:
                raise _broken(self.stream, entry)
        # Decode the whole transaction before counting any of it: a bad entry stops the replay
        # before its transaction, and the report must not count what was not applied.
        command_of = self.command_of
        if model is None:
            return [command_of(entry) for entry in group]
        return [None if entry.model != model else command_of(entry) for entry in group]

    async def routed(
        self, group: list[JournalEntry], commands: list[Command[Any] | None]
    ) -> list[_Lane | None]:
        """The lane of each entry of one source transaction on a target cluster."""
        pairs = zip(group, commands, strict=True)
        return [await self.lane_of(entry, command) for entry, command in pairs]

    def queue(
        self,
        group: list[JournalEntry],
        commands: list[Command[Any] | None],
        lanes: list[_Lane | None] | None,
    ) -> list[_Lane]:
        """Count each entry of one decoded transaction and queue its command in its lane
        (``lanes``: each entry's; ``None``: the one server's); the lanes it touched."""
        model, report = self.model, self.report
        lane = self.lanes.get(None)
        self.progress.done += len(group)
        touched: list[_Lane] = []
        for index, entry in enumerate(group):
            report.last_id = entry_id = entry.id
            if lanes is not None:
                lane = lanes[index]
            if lane is None:  # nothing to write, and no slot's checkpoint to move: passed over
                report.skipped += 1
                continue
            # (Only a lane resumed from an earlier run's checkpoint can cover an entry.)
            if lane.resumed_through is not None and lane.covers(entry_id):
                continue  # an earlier run applied it into this slot
            lane.last_id = entry_id
            lane.batch_entries += 1
            if lane not in touched:
                touched.append(lane)
            command = commands[index]
            if model is not None and entry.model != model:
                report.skipped += 1
            elif command is None:  # nothing to replay (a pop of an empty set); counts as applied
                report.applied += 1
            elif self.expired(entry, command):
                report.expired += 1
            else:
                queued = _Queued(entry_id, entry.cmd, entry.model, entry.pk, entry.txn, command)
                lane.batch.append(queued)
                report.applied += 1
        return touched

    def command_of(self, entry: JournalEntry) -> Command[Any] | None:
        """The command ``entry`` records, once it is known to touch only a model's keys."""
        if entry.cmd in MARKERS:
            return None  # the journal's own entry (a snapshot's bounds, a trim): nothing to write
        named = (entry.model, entry.pk, entry.field, entry.ts)
        last_named, target = self.last_target
        if named != last_named:
            # (Else the entry before named the same model, pk, field and moment: its target
            # stands, checked, as a check depends on these names and the run's layout only.)
            fault = self.fault(entry.model, entry.pk, (entry.field,) if entry.field else ())
            if fault is not None:
                raise self.foreign(entry, *fault)
            target = RecordTarget(entry.model, entry.pk, entry.field, self.layout, entry.ts_ms)
            self.last_target = named, target
        try:
            if entry.cmd == SNAPSHOT_MODEL:
                command: Command[Any] | None = restored(entry.args, target)
            else:
                command = decode(entry.cmd, entry.v, entry.args, target)
        except LookupError as exc:
            raise JournalEntryError.stops_replay(
                self.stream,
                entry.id,
                f"journal entry {entry.id} of stream {self.stream!r} records {exc.args[0]}; "
                f"replay stops before its transaction ({entry.txn}), applying nothing of it. "
                f"Upgrade ledgerset, or register an upcaster for ({entry.cmd!r}, {entry.v}).",
                field="cmd",
            ) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise JournalEntryError.stops_replay(
                self.stream,
                entry.id,
                f"journal entry {entry.id} of stream {self.stream!r} has args that do not fit "
                f"{entry.cmd} v{entry.v} ({exc!r}); replay stops before its transaction "
                f"({entry.txn}), applying nothing of it.",
                field="args",
            ) from exc
        if command is None:
            return None
        if (
            _writes_only_its_set(type(command))
            and command.field == entry.field
            and command.pk == entry.pk
            and command.model == entry.model
        ):
            return command  # it writes what the entry names, checked above
        addresses = command.addresses
        fault = self.fault(entry.model, entry.pk, _field_names(command, addresses))
        # Every other model it touches, too: set.move names its destination in its args.
        for address in addresses:
            if fault is None and (address.model != entry.model or address.pk != entry.pk):
                fields = (address.field,) if address.field else ()
                fault = self.fault(address.model, address.pk, fields)
        if fault is not None:
            raise self.foreign(entry, "args", fault[1])
        return command

    def fault(self, model: str, pk: str, fields: tuple[str, ...]) -> tuple[str, str] | None:
        """``keys.unwritable`` in the target's layout, remembered for the next entries."""
        asked = (model, pk, fields)
        # (Not a KeyError caught: every new model of a journal is a miss, several times over.)
        found = self.faults.get(asked, _UNASKED)
        if found is not _UNASKED:
            return found
        if len(self.faults) >= _FAULTS_KEPT:  # a journal of very many models: memory stays flat
            self.faults.clear()
        found = self.faults[asked] = unwritable(model, pk, fields, self.layout)
        return found

    def foreign(self, entry: JournalEntry, field: str, why: str) -> JournalEntryError:
        return JournalEntryError.stops_replay(
            self.stream,
            entry.id,
            f"journal entry {entry.id} of stream {self.stream!r} ({entry.cmd}) is not a write a "
            f"ledgerset model could have made: its {field!r} field is wrong, {why}; replay stops "
            f"before its transaction ({entry.txn}), applying nothing of it.",
            field=field,
        )

    def expired(self, entry: JournalEntry, command: Command[Any]) -> bool:
        """Whether ``command`` acts on a model whose absolute expiry has passed: any model it
        touches (its ``addresses``), not only the one its entry is filed under."""
        expired_models = self.report.expired_models
        if _is_a(type(command), SaveModel):
            expire_at_ms = cast("SaveModel", command).expire_at_ms
            gone = expire_at_ms is not None and expire_at_ms <= _now_ms()
            if gone:
                expired_models.update(_models(command))
            elif expired_models:
                expired_models.difference_update(_models(command))
            return gone
        if not expired_models:  # the usual case: no model has expired, nothing to compare
            return False
        models = _models(command)
        if not models.isdisjoint(expired_models):
            if isinstance(command, DeleteModel):
                self.report.expired_models.difference_update(models)
            return True
        return False

    async def flush_all(self) -> None:
        """Send what every lane has queued, and wait for all of it to land."""
        for lane in self.lanes.values():
            await self.flush(lane, wait=True)

    async def flush(self, lane: _Lane, *, wait: bool = False) -> None:
        """Send ``lane``'s queued transactions and its checkpoint's move as one atomic program.

        A batch starts once the one before it has landed (its checkpoint is this one's expected
        value); it is applied on the target while the caller reads and decodes the next one,
        unless ``wait``.
        """
        await self.landed(lane)
        if lane.last_id is None or lane.last_id == lane.applied_through:
            return
        batch, lane.batch, lane.batch_entries = lane.batch, [], 0
        if not batch and lane.applied_through is None:
            # Nothing applied yet: a checkpoint now would be one for a replay that applied nothing
            # (a model filter's typo); the first batch that applies something records these too.
            self.progress(self.progress.done)
            return
        task = self.apply(lane, batch, lane.last_id, self.progress.done)
        lane.in_flight = asyncio.ensure_future(task)
        if wait:
            await self.landed(lane)
        else:
            await asyncio.sleep(0)  # a turn of the loop: the batch goes out before the next is read

    async def landed(self, lane: _Lane) -> None:
        """Wait for ``lane``'s batch in flight, if any; its failure is raised here."""
        task, lane.in_flight = lane.in_flight, None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """Stop the batches in flight: the checkpoints say whether they landed, as after a crash."""
        for lane in self.lanes.values():
            task, lane.in_flight = lane.in_flight, None
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def apply(self, lane: _Lane, batch: list[_Queued], last_id: str, done: int) -> None:
        started = time.perf_counter()
        if self.report.dry_run:
            lane.applied_through = last_id
        while not self.report.dry_run and (batch or lane.applied_through is not None):
            refusal = await dispatcher.apply_batch(
                lane.target,
                [queued.command for queued in batch],
                checkpoint=lane.checkpoint,
                expected=lane.applied_through,
                new=last_id,
                key_types=[pair for queued in batch for pair in _deleted_types(queued.command)],
            )
            if refusal is None:
                lane.applied_through = last_id
                break
            if refusal.reason != "model_not_found" or refusal.command is None:
                raise self.conflict(refusal, batch)
            # The journal holds only commands that succeeded, so a model missing on the target
            # expired there (e.g. during an earlier, resumed run): drop the command, try again.
            missing = refusal.command
            batch = [queued for queued in batch if queued.command is not missing]
            # The model whose key the refusal names, among those the command touches.
            touched = {(address.model, address.pk): address.owner for address in missing.addresses}
            named = {model for model, owner in touched.items() if owner == refusal.key}
            self.report.expired_models.update(named or touched)
            self.report.applied -= 1
            self.report.expired += 1
        if enabled(DEBUG):
            emit(DEBUG, "replay.batch", stream=self.stream, commands=len(batch), last_id=last_id,
                 duration_ms=round((time.perf_counter() - started) * 1000, 3))  # fmt: skip
        self.progress(done)

    def conflict(
        self, refusal: Refusal, batch: list[_Queued]
    ) -> ReplayConflictError | PermissionDeniedError | JournalEntryError:
        """The error for a batch the target refused; nothing of the batch was applied."""
        reason, key, command = refusal.reason, refusal.key, refusal.command
        if reason == "no_permission":
            return permission_denied("replay", refusal.detail, key, refusal.user)
        if command is None and reason == "wrong_type":  # a key a delete would remove
            command = next(
                queued.command for queued in batch if key in dict(_deleted_types(queued.command))
            )
        if command is None:
            return ReplayConflictError(
                f"replay of {self.stream!r} refused: checkpoint {key!r} moved; another replay "
                f"into the same target is running. Nothing of this batch was applied.",
                stream=self.stream,
            )
        entry = next(queued for queued in batch if queued.command is command)
        if reason == "expiry_out_of_range":
            return JournalEntryError(
                f"journal entry {entry.id} of stream {self.stream!r} ({entry.cmd} on "
                f"{entry.model} {entry.pk}) gives target key {key!r} an expiry out of range "
                f"({refusal.detail} ms); replay stops before its transaction ({entry.txn}), "
                f"and nothing of this batch was applied.",
                stream=self.stream,
                entry_id=entry.id,
            )
        return ReplayConflictError(
            f"replay of {self.stream!r} refused at entry {entry.id} ({entry.cmd} on "
            f"{entry.model} {entry.pk}): {reason} at target key {key!r}. The target holds "
            f"data the journal does not explain; nothing of this batch was applied.",
            stream=self.stream,
            entry_id=entry.id,
        )


def _broken(stream: str, entry: JournalEntry) -> JournalEntryError:
    return JournalEntryError.stops_replay(
        stream,
        entry.id,
        f"journal entry {entry.id} of stream {stream!r} breaks its transaction {entry.txn} "
        f"(seq {entry.seq} of {entry.of} out of order); replay stops before it.",
        field="seq",
    )


@functools.cache
def _is_a(command_type: type[Command[Any]], kind: type[Command[Any]]) -> bool:
    """``issubclass``, remembered: a command class is an ABC, whose ``isinstance`` runs Python
    code (``ABCMeta.__instancecheck__``) every time, for each entry and each queued command."""
    return issubclass(command_type, kind)


@functools.cache
def _writes_only_its_set(command_type: type[Command[Any]]) -> bool:
    """Whether commands of this type write one set, their own (``model``, ``pk``, ``field``),
    and no hash field: the ``addresses`` of ``SetCommand``, no ``fields``."""
    own = SetCommand.addresses  # the property itself, read on the class
    return (
        issubclass(command_type, SetCommand)
        and command_type.addresses is own
        and "fields" not in {each.name for each in dataclasses.fields(command_type)}
    )


def _field_names(command: Command[Any], addresses: tuple[Address, ...]) -> tuple[str, ...]:
    """Every field name ``command`` writes: the set field of every key it touches (its
    ``addresses``, so a command on a second set names that one too), and the hash fields of a
    model write (``fields``, the ``(name, JSON)`` pairs of ``model.save``/``model.update``)."""
    hash_fields: tuple[tuple[str, bytes], ...] = getattr(command, "fields", ())
    set_fields = [address.field for address in addresses if address.field is not None]
    if not hash_fields:
        return tuple(set_fields)
    return (*(name for name, _ in hash_fields), *set_fields)


def _models(command: Command[Any]) -> set[tuple[str, str]]:
    """``(model, pk)`` of every model ``command`` touches."""
    return {(address.model, address.pk) for address in command.addresses}


def _deleted_types(command: Command[Any]) -> list[tuple[str, str]]:
    """``(key, type)`` of each key ``command`` deletes outright: the server's DEL checks nothing,
    so the replay asks it to check that each holds what the model wrote there, or nothing."""
    command_type = type(command)
    if _is_a(command_type, DeleteModel):
        delete = cast("DeleteModel", command)
        return [(delete.key, "hash"), *((key, "set") for _, key in delete.sets)]
    if _is_a(command_type, SaveModel):
        save = cast("SaveModel", command)
        return [(contents.key, "set") for contents in save.sets if contents.members is None]
    return []


@dataclass(frozen=True, slots=True)
class _Database:
    """Which server and database a client talks to, whatever URL it was made from."""

    #: The server's ``run_id``; ``None`` when this user may not run ``INFO``.
    run_id: str | None
    #: The server's own end of the connection (``laddr``): one server, one address.
    address: str
    db: int

    def same_database(self, other: _Database) -> bool:
        if self.db != other.db:
            return False
        if self.run_id is not None and other.run_id is not None:
            return self.run_id == other.run_id
        return self.address == other.address  # an ACL refused INFO: the next best thing


async def _identity(redis: Redis) -> _Database:
    # Through the wire, as every read of a replay: redis-py's calls can lose a cancellation.
    raw = await wire.call(redis, ("CLIENT", "INFO"), resend=True)
    client = dict(item.split("=", 1) for item in raw.decode().split() if "=" in item)
    try:
        info = (await wire.call(redis, ("INFO", "server"), resend=True)).decode()
        lines = info.splitlines()
        run_id: str | None = next(line[7:].strip() for line in lines if line.startswith("run_id:"))
    except NoPermissionError:
        run_id = None
    return _Database(run_id, client["laddr"], int(client["db"]))


async def _entries_after(redis: Redis, stream: str, after: str | None) -> int:
    """How many entries a run from ``after`` reads (to the stream's end): its progress total."""
    # Through the wire, as every read of a replay: redis-py's calls can lose a cancellation.
    if after is None:
        return int(await wire.call(redis, ("XLEN", stream), resend=True))
    count, low = 0, f"({after}"
    while True:
        page: list[list[Any]] = await wire.call(
            redis, ("XRANGE", stream, low, "+", "COUNT", _COUNT_PAGE), resend=True
        )
        count += len(page)
        if len(page) < _COUNT_PAGE:
            return count
        low = "(" + page[-1][0].decode()


async def _snapshot_to_start_at(redis: Redis, stream: str, forced: bool) -> str | None:
    """The ``snapshot.begin`` id a fresh replay starts at: the latest complete snapshot's, when
    ``forced`` or when entries were removed from the stream (``entries-added`` above its
    length); else ``None``, the stream's first entry."""
    if not forced:
        try:
            raw = await wire.call(redis, ("XINFO", "STREAM", stream), resend=True)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None  # no stream: nothing to replay, from anywhere
            raise
        info = dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw
        if int(info.get(b"entries-added", 0)) <= int(info[b"length"]):
            return None
    begin = await latest_snapshot(redis, stream)
    if begin is not None:
        return begin
    if forced:
        raise RetentionError.no_snapshot(stream)
    return None


def _id_before(entry_id: str) -> str:
    """The largest stream id below ``entry_id``: reading after it starts at ``entry_id``."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-18446744073709551615"


def _now_ms() -> int:
    return int(time.time() * 1000)
