"""Anthropic Messages (mirror of anthropic.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import CACHE_WRITE, CACHED, INPUT, MODEL, OUTPUT
from . import Format
from .openai import ERROR_OBJ

USAGE = Obj(None, {
    "input_tokens": Leaf(INPUT),
    "output_tokens": Leaf(OUTPUT),
    "cache_read_input_tokens": Leaf(CACHED),
    "cache_creation_input_tokens": Leaf(CACHE_WRITE),
})

MESSAGE = Obj(None, {"model": Leaf(MODEL), "usage": USAGE})

DOC = Obj(None, {"model": Leaf(MODEL), "usage": USAGE, "message": MESSAGE, "error": ERROR_OBJ})

FORMAT = Format(pat=DOC, prompt_adds_cache=True)
