"""The last publications of topics that keep a history (``Hub.keep_history``), bounded.

Chat asks for the last ``--chat-history`` lines of every room (``chat/``). A
client could otherwise make the node keep history for millions of topics, or
megabytes per topic (issue 17: 1.96 million rooms in 60 s took 1.8 GiB), so
three bounds hold, each counted in ``/metrics``:

* per topic, at most the rule's number of publications and ``--history-bytes``
  (each publication weighs its payload plus its native frame,
  :meth:`Publication.kept_size`; the oldest go first);
* at most ``--history-topics`` topics: a new one pushes out the oldest topic
  nobody is subscribed to here, else the oldest of all;
* text is kept compactly, as its UTF-8 bytes (a ``str`` with one emoji costs
  four bytes a character), decoded again only when read.

The Redis hub holds the same bounds for the cluster in
``hub.redis.schema.HISTORY_SCRIPT``; a change of rule here is one there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from wsplex.app.publication import Publication
from wsplex.stats import Stats

DEFAULT_TOPICS = 10_000
DEFAULT_BYTES = 256 * 1024
#: How many of the oldest topics are looked at for one nobody listens to.
EVICTION_SCAN = 64


class HistoryRules:
    """Which topics keep their last publications, and how many (``keep_history``)."""

    def __init__(self) -> None:
        self._rules: list[tuple[str, int]] = []

    def add(self, prefix: str, limit: int) -> None:
        self._rules = [(p, n) for p, n in self._rules if p != prefix]
        if limit > 0:
            self._rules.append((prefix, limit))

    def limit(self, topic: str) -> int:
        """How many publications ``topic`` keeps: 0 for none."""
        for prefix, limit in self._rules:
            if topic.startswith(prefix):
                return limit
        return 0


class _Kept:
    __slots__ = ("items", "size")

    def __init__(self) -> None:
        self.items: deque[Publication] = deque()
        self.size = 0


class History:
    """Per topic, its last publications, within the bounds of the module docstring."""

    def __init__(self, stats: Stats, listened: Callable[[str], bool]) -> None:
        self.rules = HistoryRules()
        self.max_topics = DEFAULT_TOPICS
        self.max_bytes = DEFAULT_BYTES
        self._stats = stats
        self._listened = listened  # does a local session subscribe to this exact topic?
        self._topics: dict[str, _Kept] = {}  # oldest first

    def __len__(self) -> int:
        return len(self._topics)

    def add(self, publication: Publication) -> None:
        topic = publication.topic
        limit = self.rules.limit(topic)
        if not limit:
            return
        kept = self._topics.get(topic)
        if kept is None:
            if len(self._topics) >= self.max_topics:
                self._evict()
            kept = self._topics[topic] = _Kept()
        compact = publication.compact()
        kept.items.append(compact)
        kept.size += compact.kept_size()
        items = kept.items
        if len(items) > limit:  # the rule's count: the usual way out, not counted
            kept.size -= items.popleft().kept_size()
        while items and kept.size > self.max_bytes:
            kept.size -= items.popleft().kept_size()
            self._stats.history_trimmed += 1

    def get(self, topic: str) -> list[Publication]:
        kept = self._topics.get(topic)
        return list(kept.items) if kept is not None else []

    def _evict(self) -> None:
        """Forget the oldest topic nobody here listens to (else the oldest of all)."""
        victim = None
        for position, topic in enumerate(self._topics):
            if position >= EVICTION_SCAN:
                break
            if victim is None:
                victim = topic
            if not self._listened(topic):
                victim = topic
                break
        if victim is not None:
            del self._topics[victim]
            self._stats.history_topics_evicted += 1
