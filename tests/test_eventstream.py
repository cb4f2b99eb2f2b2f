"""The AWS event stream (Bedrock): corrupt messages, junk, bad preludes,
oversized messages, exceptions and cut streams. Both backends."""

from conftest import CASES, load
from helpers import case_scanner as scanner
from helpers import random_chunks as chunks

BY_NAME = {c["name"]: c for c in CASES}
BEDROCK = BY_NAME["bedrock ConverseStream event stream"]
# without the metadata event, the streamed text is counted (the model has no public tokenizer: o200k_base)
TEXT_TOKENS = BY_NAME["bedrock ConverseStream throttled mid-stream"]["usage"]["completion_tokens"]


def messages(blob):
    out, i = [], 0
    while i < len(blob):
        n = int.from_bytes(blob[i : i + 4], "big")
        out.append(blob[i : i + n])
        i += n
    return out


def bedrock_scan(body, backend, **kw):
    sc = scanner(BEDROCK, backend, **kw)
    for p in chunks(body, 5):
        sc.feed(p)
    return sc.finish().as_dict(), sc.stats()


def test_bedrock_corrupt_message_is_skipped(backend):
    msgs = messages(load(BEDROCK["response"]))
    bad = bytearray(msgs[1])
    bad[-10] ^= 1  # payload byte: the message CRC fails
    body = b"".join([msgs[0], bytes(bad), *msgs[2:]])
    usage, st = bedrock_scan(body, backend)
    assert usage == BEDROCK["usage"]
    assert (st["corrupt_frames"], st["docs"]) == (1, 5)


def test_bedrock_resyncs_after_junk(backend):
    msgs = messages(load(BEDROCK["response"]))
    junk = bytes(range(1, 200))
    body = b"".join([msgs[0], junk, *msgs[1:3], b"\x00\x00\x00", *msgs[3:]])
    usage, st = bedrock_scan(body, backend)
    assert usage == BEDROCK["usage"]
    assert (st["corrupt_frames"], st["docs"]) == (len(junk) + 3, 6)


def test_bedrock_bad_prelude_crc_resyncs(backend):
    msgs = messages(load(BEDROCK["response"]))
    bad = bytearray(msgs[2])
    bad[9] ^= 0xFF  # prelude CRC
    usage, st = bedrock_scan(b"".join([*msgs[:2], bytes(bad), *msgs[3:]]), backend)
    assert usage == BEDROCK["usage"]
    assert st["docs"] == 5 and st["corrupt_frames"] >= 1


def test_bedrock_oversized_message_is_skipped_unbuffered(backend):
    msgs = messages(load(BEDROCK["response"]))
    assert len(msgs[-1]) > 200 > max(len(m) for m in msgs[:-1])
    usage, st = bedrock_scan(b"".join(msgs), backend, max_event_bytes=200)
    assert (usage["source"], usage["completion_tokens"]) == ("tokenizer", TEXT_TOKENS)
    assert (st["oversized_events"], st["docs"], st["corrupt_frames"]) == (1, 5, 0)


def test_bedrock_exception_and_truncation(backend):
    sc = scanner(BY_NAME["bedrock ConverseStream throttled mid-stream"], backend)
    sc.feed(load("bedrock/converse_stream_throttled.bin"))
    sc.finish()
    assert sc.stats()["errors"] == 1
    body = load(BEDROCK["response"])
    usage, st = bedrock_scan(body[:-20], backend)
    assert (usage["source"], usage["completion_tokens"], st["broken_docs"]) == ("tokenizer", TEXT_TOKENS, 1)
