"""``ledgerset log`` and ``ledgerset tail``: the audit log, as a table or as JSON lines."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterable
from typing import Any

import click
import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from ledgerset.cli import Options, connect, moment, require_stream, run
from ledgerset.journal.reader import JournalEntry, parse_entry, read_entries

__all__ = ["entry_table", "log", "summary", "tail"]

FORMAT = click.Choice(["table", "json"])


@click.command()
@click.option("--model", help="Only entries of this model class.")
@click.option("--key", help="Only entries that wrote this key.")
@click.option("--since", help="From this entry id or ISO time (UTC).")
@click.option("--until", help="Up to this entry id or ISO time (UTC).")
@click.option("--format", "output", type=FORMAT, default="table", show_default=True)
@click.pass_obj
def log(
    options: Options,
    model: str | None,
    key: str | None,
    since: str | None,
    until: str | None,
    output: str,
) -> None:
    """Print the audit log: who changed what, when (``--format json``: one object per line)."""
    start, end = moment(since), moment(until)
    run(_log(options, model, key, start, end, output))


async def _log(
    options: Options, model: str | None, key: str | None, start: object, end: object, output: str
) -> None:
    redis = await connect(options.require_url())
    try:
        await require_stream(redis, options.stream)
        entries = read_entries(redis, options.stream, start, end, model, key)  # type: ignore[arg-type]
        if output == "json":
            async for entry in entries:
                _print_json(entry)
        else:
            Console().print(entry_table([entry async for entry in entries], options.stream))
    finally:
        await redis.aclose()


@click.command()
@click.option("--format", "output", type=FORMAT, default="table", show_default=True)
@click.pass_obj
def tail(options: Options, output: str) -> None:
    """Follow new journal entries as they are written, until Ctrl-C."""
    run(_tail(options, output))


async def _tail(options: Options, output: str) -> None:
    redis = await connect(options.require_url())
    console = Console()
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
                    entry = parse_entry(options.stream, last, fields)
                    if output == "json":
                        _print_json(entry)
                    else:
                        console.print(_line(entry), highlight=False)
    finally:
        await redis.aclose()


def entry_table(entries: Iterable[JournalEntry], stream: str) -> Table:
    """The entries as a rich table, one row each."""
    rows = list(entries)
    with_ctx = any(entry.ctx for entry in rows)
    table = Table(title=f"journal {stream}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("entry id", no_wrap=True, min_width=15)
    table.add_column("time (UTC)", no_wrap=True, min_width=12)
    table.add_column("command", no_wrap=True, min_width=12)
    table.add_column("target", overflow="fold", min_width=12)
    table.add_column("args", overflow="fold", min_width=12, ratio=1)
    if with_ctx:
        table.add_column("ctx", overflow="fold", min_width=8)
    for entry in rows:
        cells = [
            entry.id,
            f"{entry.ts:%H:%M:%S}.{entry.ts.microsecond // 1000:03d}",
            entry.cmd + (f" {entry.seq}/{entry.of}" if entry.of > 1 else ""),
            _target(entry),
            summary(entry),
        ]
        if with_ctx:
            cells.append(_compact(entry.ctx) if entry.ctx else "")
        table.add_row(*cells)
    return table


def summary(entry: JournalEntry) -> str:
    """An entry's args for people: the members, or the fields, without JSON punctuation."""
    args = entry.args
    if "members" in args:
        return " ".join(_compact(member) for member in args["members"])
    if "member" in args:
        return "(empty)" if args["member"] is None else _compact(args["member"])
    sets = args.get("sets")
    sets = sets if isinstance(sets, dict) else {}  # a delete lists its set fields instead
    parts = [
        f"{name}={_compact(value)}"
        for name, value in args.get("fields", {}).items()
        if name != "pk" and name not in sets
    ]
    for field, members in sets.items():
        parts.append(f"{field}=" + ("None" if members is None else f"{{{len(members)} members}}"))
    if args.get("ttl_ms"):
        parts.append(f"ttl={args['ttl_ms'] / 1000:g}s")
    return ", ".join(parts)


def _target(entry: JournalEntry) -> str:
    pk = entry.pk if len(entry.pk) <= 10 else entry.pk[:8] + "…"
    return f"{entry.model}:{pk}" + (f".{entry.field}" if entry.field else "")


def _line(entry: JournalEntry) -> str:
    return (
        f"{entry.id}  {entry.ts:%H:%M:%S}.{entry.ts.microsecond // 1000:03d}  "
        f"{entry.cmd:<12} {_target(entry)}  {summary(entry)}"
    )


def _compact(value: object) -> str:
    return orjson.dumps(value).decode()


def _print_json(entry: JournalEntry) -> None:
    sys.stdout.write(orjson.dumps(entry.as_json()).decode() + "\n")
