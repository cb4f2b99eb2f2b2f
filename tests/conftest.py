import json
import pathlib

import pytest

import llmtally

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CASES = json.loads((FIXTURES / "cases.json").read_text())


def usage_of_json(u: dict) -> dict:
    """A usage dict read from JSON as `Usage.as_dict()` gives it (`finish_reasons` a tuple)."""
    return {**u, "finish_reasons": tuple(u["finish_reasons"])}


for _case in CASES:
    _case["usage"] = usage_of_json(_case["usage"])
BACKENDS = ["native", "python"]


def load(rel: str) -> bytes:
    return (FIXTURES / rel).read_bytes()


def eols(case) -> list[bytes]:
    """Line ends a case can be rewritten to (binary fixtures: none)."""
    if case.get("binary"):
        return [b"\n"]
    return [e.encode() for e in case.get("eols", ["\n", "\r\n", "\r"])]


def request_of(case):
    if "request" not in case:
        return None
    return llmtally.parse_request(load(case["request"]), case["provider"], case.get("path", ""))


def scan(case, chunks, backend, body=None):
    """Scan `chunks` (an iterable of bytes) with the case's settings."""
    sc = llmtally.ResponseScanner(
        case["provider"],
        request_of(case),
        content_type=case.get("content_type", ""),
        path=case.get("path", ""),
        headers=case.get("headers", {}),
        backend=backend,
    )
    for c in chunks:
        sc.feed(c)
    return sc.finish().as_dict()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def restore_logging():
    """The logging setup as it was (for tests that call logs.setup)."""
    import logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("llmtally").level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("llmtally").setLevel(saved[2])
