"""The `/metrics` exposition of a service: every sample labelled with its release.

A canary rollout compares the canary's metrics with the stable side's, so every sample says
which `version` and `track` produced it. The labels are added here, at collect time, to
whatever the metrics come from (the process's registry, or every worker's files in
prometheus_client's multiprocess mode), rather than declared on each metric: no metric can
forget them, and no call site has to pass them.

A sample that already has a label of that name (`python_info{version}`) keeps its value as
`exported_<name>`, as Prometheus itself renames a target's clashing label.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping

import prometheus_client
from prometheus_client import multiprocess, registry
from prometheus_client.metrics_core import Metric

VERSION_LABEL = "version"
TRACK_LABEL = "track"

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""Set (before prometheus_client is imported), every process writes its values to files in
this directory and the exposition sums them: one view over several workers."""


class Labelled(registry.Collector):
    """A collector that yields another's metrics with fixed labels added to every sample."""

    def __init__(self, source: registry.Collector, labels: Mapping[str, str]) -> None:
        self.source = source
        self.labels = dict(labels)

    def collect(self) -> Iterable[Metric]:
        for family in self.source.collect():
            labelled = copy.copy(family)
            labelled.samples = [
                sample._replace(labels=self._relabel(sample.labels)) for sample in family.samples
            ]
            yield labelled

    def _relabel(self, own: Mapping[str, str]) -> dict[str, str]:
        renamed = {
            (f"exported_{name}" if name in self.labels else name): value
            for name, value in own.items()
        }
        return renamed | self.labels


def release_labels(*, version: str, track: str) -> dict[str, str]:
    return {VERSION_LABEL: version, TRACK_LABEL: track}


def source() -> registry.Collector:
    """What this process exposes: the default registry, or in multiprocess mode the values
    every process of the group wrote (counters and histograms summed)."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        return multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    return prometheus_client.REGISTRY


def render(*, version: str, track: str, of: registry.Collector | None = None) -> bytes:
    """The text exposition of `of` (default: `source()`), every sample labelled."""
    labelled = prometheus_client.CollectorRegistry(auto_describe=False)
    labelled.register(Labelled(of or source(), release_labels(version=version, track=track)))
    return prometheus_client.generate_latest(labelled)


CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
