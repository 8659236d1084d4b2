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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from ledgerset._events import DEBUG, INFO, emit, enabled
from ledgerset._server_errors import server_address
from ledgerset.commands import dispatcher, wire
from ledgerset.commands.catalog import (
    Command,
    DeleteModel,
    RecordTarget,
    SaveModel,
    SetCommand,
    UpdateModel,
)
from ledgerset.commands.program import Refusal
from ledgerset.commands.record import DEFAULT_STREAM, decode
from ledgerset.errors import (
    JournalEntryError,
    PermissionDeniedError,
    ReplayConflictError,
    ReplayTargetError,
    RetentionError,
    permission_denied,
)
from ledgerset.journal.reader import JournalEntry, Position, read_entries
from ledgerset.journal.snapshot import MARKERS, SNAPSHOT_MODEL, latest_snapshot, restored
from ledgerset.keys import KeyLayout, checkpoint_key, unwritable

__all__ = ["ReplayReport", "check_target", "read_skipping", "replay"]

#: Entries per atomic batch on the target.
BATCH = 500
#: Entries per page when counting what a resumed run has left to read.
_COUNT_PAGE = 2000

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: entries ``applied``, ``skipped`` (other models, or named in ``skip``),
    ``expired``."""

    applied: int = 0
    skipped: int = 0
    expired: int = 0
    #: The last entry id handled (and recorded in the target's checkpoint, unless this was a dry
    #: run or nothing has been applied into that target yet).
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
    source: Redis,
    target: Redis,
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
    keys (default: the standard one). ``on_progress(done, total)`` is called after each batch,
    with the entries this run handled and the entries it had to read when it started. A target
    that is the source, or holds keys but no checkpoint of this replay, is refused with
    ``ReplayTargetError`` (writing nothing) unless ``into_existing``; ``skip`` lists entry ids to
    pass over on purpose (an entry that stopped an earlier run).

    A run that starts afresh (no checkpoint) starts at the latest complete snapshot when the
    stream no longer holds every entry ever added to it (a ``trim``, ``maxlen``, an ``XDEL``), or
    when ``from_snapshot=True`` (refused with ``RetentionError`` if there is none);
    ``from_snapshot=False`` always starts at the stream's first entry. Either way it reaches the
    state a replay of the whole history would (``report.from_snapshot`` says where it started).
    """
    wire.check_client(source, "replay", "source")
    wire.check_client(target, "replay", "target")
    # A single id is a Collection[str] too, of its characters: take it as the one id it means.
    skipped = frozenset([skip] if isinstance(skip, str) else skip)
    run = _Run(source, target, stream, model, dry_run, layout or KeyLayout(), on_progress, skipped)
    return await run.execute(until, into_existing, from_snapshot)


async def check_target(
    source: Redis,
    target: Redis,
    stream: str = DEFAULT_STREAM,
    model: str | None = None,
    *,
    into_existing: bool = False,
) -> str | None:
    """Raise ``ReplayTargetError`` if a replay of ``stream`` (limited to ``model``) must not write
    into ``target``: it is the source (same server ``run_id``, same database), or it holds keys
    but no checkpoint of this replay, unless ``into_existing``. Returns that checkpoint, if any:
    the entry a replay there resumes after."""
    checkpoint = checkpoint_key(stream, model)
    raw = await wire.call(target, ("GET", checkpoint), resend=True)
    resume_at = raw.decode() if isinstance(raw, bytes) else raw
    mine, theirs = await _identity(source), await _identity(target)
    where = f"{server_address(target)}/{theirs.db}"
    if mine.same_database(theirs):
        raise ReplayTargetError.is_source(stream, where)
    if resume_at is None and not into_existing:
        keys = int(await wire.call(target, ("DBSIZE",), resend=True))
        if keys:
            raise ReplayTargetError.not_empty(stream, where, keys, checkpoint)
    return resume_at


async def read_skipping(
    redis: Redis,
    stream: str,
    skip: Collection[str],
    *,
    end: Position | None = None,
    after: str | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> AsyncIterator[JournalEntry]:
    """``read_entries``, passing over the entries ``skip`` names, even ones that do not parse;
    an entry that does not parse and is not named stops it with the way to go on."""
    while True:
        try:
            async for entry in read_entries(redis, stream, end=end, after=after):
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


class _Run:
    def __init__(
        self,
        source: Redis,
        target: Redis,
        stream: str,
        model: str | None,
        dry_run: bool,
        layout: KeyLayout,
        on_progress: Progress | None,
        skip: frozenset[str],
    ) -> None:
        self.source, self.target, self.stream, self.model = source, target, stream, model
        self.layout, self.on_progress, self.skip = layout, on_progress, skip
        self.report = ReplayReport(dry_run=dry_run)
        self.checkpoint = checkpoint_key(stream, model)
        self.applied_through: str | None = None
        #: Where a run from a snapshot reads from (just before its ``snapshot.begin``).
        self.start_after: str | None = None
        self.batch: list[tuple[JournalEntry, Command[Any]]] = []
        self.batch_entries = 0
        #: The batch being applied on the target while the next one is read and decoded.
        self.in_flight: asyncio.Task[None] | None = None
        self.done = 0
        self.total = 0

    async def execute(
        self, until: Position | None, into_existing: bool, from_snapshot: bool | None
    ) -> ReplayReport:
        started = time.perf_counter()
        self.applied_through = await check_target(
            self.source, self.target, self.stream, self.model, into_existing=into_existing
        )
        self.report.last_id = self.report.resumed_after = self.applied_through
        if self.applied_through is None and from_snapshot is not False:
            begin = await _snapshot_to_start_at(self.source, self.stream, from_snapshot is True)
            if begin is not None:
                self.report.from_snapshot = begin
                self.start_after = _id_before(begin)
        self.total = await _entries_after(
            self.source, self.stream, self.applied_through or self.start_after
        )
        if enabled(INFO):
            emit(INFO, "replay.started", stream=self.stream, after=self.applied_through,
                 model=self.model, dry_run=self.report.dry_run)  # fmt: skip
        group: list[JournalEntry] = []
        try:
            async for entry in self.entries(until):
                if (group and entry.txn != group[0].txn) or (not group and entry.seq != 1):
                    raise _broken(self.stream, group[-1] if group else entry)
                group.append(entry)
                if entry.seq == entry.of:
                    await self.add(group)
                    group = []
        except JournalEntryError:
            await self.flush(wait=True)  # what came before the bad entry's transaction lands
            raise
        except BaseException:
            await self.abandon()
            raise
        # An unfinished group at the end (``until`` cut a transaction): apply none of it.
        await self.flush(wait=True)
        if self.model is not None and self.report.resumed_after is None:
            self.report.model_absent = self.model not in self.report.models
        if enabled(INFO):
            elapsed = time.perf_counter() - started
            emit(INFO, "replay.finished", stream=self.stream, applied=self.report.applied,
                 skipped=self.report.skipped, expired=self.report.expired,
                 last_id=self.report.last_id, duration_ms=round(elapsed * 1000, 3),
                 entries_per_s=round(self.done / elapsed) if elapsed else None)  # fmt: skip
        return self.report

    async def entries(self, until: Position | None) -> AsyncIterator[JournalEntry]:
        """The entries to replay, without those ``skip`` names."""
        read = read_skipping(
            self.source, self.stream, self.skip,
            end=until, after=self.applied_through or self.start_after, on_skip=self.pass_over,
        )  # fmt: skip
        async for entry in read:
            if entry.cmd not in MARKERS:
                self.report.models.add(entry.model)
            yield entry

    def pass_over(self, entry_id: str) -> None:
        """Count an entry ``skip`` names, as if it had been deleted from the stream."""
        self.done += 1
        self.batch_entries += 1
        self.report.skipped += 1
        self.report.skipped_ids.append(entry_id)
        self.report.last_id = entry_id

    async def add(self, group: list[JournalEntry]) -> None:
        """Decide each entry of one source transaction, then queue it for the next batch."""
        for position, entry in enumerate(group, start=1):
            if entry.seq != position or entry.of != len(group):
                raise _broken(self.stream, entry)
        # Decode the whole transaction before counting any of it: a bad entry stops the replay
        # before its transaction, and the report must not count what was not applied.
        commands = [
            None if self.model is not None and entry.model != self.model
            else self.command_of(entry)
            for entry in group
        ]  # fmt: skip
        decided: list[tuple[JournalEntry, Command[Any]]] = []
        for entry, command in zip(group, commands, strict=True):
            self.done += 1
            self.report.last_id = entry.id
            if self.model is not None and entry.model != self.model:
                self.report.skipped += 1
            elif command is None:  # nothing to replay (a pop of an empty set); counts as applied
                self.report.applied += 1
            elif self.expired(entry, command):
                self.report.expired += 1
            else:
                decided.append((entry, command))
                self.report.applied += 1
        self.batch.extend(decided)
        self.batch_entries += len(group)
        if self.batch_entries >= BATCH:
            await self.flush()

    def command_of(self, entry: JournalEntry) -> Command[Any] | None:
        """The command ``entry`` records, once it is known to touch only a model's keys."""
        if entry.cmd in MARKERS:
            return None  # the journal's own entry (a snapshot's bounds, a trim): nothing to write
        fault = unwritable(entry.model, entry.pk, [entry.field] if entry.field else [], self.layout)
        if fault is not None:
            raise self.foreign(entry, *fault)
        target = RecordTarget(entry.model, entry.pk, entry.field, self.layout, entry.ts_ms)
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
        if command is not None:
            fault = unwritable(entry.model, entry.pk, _field_names(command), self.layout)
            if fault is not None:
                raise self.foreign(entry, "args", fault[1])
        return command

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
        models = {(address.model, address.pk) for address in command.addresses}
        if isinstance(command, SaveModel):
            gone = command.expire_at_ms is not None and command.expire_at_ms <= _now_ms()
            if gone:
                self.report.expired_models.update(models)
            else:
                self.report.expired_models.difference_update(models)
            return gone
        if not models.isdisjoint(self.report.expired_models):
            if isinstance(command, DeleteModel):
                self.report.expired_models.difference_update(models)
            return True
        return False

    async def flush(self, *, wait: bool = False) -> None:
        """Send the queued transactions and the checkpoint's move as one atomic program.

        A batch starts once the one before it has landed (its checkpoint is this one's expected
        value); it is applied on the target while the caller reads and decodes the next one,
        unless ``wait``.
        """
        await self.landed()
        if self.report.last_id is None or self.report.last_id == self.applied_through:
            return
        batch, self.batch, self.batch_entries = self.batch, [], 0
        if not batch and self.applied_through is None:
            # Nothing applied yet: a checkpoint now would be one for a replay that applied nothing
            # (a model filter's typo); the first batch that applies something records these too.
            self.progress(self.done)
            return
        self.in_flight = asyncio.ensure_future(self.apply(batch, self.report.last_id, self.done))
        if wait:
            await self.landed()
        else:
            await asyncio.sleep(0)  # a turn of the loop: the batch goes out before the next is read

    async def landed(self) -> None:
        """Wait for the batch in flight, if any; its failure is raised here."""
        task, self.in_flight = self.in_flight, None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """Stop the batch in flight: the checkpoint says whether it landed, as after a crash."""
        task, self.in_flight = self.in_flight, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def apply(
        self, batch: list[tuple[JournalEntry, Command[Any]]], last_id: str, done: int
    ) -> None:
        started = time.perf_counter()
        if self.report.dry_run:
            self.applied_through = last_id
        while not self.report.dry_run and (batch or self.applied_through is not None):
            refusal = await dispatcher.apply_batch(
                self.target,
                [command for _, command in batch],
                checkpoint=self.checkpoint,
                expected=self.applied_through,
                new=last_id,
                key_types=[pair for _, command in batch for pair in _deleted_types(command)],
            )
            if refusal is None:
                self.applied_through = last_id
                break
            if refusal.reason != "model_not_found" or refusal.command is None:
                raise self.conflict(refusal, batch)
            # The journal holds only commands that succeeded, so a model missing on the target
            # expired there (e.g. during an earlier, resumed run): drop the command, try again.
            missing = refusal.command
            batch = [(e, command) for e, command in batch if command is not missing]
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

    def progress(self, done: int) -> None:
        if self.on_progress is not None:
            self.on_progress(done, max(self.total, done))

    def conflict(
        self, refusal: Refusal, batch: list[tuple[JournalEntry, Command[Any]]]
    ) -> ReplayConflictError | PermissionDeniedError | JournalEntryError:
        """The error for a batch the target refused; nothing of the batch was applied."""
        reason, key, command = refusal.reason, refusal.key, refusal.command
        if reason == "no_permission":
            return permission_denied("replay", refusal.detail, key, refusal.user)
        if command is None and reason == "wrong_type":  # a key a delete would remove
            command = next(queued for _, queued in batch if key in dict(_deleted_types(queued)))
        if command is None:
            return ReplayConflictError(
                f"replay of {self.stream!r} refused: checkpoint {key!r} moved; another replay "
                f"into the same target is running. Nothing of this batch was applied.",
                stream=self.stream,
            )
        entry = next(entry for entry, queued in batch if queued is command)
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


def _field_names(command: Command[Any]) -> list[str]:
    """Every field name ``command`` writes: hash fields and set fields."""
    if isinstance(command, SaveModel):
        return [name for name, _ in command.fields] + [contents.field for contents in command.sets]
    if isinstance(command, UpdateModel):
        return [name for name, _ in command.fields]
    if isinstance(command, DeleteModel):
        return [name for name, _ in command.sets]
    return [command.field] if isinstance(command, SetCommand) else []


def _deleted_types(command: Command[Any]) -> list[tuple[str, str]]:
    """``(key, type)`` of each key ``command`` deletes outright: the server's DEL checks nothing,
    so the replay asks it to check that each holds what the model wrote there, or nothing."""
    if isinstance(command, DeleteModel):
        return [(command.key, "hash"), *((key, "set") for _, key in command.sets)]
    if isinstance(command, SaveModel):
        return [(contents.key, "set") for contents in command.sets if contents.members is None]
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
