"""``ledgerset replay`` and ``ledgerset verify``: rebuild a database from its journal; check it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ledgerset.cli import Options, connect_any, moment, require_stream, run
from ledgerset.cli.display import printable
from ledgerset.embedded import EmbeddedServer
from ledgerset.journal.chain import ChainReport, check_chain
from ledgerset.journal.reader import Position
from ledgerset.journal.replay import ReplayReport, check_target
from ledgerset.journal.replay import replay as replay_journal
from ledgerset.journal.streams import Source
from ledgerset.journal.verify import compare, journal_models

__all__ = ["replay", "verify"]

INTO_EXISTING = click.option(
    "--into-existing",
    is_flag=True,
    help="Replay into a database that already holds keys (refused otherwise, unless it holds "
    "this replay's checkpoint: a resume).",
)
SKIP = click.option(
    "--skip",
    "skip",
    multiple=True,
    metavar="ID",
    help="Pass over this entry on purpose (one that stopped an earlier run); repeatable.",
)


@click.command()
@click.option("--to-url", required=True, help="The database to replay into.")
@click.option("--until", help="Stop after this entry id or ISO time (UTC): the state as of then.")
@click.option("--model", help="Replay only this model class.")
@click.option("--dry-run", is_flag=True, help="Read and check everything, write nothing.")
@INTO_EXISTING
@SKIP
@click.pass_obj
def replay(
    options: Options,
    to_url: str,
    until: str | None,
    model: str | None,
    dry_run: bool,
    into_existing: bool,
    skip: tuple[str, ...],
) -> None:
    """Replay the journal into another database, resuming where the last run stopped."""
    report = run(_replay(options, to_url, moment(until), model, dry_run, into_existing, skip))
    verb = "would apply" if dry_run else "applied"
    click.echo(
        f"{verb} {report.applied} entries, skipped {report.skipped}, expired {report.expired}; "
        f"last entry {report.last_id or '(none)'}"
    )
    if report.model_absent:
        known = ", ".join(sorted(report.models)) or "none"
        click.echo(
            f"ledgerset: warning: --model {model!r} matches no entry of {options.stream!r}"
            f"{' up to --until' if until else ''} (its models: {known}); nothing was replayed "
            f"and no checkpoint written. Model names are class names, case and all",
            err=True,
        )
        sys.exit(1)


async def _replay(
    options: Options,
    to_url: str,
    until: Position | None,
    model: str | None,
    dry_run: bool,
    into_existing: bool,
    skip: tuple[str, ...],
) -> ReplayReport:
    source = await connect_any(options.require_url())
    try:
        await require_stream(source, options.stream)
        target = await connect_any(to_url)
    except BaseException:
        await source.aclose()
        raise
    try:
        # A refused target is one line, before any progress bar is drawn.
        await check_target(source, target, options.stream, model, into_existing=into_existing)
        with _bar("replaying") as advance:
            return await replay_journal(
                source,
                target,
                options.stream,
                until=until,
                model=model,
                dry_run=dry_run,
                on_progress=advance,
                into_existing=into_existing,
                skip=skip,
            )
    finally:
        await source.aclose()
        await target.aclose()


@contextmanager
def _bar(label: str, unit: str = "entries") -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, and the ``(done, total)`` callback that moves it."""
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn(f"{{task.fields[rate]}} {unit}/s"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=None, rate="-")

        def advance(done: int, total: int) -> None:
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:,.0f}" if elapsed else "-"
            progress.update(task, completed=done, total=total, rate=rate)

        yield advance


@click.command()
@click.option("--to-url", help="Replay into this database (default: a scratch embedded server).")
@INTO_EXISTING
@SKIP
@click.option(
    "--chain",
    is_flag=True,
    help="Check the journal's hash chain instead (StreamJournal(chain=True)): no replay.",
)
@click.pass_obj
def verify(
    options: Options, to_url: str | None, into_existing: bool, skip: tuple[str, ...], chain: bool
) -> None:
    """Replay the journal and diff the result against the live data, key by key.

    Exits with status 1 and prints each difference if any key differs. With ``--chain``, walks
    the journal's hash chain instead and exits with status 1 at the first entry edited,
    inserted or deleted, or when its newest entries were cut off.
    """
    if chain:
        report = run(_check_chain(options))
        click.echo(printable(report.message))
        if not report.ok:
            raise SystemExit(1)
        return
    differences = run(_verify(options, to_url, into_existing, skip))
    if differences:
        for difference in differences:
            click.echo(f"DIFFERENT {difference}")
        click.echo(f"{len(differences)} key(s) differ from a replay of the journal", err=True)
        raise SystemExit(1)
    click.echo("OK: the live data equals a replay of the journal")


async def _check_chain(options: Options) -> ChainReport:
    source = await connect_any(options.require_url())
    try:
        await require_stream(source, options.stream)
        return await check_chain(source, options.stream)  # refuses a cluster, for now
    finally:
        await source.aclose()


async def _verify(
    options: Options, to_url: str | None, into_existing: bool, skip: tuple[str, ...]
) -> list[str]:
    source = await connect_any(options.require_url())
    try:
        await require_stream(source, options.stream)
        if to_url is not None:
            return await _replay_and_compare(source, to_url, options.stream, into_existing, skip)
        async with EmbeddedServer() as scratch:
            return await _replay_and_compare(source, scratch.url, options.stream, False, skip)
    finally:
        await source.aclose()


async def _replay_and_compare(
    source: Source, url: str, stream: str, into_existing: bool, skip: tuple[str, ...]
) -> list[str]:
    target = await connect_any(url)
    try:
        await check_target(source, target, stream, into_existing=into_existing)
        with _bar("replaying") as advance:
            report = await replay_journal(
                source,
                target,
                stream,
                on_progress=advance,
                into_existing=into_existing,
                skip=skip,
            )
        # A run from the start read every entry; a resumed one did not, so ask the journal.
        models = report.models
        if report.resumed_after is not None:
            with _bar("reading models") as advance:
                models = await journal_models(source, stream, skip=skip, on_progress=advance)
        with _bar("comparing", "keys") as advance:
            differences = await compare(source, target, models, on_progress=advance)
        return [str(difference) for difference in differences]
    finally:
        await target.aclose()
