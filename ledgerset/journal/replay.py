"""Replay: rebuild a database from a journal, resumably, one atomic batch at a time.

Each source transaction is applied whole: transactions are gathered into batches, and each batch
runs on the target as one atomic program together with the move of the replay's checkpoint
(``ledgerset:replay:<stream>``), so a second run applies nothing and a stopped run resumes after
the last batch that landed. Keys are built through the target's ``KeyLayout``. A save's TTL is
restored as an absolute expiry (entry time + TTL); if that moment has passed, the model is not
created, and it and the later entries of that model until its next save count as ``expired``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from ledgerset._events import DEBUG, INFO, emit, enabled
from ledgerset.commands import dispatcher
from ledgerset.commands.catalog import Command, DeleteModel, SaveModel, Target
from ledgerset.commands.program import Refusal
from ledgerset.commands.record import DEFAULT_STREAM, decode
from ledgerset.errors import (
    JournalEntryError,
    PermissionDeniedError,
    ReplayConflictError,
    permission_denied,
)
from ledgerset.journal.reader import JournalEntry, Position, read_entries
from ledgerset.keys import KeyLayout, checkpoint_key

__all__ = ["ReplayReport", "replay"]

#: Entries per atomic batch on the target.
BATCH = 500

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: entries ``applied``, ``skipped`` (other models), ``expired``."""

    applied: int = 0
    skipped: int = 0
    expired: int = 0
    #: The last entry id handled (and, unless dry-run, recorded in the target's checkpoint).
    last_id: str | None = None
    dry_run: bool = False
    #: ``(model, pk)`` of the models whose expiry had passed when replayed.
    expired_models: set[tuple[str, str]] = field(default_factory=set)


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
) -> ReplayReport:
    """Apply the journal ``stream`` of ``source`` to ``target``, from where the last run stopped.

    ``until`` (an entry id or a datetime) stops after the last entry at or before it: the state
    "as of" that moment. ``model`` replays only that model class (with its own checkpoint).
    ``dry_run`` reads and checks everything and writes nothing. ``layout`` spells the target's
    keys (default: the standard one). ``on_progress(done, total)`` is called after each batch.
    """
    run = _Run(source, target, stream, model, dry_run, layout or KeyLayout(), on_progress)
    return await run.execute(until)


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
    ) -> None:
        self.source, self.target, self.stream, self.model = source, target, stream, model
        self.layout, self.on_progress = layout, on_progress
        self.report = ReplayReport(dry_run=dry_run)
        self.checkpoint = checkpoint_key(stream, model)
        self.applied_through: str | None = None
        self.batch: list[tuple[JournalEntry, Command[Any]]] = []
        self.batch_entries = 0
        #: The batch being applied on the target while the next one is read and decoded.
        self.in_flight: asyncio.Task[None] | None = None
        self.done = 0
        self.total = 0

    async def execute(self, until: Position | None) -> ReplayReport:
        started = time.perf_counter()
        raw = await self.target.get(self.checkpoint)
        self.applied_through = raw.decode() if isinstance(raw, bytes) else raw
        self.report.last_id = self.applied_through
        self.total = int(await self.source.xlen(self.stream))
        if enabled(INFO):
            emit(INFO, "replay.started", stream=self.stream, after=self.applied_through,
                 model=self.model, dry_run=self.report.dry_run)  # fmt: skip
        group: list[JournalEntry] = []
        try:
            async for entry in read_entries(
                self.source, self.stream, end=until, after=self.applied_through
            ):
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
        if enabled(INFO):
            elapsed = time.perf_counter() - started
            emit(INFO, "replay.finished", stream=self.stream, applied=self.report.applied,
                 skipped=self.report.skipped, expired=self.report.expired,
                 last_id=self.report.last_id, duration_ms=round(elapsed * 1000, 3),
                 entries_per_s=round(self.done / elapsed) if elapsed else None)  # fmt: skip
        return self.report

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
        target = Target(entry.model, entry.pk, entry.field, self.layout, entry.ts_ms)
        try:
            return decode(entry.cmd, entry.v, entry.args, target)
        except LookupError as exc:
            raise JournalEntryError(
                f"journal entry {entry.id} of stream {self.stream!r} records {exc.args[0]}; "
                f"replay stops before its transaction ({entry.txn}), applying nothing of it. "
                f"Upgrade ledgerset, or register an upcaster for ({entry.cmd!r}, {entry.v}).",
                stream=self.stream,
                entry_id=entry.id,
            ) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise JournalEntryError(
                f"journal entry {entry.id} of stream {self.stream!r} has args that do not fit "
                f"{entry.cmd} v{entry.v} ({exc!r}); replay stops before its transaction "
                f"({entry.txn}), applying nothing of it.",
                stream=self.stream,
                entry_id=entry.id,
            ) from exc

    def expired(self, entry: JournalEntry, command: Command[Any]) -> bool:
        """Whether ``command`` acts on a model whose absolute expiry has passed."""
        owner = (entry.model, entry.pk)
        if isinstance(command, SaveModel):
            gone = command.expire_at_ms is not None and command.expire_at_ms <= _now_ms()
            (self.report.expired_models.add if gone else self.report.expired_models.discard)(owner)
            return gone
        if owner in self.report.expired_models:
            if isinstance(command, DeleteModel):
                self.report.expired_models.discard(owner)
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
        while not self.report.dry_run:
            refusal = await dispatcher.apply_batch(
                self.target,
                [command for _, command in batch],
                checkpoint=self.checkpoint,
                expected=self.applied_through,
                new=last_id,
            )
            if refusal is None:
                break
            if refusal.reason != "model_not_found" or refusal.command is None:
                raise self.conflict(refusal, batch)
            # The journal holds only commands that succeeded, so a model missing on the target
            # expired there (e.g. during an earlier, resumed run): drop the command, try again.
            entry = next(entry for entry, command in batch if command is refusal.command)
            batch = [(e, command) for e, command in batch if command is not refusal.command]
            self.report.expired_models.add((entry.model, entry.pk))
            self.report.applied -= 1
            self.report.expired += 1
        self.applied_through = last_id
        if enabled(DEBUG):
            emit(DEBUG, "replay.batch", stream=self.stream, commands=len(batch), last_id=last_id,
                 duration_ms=round((time.perf_counter() - started) * 1000, 3))  # fmt: skip
        if self.on_progress is not None:
            self.on_progress(done, max(self.total, done))

    def conflict(
        self, refusal: Refusal, batch: list[tuple[JournalEntry, Command[Any]]]
    ) -> ReplayConflictError | PermissionDeniedError | JournalEntryError:
        """The error for a batch the target refused; nothing of the batch was applied."""
        reason, key, command = refusal.reason, refusal.key, refusal.command
        if reason == "no_permission":
            return permission_denied("replay", refusal.detail, key, refusal.user)
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
    return JournalEntryError(
        f"journal entry {entry.id} of stream {stream!r} breaks its transaction {entry.txn} "
        f"(seq {entry.seq} of {entry.of} out of order); replay stops before it.",
        stream=stream,
        entry_id=entry.id,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
