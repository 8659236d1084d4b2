"""Journal records: where they go (``StreamJournal``), the entry schema, and reading them back.

One stream entry per command, written by the dispatcher in the same atomic program as the
command's writes. Schema version 1, every field a string:

=========  =================================================================================
``cmd``    the command's name (``set.add``, ``model.save``, ...)
``v``      the command's record version
``key``    the physical key written at the source (for people: replay rebuilds keys)
``args``   the command's arguments as a JSON object (``record_args``)
``ts``     client wall-clock time, Unix milliseconds, UTC
``txn``    id shared by the entries of one transaction (a lone command has its own)
``seq``    1-based position in the transaction; ``of``: the transaction's size
           (a record too long for one entry, of a command that ``splits``, is several of them)
``model``  model class name; ``pk``: its pk; ``field``: the set field, or ``""``
``ctx``    the caller's bound structlog context variables the journal's redaction policy
           lets through, as a JSON object
=========  =================================================================================

Reading: ``parse_any`` decodes a raw stream entry into a ``JournalEntry``, or says what is wrong
with it (``MalformedEntry``); ``decode`` turns an entry's record back into its command.

Reading a record back goes through ``REGISTRY`` (``(cmd, v)`` -> class) after ``UPCASTERS``
have brought an old version's args up to date; an unknown ``(cmd, v)`` is an error, never a skip.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ledgerset import _events

# REGISTRY is the catalog's: every command class adds itself when it is defined.
from ledgerset.commands.catalog import REGISTRY, Command, MembersCommand, RecordTarget
from ledgerset.commands.program import OPS, Program
from ledgerset.errors import JournalEntryError
from ledgerset.keys import chain_head, journal_stream

__all__ = [
    "DEFAULT_CTX_REDACT",
    "DEFAULT_STREAM",
    "REGISTRY",
    "SPLIT_BYTES",
    "UPCASTERS",
    "JournalEntry",
    "MalformedEntry",
    "StreamJournal",
    "decode",
    "entry_args",
    "entry_fields",
    "hmac_pads",
    "journal_context",
    "journal_ops",
    "longest_entry",
    "marker_fields",
    "parse_any",
    "parse_flat",
    "upcast",
]

DEFAULT_STREAM = "ledgerset:journal"

#: The most a journal entry's ``args`` take in it before a record that ``splits`` is written as
#: several entries. Half the smallest ``proto-max-bulk-len`` a server accepts (1 MiB): an entry of
#: a split record fits under any server's limit with room for its other fields, so it never
#: needs the wire to ask the server for its limit.
SPLIT_BYTES = 512 * 1024

#: ``(name, old version)`` -> a function turning that version's args into the next version's.
#: When a command's record changes, bump its ``version`` and add its old version here.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


#: The context keys ``StreamJournal`` drops by default: a key whose name contains one of these,
#: whatever its case (and with ``-`` read as ``_``), never reaches the journal.
DEFAULT_CTX_REDACT: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "session",
)


@dataclass(frozen=True, slots=True)
class StreamJournal:
    """Record every command in the Redis Stream ``stream``, atomically with its writes.

    ``maxlen`` trims the stream to about that many entries (``XADD MAXLEN ~``); ``None`` keeps all.
    ``chain=True`` makes the stream tamper-evident: each entry carries its number, the hash of
    the entry before it and its own hash, and a head key (``keys.chain_head``) names the last
    one (``ledgerset.journal.check_chain``); it cannot be combined with ``maxlen``, whose
    trimming the chain could not tell from a deletion (trim with ``ledgerset.journal.trim``).
    ``chain_key`` (bytes, with ``chain=True``) makes each hash an HMAC-SHA1 with that secret, so
    that whoever may write to Redis but lacks it cannot forge a chain that checks; it is sent to
    the server (as its two HMAC pads) with every entry, and never shown in ``repr``.
    ``ctx_keys`` and ``ctx_redact`` are the redaction policy of the bound context recorded in
    each entry's ``ctx``, applied before anything is sent: with ``ctx_keys`` (an allow-list) only
    the keys named there are recorded; a key whose name contains one of ``ctx_redact`` (a
    deny-list, matched case-insensitively, ``-`` as ``_``; by default ``DEFAULT_CTX_REDACT``:
    password, token, authorization, cookie, api_key, ...) is never recorded. ``ctx_redact=()``
    records every key ``ctx_keys`` lets through.
    """

    stream: str = DEFAULT_STREAM
    maxlen: int | None = None
    ctx_keys: Collection[str] | None = None
    ctx_redact: Collection[str] = DEFAULT_CTX_REDACT
    chain: bool = False
    chain_key: bytes | None = field(default=None, repr=False)
    #: The HMAC pads of ``chain_key`` (RFC 2104), the program's extra arguments; () unkeyed.
    chain_pads: tuple[bytes, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.maxlen is not None and (isinstance(self.maxlen, bool) or self.maxlen <= 0):
            raise ValueError(f"StreamJournal(maxlen={self.maxlen!r}): a positive entry count")
        if self.chain and self.maxlen is not None:
            raise ValueError(
                f"StreamJournal(chain=True, maxlen={self.maxlen!r}): a chained journal cannot "
                f"trim itself, since check_chain would take the trimmed entries for deleted "
                f"ones; drop maxlen, and trim with ledgerset.journal.snapshot() then trim()"
            )
        if self.chain_key is not None:
            if not isinstance(self.chain_key, bytes) or not self.chain_key or not self.chain:
                raise ValueError(
                    "StreamJournal(chain_key=...): a non-empty bytes secret, with chain=True "
                    "(e.g. StreamJournal(chain=True, chain_key=os.environ['LEDGER_KEY'].encode()))"
                )
            object.__setattr__(self, "chain_pads", hmac_pads(self.chain_key))
        # Frozen, and so hashable: the dispatcher encodes the context once per journal.
        if self.ctx_keys is not None:
            object.__setattr__(self, "ctx_keys", frozenset(_names("ctx_keys", self.ctx_keys)))
        redact = tuple(
            name.lower().replace("-", "_") for name in _names("ctx_redact", self.ctx_redact)
        )
        object.__setattr__(self, "ctx_redact", redact)

    def append_keys(self, stream: str) -> tuple[str, ...]:
        """The keys an entry appended to the stream key ``stream`` touches: the stream, and
        its chain head when chained (same slot as the stream)."""
        return (stream, chain_head(stream)) if self.chain else (stream,)

    def records(self, name: str) -> bool:
        """Whether the context key ``name`` is recorded in this journal's entries."""
        if self.ctx_keys is not None and name not in self.ctx_keys:
            return False
        folded = name.lower().replace("-", "_")
        return not any(word in folded for word in self.ctx_redact)


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA1's inner and outer keys for ``key`` (RFC 2104): the program hashes
    ``sha1(outer + sha1(inner + message))`` with the two, which is ``hmac.new(key, ...)``."""
    block = (hashlib.sha1(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def _names(option: str, names: object) -> list[str]:
    """``names`` as a list of str, or a ``TypeError`` saying what ``option`` must be."""
    if isinstance(names, str) or not isinstance(names, Collection):
        raise TypeError(
            f"StreamJournal({option}={names!r}): a collection of context key names, "
            f"e.g. {option}=({names!r},)"
        )
    listed = list(names)
    for name in listed:
        if not isinstance(name, str):
            raise TypeError(
                f"StreamJournal({option}=...): {name!r} is not a context key name (str)"
            )
    return listed


def entry_args(command: Command[Any]) -> list[bytes | None]:
    """The ``args`` of each journal entry that records ``command``, in order: its one record.

    Or, when that record would take more than ``SPLIT_BYTES`` in an entry and the command
    ``splits``, the records of parts of its distinct members, each taking at most that much (a
    member longer than that alone is a part of its own). ``None``: the server adds the args (a
    pop's effect).
    """
    args = command.record_args()
    # An entry escapes each quote and backslash of its args, so they take at most twice their
    # length there: the usual record is not counted at all.
    if (
        args is None
        or len(args) <= SPLIT_BYTES // 2
        or not isinstance(command, MembersCommand)
        or not command.splits
        or _in_entry(args) <= SPLIT_BYTES
    ):
        return [args]
    empty = len(b'{"members":[]}')
    parts: list[bytes | None] = []
    part: list[bytes] = []
    size = empty
    # Distinct members: one toggled in two parts would be toggled twice.
    for member in dict.fromkeys(command.members):
        cost = _in_entry(member) + 1  # and its comma
        if part and size + cost > SPLIT_BYTES:
            parts.append(command.part(tuple(part), first=not parts).record_args())
            part, size = [], empty
        part.append(member)
        size += cost
    parts.append(command.part(tuple(part), first=not parts).record_args())
    return parts


def _in_entry(json: bytes) -> int:
    """How many bytes ``json`` (no raw control characters: JSON escapes them) takes as a string
    in an entry, which is itself JSON: each quote and backslash gains a backslash."""
    return len(json) + json.count(b'"') + json.count(b"\\")


def entry_fields(
    command: Command[Any], args: bytes | None, *, txn: str, seq: int, of: int, ts: int, ctx: str
) -> bytes:
    """The field/value pairs of a journal entry of ``command`` with ``args`` (one of
    ``entry_args``), as one JSON array of strings; without ``args`` when they are ``None``."""
    fields = [
        "cmd", command.name,
        "v", str(command.version),
        "key", command.key,
        "ts", str(ts),
        "txn", txn,
        "seq", str(seq),
        "of", str(of),
        "model", command.model,
        "pk", command.pk,
        "field", command.field or "",
        "ctx", ctx,
    ]  # fmt: skip
    if args is not None:
        fields.append("args")
        fields.append(args.decode())
    return orjson.dumps(fields)


def journal_ops(
    program: Program,
    journaled: Sequence[tuple[Command[Any], StreamJournal]],
    txn: str,
    slot: int | None = None,
) -> None:
    """Append to ``program`` the ``JOURNAL`` op of every entry that records ``journaled``'s
    commands (compiled into it already), in order; ``txn`` names their transaction. On a
    cluster, ``slot`` is the program's slot and each entry goes to that slot's stream of its
    journal (``keys.journal_stream``).

    A command's record too long for one entry may be several (``entry_args``). ``seq``/``of``
    count entries within each stream: a transaction over models with different journals leaves
    in each stream a complete transaction of its own commands. A pop's entry is completed on the
    server with the member its (first) op removed.
    """
    ts = int(time.time() * 1000)
    ctxs: dict[StreamJournal, str] = {}  # each journal records the context its policy lets through
    sizes: dict[str, int] = {}
    entries = []
    for command, journal in journaled:
        parts = entry_args(command)
        stream = journal.stream if slot is None else journal_stream(journal.stream, slot)
        entries.append((command, journal, stream, parts))
        sizes[stream] = sizes.get(stream, 0) + len(parts)
        if journal not in ctxs:
            ctxs[journal] = journal_context(journal)
    seqs = dict.fromkeys(sizes, 0)
    for command, journal, stream, parts in entries:
        for args in parts:
            seq = seqs[stream] = seqs[stream] + 1
            fields = entry_fields(
                command, args, txn=txn, seq=seq, of=sizes[stream], ts=ts, ctx=ctxs[journal]
            )
            popped = _first_op(program, command) + 1 if args is None else 0
            # Chained, the op's keys are the stream and its head (chain_head of the per-slot
            # stream: the same hash tag, so the same slot), its last arguments the HMAC pads.
            index = program.op(
                OPS["JOURNAL"],
                journal.append_keys(stream),
                [journal.maxlen or 0, popped, fields, *journal.chain_pads],
            )
            program.journaled[index] = command


def _first_op(program: Program, command: Command[Any]) -> int:
    return next(start for compiled, start, _ in program.spans if compiled is command)


def longest_entry(program: Program) -> Command[Any] | None:
    """The journaled command of ``program`` whose entry is the longest (``None``: none is
    journaled): the argument a request refused as too long belongs to it."""
    journaled = {id(command): command for command in program.journaled.values()}.values()
    if not journaled:
        return None
    return max(journaled, key=lambda each: max(len(args or b"") for args in entry_args(each)))


def marker_fields(
    name: str, *, key: str, model: str, pk: str, txn: str, ts: int, args: bytes | None
) -> bytes:
    """The field/value pairs (one JSON array of strings, as ``entry_fields``) of a journal's own
    entry, which records no command: a snapshot's ``snapshot.begin``/``snapshot.model``/
    ``snapshot.end``, a ``journal.trim``; without ``args`` when the server adds them."""
    fields = [
        "cmd", name, "v", "1", "key", key, "ts", str(ts), "txn", txn, "seq", "1", "of", "1",
        "model", model, "pk", pk, "field", "", "ctx", "{}",
    ]  # fmt: skip
    if args is not None:
        fields.append("args")
        fields.append(args.decode())
    return orjson.dumps(fields)


def journal_context(journal: StreamJournal) -> str:
    """The caller's structlog context variables as ``journal`` records them (``ctx``): JSON.

    Only the keys the journal's redaction policy lets through are encoded. A value JSON cannot
    hold (an int beyond 64 bits, a dict with int keys, a string with a lone surrogate, any other
    object) is recorded as its ``str()``, so a bound value never blocks a write.
    """
    context = _events.bound_context()
    if not context:
        return "{}"
    kept = {name: value for name, value in context.items() if journal.records(str(name))}
    if not kept:
        return "{}"
    try:
        return orjson.dumps(kept, default=str).decode()
    except (orjson.JSONEncodeError, TypeError):
        # Rare: find the values orjson refused, one by one.
        return orjson.dumps(
            {_safe_str(name): _json_value(value) for name, value in kept.items()}
        ).decode()


def _json_value(value: object) -> object:
    try:
        return orjson.Fragment(orjson.dumps(value, default=str))
    except (orjson.JSONEncodeError, TypeError):
        return _safe_str(value)


def _safe_str(value: object) -> str:
    """``str(value)``, with what UTF-8 cannot hold (lone surrogates) as backslash escapes."""
    try:
        text = str(value)
    except Exception:  # a __str__ that raises must not block the write either
        text = f"<{type(value).__name__} whose str() failed>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def upcast(name: str, version: int, args: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """Bring ``args`` of an old record version up to a registered one; ``None`` if impossible."""
    while (name, version) not in REGISTRY:
        step = UPCASTERS.get((name, version))
        if step is None:
            return None
        args, version = step(args), version + 1
    return version, args


def decode(
    name: str, version: int, args: dict[str, Any], target: RecordTarget
) -> Command[Any] | None:
    """The command a record describes; raises ``LookupError`` for an unknown ``(name, version)``."""
    kind = REGISTRY.get((name, version))
    if kind is None:  # an old version (or none known): through the upcasters
        current = upcast(name, version, args)
        if current is None:
            raise LookupError(f"no command {name!r} version {version} is known")
        version, args = current
        kind = REGISTRY[(name, version)]
    return kind.from_record(args, target)


# -- reading ---------------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal entry, decoded (the schema is this module's docstring)."""

    id: str
    cmd: str
    v: int
    key: str
    args: dict[str, Any]
    ts: datetime
    txn: str
    seq: int
    of: int
    model: str
    pk: str
    field: str | None
    ctx: dict[str, Any]

    @property
    def target(self) -> str:
        """What the entry wrote, as the tool shows it: ``Model:pk``, or ``Model:pk.field``."""
        return f"{self.model}:{self.pk}" + (f".{self.field}" if self.field else "")

    @property
    def ts_ms(self) -> int:
        """``ts`` as Unix milliseconds, as stored (in integers: through a float,
        ``ts.timestamp() * 1000``, some come back one lower)."""
        return (self.ts - _EPOCH) // _ONE_MS

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict (``ts`` as ISO 8601 UTC)."""
        return {
            "id": self.id,
            "ts": self.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "cmd": self.cmd,
            "v": self.v,
            "model": self.model,
            "pk": self.pk,
            "field": self.field,
            "key": self.key,
            "args": self.args,
            "txn": self.txn,
            "seq": self.seq,
            "of": self.of,
            "ctx": self.ctx,
        }


def parse_any(
    stream: str, entry_id: str, fields: dict[bytes, bytes]
) -> JournalEntry | MalformedEntry:
    """Decode one raw stream entry, or say what is wrong with it (``MalformedEntry``), for the
    readers that show or deliver such an entry flagged instead of stopping at it."""
    try:
        return _parse(entry_id, fields)
    except _Malformed as exc:
        return MalformedEntry(
            id=entry_id, stream=stream, fields=fields, problem=str(exc), field=exc.field
        )


@dataclass(frozen=True, slots=True)
class MalformedEntry:
    """A stream entry that is not a readable ledgerset entry: the tool flags it, a subscription
    delivers it flagged, and replay stops at it (``error``).

    ``fields`` is the entry as Redis holds it; ``problem`` says what is wrong in an operator's
    words, and ``field`` names the field at fault. ``model`` and ``key`` are the entry's own
    fields of those names, when it has them, so that filters can tell whose it is.
    """

    id: str
    stream: str
    fields: dict[bytes, bytes]
    problem: str
    field: str

    @property
    def shown(self) -> dict[str, str]:
        """The fields decoded for people (undecodable bytes escaped)."""
        return {
            name.decode(errors="backslashreplace"): value.decode(errors="backslashreplace")
            for name, value in self.fields.items()
        }

    @property
    def model(self) -> str | None:
        """The entry's ``model`` field, if it has one."""
        return self.shown.get("model")

    @property
    def key(self) -> str | None:
        """The entry's ``key`` field, if it has one."""
        return self.shown.get("key")

    @property
    def target(self) -> None:
        """A malformed entry names no target the tool could show."""
        return None

    @property
    def ts(self) -> datetime:
        """The entry's ``ts`` if it is a number, else the server's time in its id."""
        stamp = self.shown.get("ts", "")
        millis = int(stamp) if stamp.isdigit() else int(self.id.split("-")[0])
        return datetime.fromtimestamp(millis / 1000, tz=UTC)

    @property
    def error(self) -> JournalEntryError:
        """The error a reader that cannot go on raises for this entry."""
        return JournalEntryError(
            f"journal entry {self.id} of stream {self.stream!r} is malformed ({self.problem}); it "
            f"was not written by ledgerset, or was changed. Nothing of its transaction is applied.",
            stream=self.stream,
            entry_id=self.id,
            field=self.field,
        )

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict: its id, ``"malformed"`` (the problem) and its fields."""
        return {"id": self.id, "malformed": self.problem, "fields": self.shown}


#: The fields every ledgerset entry has (see the schema above).
_FIELDS = (b"cmd", b"v", b"key", b"args", b"ts", b"txn", b"seq", b"of", b"model", b"pk", b"field",
           b"ctx")  # fmt: skip


class _Malformed(ValueError):
    """What is wrong with an entry, in an operator's words, and the field at fault."""

    def __init__(self, problem: str, field: str) -> None:
        super().__init__(problem)
        self.field = field


def parse_flat(stream: str, entry_id: str, flat: list[bytes]) -> JournalEntry | MalformedEntry:
    """``parse_any`` of a raw stream entry as the server sends it: field, value, field, value...

    An entry as ``entry_fields`` wrote it (its fields in that order, nothing else) is read by
    position, without a dict; any other goes through ``parse_any``.
    """
    if len(flat) == _WRITTEN_LENGTH and flat[::2] == _WRITTEN_ORDER:
        entry = _entry_of(entry_id, flat[1::2])
        if entry is not None:
            return entry
    return parse_any(stream, entry_id, dict(zip(flat[::2], flat[1::2], strict=False)))


#: An entry's fields in the order ``entry_fields`` and ``marker_fields`` write them, ``args``
#: last (also when the server adds them): how nearly every entry reads back.
_WRITTEN_ORDER = [b"cmd", b"v", b"key", b"ts", b"txn", b"seq", b"of", b"model", b"pk", b"field",
                  b"ctx", b"args"]  # fmt: skip
_WRITTEN_LENGTH = 2 * len(_WRITTEN_ORDER)


def _parse(entry_id: str, fields: dict[bytes, bytes]) -> JournalEntry:
    try:
        values = [fields[name] for name in _WRITTEN_ORDER]
    except KeyError:
        return _diagnosed(entry_id, fields)
    return _entry_of(entry_id, values) or _diagnosed(entry_id, fields)


def _entry_of(entry_id: str, values: list[bytes]) -> JournalEntry | None:
    """The entry whose field values are ``values`` (in ``_WRITTEN_ORDER``), if it decodes as is;
    ``None``: ``_diagnosed`` says what is wrong (or decodes it just the same)."""
    # Every entry replay reads comes through here, in one go: checking field by field costs
    # twice as much, and only an entry that fails needs it.
    cmd, v, key, ts, txn, seq, of, model, pk, field, ctx, args = values
    try:
        arguments = orjson.loads(args)
        context = {} if ctx == b"{}" else orjson.loads(ctx)
        if type(arguments) is not dict or type(context) is not dict:
            return None
        # By position, in the order of JournalEntry's fields: a quarter cheaper than by keyword.
        return JournalEntry(
            entry_id, cmd.decode(), int(v), key.decode(), arguments, _moment(ts), txn.decode(),
            int(seq), int(of), model.decode(), pk.decode(), field.decode() or None, context,
        )  # fmt: skip
    except ValueError:  # UnicodeDecodeError and orjson's errors are ValueErrors
        return None


@functools.lru_cache(maxsize=64)
def _moment(ts: bytes) -> datetime:
    """An entry's ``ts`` as a datetime: remembered, as the entries of a transaction share one,
    and entries written in the same millisecond do too."""
    return datetime.fromtimestamp(int(ts) / 1000, tz=UTC)


def _diagnosed(entry_id: str, fields: dict[bytes, bytes]) -> JournalEntry:
    """``_parse``'s slow path: the first thing wrong with the entry, in its field order."""
    missing = [name.decode() for name in _FIELDS if name not in fields]
    if len(missing) == len(_FIELDS):
        raise _Malformed("not a ledgerset entry: field 'cmd' is missing, and so are model, pk "
                         "and the rest; another program wrote it", "cmd")  # fmt: skip
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise _Malformed(f"field {names} is missing" if len(missing) == 1 else
                         f"fields {names} are missing", missing[0])  # fmt: skip
    ctx = fields[b"ctx"]
    return JournalEntry(
        id=entry_id,
        cmd=_field_text(fields, b"cmd"),
        v=_field_number(fields, b"v"),
        key=_field_text(fields, b"key"),
        args=_field_object(fields, b"args"),
        ts=datetime.fromtimestamp(_field_number(fields, b"ts") / 1000, tz=UTC),
        txn=_field_text(fields, b"txn"),
        seq=_field_number(fields, b"seq"),
        of=_field_number(fields, b"of"),
        model=_field_text(fields, b"model"),
        pk=_field_text(fields, b"pk"),
        field=_field_text(fields, b"field") or None,
        ctx={} if ctx == b"{}" else _field_object(fields, b"ctx"),
    )


def _field_text(fields: dict[bytes, bytes], name: bytes) -> str:
    try:
        return fields[name].decode()
    except UnicodeDecodeError:
        raise _Malformed(f"field {name.decode()!r} is not UTF-8 text", name.decode()) from None


def _field_number(fields: dict[bytes, bytes], name: bytes) -> int:
    try:
        return int(fields[name])
    except ValueError:
        shown = fields[name][:40].decode(errors="backslashreplace")
        raise _Malformed(
            f"field {name.decode()!r} is {shown!r}, not a whole number", name.decode()
        ) from None


def _field_object(fields: dict[bytes, bytes], name: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(fields[name])
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        shown = fields[name][:40].decode(errors="backslashreplace")
        raise _Malformed(f"field {name.decode()!r} is {shown!r}, not a JSON object", name.decode())
    return value
