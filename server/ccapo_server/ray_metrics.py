"""`GET /metrics` of a Ray Serve application: every replica's own metrics, each series labelled `replica`.

Replicas send their Prometheus text with each registry heartbeat, so the numbers are at most a
heartbeat old; the ingress adds the requests it answered itself because a replica was gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


class IngressMetrics:
    """What only the ingress sees: requests it answered with 503 because their replica was unavailable."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.replica_unavailable = Counter(
            "ccapo_ray_replica_unavailable",
            "requests answered 503 because the replica holding them died or could not be reached",
            registry=self.registry,
        )


class _Replicas:
    """A collector that yields the replicas' parsed metric families, merged by name, labelled by replica."""

    def __init__(self, texts: Mapping[str, str]):
        self._texts = texts

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for replica, text in sorted(self._texts.items()):
            for family in text_string_to_metric_families(text):
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type, family.unit)
                )
                into.samples += [s._replace(labels={**s.labels, "replica": replica}) for s in family.samples]
        return list(merged.values())


def render(replica_texts: Mapping[str, str], ingress: IngressMetrics) -> bytes:
    """The application's metrics as one Prometheus text exposition."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Replicas(replica_texts))  # type: ignore[arg-type]  # any object with collect()
    return generate_latest(registry) + generate_latest(ingress.registry)
