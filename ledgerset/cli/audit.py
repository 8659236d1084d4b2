"""``ledgerset log`` and ``ledgerset tail``: the audit log, as a table or as JSON lines."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import click
import orjson
from redis.asyncio import Redis

from ledgerset.cli import Interrupted, Options, connect, moment, require_stream, run
from ledgerset.cli.display import EntryTable, printable
from ledgerset.commands.record import JournalEntry, MalformedEntry, parse_any
from ledgerset.journal.reader import Position, read_for_display, read_last

__all__ = ["log", "print_table", "tail"]

FORMAT = click.Choice(["table", "json"])


@click.command()
@click.option("--model", help="Only entries of this model class.")
@click.option("--key", help="Only entries that wrote this key.")
@click.option("--since", help="From this entry id or ISO time (UTC).")
@click.option("--until", help="Up to this entry id or ISO time (UTC).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many entries: the first.")
@click.option("--last", type=click.IntRange(min=1), help="Only the last this many entries.")
@click.option("--format", "output", type=FORMAT, default="table", show_default=True)
@click.pass_obj
def log(
    options: Options,
    model: str | None,
    key: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    last: int | None,
    output: str,
) -> None:
    """Print the audit log: who changed what, when (``--format json``: one object per line).

    Entries are printed as they are read, so the first lines come at once however long the
    journal. An entry that is not a readable ledgerset entry is shown flagged MALFORMED.
    """
    if limit is not None and last is not None:
        raise click.UsageError("--limit and --last exclude each other: pass one of them")
    start, end = moment(since), moment(until)
    where = Interrupted("log")
    matched = run(
        _log(options, model, key, start, end, limit, last, output, where), interrupted=where
    )
    if not matched:
        sys.exit(1)


async def _log(
    options: Options,
    model: str | None,
    key: str | None,
    start: Position | None,
    end: Position | None,
    limit: int | None,
    last: int | None,
    output: str,
    where: Interrupted,
) -> bool:
    """Print the entries; ``False`` if a ``--model`` filter matched none of them."""
    redis = await connect(options.require_url())
    try:
        await require_stream(redis, options.stream)
        show = _printer(options.stream, output)
        entries: AsyncIterator[JournalEntry | MalformedEntry]
        if last is not None:
            entries = _each(await read_last(redis, options.stream, last, start, end, model, key))
        else:
            entries = read_for_display(redis, options.stream, start, end, model, key)
        shown = malformed = 0
        async for entry in entries:
            show(entry)
            where.at(entry.id, f"rerun with --since {entry.id} to go on from there")
            shown += 1
            malformed += isinstance(entry, MalformedEntry)
            if shown == limit:
                break
        sys.stdout.flush()
        if model is not None and shown == 0:
            await _no_such_model(redis, options.stream, model, start, end)
            return False
        if malformed:
            click.echo(
                f"ledgerset: {malformed} of the entries shown cannot be read as ledgerset "
                f"entries (flagged MALFORMED); replay and verify stop at such an entry until it "
                f"is skipped or deleted (XDEL)",
                err=True,
            )
        return True
    finally:
        await redis.aclose()


async def _no_such_model(
    redis: Redis, stream: str, model: str, start: Position | None, end: Position | None
) -> None:
    """``--model`` matched nothing: say which models the entries read do have.

    Only then is the journal read once more, unfiltered: a typo (``--model article`` for
    ``Article``) must not pass for an empty history.
    """
    models = {
        entry.model async for entry in read_for_display(redis, stream, start, end) if entry.model
    }
    within = " in the range given" if start is not None or end is not None else ""
    known = ", ".join(printable(name) for name in sorted(models)) or "none"
    click.echo(
        f"ledgerset: warning: --model {printable(model)!r} matches no entry of "
        f"{printable(stream)!r}{within} (its models: {known}). Model names are class names, "
        f"case and all",
        err=True,
    )


async def _each(
    entries: list[JournalEntry | MalformedEntry],
) -> AsyncIterator[JournalEntry | MalformedEntry]:
    for entry in entries:
        yield entry


@click.command()
@click.option("--format", "output", type=FORMAT, default="table", show_default=True)
@click.pass_obj
def tail(options: Options, output: str) -> None:
    """Follow new journal entries as they are written, until Ctrl-C (the columns of ``log``)."""
    run(_tail(options, output))


async def _tail(options: Options, output: str) -> None:
    redis = await connect(options.require_url())
    show = _printer(options.stream, output)
    # A concrete id, never "$" again: an entry written between two XREADs must not be missed.
    newest: list[tuple[bytes, Any]] = await redis.xrevrange(options.stream, count=1)  # type: ignore[assignment]
    last = newest[0][0].decode() if newest else "0-0"
    # Ctrl-C (or SIGTERM) ends the loop between two reads, so the connection closes cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        while not stop.is_set():
            replies: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = await redis.xread(
                {options.stream: last}, block=500, count=100
            )  # type: ignore[assignment]
            for _, raw_entries in replies:
                for raw_id, fields in raw_entries:
                    last = raw_id.decode()
                    show(parse_any(options.stream, last, fields))
            sys.stdout.flush()
    finally:
        await redis.aclose()


def _printer(stream: str, output: str) -> Callable[[JournalEntry | MalformedEntry], None]:
    """How each entry is written: a JSON line, or the lines of a table row (header first)."""
    if output == "json":
        return _print_json
    table = EntryTable(stream)
    started = False

    def print_row(entry: JournalEntry | MalformedEntry) -> None:
        nonlocal started
        if not started:
            sys.stdout.write("\n".join(table.header()) + "\n")
            started = True
        sys.stdout.write("\n".join(table.row(entry)) + "\n")

    return print_row


def print_table(entries: Iterable[JournalEntry | MalformedEntry], stream: str) -> None:
    """Write ``entries`` as the table ``log`` prints (used by ``demo``)."""
    table = EntryTable(stream)
    sys.stdout.write("\n".join(table.header()) + "\n")
    for entry in entries:
        sys.stdout.write("\n".join(table.row(entry)) + "\n")
    sys.stdout.flush()


def _print_json(entry: JournalEntry | MalformedEntry) -> None:
    # orjson escapes C0 controls; printable() the rest (C1, bidi overrides, U+2028), as JSON does.
    sys.stdout.write(printable(orjson.dumps(entry.as_json(), default=str).decode()) + "\n")
