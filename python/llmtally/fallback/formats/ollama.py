"""Ollama native API, NDJSON or one object (mirror of ollama.rs)."""

from ..json_scan import Arr, Leaf, Obj
from ..usage import INPUT, MODEL, OUTPUT, ROOT, T_CONTENT, T_REASONING, TOTAL
from . import Format
from .openai import CHOICE_OBJ, ERROR_OBJ

DOC = Obj(ROOT, {
    "message": Obj(None, {"content": Leaf(T_CONTENT), "thinking": Leaf(T_REASONING)}),
    "response": Leaf(T_CONTENT),
    "thinking": Leaf(T_REASONING),
    "choices": Arr(CHOICE_OBJ),
    "model": Leaf(MODEL),
    "prompt_eval_count": Leaf(INPUT),
    "eval_count": Leaf(OUTPUT),
    "usage": Obj(None, {"prompt_tokens": Leaf(INPUT), "completion_tokens": Leaf(OUTPUT), "total_tokens": Leaf(TOTAL)}),
    "error": ERROR_OBJ,
})

FORMAT = Format(pat=DOC)
