"""The Prometheus text exposition format (version 0.0.4), written by hand: no client library.

The gateway runs on a 512 MB edge box with a lean install, and both it and accounting only
ever expose a handful of families, so `prometheus_client` would add a dependency for
fifteen lines. One writer, used by the gateway's and the accounting service's /metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = Mapping[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class Family:
    """One metric family: name, type (counter, gauge, histogram), help, samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels | None = None, suffix: str = "") -> Family:
        self.samples.append((suffix, labels or {}, value))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{self.name}{suffix}{{{label_text}}} {_number(value)}" if label_text
                         else f"{self.name}{suffix} {_number(value)}")
        return "\n".join(lines)


class Histogram:
    """Cumulative buckets of observed values (seconds), for latencies."""

    def __init__(self, bounds: Iterable[float] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.n += 1
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def family(self, name: str, help: str, labels: Labels | None = None) -> Family:
        labels = dict(labels or {})
        fam = Family(name, "histogram", help)
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            fam.add(running, {**labels, "le": _number(float(bound))}, "_bucket")
        fam.add(self.n, {**labels, "le": "+Inf"}, "_bucket")
        fam.add(self.total, labels, "_sum")
        fam.add(self.n, labels, "_count")
        return fam


def render(families: Iterable[Family]) -> str:
    """The whole exposition: every family, then the newline the format ends with."""
    return "\n".join(f.render() for f in families) + "\n"
