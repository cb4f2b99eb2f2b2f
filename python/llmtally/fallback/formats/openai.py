"""OpenAI and OpenAI-compatible servers: chat, legacy completions, Responses
API, embeddings (mirror of openai.rs)."""

from ..json_scan import Leaf, Obj
from ..usage import CACHED, ERROR, INPUT, MODEL, OUTPUT, REASONING, TOTAL
from . import Format

USAGE = Obj(None, {
    "prompt_tokens": Leaf(INPUT),
    "completion_tokens": Leaf(OUTPUT),
    "input_tokens": Leaf(INPUT),
    "output_tokens": Leaf(OUTPUT),
    "total_tokens": Leaf(TOTAL),
    "prompt_tokens_details": Obj(None, {"cached_tokens": Leaf(CACHED)}),
    "input_tokens_details": Obj(None, {"cached_tokens": Leaf(CACHED)}),
    "completion_tokens_details": Obj(None, {"reasoning_tokens": Leaf(REASONING)}),
    "output_tokens_details": Obj(None, {"reasoning_tokens": Leaf(REASONING)}),
})

ERROR_OBJ = Obj(ERROR, {})

DOC = Obj(None, {
    "model": Leaf(MODEL),
    "usage": USAGE,
    "error": ERROR_OBJ,
    "response": Obj(None, {"model": Leaf(MODEL), "usage": USAGE, "error": ERROR_OBJ}),
})

FORMAT = Format(pat=DOC)
