"""Helpers shared by the test modules (not by the package: the demo keeps its own)."""

from prometheus_client.parser import text_string_to_metric_families


def metric_samples(text: str) -> dict:
    """Prometheus text exposition -> {(sample name, sorted label items): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
