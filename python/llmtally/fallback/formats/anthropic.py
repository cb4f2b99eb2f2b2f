"""Anthropic Messages (mirror of anthropic.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import CACHE_WRITE, CACHED, ERROR, INPUT, MODEL, OUTPUT
from . import Format

USAGE = Obj(None, {
    "input_tokens": Leaf(INPUT),
    "output_tokens": Leaf(OUTPUT),
    "cache_read_input_tokens": Leaf(CACHED),
    "cache_creation_input_tokens": Leaf(CACHE_WRITE),
})

MESSAGES = Obj(None, {
    "model": Leaf(MODEL),
    "usage": USAGE,
    "message": Obj(None, {"model": Leaf(MODEL), "usage": USAGE}),
    "error": Obj(ERROR, {}),
})

FORMAT = Format(pat=MESSAGES, prompt_adds_cache=True)
