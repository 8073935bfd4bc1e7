"""The durable outbox: order, sequence numbers across restarts, bounds counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.publish.outbox import Outbox


def test_fifo_and_seq_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite3"
    ob = Outbox(db)
    seqs = [ob.put("t/state", {"i": i}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    ob.ack([1, 2])
    ob.close()
    ob = Outbox(db)  # an agent restart
    pending = ob.pending(10)
    assert [m.seq for m in pending] == [3, 4, 5]
    assert json.loads(pending[0].payload) == {"i": 2, "seq": 3}
    assert ob.put("t/state", {"i": 5}) == 6  # numbering continues, never reuses
    assert [m.seq for m in ob.pending(2, after_seq=4)] == [5, 6]
    ob.close()


@pytest.mark.faults
def test_count_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", max_messages=10)
    for i in range(25):
        ob.put("t", {"i": i})
    assert ob.depth() == 10
    assert ob.dropped == 15
    assert [m.seq for m in ob.pending(100)] == list(range(16, 26))


@pytest.mark.faults
def test_age_bound_drops_and_counts(tmp_path: Path) -> None:
    now = [1000.0]
    ob = Outbox(tmp_path / "o.sqlite3", max_age_s=60, now=lambda: now[0])
    ob.put("t", {"i": 0})
    now[0] += 30
    ob.put("t", {"i": 1})
    assert ob.oldest_age() == 30
    now[0] += 45
    assert ob.enforce_bounds() == 1
    assert [m.seq for m in ob.pending(10)] == [2]
    assert ob.dropped == 1


def test_on_put_wakes_listener(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    calls = []
    ob.on_put(lambda: calls.append(1))
    ob.put("t", {})
    assert calls == [1]


def test_files_are_private(tmp_path: Path) -> None:
    import os

    old = os.umask(0o077)
    try:
        ob = Outbox(tmp_path / "s" / "o.sqlite3")
        ob.put("t", {})
        mode = (tmp_path / "s" / "o.sqlite3").stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert mode & 0o077 == 0
