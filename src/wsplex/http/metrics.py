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
        yield CounterMetricFamily("wsplex_connections_accepted", "WebSocket handshakes accepted",
                                  value=stats.connections_total)
        yield CounterMetricFamily("wsplex_messages_received", "Messages received from clients",
                                  value=stats.messages_in)
        yield CounterMetricFamily("wsplex_messages_sent", "Messages queued to clients",
                                  value=stats.messages_out)
        yield CounterMetricFamily("wsplex_received_bytes", "Payload bytes of messages received",
                                  value=stats.bytes_in)
        yield CounterMetricFamily("wsplex_sent_bytes", "Frame bytes of messages queued to clients",
                                  value=stats.bytes_out)
        refusals = CounterMetricFamily("wsplex_handshake_refusals", "Handshakes refused, by reason",
                                       labels=["reason"])
        for reason, count in sorted(stats.refusals.items()):
            refusals.add_metric([str(reason)], count)
        yield refusals
        closes = CounterMetricFamily("wsplex_closes", "Closed connections, by close code",
                                     labels=["code"])
        for code, count in sorted(stats.closes.items()):
            closes.add_metric([str(int(code))], count)
        yield closes
        limit_closes = CounterMetricFamily(
            "wsplex_limit_closes",
            "Connections closed for going past a frame-level limit (SPEC §8), by limit",
            labels=["limit"])
        for limit, count in sorted(stats.limit_closes.items()):
            limit_closes.add_metric([str(limit)], count)
        yield limit_closes
        yield CounterMetricFamily("wsplex_slow_consumer_drops",
                                  "Connections closed because their send buffer passed the cap",
                                  value=stats.slow_consumer_drops)
        yield CounterMetricFamily("wsplex_compressed_messages_received",
                                  "Messages received compressed (permessage-deflate)",
                                  value=stats.compressed_messages_in)
        yield CounterMetricFamily("wsplex_compressed_messages_sent",
                                  "Messages queued to clients compressed (permessage-deflate)",
                                  value=stats.compressed_messages_out)
        yield CounterMetricFamily("wsplex_compression_saved_bytes",
                                  "Bytes compression saved on the wire: plain minus compressed frames",
                                  value=stats.compression_saved_bytes)
        yield CounterMetricFamily("wsplex_compressions",
                                  "Messages deflated; a fan-out is compressed once for its receivers",
                                  value=stats.compressions)
        yield CounterMetricFamily("wsplex_redis_disconnects",
                                  "Times this node lost Redis or could not reach it",
                                  value=stats.redis_disconnects)
        yield CounterMetricFamily("wsplex_redis_dropped",
                                  "Messages for other nodes dropped while Redis was unreachable",
                                  value=stats.redis_dropped)
        yield CounterMetricFamily("wsplex_retained_refused",
                                  "Retained publications delivered but not kept: past a --retained-* bound",
                                  value=stats.retained_refused)
        yield CounterMetricFamily("wsplex_history_trimmed",
                                  "Publications dropped from a topic's history past --history-bytes",
                                  value=stats.history_trimmed)
        yield CounterMetricFamily("wsplex_history_topics_evicted",
                                  "Topics whose history was forgotten past --history-topics",
                                  value=stats.history_topics_evicted)
        yield CounterMetricFamily("wsplex_reads_paused",
                                  "Times a connection was not read for a while: its messages waited "
                                  "for the server (backpressure)", value=stats.reads_paused)
        yield CounterMetricFamily("wsplex_subscriptions_refused",
                                  "Subscriptions and channel joins refused past --max-subscriptions",
                                  value=stats.subscriptions_refused)
        not_text = CounterMetricFamily(
            "wsplex_publications_not_text",
            "Publications a text protocol did not receive: the payload is not UTF-8 (by receiver)",
            labels=["protocol"])
        for protocol, count in sorted(stats.not_text_dropped.items()):
            not_text.add_metric([protocol], count)
        yield not_text
        for name, figure in sorted(stats.figures.items()):
            family = CounterMetricFamily if figure.counter else GaugeMetricFamily
            yield family(f"wsplex_{name}", figure.help, value=figure.read())
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
