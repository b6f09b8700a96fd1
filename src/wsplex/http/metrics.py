"""``GET /metrics``: the node's counters in Prometheus text format (SPEC §1, §8).

The hot path bumps plain ints on :class:`~wsplex.stats.Stats`; this collector
reads them only when Prometheus scrapes, so a scrape costs a few dozen lines of
text and a message costs no lock (prometheus-client's own counters take one per
``inc()``). Each server has its own registry, so two servers in one process
(the tests) never mix their numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from wsplex.http.routes import Response
from wsplex.stats import Stats

#: Every counter of :class:`Stats` as ``(metric, help, attribute, label)``, in the
#: order ``/metrics`` lists them. ``label`` is None for a plain count, else the
#: label of a ``Counter`` attribute's keys.
COUNTERS: tuple[tuple[str, str, str, str | None], ...] = (
    ("wsplex_connections_accepted", "WebSocket handshakes accepted", "connections_total", None),
    ("wsplex_messages_received", "Messages received from clients", "messages_in", None),
    ("wsplex_messages_sent", "Messages queued to clients", "messages_out", None),
    ("wsplex_received_bytes", "Payload bytes of messages received", "bytes_in", None),
    ("wsplex_sent_bytes", "Frame bytes of messages queued to clients", "bytes_out", None),
    ("wsplex_handshake_refusals", "Handshakes refused, by reason", "refusals", "reason"),
    ("wsplex_closes", "Closed connections, by close code", "closes", "code"),
    ("wsplex_limit_closes", "Connections closed for going past a frame-level limit, by limit",
     "limit_closes", "limit"),
    ("wsplex_slow_consumer_drops", "Connections closed because their send buffer passed the cap",
     "slow_consumer_drops", None),
    ("wsplex_compressed_messages_received", "Messages received compressed (permessage-deflate)",
     "compressed_messages_in", None),
    ("wsplex_compressed_messages_sent", "Messages queued to clients compressed (permessage-deflate)",
     "compressed_messages_out", None),
    ("wsplex_compression_saved_bytes",
     "Bytes compression saved on the wire: plain minus compressed frames", "compression_saved_bytes",
     None),
    ("wsplex_compressions", "Messages deflated; a fan-out is compressed once for its receivers",
     "compressions", None),
    ("wsplex_redis_disconnects", "Times this node lost Redis or could not reach it",
     "redis_disconnects", None),
    ("wsplex_redis_dropped", "Messages for other nodes dropped while Redis was unreachable",
     "redis_dropped", None),
    ("wsplex_retained_refused",
     "Retained publications delivered but not kept: past a --retained-* bound", "retained_refused",
     None),
    ("wsplex_history_trimmed", "Publications dropped from a topic's history past --history-bytes",
     "history_trimmed", None),
    ("wsplex_history_topics_evicted", "Topics whose history was forgotten past --history-topics",
     "history_topics_evicted", None),
    ("wsplex_reads_paused",
     "Times a connection was not read for a while: its messages waited for the server (backpressure)",
     "reads_paused", None),
    ("wsplex_send_pauses",
     "Times a connection was not read because what was sent to it waited unread (backpressure)",
     "send_pauses", None),
    ("wsplex_turn_yields",
     "Times a connection's reads waited for the next event-loop turn past --read-per-turn",
     "turn_yields", None),
    ("wsplex_loop_lag_seconds",
     "Seconds the event loop ran late; the message rate allows for them", "loop_lag", None),
    ("wsplex_subscriptions_refused", "Subscriptions and channel joins refused past --max-subscriptions",
     "subscriptions_refused", None),
    ("wsplex_publications_not_text",
     "Publications a text protocol did not receive: the payload is not UTF-8 (by receiver)",
     "not_text_dropped", "protocol"),
)


class StatsCollector:
    """A prometheus-client collector over one :class:`Stats` object."""

    def __init__(self, stats: Stats, protocols: tuple[str, ...]) -> None:
        self.stats = stats
        self.protocols = protocols  # listed even at zero, so dashboards see every series

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        open_now = GaugeMetricFamily("wsplex_connections", "Open WebSocket connections",
                                     labels=["protocol"])
        for protocol in sorted(set(self.protocols) | set(stats.connections)):
            open_now.add_metric([protocol], stats.connections[protocol])
        yield open_now
        for name, help_text, attribute, label in COUNTERS:
            value = getattr(stats, attribute)
            if label is None:
                yield CounterMetricFamily(name, help_text, value=value)
                continue
            family = CounterMetricFamily(name, help_text, labels=[label])
            for key, count in sorted(value.items()):
                family.add_metric([str(int(key)) if label == "code" else str(key)], count)
            yield family
        for name, figure in sorted(stats.figures.items()):
            family_type = CounterMetricFamily if figure.counter else GaugeMetricFamily
            yield family_type(f"wsplex_{name}", figure.help, value=figure.read())
        yield GaugeMetricFamily("wsplex_uptime_seconds", "Seconds since the node started",
                                value=stats.uptime)


class MetricsEndpoint:
    """The ``/metrics`` route of one server."""

    def __init__(self, stats: Stats, protocols: tuple[str, ...]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StatsCollector(stats, protocols))

    def __call__(self) -> Response:
        body = generate_latest(self.registry)
        return Response(HTTPStatus.OK, body, CONTENT_TYPE_LATEST, {"Cache-Control": "no-store"})
