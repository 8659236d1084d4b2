"""``ledgerset replay`` and ``ledgerset verify``: rebuild a database from its journal; check it."""

from __future__ import annotations

import click
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ledgerset.cli import Options, connect, moment, require_stream, run
from ledgerset.embedded import EmbeddedServer
from ledgerset.journal.reader import Position
from ledgerset.journal.replay import ReplayReport
from ledgerset.journal.replay import replay as replay_journal
from ledgerset.journal.verify import compare, journal_models

__all__ = ["replay", "verify"]


@click.command()
@click.option("--to-url", required=True, help="The database to replay into.")
@click.option("--until", help="Stop after this entry id or ISO time (UTC): the state as of then.")
@click.option("--model", help="Replay only this model class.")
@click.option("--dry-run", is_flag=True, help="Read and check everything, write nothing.")
@click.pass_obj
def replay(
    options: Options, to_url: str, until: str | None, model: str | None, dry_run: bool
) -> None:
    """Replay the journal into another database, resuming where the last run stopped."""
    report = run(_replay(options, to_url, moment(until), model, dry_run))
    verb = "would apply" if dry_run else "applied"
    click.echo(
        f"{verb} {report.applied} entries, skipped {report.skipped}, expired {report.expired}; "
        f"last entry {report.last_id or '(none)'}"
    )


async def _replay(
    options: Options, to_url: str, until: Position | None, model: str | None, dry_run: bool
) -> ReplayReport:
    source = await connect(options.require_url())
    await require_stream(source, options.stream)
    target = await connect(to_url)
    try:
        return await _with_progress(source, target, options.stream, until, model, dry_run)
    finally:
        await source.aclose()
        await target.aclose()


async def _with_progress(
    source: Redis,
    target: Redis,
    stream: str,
    until: Position | None,
    model: str | None,
    dry_run: bool,
) -> ReplayReport:
    columns = (
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("entries"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]} entries/s"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("replay", total=None, rate="-")

        def advance(done: int, total: int) -> None:
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:,.0f}" if elapsed else "-"
            progress.update(task, completed=done, total=total, rate=rate)

        return await replay_journal(
            source,
            target,
            stream,
            until=until,
            model=model,
            dry_run=dry_run,
            on_progress=advance,
        )


@click.command()
@click.option("--to-url", help="Replay into this database (default: a scratch embedded server).")
@click.pass_obj
def verify(options: Options, to_url: str | None) -> None:
    """Replay the journal and diff the result against the live data, key by key.

    Exits with status 1 and prints each difference if any key differs.
    """
    differences = run(_verify(options, to_url))
    if differences:
        for difference in differences:
            click.echo(f"DIFFERENT {difference}")
        click.echo(f"{len(differences)} key(s) differ from a replay of the journal", err=True)
        raise SystemExit(1)
    click.echo("OK: the live data equals a replay of the journal")


async def _verify(options: Options, to_url: str | None) -> list[str]:
    source = await connect(options.require_url())
    try:
        await require_stream(source, options.stream)
        if to_url is not None:
            return await _replay_and_compare(source, to_url, options.stream)
        async with EmbeddedServer() as scratch:
            return await _replay_and_compare(source, scratch.url, options.stream)
    finally:
        await source.aclose()


async def _replay_and_compare(source: Redis, url: str, stream: str) -> list[str]:
    target = await connect(url)
    try:
        await replay_journal(source, target, stream)
        models = await journal_models(source, stream)
        return [str(difference) for difference in await compare(source, target, models)]
    finally:
        await target.aclose()
