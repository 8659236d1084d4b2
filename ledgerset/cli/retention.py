"""``ledgerset snapshot`` and ``ledgerset trim``: keep a journal short and still able to rebuild."""

from __future__ import annotations

import click

from ledgerset.cli import Options, connect_any, require_stream, run
from ledgerset.journal.snapshot import SnapshotReport, TrimReport
from ledgerset.journal.snapshot import snapshot as take_snapshot
from ledgerset.journal.snapshot import trim as trim_journal

__all__ = ["snapshot", "trim"]


@click.command()
@click.pass_obj
def snapshot(options: Options) -> None:
    """Record the current state of every model the journal names into the journal itself.

    Writers may keep writing. Prints the snapshot's id, which ``ledgerset trim --before`` takes.
    """
    report = run(_snapshot(options))
    counts = ", ".join(f"{model} {count}" for model, count in report.models.items()) or "none"
    click.echo(
        f"snapshot {report.id} of journal {report.stream!r}: {sum(report.models.values())} "
        f"models ({counts}), ended at {report.end_id} in {report.duration_s:.2f} s"
    )


async def _snapshot(options: Options) -> SnapshotReport:
    redis = await connect_any(options.require_url())
    try:
        await require_stream(redis, options.stream)
        return await take_snapshot(redis, options.stream)
    finally:
        await redis.aclose()


@click.command()
@click.option(
    "--before",
    metavar="ID",
    help="Remove the entries before this complete snapshot (its id) [default: the latest].",
)
@click.pass_obj
def trim(options: Options, before: str | None) -> None:
    """Remove the journal's entries before a complete snapshot; refuses to cut into one."""
    report = run(_trim(options, before))
    if report.cut_id is None:
        click.echo(f"nothing to trim: journal {report.stream!r} starts at snapshot {report.before}")
        return
    click.echo(
        f"trimmed {report.removed} entries of journal {report.stream!r} before snapshot "
        f"{report.before} (the last removed: {report.cut_id}; recorded as {report.entry_id})"
    )


async def _trim(options: Options, before: str | None) -> TrimReport:
    redis = await connect_any(options.require_url())
    try:
        await require_stream(redis, options.stream)
        return await trim_journal(redis, options.stream, before=before)
    finally:
        await redis.aclose()
