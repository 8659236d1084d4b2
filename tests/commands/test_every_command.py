"""Every registered command, one test each: journal entry, replay, audit summary and docs.

The test is parametrized over ``catalog.REGISTRY`` (the commands register themselves), not over a
hand list, and ``EXAMPLES`` must hold a representative instance of each: a new command without
one fails here. For each, it runs the example journaled against a real server (after journaled
saves of the model the example acts on and of a bystander), replays the journal into an empty
second database, and checks that the two databases are key-for-key identical, that the entry's
audit summary is the command's own ``summary`` and is not empty, and that the user docs name the
command's journal name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from freezegun import freeze_time
from redis.asyncio import Redis
from support import Snapshot, take_snapshot

import ledgerset
from ledgerset import StreamJournal, _member_json
from ledgerset.commands import dispatcher
from ledgerset.commands.catalog import (
    REGISTRY,
    AddMembers,
    Address,
    ClearSet,
    Command,
    DeleteModel,
    MoveMember,
    PopMember,
    RecordTarget,
    RemoveMembers,
    RetainMembers,
    SaveModel,
    SetCommand,
    SetContents,
    StoreMembers,
    ToggleMembers,
    UpdateModel,
)
from ledgerset.commands.program import OPS, Program
from ledgerset.journal import replay
from ledgerset.journal.reader import read_entries
from ledgerset.keys import KeyLayout

DOCS = Path(__file__).resolve().parents[2] / "docs"
LAYOUT = KeyLayout()
MODEL, PK, FIELD = "EcArticle", "first", "tags"
MODEL_KEY = LAYOUT.model_key(MODEL, PK)
SET_KEY = LAYOUT.set_key(MODEL, PK, FIELD)

S = TypeVar("S", bound=SetCommand[Any])


def on_set(command: type[S], **fields: Any) -> S:
    """``command`` on the saved model's ``tags`` set."""
    return command(model=MODEL, pk=PK, key=SET_KEY, field=FIELD, owner=MODEL_KEY, **fields)


def save(pk: str, ttl_ms: int | None = None) -> SaveModel:
    """A save of an ``EcArticle`` with a title and a two-member ``tags`` set."""
    key = LAYOUT.model_key(MODEL, pk)
    return SaveModel(
        model=MODEL,
        pk=pk,
        key=key,
        fields=(("pk", f'"{pk}"'.encode()), ("title", b'"hello"')),
        sets=(
            SetContents(
                field=FIELD, key=LAYOUT.set_key(MODEL, pk, FIELD), members=(b'"a"', b'"b"')
            ),
        ),
        ttl_ms=ttl_ms,
    )


#: A representative instance of every registered command, run after ``save(PK)``.
EXAMPLES: dict[type[Command[Any]], Callable[[], Command[Any]]] = {
    AddMembers: lambda: on_set(AddMembers, members=(b'"c"', b"1")),
    RemoveMembers: lambda: on_set(RemoveMembers, members=(b'"a"', b'"absent"')),
    PopMember: lambda: on_set(PopMember),
    ClearSet: lambda: on_set(ClearSet),
    RetainMembers: lambda: on_set(RetainMembers, members=(b'"b"', b'"z"')),
    ToggleMembers: lambda: on_set(ToggleMembers, members=(b'"a"', b'"y"')),
    SaveModel: lambda: save("second", ttl_ms=3_600_000),
    UpdateModel: lambda: UpdateModel(
        model=MODEL, pk=PK, key=MODEL_KEY, fields=(("title", b'"changed"'),)
    ),
    DeleteModel: lambda: DeleteModel(model=MODEL, pk=PK, key=MODEL_KEY, sets=((FIELD, SET_KEY),)),
    MoveMember: lambda: on_set(
        MoveMember,
        member=b'"a"',
        to_model=MODEL,
        to_pk="bystander",
        to_field=FIELD,
        to_key=LAYOUT.set_key(MODEL, "bystander", FIELD),
        to_owner=LAYOUT.model_key(MODEL, "bystander"),
    ),
    StoreMembers: lambda: on_set(
        StoreMembers,
        members=(b'"a"', b'"b"'),
        algebra="union",
        sources=(LAYOUT.set_key(MODEL, "bystander", FIELD),),
        source_names=(f"{MODEL}:bystander.{FIELD}",),
    ),
}


def data(snapshot: Snapshot) -> Snapshot:
    """The snapshot without ledgerset's own keys (the journal, the replay's checkpoint)."""
    return {key: value for key, value in snapshot.items() if not key.startswith(b"ledgerset:")}


@pytest.mark.parametrize(
    "command_class", sorted(REGISTRY.values(), key=lambda cls: cls.name), ids=lambda c: c.name
)
async def test_every_command_journals_replays_summarizes_and_is_documented(
    redis: Redis, target: Redis, command_class: type[Command[Any]]
) -> None:
    assert command_class in EXAMPLES, (
        f"{command_class.__qualname__} ({command_class.name!r}) has no example in EXAMPLES "
        f"of {__file__}: add one, so that its journal entry, replay, summary and docs are checked"
    )
    journal = StreamJournal()
    await ledgerset.init(redis=redis, journal=journal)
    # A bystander too, so that the state after a delete is not an empty database.
    await dispatcher.execute(save("bystander"), redis, journal=journal)
    await dispatcher.execute(save(PK), redis, journal=journal)
    command = EXAMPLES[command_class]()
    assert type(command) is command_class
    await dispatcher.execute(command, redis, journal=journal)

    entries = [entry async for entry in read_entries(redis)]
    assert [entry.cmd for entry in entries] == ["model.save", "model.save", command_class.name]
    entry = entries[-1]
    assert (entry.model, entry.pk) == (command.model, command.pk)

    await replay(redis, target)
    source_data, target_data = data(await take_snapshot(redis)), data(await take_snapshot(target))
    assert source_data == target_data
    assert source_data, "the example left no data to compare"

    from ledgerset.cli.display import summary  # the cli extra; its import is the tool's

    own = command_class.summary(entry.args)
    assert isinstance(own, str) and own.strip(), f"{command_class.name}: empty summary"
    assert summary(entry) == own  # the tool shows what the command renders

    documented = [
        page.name
        for page in (DOCS / "journal.md", DOCS / "redis-set.md")
        if f"`{command_class.name}`" in page.read_text(encoding="utf-8")
    ]
    assert documented, f"neither docs/journal.md nor docs/redis-set.md names `{command_class.name}`"


def test_every_example_is_a_registered_command() -> None:
    """An example left behind by a removed (or renamed) command is caught too."""
    assert set(EXAMPLES) <= set(REGISTRY.values())


async def test_replay_counts_a_command_on_two_models_as_expired_when_either_has_expired(
    redis: Redis, target: Redis
) -> None:
    """Replay's expiry bookkeeping follows every model a command's ``addresses`` name, not only
    the model its entry is filed under: a command that also writes to a model whose expiry has
    passed is counted expired, and the model it is filed under is not marked expired."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class AddToBoth(AddMembers):
        """A command on two models' sets (the shape of SMOVE), defined for this test only."""

        name: ClassVar[str] = "test.add_to_both"
        other_pk: str

        @property
        def addresses(self) -> tuple[Address, ...]:
            other = LAYOUT.model_key(self.model, self.other_pk)
            other_set = LAYOUT.set_key(self.model, self.other_pk, FIELD)
            return (
                Address(self.model, self.pk, FIELD, self.key, self.owner),
                Address(self.model, self.other_pk, FIELD, other_set, other),
            )

        def compile(self, program: Program) -> None:
            for address in self.addresses:
                program.op(OPS["ADD"], (address.key, address.owner), self.members)

        def record_args(self) -> bytes:
            return (
                b'{"members":['
                + b",".join(self.members)
                + b'],"other_pk":"'
                + (self.other_pk.encode() + b'"}')
            )

        @classmethod
        def from_record(cls, args: dict[str, Any], target: RecordTarget) -> AddToBoth:
            members = tuple(_member_json.dumps(member) for member in args["members"])
            return cls._for_set(target, members=members, other_pk=args["other_pk"])

    try:
        journal = StreamJournal()
        await ledgerset.init(redis=redis, journal=journal)
        with freeze_time(datetime.now(UTC) - timedelta(hours=2)):
            # Saved two hours ago for one hour, says the journal: expired when replayed.
            await dispatcher.execute(save("short", ttl_ms=3_600_000), redis, journal=journal)
            await dispatcher.execute(save(PK), redis, journal=journal)
            both = AddToBoth(
                model=MODEL, pk=PK, key=SET_KEY, field=FIELD, owner=MODEL_KEY,
                members=(b'"both"',), other_pk="short",
            )  # fmt: skip
            await dispatcher.execute(both, redis, journal=journal)
        assert await redis.smembers(SET_KEY) == {b'"a"', b'"b"', b'"both"'}  # it ran on the source
        report = await replay(redis, target)
    finally:
        del REGISTRY[(AddToBoth.name, AddToBoth.version)]
    assert (report.applied, report.expired) == (1, 2)
    assert report.expired_models == {(MODEL, "short")}
    assert await target.smembers(SET_KEY) == {b'"a"', b'"b"'}
