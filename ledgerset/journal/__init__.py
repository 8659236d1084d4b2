"""What happened: the stream journal, its reader, the replayer, subscriptions, the hash chain
(see docs/journal.md).

The journal names its targets logically (model, pk, field) and reads commands through
``ledgerset.commands``; it never imports ``ledgerset.core``, so a journal can be read and
replayed without the application's model classes.
"""

from ledgerset.commands.record import (
    DEFAULT_STREAM,
    UPCASTERS,
    JournalEntry,
    MalformedEntry,
    StreamJournal,
)
from ledgerset.journal.chain import ChainReport, check_chain
from ledgerset.journal.reader import read_entries
from ledgerset.journal.replay import ReplayReport, replay
from ledgerset.journal.snapshot import SnapshotReport, SnapshotSpan, TrimReport, snapshot, trim
from ledgerset.journal.subscription import Delivery, Subscription, subscribe

__all__ = [
    "DEFAULT_STREAM",
    "UPCASTERS",
    "ChainReport",
    "Delivery",
    "JournalEntry",
    "MalformedEntry",
    "ReplayReport",
    "SnapshotReport",
    "SnapshotSpan",
    "StreamJournal",
    "Subscription",
    "TrimReport",
    "check_chain",
    "read_entries",
    "replay",
    "snapshot",
    "subscribe",
    "trim",
]
