"""``ledgerset log`` and ``ledgerset tail``: the audit log, as a table or as JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from typing import Any

import click
import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ledgerset.cli import Interrupted, Options, connect_any, moment, run
from ledgerset.cli.display import EntryTable, printable
from ledgerset.commands.record import JournalEntry, MalformedEntry, parse_any
from ledgerset.journal.reader import Position
from ledgerset.journal.streams import (
    JournalStream,
    open_journal,
    order,
    read_last_merged,
    read_merged,
)

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
    redis = await connect_any(options.require_url())
    try:
        async with open_journal(redis, options.stream) as journal:
            journal.require()
            show = _printer(options.stream, output, journal.cluster)
            entries: AsyncGenerator[tuple[JournalStream, JournalEntry | MalformedEntry], None]
            if last is not None:
                found = await read_last_merged(journal.streams, last, start, end, model, key)
                entries = _each(found)
            else:
                entries = read_merged(journal.streams, start, end, model, key)
            shown = malformed = 0
            async with aclosing(entries):
                async for stream, entry in entries:
                    show(stream, entry)
                    where.at(entry.id, f"rerun with --since {entry.id} to go on from there")
                    shown += 1
                    malformed += isinstance(entry, MalformedEntry)
                    if shown == limit:
                        break
            sys.stdout.flush()
            if model is not None and shown == 0:
                await _no_such_model(journal.streams, options.stream, model, start, end)
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
    streams: list[JournalStream],
    stream: str,
    model: str,
    start: Position | None,
    end: Position | None,
) -> None:
    """``--model`` matched nothing: say which models the entries read do have.

    Only then is the journal read once more, unfiltered: a typo (``--model article`` for
    ``Article``) must not pass for an empty history.
    """
    models = {entry.model async for _, entry in read_merged(streams, start, end) if entry.model}
    within = " in the range given" if start is not None or end is not None else ""
    known = ", ".join(printable(name) for name in sorted(models)) or "none"
    click.echo(
        f"ledgerset: warning: --model {printable(model)!r} matches no entry of "
        f"{printable(stream)!r}{within} (its models: {known}). Model names are class names, "
        f"case and all",
        err=True,
    )


async def _each(
    entries: list[tuple[JournalStream, JournalEntry | MalformedEntry]],
) -> AsyncGenerator[tuple[JournalStream, JournalEntry | MalformedEntry], None]:
    for found in entries:
        yield found


@click.command()
@click.option("--format", "output", type=FORMAT, default="table", show_default=True)
@click.pass_obj
def tail(options: Options, output: str) -> None:
    """Follow new journal entries as they are written, until Ctrl-C (the columns of ``log``).

    On a cluster it follows the stream of every slot on every primary, and notices the stream of
    a slot written for the first time within a few seconds (reading it from its start).
    """
    run(_tail(options, output))


async def _tail(options: Options, output: str) -> None:
    redis = await connect_any(options.require_url())
    # Ctrl-C (or SIGTERM) ends the loop between two reads, so the connection closes cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        if isinstance(redis, RedisCluster):
            await _tail_cluster(redis, options.stream, output, stop)
        else:
            await _tail_server(redis, options.stream, output, stop)
    finally:
        await redis.aclose()


async def _tail_server(redis: Redis, stream: str, output: str, stop: asyncio.Event) -> None:
    show = _printer(stream, output)
    only = JournalStream(stream, redis)
    # A concrete id, never "$" again: an entry written between two XREADs must not be missed.
    newest: list[tuple[bytes, Any]] = await redis.xrevrange(stream, count=1)  # type: ignore[assignment]
    last = newest[0][0].decode() if newest else "0-0"
    while not stop.is_set():
        replies: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = await redis.xread(
            {stream: last}, block=500, count=100
        )  # type: ignore[assignment]
        for _, raw_entries in replies:
            for raw_id, fields in raw_entries:
                last = raw_id.decode()
                show(only, parse_any(stream, last, fields))
        sys.stdout.flush()


#: How long ``tail`` waits on a cluster between two rounds that found nothing new.
CLUSTER_POLL_S = 0.2
#: How often ``tail`` looks for the stream of a slot written for the first time.
CLUSTER_RESCAN_S = 2.0


async def _tail_cluster(
    cluster: RedisCluster, stream: str, output: str, stop: asyncio.Event
) -> None:
    """Follow every slot stream: a cluster refuses one XREAD over streams of several slots
    (CROSSSLOT), even on one node, so each round reads every stream of a node in one pipeline,
    and the entries of a round are printed in the merged order."""
    show = _printer(stream, output, cluster=True)
    async with open_journal(cluster, stream) as journal:
        last = {found.name: await _newest(found) for found in journal.streams}
        rescanned = asyncio.get_running_loop().time()
        while not stop.is_set():
            now = asyncio.get_running_loop().time()
            if now - rescanned >= CLUSTER_RESCAN_S:
                for found in await journal.rescan():
                    last[found.name] = "0-0"  # created since: every entry of it is new
                rescanned = now
            round_: list[tuple[tuple[Any, ...], JournalStream, JournalEntry | MalformedEntry]] = []
            for client in journal.nodes.values():
                mine = [found for found in journal.streams if found.redis is client]
                if not mine:
                    continue
                async with client.pipeline(transaction=False) as pipe:
                    for found in mine:
                        pipe.xread({found.name: last[found.name]}, count=100)
                    replies = await pipe.execute()
                for found, reply in zip(mine, replies, strict=True):
                    for _, raw_entries in reply or []:
                        for raw_id, fields in raw_entries:
                            last[found.name] = raw_id.decode()
                            entry = parse_any(found.name, last[found.name], fields)
                            round_.append((order(entry, found.name), found, entry))
            round_.sort(key=lambda item: item[0])
            for _, found, entry in round_:
                show(found, entry)
            sys.stdout.flush()
            if not round_:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CLUSTER_POLL_S)


async def _newest(found: JournalStream) -> str:
    newest: list[tuple[bytes, Any]] = await found.redis.xrevrange(found.name, count=1)  # type: ignore[assignment]
    return newest[0][0].decode() if newest else "0-0"


def _printer(
    stream: str, output: str, cluster: bool = False
) -> Callable[[JournalStream, JournalEntry | MalformedEntry], None]:
    """How each entry is written: a JSON line, or the lines of a table row (header first). On
    a cluster a JSON line names the entry's stream too: an id alone is one slot's."""
    if output == "json":

        def print_json(found: JournalStream, entry: JournalEntry | MalformedEntry) -> None:
            _print_json(entry, found.name if cluster else None)

        return print_json
    table = EntryTable(stream)
    started = False

    def print_row(_: JournalStream, entry: JournalEntry | MalformedEntry) -> None:
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


def _print_json(entry: JournalEntry | MalformedEntry, stream: str | None = None) -> None:
    shown = entry.as_json() if stream is None else {"stream": stream, **entry.as_json()}
    # orjson escapes C0 controls; printable() the rest (C1, bidi overrides, U+2028), as JSON does.
    sys.stdout.write(printable(orjson.dumps(shown, default=str).decode()) + "\n")
