"""Ollama native API, NDJSON or one object (mirror of ollama.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import INPUT, MODEL, OUTPUT, TOTAL
from . import Format
from .openai import ERROR_OBJ

DOC = Obj(None, {
    "model": Leaf(MODEL),
    "prompt_eval_count": Leaf(INPUT),
    "eval_count": Leaf(OUTPUT),
    "usage": Obj(None, {"prompt_tokens": Leaf(INPUT), "completion_tokens": Leaf(OUTPUT), "total_tokens": Leaf(TOTAL)}),
    "error": ERROR_OBJ,
})

FORMAT = Format(pat=DOC)
