"""Retained publications, one per topic, bounded (SPEC §10; issue 17 item 4).

Any protocol's client can retain a publication on any topic (a JSONsvc
``put``, an MQTT retained PUBLISH), and retained values outlive their
publisher. Without bounds one client could make the node keep gigabytes, so
a publication is retained only within these, each a flag, and refused (still
delivered, not kept; counted in ``/metrics``) past them:

* ``--retained-value-size``: payload bytes of one retained publication;
* ``--retained-max``: retained topics in all;
* ``--retained-per-sender``: retained topics one sender holds;
* ``--retained-bytes``: bytes of all of them, each weighing its payload plus its
  native frame (:meth:`Publication.kept_size`).

Replacing a topic's value counts only the difference. An empty payload
clears the topic, whoever holds it (MQTT 3.1.1 §3.3.1.3). Text is kept as
UTF-8 bytes (:meth:`Publication.compact`).

The Redis hub holds the same bounds for the cluster in
``hub.redis.schema.RETAIN_SCRIPT``; a change of rule here is one there.
"""

from __future__ import annotations

from collections import Counter

from wsplex.app.publication import Publication
from wsplex.app.topics import is_wildcard, matches
from wsplex.stats import Stats

DEFAULT_VALUE_SIZE = 1 << 20
DEFAULT_MAX = 100_000
DEFAULT_PER_SENDER = 10_000
DEFAULT_BYTES = 256 << 20


class Retained:
    """topic -> its retained publication, within the bounds of the module docstring."""

    def __init__(self, stats: Stats) -> None:
        self.max_value_size = DEFAULT_VALUE_SIZE
        self.max_count = DEFAULT_MAX
        self.max_per_sender = DEFAULT_PER_SENDER
        self.max_bytes = DEFAULT_BYTES
        self._stats = stats
        self._topics: dict[str, Publication] = {}
        self._by_sender: Counter[str] = Counter()
        self.size = 0  # what the kept publications weigh (Publication.kept_size)

    def __len__(self) -> int:
        return len(self._topics)

    def put(self, publication: Publication) -> bool:
        """Keep ``publication`` as its topic's retained one (or clear it when empty);
        False when a bound refused it."""
        topic = publication.topic
        old = self._topics.get(topic)
        if publication.empty:
            if old is not None:
                self._forget(topic, old)
            return True
        size = len(publication.data)  # before compact(), which drops the bytes this makes of a text
        owner = str(publication.sender)
        new_topic = old is None
        switching = old is not None and str(old.sender) != owner
        kept = publication.compact()
        held = kept.kept_size()
        grows = held - (old.kept_size() if old is not None else 0)
        if (size > self.max_value_size
                or (new_topic and len(self._topics) >= self.max_count)
                or ((new_topic or switching) and self._by_sender[owner] >= self.max_per_sender)
                or self.size + grows > self.max_bytes):
            self._stats.retained_refused += 1
            return False
        if old is not None:
            self._forget(topic, old)
        self._topics[topic] = kept
        self._by_sender[owner] += 1
        self.size += held
        return True

    def _forget(self, topic: str, old: Publication) -> None:
        del self._topics[topic]
        self.size -= old.kept_size()
        owner = str(old.sender)
        self._by_sender[owner] -= 1
        if not self._by_sender[owner]:
            del self._by_sender[owner]

    def matching(self, topic_filter: str) -> list[Publication]:
        if not is_wildcard(topic_filter):
            found = self._topics.get(topic_filter)
            return [found] if found is not None else []
        return [p for topic, p in self._topics.items() if matches(topic_filter, topic)]
