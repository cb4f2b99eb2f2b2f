"""Every fixture, both backends, split at every kind of boundary: exact values."""

import random
import re

import pytest

from conftest import CASES, eols, load, scan

ids = [c["name"] for c in CASES]


def line_ends(body: bytes, eol: bytes) -> bytes:
    return body.replace(b"\n", eol)


def random_chunks(body: bytes, seed: int):
    rng = random.Random(seed)
    i = 0
    while i < len(body):
        n = rng.choice((1, 2, 3, 7, 64, 500, 4096))
        yield body[i : i + n]
        i += n


EOL_NAMES = {b"\n": "LF", b"\r\n": "CRLF", b"\r": "CR"}
WITH_EOLS = [(c, e) for c in CASES for e in eols(c)]


@pytest.mark.parametrize("case, eol", WITH_EOLS, ids=[f"{c['name']}-{EOL_NAMES[e]}" for c, e in WITH_EOLS])
def test_whole_bytewise_and_random(case, eol, backend):
    body = line_ends(load(case["response"]), eol)
    want = case["usage"]
    assert scan(case, [body], backend) == want
    assert scan(case, [body[i : i + 1] for i in range(len(body))], backend) == want
    for seed in range(5):
        assert scan(case, random_chunks(body, seed), backend) == want


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_two_pieces_at_every_position(case, backend):
    body = load(case["response"])
    want = case["usage"]
    for i in range(len(body) + 1):
        assert scan(case, [body[:i], body[i:]], backend) == want, f"split at {i}"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_split_inside_every_crlf_and_utf8_sequence(case, backend):
    body = load(case["response"])
    if b"\r\n" in eols(case):
        body = line_ends(body, b"\r\n")
        # cut between every CR and LF, and after the first byte of every multi-byte character
        cuts = [m.start() + 1 for m in re.finditer(rb"\r\n|[\xc0-\xff]", body)]
        assert cuts
    else:  # binary: cut after every byte that could start a multi-byte character
        cuts = [m.start() + 1 for m in re.finditer(rb"[\xc0-\xff]", body)]
    pieces = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)], strict=False)]
    assert scan(case, pieces, backend) == case["usage"]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_bom_split_across_chunks(case, backend):
    body = b"\xef\xbb\xbf" + load(case["response"])
    assert scan(case, [body[:1], body[1:2], body[2:5], body[5:]], backend) == case["usage"]


def test_response_ids_and_finish_reasons_are_the_oracles():
    """The manifest's `response_id` and `finish_reasons` (asserted above under every split) are what
    the independent oracle reads from each fixture with json.loads; most cases have both."""
    import llmtally
    import oracle

    with_id = with_reasons = 0
    for case in CASES:
        provider = llmtally.resolve_provider(case["provider"], case.get("path", ""), case.get("content_type", ""))
        docs = oracle.docs(case, load(case["response"]))
        u = case["usage"]
        want = (oracle.response_id(provider, docs), tuple(oracle.finish_reasons(provider, docs)))
        assert (u["response_id"], u["finish_reasons"]) == want, case["name"]
        with_id += u["response_id"] is not None
        with_reasons += bool(u["finish_reasons"])
    assert (with_id, with_reasons) == (68, 59)


SSE_CASES = [c for c in CASES if "event-stream" in c.get("content_type", "") and not c.get("binary")]


@pytest.mark.parametrize("case", SSE_CASES, ids=[c["name"] for c in SSE_CASES])
def test_an_event_stream_labelled_json_reads_as_one(case, backend):
    """A proxy that relabels a stream `application/json` (or NDJSON): the body's first byte tells (no JSON
    document starts with `d`, `e`, `i`, `r` or `:`); before, such a stream read as nothing."""
    body = load(case["response"])
    for ct in ("application/json", "application/x-ndjson"):
        relabelled = {**case, "content_type": ct}
        assert scan(relabelled, [body], backend) == case["usage"]
        assert scan(relabelled, random_chunks(body, 1), backend) == case["usage"]
