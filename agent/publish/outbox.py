"""A durable outbox: every message is in SQLite before it is published.

A message is written (with its sequence number) to `outbox.sqlite3` in the state
directory, published with QoS 1, and deleted only after the broker's PUBACK. A broker
outage or an agent crash therefore delays messages and never loses them; after
reconnect the backlog drains oldest first. The store is bounded by count and by age; what
a bound drops is counted (persistently) and reported in stats.

Each topic has its own sequence number (`seq` in the payload: 1, 2, 3, ... on
`<prefix>/state`, separately on `<prefix>/summary`), increasing monotonically across
restarts (kept in the same database), so a subscriber of one topic can detect gaps (dropped
by a bound) and duplicates (a PUBACK lost in an outage makes the message go out again).
Rows are drained in the order they were written, across topics.

`synchronous=FULL` because a Pi loses power more often than it crashes; at one message
every few seconds the fsync costs nothing worth saving.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    topic: str
    payload: bytes
    retain: bool
    created: float


class Outbox:
    """SQLite-backed FIFO of messages awaiting acknowledgement. Not thread-safe: loop only."""

    def __init__(
        self,
        path: str | Path,
        max_messages: int = 100_000,
        max_age_s: float = 7 * 86400.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self._now = now
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._listeners: list[Callable[[], None]] = []

    # -- meta counters ------------------------------------------------------------------
    def _get(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    @property
    def last_seq(self) -> int:
        """The number of the last row ever written, across topics (0 before the first)."""
        return self._get("last_seq")

    def topic_seq(self, topic: str) -> int:
        """The last sequence number given on `topic` (0 before the first)."""
        return self._get(f"seq:{topic}")

    @property
    def dropped(self) -> int:
        """Messages removed by the count or age bound before they were acknowledged."""
        return self._get("dropped")

    # -- writing ------------------------------------------------------------------------
    def put(self, topic: str, payload: dict[str, Any], retain: bool = False) -> int:
        """Assign the topic's next sequence number, store the message durably, return it.

        The number is written into the payload as `seq` before it is serialised, so the
        stored bytes are exactly what subscribers receive.
        """
        with self._transaction():
            row = self._get("last_seq") + 1
            seq = self._get(f"seq:{topic}") + 1
            body = json.dumps({**payload, "seq": seq}, separators=(",", ":")).encode()
            self._db.execute(
                "INSERT INTO messages(seq, topic, payload, retain, created) VALUES(?,?,?,?,?)",
                (row, topic, body, int(retain), self._now()),
            )
            self._set("last_seq", row)
            self._set(f"seq:{topic}", seq)
            self._enforce_bounds()
        for notify in self._listeners:
            notify()
        return seq

    def on_put(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the loop) after every put: the publisher's wake-up."""
        self._listeners.append(callback)

    def _enforce_bounds(self) -> int:
        cutoff = self._now() - self.max_age_s
        dropped = self._db.execute("DELETE FROM messages WHERE created < ?", (cutoff,)).rowcount
        excess = self.depth() - self.max_messages
        if excess > 0:
            dropped += self._db.execute(
                "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)",
                (excess,),
            ).rowcount
        if dropped:
            self._set("dropped", self._get("dropped") + dropped)
        return dropped

    def enforce_bounds(self) -> int:
        """Apply the age bound now (the count bound applies on every put); return drops."""
        with self._transaction():
            return self._enforce_bounds()

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete acknowledged messages, in one transaction."""
        seqs = list(seqs)
        if not seqs:
            return
        with self._transaction():
            self._db.executemany("DELETE FROM messages WHERE seq=?", [(s,) for s in seqs])

    # -- reading ------------------------------------------------------------------------
    def pending(self, limit: int, after_seq: int = 0) -> list[OutboxMessage]:
        """The oldest unacknowledged messages with seq > after_seq, oldest first."""
        rows = self._db.execute(
            "SELECT seq, topic, payload, retain, created FROM messages WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [OutboxMessage(s, t, bytes(p), bool(r), c) for s, t, p, r, c in rows]

    def depth(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def oldest_age(self) -> float | None:
        row = self._db.execute("SELECT MIN(created) FROM messages").fetchone()
        return None if row[0] is None else self._now() - row[0]

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
