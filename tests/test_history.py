"""The bounds on kept history (issue 17 item 3), on the store itself and through chat."""

from __future__ import annotations

import pytest

from wsplex.app import Publication, Sender
from wsplex.hub.history import History
from wsplex.stats import Stats

pytestmark = pytest.mark.memory_only("the in-memory history store; Redis keeps lists of its own")

SENDER = Sender("chat", "alice")


def store(listened: set[str] | None = None) -> tuple[History, Stats]:
    stats = Stats()
    history = History(stats, lambda topic: topic in (listened or set()))
    history.rules.add("chat/", 3)
    return history, stats


def test_count_per_topic_and_only_under_a_rule() -> None:
    history, _ = store()
    for n in range(5):
        history.add(Publication("chat/a", f"line {n}", SENDER))
    history.add(Publication("sensors/t", "21", SENDER))
    assert [p.text for p in history.get("chat/a")] == ["line 2", "line 3", "line 4"]
    assert history.get("sensors/t") == [] and len(history) == 1


def test_bytes_per_topic() -> None:
    history, stats = store()
    history.max_bytes = 10
    history.add(Publication("chat/a", "12345", SENDER))
    history.add(Publication("chat/a", "67890", SENDER))
    history.add(Publication("chat/a", "x", SENDER))
    assert [p.text for p in history.get("chat/a")] == ["67890", "x"]
    assert stats.history_trimmed == 1
    history.add(Publication("chat/a", "y" * 11, SENDER))  # alone over the bound: not kept
    assert history.get("chat/a") == [] and stats.history_trimmed == 4


def test_a_new_topic_pushes_out_the_oldest_nobody_listens_to() -> None:
    history, stats = store(listened={"chat/0"})
    history.max_topics = 3
    for n in range(3):
        history.add(Publication(f"chat/{n}", "hi", SENDER))
    history.add(Publication("chat/3", "hi", SENDER))
    assert [t for t in ("chat/0", "chat/1", "chat/2", "chat/3") if history.get(t)] == [
        "chat/0", "chat/2", "chat/3"]
    assert stats.history_topics_evicted == 1


def test_text_is_kept_as_utf8() -> None:
    history, _ = store()
    line = "emoji 🙂 " + "x" * 1000
    history.add(Publication("chat/a", line, SENDER))
    kept = history.get("chat/a")[0]
    assert kept.is_text and kept.data == line.encode()
    assert kept._text is False  # not decoded until read
    assert kept.text == line


# -- retained publications (issue 17 item 4) ----------------------------------------------


def test_retained_bounds() -> None:
    from wsplex.hub.retained import Retained

    stats = Stats()
    store = Retained(stats)
    store.max_value_size, store.max_count, store.max_per_sender, store.max_bytes = 8, 3, 2, 20
    a, b = Sender("JSONsvc", "a"), Sender("mqtt", "b")
    assert store.put(Publication("t/1", "x" * 8, a, retain=True))
    assert not store.put(Publication("t/2", "x" * 9, a, retain=True))  # value size
    assert store.put(Publication("t/2", "y", a, retain=True))
    assert not store.put(Publication("t/3", "z", a, retain=True))  # a holds 2 already
    assert store.put(Publication("t/1", "replaced", a, retain=True))  # replacing costs no slot
    assert store.put(Publication("t/3", "bbbbbbbb", b, retain=True))
    assert not store.put(Publication("t/4", "c", b, retain=True))  # 3 topics in all
    assert store.size == 17
    assert not store.put(Publication("t/2", "zzzzzzzz", a, retain=True))  # 24 bytes in all
    assert store.put(Publication("t/1", "", b, retain=True))  # an empty payload clears, whoever
    assert [p.topic for p in store.matching("t/+")] == ["t/2", "t/3"]
    assert len(store) == 2 and stats.retained_refused == 4
