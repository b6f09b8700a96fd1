"""Topic names and filters of the one topic space (SPEC §10), with MQTT's rules.

A topic name is a sequence of levels separated by ``/`` (MQTT 3.1.1 §4.7,
MQTT 5.0 §4.7): UTF-8, at least one character, no NUL, at most 65,535 bytes.
A **filter** may also hold the wildcards ``+`` (exactly one level) and ``#``
(this level and every level below it, only as the last level), each of them
alone in its level. A topic starting with ``$`` is not matched by a filter
whose first level is a wildcard (MQTT 3.1.1 §4.7.2): ``#`` does not see
``$SYS/uptime``. ``$SYS/...`` is the server's own: clients do not publish there.

Everything here is a pure function of strings; :class:`FilterIndex` finds the
wildcard filters that match a topic without testing each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Generic, TypeVar

SEPARATOR: Final = "/"
SINGLE: Final = "+"
MULTI: Final = "#"
MAX_TOPIC_BYTES: Final = 65_535
#: Topics reserved for the server (SPEC §10): a client's publication there is dropped.
SERVER_PREFIX: Final = "$SYS/"

V = TypeVar("V")


def _check_common(text: str, what: str) -> str | None:
    if not text:
        return f"{what} is empty"
    if "\0" in text:
        return f"{what} contains NUL"
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # lone surrogates cannot be UTF-8
        return f"{what} is not valid UTF-8"
    if size > MAX_TOPIC_BYTES:
        return f"{what} is longer than {MAX_TOPIC_BYTES} bytes"
    return None


def topic_error(topic: str) -> str | None:
    """Why ``topic`` is not a topic name one may publish on, or None when it is."""
    problem = _check_common(topic, "topic")
    if problem is None and (SINGLE in topic or MULTI in topic):
        problem = f"topic {topic!r} contains a wildcard (+ or #): publish on a topic name"
    return problem


def filter_error(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid filter, or None when it is (MQTT 3.1.1 §4.7.1)."""
    problem = _check_common(topic_filter, "filter")
    if problem is not None:
        return problem
    levels = topic_filter.split(SEPARATOR)
    for position, level in enumerate(levels):
        if MULTI in level and (level != MULTI or position != len(levels) - 1):
            return f"filter {topic_filter!r}: # must be a whole level and the last one"
        if SINGLE in level and level != SINGLE:
            return f"filter {topic_filter!r}: + must be a whole level"
    return None


def is_wildcard(topic_filter: str) -> bool:
    return SINGLE in topic_filter or MULTI in topic_filter


def is_server_topic(topic: str) -> bool:
    """``$SYS/...``: written by the server only (SPEC §10)."""
    return topic.startswith(SERVER_PREFIX)


def matches(topic_filter: str, topic: str) -> bool:
    """True when ``topic`` (a name) is matched by ``topic_filter`` (MQTT 3.1.1 §4.7)."""
    if not is_wildcard(topic_filter):
        return topic_filter == topic
    if topic.startswith("$") and topic_filter[0] in (SINGLE, MULTI):
        return False
    wanted = topic_filter.split(SEPARATOR)
    levels = topic.split(SEPARATOR)
    for position, level in enumerate(wanted):
        if level == MULTI:
            return True  # "sport/#" matches "sport" too: # includes the parent level
        if position >= len(levels):
            return False
        if level != SINGLE and level != levels[position]:
            return False
    return len(levels) == len(wanted)


class _Node(Generic[V]):
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.value: V | None = None


class FilterIndex(Generic[V]):
    """Wildcard filters in a tree of levels, each with a value (its subscribers).

    ``match(topic)`` walks the topic's levels once, following the literal level,
    ``+`` and ``#`` branches: its cost depends on the topic's depth and the
    filters that share its prefix, not on the number of filters.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def get(self, topic_filter: str) -> V | None:
        node: _Node[V] | None = self._root
        for level in topic_filter.split(SEPARATOR):
            node = node.children.get(level) if node is not None else None
            if node is None:
                return None
        return node.value if node is not None else None

    def set(self, topic_filter: str, value: V) -> None:
        node = self._root
        for level in topic_filter.split(SEPARATOR):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if node.value is None:
            self._size += 1
        node.value = value

    def remove(self, topic_filter: str) -> None:
        """Forget ``topic_filter`` and prune the branches it leaves empty."""
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in topic_filter.split(SEPARATOR):
            child = node.children.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        if node.value is None:
            return
        node.value = None
        self._size -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.value is not None or child.children:
                break
            del parent.children[level]

    def match(self, topic: str) -> Iterator[V]:
        """The values of every filter that matches ``topic``, each once."""
        levels = topic.split(SEPARATOR)
        dollar = topic.startswith("$")
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == len(levels):
                if node.value is not None:
                    yield node.value
                multi = node.children.get(MULTI)  # "a/#" matches "a"
                if multi is not None and multi.value is not None:
                    yield multi.value
                continue
            wild_allowed = not (dollar and depth == 0)
            if wild_allowed:
                multi = node.children.get(MULTI)
                if multi is not None and multi.value is not None:
                    yield multi.value
                single = node.children.get(SINGLE)
                if single is not None:
                    stack.append((single, depth + 1))
            literal = node.children.get(levels[depth])
            if literal is not None and levels[depth] not in (SINGLE, MULTI):
                stack.append((literal, depth + 1))

    def items(self) -> Iterator[tuple[str, V]]:
        stack: list[tuple[_Node[V], list[str]]] = [(self._root, [])]
        while stack:
            node, path = stack.pop()
            if node.value is not None:
                yield SEPARATOR.join(path), node.value
            for level, child in node.children.items():
                stack.append((child, [*path, level]))
