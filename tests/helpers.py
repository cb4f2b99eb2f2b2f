"""Helpers shared by the test modules (not by the package: the demo keeps its own)."""

import random

from prometheus_client.parser import text_string_to_metric_families


def metric_samples(text: str) -> dict:
    """Prometheus text exposition -> {(sample name, sorted label items): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(m: dict, name: str, **labels: str) -> float:
    """One sample of `metric_samples`' result (0 when absent)."""
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def case_scanner(case, backend, encoding="", **kw):
    """A scanner with a fixture case's settings (its request parsed first)."""
    import llmtally
    from conftest import load

    req = None
    if "request" in case:
        req = llmtally.parse_request(load(case["request"]), case["provider"], case.get("path", ""))
    return llmtally.ResponseScanner(
        case["provider"],
        req,
        content_type=case.get("content_type", ""),
        content_encoding=encoding,
        path=case.get("path", ""),
        headers=case.get("headers", {}),
        backend=backend,
        **kw,
    )


def random_chunks(body: bytes, seed: int):
    """`body` in pieces of 1, 5, 100 or 3000 bytes, chosen by a seeded generator."""
    rng = random.Random(seed)
    i = 0
    while i < len(body):
        n = rng.choice((1, 5, 100, 3000))
        yield body[i : i + n]
        i += n


def serve_workers(pid: int) -> list:
    """The worker processes of `llmtally serve` with `workers` > 1 (pid: the parent): the children of
    multiprocessing's forkserver, which is the parent's child (as is its resource tracker)."""
    import psutil

    servers = [c for c in psutil.Process(pid).children() if "forkserver" in " ".join(c.cmdline())]
    return [w for s in servers for w in s.children()]
