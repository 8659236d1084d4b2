"""The hash chain of a journal written with ``StreamJournal(chain=True)``, and its check.

Each entry of a chained stream carries ``n`` (its number in the stream, from 1), ``prev`` (the
hash of the entry before it, ``""`` for the first) and ``hash``: the SHA-1 the server program
computed (``redis.sha1hex``) over ``prev``, ``n`` and the JSON array of the entry's other fields
as the writer sent it (``orjson``'s encoding, which this module rebuilds from the stored
fields), then, one per line, the ``args`` the server added (a pop's, a snapshot's). The chain
head (``keys.chain_head``, a hash in the stream's slot) names the last entry (``hash``, ``n``,
``id``) and, after a ``trim``, the last entry removed (``cut_hash``, ``cut_n``, ``cut_id``).
``check_chain`` walks the stream page by page and reports the first break: an entry edited (its
fields no longer hash to its ``hash``), inserted (no chain fields, or one that does not follow
the entry before it), entries deleted (a gap in ``n``, the oldest ones too), or the newest ones
cut off (the head names an entry the stream no longer ends with).

What it cannot catch: whoever can rewrite the whole stream *and* its head can forge a chain that
checks, since the hash has no secret; with ``chain_key`` (a keyed chain, HMAC-SHA1) only whoever
also holds the secret can.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ledgerset.commands import wire
from ledgerset.commands.record import DEFAULT_STREAM, StreamJournal
from ledgerset.errors import RetentionError
from ledgerset.keys import chain_head

__all__ = ["ChainReport", "check_chain", "entry_hashes"]

#: Entries per ``XRANGE`` page.
PAGE = 1000

Problem = Literal["edited", "inserted", "deleted", "truncated", "unchained", "keyed"]


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``check_chain`` found: ``ok``, or the first ``problem`` and the entry it is at.

    ``entries`` counts the entries walked; ``first_n``/``last_n`` are the numbers of the first
    and last chained entries; ``unchained`` counts the entries older than the chain (written
    before ``chain=True``), which it does not cover. ``message`` says it all in one line.
    """

    stream: str
    ok: bool
    message: str
    entries: int = 0
    problem: Problem | None = None
    #: The entry the problem is at (for "truncated": the last entry the stream still has).
    entry_id: str | None = None
    first_n: int | None = None
    last_n: int | None = None
    unchained: int = 0

    def __str__(self) -> str:
        return self.message


def entry_hashes(
    fields: Sequence[tuple[bytes, bytes]], key: bytes | None = None
) -> tuple[str, ...]:
    """The hashes a chained entry with these fields (all of them before ``hash``, in order,
    ``n`` and ``prev`` last) may carry: its ``args`` sent by the writer, or added by the server
    (the second, when it has ``args``); HMAC-SHA1s with ``key`` for a keyed chain. Empty: its
    fields are not text, so no writer sent them."""
    *body, (_, n), (_, prev) = fields
    signed = prev + b"\n" + n + b"\n"
    try:
        text = [part.decode() for pair in body for part in pair]
    except UnicodeDecodeError:
        return ()
    signed_texts = [signed + orjson.dumps(text)]
    if body and body[-1][0] == b"args":
        signed_texts.append(signed + orjson.dumps(text[:-2]) + b"\n" + body[-1][1])
    if key is None:
        return tuple(hashlib.sha1(data, usedforsecurity=False).hexdigest() for data in signed_texts)
    return tuple(hmac.new(key, data, hashlib.sha1).hexdigest() for data in signed_texts)


async def check_chain(
    redis: Redis | RedisCluster, journal: StreamJournal | str = DEFAULT_STREAM
) -> ChainReport:
    """Walk the chained journal stream of ``journal`` (a ``StreamJournal`` or a stream key) and
    report the first entry edited, inserted or deleted, or the newest entries cut off.

    Reads only (``XRANGE`` pages and the head's ``HGETALL``). A stream with neither a head nor a
    chained entry is reported as ``unchained``: it was not written with ``chain=True``. One
    server only, for now: a ``RedisCluster`` is refused with ``RetentionError``.
    """
    stream = journal.stream if isinstance(journal, StreamJournal) else journal
    if isinstance(redis, RedisCluster):
        raise RetentionError.on_cluster(stream, "check_chain")
    wire.check_client(redis, "check_chain")
    key = journal.chain_key if isinstance(journal, StreamJournal) else None
    walk = _Walk(stream, await _head(redis, stream), key)
    if key is None and walk.head.get("keyed") == "1":
        return walk.broken(
            "keyed", None,
            "the chain is keyed (an HMAC with the writers' secret): check it with the journal "
            "that holds the key, StreamJournal(..., chain=True, chain_key=...)",
        )  # fmt: skip
    low = "-"
    while True:
        page: list[list[Any]] = await wire.call(
            redis, ("XRANGE", stream, low, "+", "COUNT", PAGE), resend=True
        )
        for raw_id, raw_fields in page:
            report = walk.step(raw_id.decode(), _pairs(raw_fields))
            if report is not None:
                return report
        if len(page) < PAGE:
            return walk.end()
        low = "(" + page[-1][0].decode()


def _pairs(flat: list[bytes]) -> list[tuple[bytes, bytes]]:
    """An entry's fields as ``XRANGE`` returns them, in order, as (name, value) pairs."""
    return list(zip(flat[::2], flat[1::2], strict=True))


async def _head(redis: Redis, stream: str) -> dict[str, str]:
    raw = await wire.call(redis, ("HGETALL", chain_head(stream)), resend=True)
    if isinstance(raw, dict):  # RESP3
        raw = [item for pair in raw.items() for item in pair]
    return {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}


class _Walk:
    """The walk along one stream: what the next entry must be, given those before it."""

    def __init__(self, stream: str, head: dict[str, str], key: bytes | None) -> None:
        self.stream, self.head, self.key = stream, head, key
        self.cut = "cut_id" in head
        # After a trim the first entry follows the cut; otherwise it is number 1.
        self.expect_n = int(head.get("cut_n", "0")) + 1
        self.expect_prev = head.get("cut_hash", "")
        self.prev_id: str | None = head.get("cut_id")
        self.entries = 0
        self.unchained = 0
        self.first_n: int | None = None

    def broken(self, problem: Problem, entry_id: str | None, message: str) -> ChainReport:
        return ChainReport(
            stream=self.stream,
            ok=False,
            message=f"journal {self.stream!r}: chain broken: {message}",
            entries=self.entries,
            problem=problem,
            entry_id=entry_id,
            first_n=self.first_n,
            last_n=self.expect_n - 1 if self.first_n is not None else None,
            unchained=self.unchained,
        )

    def step(self, entry_id: str, fields: list[tuple[bytes, bytes]]) -> ChainReport | None:
        self.entries += 1
        chain = dict(fields[-3:])
        names = [name for name, _ in fields[-3:]]
        if names != [b"n", b"prev", b"hash"]:
            if self.first_n is None and not self.cut:
                self.unchained += 1  # older than the chain: written before chain=True
                return None
            return self.broken(
                "inserted", entry_id,
                f"entry {entry_id} carries no chain fields: it was added behind the journal's "
                f"back (inserted), after entry {self.prev_id}",
            )  # fmt: skip
        recorded = chain[b"hash"].decode(errors="replace")
        if recorded not in entry_hashes(fields[:-1], self.key):
            return self.broken(
                "edited", entry_id,
                f"entry {entry_id} (#{chain[b'n'].decode(errors='replace')}) was edited: its "
                f"fields no longer hash to the hash it was written with",
            )  # fmt: skip
        try:
            n = int(chain[b"n"])
        except ValueError:
            return self.broken("edited", entry_id, f"entry {entry_id} has a number that is none")
        prev = chain[b"prev"].decode(errors="replace")
        if n > self.expect_n:
            one = n - 1 == self.expect_n
            numbers = f"#{self.expect_n}" if one else f"#{self.expect_n} to #{n - 1}"
            were = "was" if one else "were"
            if self.prev_id is None or (self.first_n is None and not self.cut):
                what = "the oldest entry" if one else "the oldest entries"
                where = f"{what}, {numbers}, before entry {entry_id}, {were} deleted"
                how = "without a trim recording it (XTRIM or XDEL)"
            else:
                what = "entry" if one else "entries"
                where = f"{what} {numbers}, between {self.prev_id} and {entry_id}, {were} deleted"
                how = "(XDEL, or edited by delete and re-add)"
            return self.broken("deleted", entry_id, f"{where} {how}")
        if n < self.expect_n or prev != self.expect_prev:
            return self.broken(
                "inserted", entry_id,
                f"entry {entry_id} (#{n}) does not follow entry {self.prev_id} "
                f"(#{self.expect_n - 1}): it was inserted, or the entry before it replaced",
            )  # fmt: skip
        if self.first_n is None:
            self.first_n = n
        self.expect_n, self.expect_prev, self.prev_id = n + 1, recorded, entry_id
        return None

    def end(self) -> ChainReport:
        head, last_n = self.head, self.expect_n - 1
        if not head and self.first_n is None:
            return self.broken(
                "unchained", None,
                f"no chain: {self.entries} entries and no chain head "
                f"{chain_head(self.stream)!r}; was the stream written with "
                f"StreamJournal(chain=True)?",
            )  # fmt: skip
        if "hash" not in head:
            return self.broken(
                "truncated", self.prev_id,
                f"the chain head {chain_head(self.stream)!r} is gone or names no entry, while "
                f"the stream has chained entries up to #{last_n} ({self.prev_id})",
            )  # fmt: skip
        head_n = int(head.get("n", "0"))
        if head_n < last_n:
            return self.broken(
                "inserted", self.prev_id,
                f"entries after #{head_n} ({head.get('id', '?')}), the last the head names, "
                f"were inserted: the stream ends at #{last_n} ({self.prev_id})",
            )  # fmt: skip
        if head_n > last_n or head["hash"] != self.expect_prev:
            shown = "nothing" if self.prev_id is None else f"#{last_n} ({self.prev_id})"
            return self.broken(
                "truncated", self.prev_id,
                f"the newest entries were cut off: the head names #{head_n} "
                f"({head.get('id', '?')}), the stream ends at {shown}",
            )  # fmt: skip
        first = self.first_n if self.first_n is not None else self.expect_n
        older = f"; {self.unchained} older entries predate the chain" if self.unchained else ""
        cut = f", after a trim at #{head['cut_n']} ({head['cut_id']})" if self.cut else ""
        return ChainReport(
            stream=self.stream,
            ok=True,
            message=(
                f"journal {self.stream!r}: chain OK: entries #{first} to #{last_n} intact, "
                f"the head matches the last ({self.prev_id}){cut}{older}"
            ),
            entries=self.entries,
            first_n=self.first_n,
            last_n=last_n if self.first_n is not None else None,
            unchained=self.unchained,
        )
