"""The cluster source's metrics (``sluice_kubernetes_*``), read at scrape time: objects
held, whether each resource's list and watch work, watch events, errors, rebuilds and
status writes. Labels: the watched resources (kind.group) and fixed result names."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.kube import ClusterSource

__all__ = ["ClusterCollector"]


class ClusterCollector(Collector):
    """What the cluster source holds and how its lists and watches fare, read at scrape
    time (``resource`` is kind.group; bounded by the watched resources)."""

    def __init__(self, source: ClusterSource) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        objects = GaugeMetricFamily(
            "sluice_kubernetes_objects", "Objects held from the API.", labels=["resource"]
        )
        synced = GaugeMetricFamily(
            "sluice_kubernetes_synced",
            "1 while the resource's last list or watch worked (0: failing, or not served).",
            labels=["resource"],
        )
        events = CounterMetricFamily(
            "sluice_kubernetes_watch_events", "Watch events received.", labels=["resource", "type"]
        )
        errors = CounterMetricFamily(
            "sluice_kubernetes_errors",
            "Lists and watches that failed.",
            labels=["resource", "operation"],
        )
        for r in self._source.reflectors:
            label = r.resource.label
            objects.add_metric([label], len(r.objects))
            synced.add_metric([label], 1.0 if r.healthy else 0.0)
            for kind, n in sorted(r.events.items()):
                events.add_metric([label, kind], n)
            for operation, n in sorted(r.errors.items()):
                errors.add_metric([label, operation], n)
        rebuilds = CounterMetricFamily(
            "sluice_kubernetes_rebuilds", "Routing-table rebuilds after changes in the cluster."
        )
        rebuilds.add_metric([], self._source.rebuilds)
        writes = CounterMetricFamily(
            "sluice_kubernetes_status_writes",
            "Status patches sent to the API, by result (ok, conflict, error).",
            labels=["result"],
        )
        for result, n in sorted(self._source.status_writes.items()):
            writes.add_metric([result], n)
        yield from (objects, synced, events, errors, rebuilds, writes)
